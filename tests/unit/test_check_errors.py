"""The checks on their error paths: sentinel dates compared in their unit, a check that raises reported
without its value, a raw-NIR guard no suite can weaken, and configuration errors that name the file."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pandas as pd
import pyarrow as pa
import pytest

from hdh_migration.errors import ConfigurationError, StructuralError
from hdh_migration.validation import PRIVACY_EXPECTATION, SuiteRunner, blocking_failures

RAW_NIR = "295109912611193"
SENTINELS = [dt.date(1600, 1, 1), dt.date(2024, 1, 15), dt.date(2999, 12, 31), None]


def _suite(tmp_path, expectations, name="t.errors"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}))
    return path


def _by_column(runner) -> dict:
    return {(r["type"], r["kwargs"].get("column") or r["kwargs"].get("column_A")): r for r in runner.results()}


def test_sentinel_dates_are_compared_in_their_own_unit_and_agree_with_gx(tmp_path):
    parameters = {"partition_start": pd.Timestamp("2024-01-01"), "partition_end": pd.Timestamp("2024-01-31")}
    bounds = {"min_value": {"$PARAMETER": "partition_start"}, "max_value": {"$PARAMETER": "partition_end"}}
    suite = _suite(
        tmp_path,
        [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "DAY", **bounds}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "STAMP", **bounds}},
            {
                "type": "expect_column_pair_values_a_to_be_greater_than_b",
                "kwargs": {"column_A": "STAMP", "column_B": "DAY", "or_equal": True,
                           "ignore_row_if": "either_value_is_missing"},
            },
        ],
    )  # fmt: skip
    stamps = [None if d is None else dt.datetime.combine(d, dt.time(12)) for d in SENTINELS]
    batch = pa.record_batch({"DAY": pa.array(SENTINELS, pa.date32()), "STAMP": pa.array(stamps, pa.timestamp("ms"))})
    native, reference = SuiteRunner(suite, parameters), SuiteRunner(suite, parameters, native=False)
    assert all(check is not None for _, check in native._plan(batch.schema)[0]), "all evaluated in Arrow"
    native.validate(batch)
    reference.validate(batch)
    assert native.results() == reference.results()
    results = _by_column(native)
    for column in ("DAY", "STAMP"):
        assert results[("expect_column_values_to_be_between", column)]["result"] == {
            "element_count": 4,
            "unexpected_count": 2,  # 1600-01-01 and 2999-12-31
            "missing_count": 1,
        }
    assert results[("expect_column_pair_values_a_to_be_greater_than_b", "STAMP")]["success"] is True


@pytest.mark.parametrize(("strict", "passing"), [(False, [True, False]), (True, [True, False])])
def test_a_bound_finer_than_the_column_unit_keeps_the_comparison_exact(tmp_path, strict, passing):
    # Values 10:00:00.000 and 10:00:00.001 (ms); the bound 10:00:00.000500 falls between them.
    bound = pd.Timestamp("2024-01-01 10:00:00.000500")
    values = pa.array([dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 1, 10, 0, 0, 1000)], pa.timestamp("ms"))
    batch = pa.record_batch({"STAMP": values})
    for kwargs, expected in (
        ({"max_value": {"$PARAMETER": "b"}, "strict_max": strict}, passing),
        ({"min_value": {"$PARAMETER": "b"}, "strict_min": strict}, [not p for p in passing]),
    ):
        suite = _suite(
            tmp_path, [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "STAMP", **kwargs}}]
        )
        native, reference = SuiteRunner(suite, {"b": bound}), SuiteRunner(suite, {"b": bound}, native=False)
        native.validate(batch)
        reference.validate(batch)
        assert native.results() == reference.results()
        assert native.results()[0]["result"]["unexpected_count"] == expected.count(False)


def test_a_check_that_raises_is_a_structural_error_naming_the_rule_never_the_value(tmp_path):
    far = 110_000_000  # days after 1970: a date32, beyond timestamp[us]
    suite = _suite(
        tmp_path,
        [
            {
                "type": "expect_column_pair_values_a_to_be_greater_than_b",
                "kwargs": {"column_A": "DAY", "column_B": "STAMP", "ignore_row_if": "either_value_is_missing"},
            }
        ],
    )
    batch = pa.record_batch(
        {"DAY": pa.array([far], pa.date32()), "STAMP": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us"))}
    )
    with pytest.raises(StructuralError) as raised:
        SuiteRunner(suite).validate(batch)
    error = raised.value
    assert str(error) == (
        "expect_column_pair_values_a_to_be_greater_than_b(DAY,STAMP) could not be evaluated on a batch of 1 rows "
        "(ArrowInvalid), so the object is not checked (rule: expect_column_pair_values_a_to_be_greater_than_b)"
    )
    assert error.expectation == "expect_column_pair_values_a_to_be_greater_than_b"
    assert error.__cause__ is None and error.__suppress_context__, "the library's message is not chained"


def test_the_nir_guard_ignores_mostly_and_row_conditions_and_covers_columns_the_suite_forgot(tmp_path):
    suite = _suite(
        tmp_path,
        [
            {"type": PRIVACY_EXPECTATION, "kwargs": {"column": "TEXT", "mostly": 0.01}},
            {
                "type": PRIVACY_EXPECTATION,
                "kwargs": {"column": "CODE", "row_condition": 'CODE!="x"', "condition_parser": "pandas"},
            },
        ],
    )
    rows = 100
    batch = pa.record_batch(
        {
            "TEXT": pa.array([f"vu {RAW_NIR}"] + ["rien"] * (rows - 1)),
            "CODE": pa.array([RAW_NIR] + ["x"] * (rows - 1)),
            "AMOUNT": pa.array([int(RAW_NIR)] + [7] * (rows - 1), pa.int64()),
            "RATE": pa.array([float(RAW_NIR)] + [0.5] * (rows - 1), pa.float64()),
            "PRICE": pa.array([decimal.Decimal(RAW_NIR)] + [decimal.Decimal(1)] * (rows - 1), pa.decimal128(17, 2)),
            "SMALL": pa.array(list(range(rows)), pa.int32()),  # 10 digits at most: cannot hold a NIR
        }
    )
    runner = SuiteRunner(suite)
    runner.validate(batch)
    guards = {r["kwargs"]["column"]: r for r in runner.results() if r["type"] == PRIVACY_EXPECTATION}
    assert sorted(guards) == ["AMOUNT", "CODE", "PRICE", "RATE", "TEXT"], "added where the suite forgot"
    for column, result in guards.items():
        assert result["kwargs"] == {"column": column}, "the suite's mostly and row_condition are not applied"
        assert result["success"] is False and result["result"]["unexpected_count"] == 1, column
    assert len(blocking_failures(runner.results(), waived={f"{PRIVACY_EXPECTATION}(TEXT)"})) == 5


def test_a_privacy_result_with_any_unexpected_row_blocks_whatever_its_success_says():
    lenient = {"type": PRIVACY_EXPECTATION, "kwargs": {"column": "T", "mostly": 0.5}, "success": True,
               "result": {"element_count": 10, "unexpected_count": 1}}  # fmt: skip
    other = {**lenient, "type": "expect_column_values_to_not_be_null"}
    assert blocking_failures([lenient, other], waived=set()) == [lenient]


def test_a_suite_with_an_unknown_expectation_type_is_a_configuration_error_naming_file_and_type(tmp_path):
    suite = _suite(tmp_path, [{"type": "expect_column_values_to_be_nul", "kwargs": {"column": "A"}}])
    with pytest.raises(ConfigurationError, match="unknown expectation type") as raised:
        SuiteRunner(suite)
    assert str(suite) in str(raised.value) and "expect_column_values_to_be_nul" in str(raised.value)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match=f"suite file {broken}: not valid JSON"):
        SuiteRunner(broken)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid UTF-8 JSON"),
        ('{"name": "X"}', "no 'fields' list"),
        ('{"fields": [{"type": "string"}]}', "field #1 has no 'name'"),
        ('{"fields": [{"name": "A", "type": "text"}]}', "column A: unsupported Table Schema type 'text'"),
        ('{"fields": [{"name": "A", "type": "string"}, {"name": "A", "type": "date"}]}', "column(s) A declared twice"),
    ],
)
def test_a_bad_schema_file_is_a_configuration_error_naming_the_file(tmp_path, text, message):
    from hdh_migration.schema import load_table_schema

    path = tmp_path / "T.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        load_table_schema(path)
    assert str(raised.value).startswith(f"schema file {path}: ") and message in str(raised.value)
    assert "Fix" in str(raised.value)


def test_which_types_can_hold_a_nir_and_the_numeric_fast_path():
    from hdh_migration.nir import can_hold_nir, raw_nir_mask

    capable = [pa.string(), pa.large_string(), pa.int64(), pa.uint64(), pa.float64(), pa.decimal128(15, 0)]
    incapable = [pa.int32(), pa.int16(), pa.float32(), pa.decimal128(12, 2), pa.date32(), pa.bool_()]
    assert all(can_hold_nir(t) for t in capable) and not any(can_hold_nir(t) for t in incapable)
    assert raw_nir_mask(pa.array([int(RAW_NIR), 12, None, -int(RAW_NIR)], pa.int64())).tolist() == [
        True, False, False, True,
    ]  # fmt: skip
    assert raw_nir_mask(pa.array([float(RAW_NIR), 1.5, float("nan")])).tolist() == [True, False, False]
    assert not raw_nir_mask(pa.array(range(10**6), pa.int64())).any()
