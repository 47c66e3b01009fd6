"""The Arrow evaluator of the suites gives GX's own results, on clean and on broken batches of every suite."""

from __future__ import annotations

import datetime as dt

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
