"""Suites: generated from the schema files, hand-written parts kept, every suite loadable by GX."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from conftest import CATALOGUE, DEMO_CATALOGUE

from hdh_migration.catalogue import load_catalogue
from hdh_migration.suites import GENERATED, PRIVACY_EXPECTATION, write_suite

ROOT = Path(__file__).resolve().parents[2]


def _tables():
    """The deployed plan's tables (whatever the user's catalogue holds) and the tests' own."""
    return [t for path in (DEMO_CATALOGUE, CATALOGUE) for d in load_catalogue(path).domains for t in d.tables]


def test_committed_suites_are_up_to_date_with_their_schemas(tmp_path):
    for table in _tables():
        copy = tmp_path / f"{table.name}.json"
        shutil.copy(table.suite_path, copy)
        assert write_suite(dataclasses.replace(table, suite_path=copy)) is False, (
            f"{table.suite_path} is stale: run `python -m hdh_migration suites`"
        )


def test_every_table_has_hand_written_rules_and_a_nir_guard_on_every_column_that_can_hold_one():
    from hdh_migration.schema import load_table_schema

    for table in _tables():
        suite = json.loads(Path(table.suite_path).read_text())
        hand_written = [e for e in suite["expectations"] if e["meta"]["hdh_origin"] != GENERATED]
        assert hand_written, f"{table.name} has no hand-written expectation"
        guarded = {e["kwargs"]["column"] for e in suite["expectations"] if e["type"] == PRIVACY_EXPECTATION}
        capable = {
            c.name
            for c in load_table_schema(table.schema_path).columns
            if c.type in ("string", "yearmonth", "integer", "number")  # text, 64-bit integers, doubles
        }
        assert guarded == capable, table.name


def test_regeneration_after_a_schema_change_keeps_the_hand_written_part(tmp_path):
    table = next(t for t in _tables() if t.name == "T_MCOaaB")
    schema = json.loads(Path(table.schema_path).read_text())
    schema["fields"].append({"name": "NEW_COD", "type": "string", "length": "5"})
    (tmp_path / "T_MCOaaB.json").write_text(json.dumps(schema))
    suite_copy = tmp_path / "suite.json"
    shutil.copy(table.suite_path, suite_copy)
    before = json.loads(suite_copy.read_text())

    changed = dataclasses.replace(table, schema_path=tmp_path / "T_MCOaaB.json", suite_path=suite_copy)
    assert write_suite(changed) is True
    after = json.loads(suite_copy.read_text())

    def hand(doc):
        return [e for e in doc["expectations"] if e["meta"]["hdh_origin"] != GENERATED]

    assert hand(after) == hand(before)
    columns = next(e for e in after["expectations"] if e["type"] == "expect_table_columns_to_match_ordered_list")
    assert columns["kwargs"]["column_list"][-1] == "NEW_COD"
    assert {"type": PRIVACY_EXPECTATION, "kwargs": {"column": "NEW_COD"}, "meta": {"hdh_origin": GENERATED}} in after[
        "expectations"
    ]


def test_every_suite_loads_in_gx_with_all_its_expectations():
    from hdh_migration.validation import SuiteRunner

    for table in _tables():
        runner = SuiteRunner(table.suite_path)
        assert len(runner.suite.expectations) == len(json.loads(Path(table.suite_path).read_text())["expectations"])
