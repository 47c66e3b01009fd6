"""The Arrow evaluator of the suites gives GX's own results, on clean and on broken batches of every suite."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

from hdh_migration.catalogue import load_catalogue
from hdh_migration.validation import SuiteRunner, partition_parameters
from hdh_synthetic import generate_file

RAW_NIR = "2 95 10 99 126 111 93"


def _break(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column broken on a few rows, by type, and the columns out of order."""
    columns = []
    for index, (field, array) in enumerate(zip(batch.schema, batch.columns, strict=True)):
        values = array.to_pylist()
        for row in range(len(values)):
            case = (row + index) % 11
            if pa.types.is_string(field.type):
                broken = {1: None, 2: RAW_NIR, 3: "Z" * 70, 4: "A12\n", 5: "", 6: "é"}
            elif pa.types.is_integer(field.type):
                broken = {1: None, 2: -(10**6), 3: 2**31 - 1, 4: 0}
            elif pa.types.is_floating(field.type):
                broken = {1: None, 2: float("nan"), 3: -1e9, 4: 1e12}
            elif pa.types.is_date(field.type):
                broken = {1: None, 2: dt.date(1990, 1, 1), 3: dt.date(2100, 12, 31)}
            elif pa.types.is_timestamp(field.type):
                broken = {1: None, 2: dt.datetime(1990, 1, 1, 3), 3: dt.datetime(2100, 1, 1)}
            else:
                broken = {1: None}
            if case in broken:
                values[row] = broken[case]
        columns.append(pa.array(values, field.type, from_pandas=False))
    order = list(range(batch.num_columns))
    order[0], order[1] = order[1], order[0]
    return pa.record_batch([columns[i] for i in order], names=[batch.schema.names[i] for i in order])


def _tables():
    catalogue = load_catalogue()
    return [(catalogue, domain, table) for domain in catalogue.domains for table in domain.tables]


@pytest.mark.parametrize("catalogue,domain,table", _tables(), ids=lambda v: getattr(v, "name", ""))
def test_native_and_gx_evaluators_agree_on_every_expectation(catalogue, domain, table):
    partition = domain.partitions()[0]
    parameters = partition_parameters(domain.grain, partition)
    data = generate_file(catalogue, table, partition, 0, seed=5, rows_per_partition=600, files_per_partition=1)
    clean = data.combine_chunks().to_batches()[0]
    native = SuiteRunner(table.suite_path, parameters)
    reference = SuiteRunner(table.suite_path, parameters, native=False)
    for batch in (clean, _break(clean)):
        steps, fallback = native._plan(batch.schema)
        assert fallback is None, [s[0]["type"] for s in steps if s[1] is None]  # every type ours is native
        native.validate(batch)
        reference.validate(batch)
        assert native.results() == reference.results(), table.name
    results = native.results()
    assert len(results) >= 10 and all(r["result"] or r["type"].startswith("expect_table") for r in results)
    failed = {r["type"] for r in results if not r["success"]}
    # The broken batch fails every type of the suite: the comparison covered failures, not only passes.
    assert failed == {r["type"] for r in results}, sorted({r["type"] for r in results} - failed)


def test_an_expectation_the_evaluator_does_not_cover_runs_in_gx(tmp_path):
    import json

    suite = tmp_path / "suite.json"
    expectations = [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "id", "min_value": 0, "max_value": 5}},
    ]
    suite.write_text(json.dumps({"name": "t.fallback", "expectations": expectations}))
    runner = SuiteRunner(suite)
    batch = pa.record_batch({"id": pa.array([1, 2, 2, 9, None], pa.int32())})  # too narrow for the NIR guard
    runner.validate(batch)
    steps, fallback = runner._plan(batch.schema)
    assert [check is None for _, check in steps] == [True, False] and fallback is not None
    unique, between = runner.results()
    assert unique["type"] == "expect_column_values_to_be_unique" and unique["result"]["unexpected_count"] == 2
    assert between["result"] == {"element_count": 5, "unexpected_count": 1, "missing_count": 1}


# The cheap path: a batch whose extremes lie within the bounds is accepted without a per-row mask.
# These arrays sit on its edges (a bound reached, strictness, nulls, NaN, an integer column with a
# float bound, texts whose bytes outnumber their characters): the cheap path and the per-row path
# must give the same counts, whichever of them answers.
_EDGES = [
    ("expect_column_values_to_be_between", pa.array([1, 5, None, 9]), {"min_value": 1, "max_value": 9}),
    ("expect_column_values_to_be_between", pa.array([1, 5, 9]), {"min_value": 1, "max_value": 9, "strict_min": True}),
    ("expect_column_values_to_be_between", pa.array([1, 5, 9]), {"min_value": 1, "max_value": 9, "strict_max": True}),
    ("expect_column_values_to_be_between", pa.array([1, 5]), {"min_value": 1.5, "max_value": 5.0}),
    ("expect_column_values_to_be_between", pa.array([2, 5]), {"min_value": 1.5, "max_value": 5.0, "strict_max": True}),
    ("expect_column_values_to_be_between", pa.array([1.0, float("nan"), 3.0]), {"min_value": 0, "max_value": 3}),
    ("expect_column_values_to_be_between", pa.array([float("nan")] * 3), {"min_value": 0, "max_value": 3}),
    ("expect_column_values_to_be_between", pa.array([None, None], pa.int64()), {"min_value": 0, "max_value": 3}),
    ("expect_column_values_to_be_between", pa.array([0.5, 2.5]), {"min_value": 1, "max_value": 3}),
    ("expect_column_values_to_be_between", pa.array([float("inf")]), {"min_value": 1}),
    ("expect_column_value_lengths_to_be_between", pa.array(["ééé", "abcdef"]), {"min_value": 6, "max_value": 8}),
    ("expect_column_value_lengths_to_be_between", pa.array(["ééé", None]), {"min_value": 1, "max_value": 3}),
    ("expect_column_value_lengths_to_be_between", pa.array(["abc", "abcdef"]).slice(1), {"min_value": 6}),
    ("expect_column_value_lengths_to_equal", pa.array(["ééé", "abc"]), {"value": 3}),
    ("expect_column_value_lengths_to_equal", pa.array(["éé", "abcd"]), {"value": 4}),
    ("expect_column_values_to_not_contain_raw_nir", pa.array([10**12 - 1, None, 0]), {}),
    ("expect_column_values_to_not_contain_raw_nir", pa.array([295109912611193, 1]), {}),
    ("expect_column_values_to_not_contain_raw_nir", pa.array([2.95109912611193e14, float("nan")]), {}),
    ("expect_column_values_to_not_contain_raw_nir", pa.array(["295109912611193", "x"]).slice(1), {}),
    ("expect_column_values_to_not_contain_raw_nir", pa.array(["x", "295109912611193"]).slice(1), {}),
]


def _per_row(kind: str, values: list, kwargs: dict) -> tuple[bool, dict]:
    """The counts computed value by value in Python, comparing as numpy and Arrow do (in floats when
    either side is a float)."""
    from hdh_migration.nir import find_raw_nir

    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    present = [v for v, m in zip(values, missing, strict=True) if not m]
    if kind == "expect_column_values_to_not_contain_raw_nir":
        unexpected = [v for v in present if find_raw_nir(str(int(v)) if isinstance(v, float) else str(v))]
    elif kind == "expect_column_value_lengths_to_equal":
        unexpected = [v for v in present if len(v) != kwargs["value"]]
    else:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        measure = len if kind == "expect_column_value_lengths_to_be_between" else (lambda v: v)

        def inside(value) -> bool:
            for bound, strict, above in (
                (low, kwargs.get("strict_min"), True),
                (high, kwargs.get("strict_max"), False),
            ):
                if bound is None:
                    continue
                a, b = (
                    (float(value), float(bound))
                    if isinstance(value, float) or isinstance(bound, float)
                    else (value, bound)
                )
                if not ((a > b if strict else a >= b) if above else (a < b if strict else a <= b)):
                    return False
            return True

        unexpected = [v for v in present if not inside(measure(v))]
    counts = {"element_count": len(values), "unexpected_count": len(unexpected), "missing_count": sum(missing)}
    return not unexpected, counts


@pytest.mark.parametrize("kind,array,kwargs", _EDGES, ids=lambda v: v if isinstance(v, str) else None)
def test_the_cheap_path_counts_as_the_per_row_path_does(kind, array, kwargs):
    from hdh_migration.validation import PRIVACY_EXPECTATION, native_check, privacy_guard

    batch = pa.record_batch([array], names=["C"])
    if kind == PRIVACY_EXPECTATION:
        check = privacy_guard("C")[1]
    else:
        check = native_check(kind, {"column": "C", "mostly": 1.0, **kwargs}, batch.schema)
    assert check(batch) == _per_row(kind, array.to_pylist(), kwargs), (kind, array.to_pylist(), kwargs)
