"""Expectation suites: the mechanical part is generated from the table's Table Schema file.

Each suite file ``expectations/<domain>/<TABLE>.json`` is a GX 1.x ExpectationSuite. Generated
expectations carry ``meta.hdh_origin = "generated"``; anything else in the file is hand-written
and survives regeneration untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

from hdh_migration.catalogue import Catalogue, Table
from hdh_migration.nir import can_hold_nir
from hdh_migration.schema import arrow_type, load_table_schema
from hdh_migration.validation import PRIVACY_EXPECTATION

GENERATED = "generated"


def _expectation(kind: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs, "meta": {"hdh_origin": GENERATED}}


def generated_expectations(table: Table) -> list[dict]:
    schema = load_table_schema(table.schema_path)
    snapshot_column = table.partition_column not in schema.column_names
    expectations = [_expectation("expect_table_columns_to_match_ordered_list", column_list=schema.column_names)]
    for name in table.primary_key:
        expectations.append(_expectation("expect_column_values_to_not_be_null", column=name))
    if not snapshot_column and table.partition_column not in table.primary_key:
        expectations.append(_expectation("expect_column_values_to_not_be_null", column=table.partition_column))
    for column in schema.columns:
        if can_hold_nir(arrow_type(column.type)):
            # Every column that can hold one (free text, codes, 13+ digit numbers): a raw NIR anywhere is
            # a privacy incident. The transfer adds this guard itself where a suite lacks it.
            expectations.append(_expectation(PRIVACY_EXPECTATION, column=column.name))
        if column.max_length:
            expectations.append(
                _expectation(
                    "expect_column_value_lengths_to_be_between", column=column.name, max_value=column.max_length
                )
            )
        constraints = column.constraints
        if column.type in ("integer", "number") and ("minimum" in constraints or "maximum" in constraints):
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    column=column.name,
                    min_value=constraints.get("minimum"),
                    max_value=constraints.get("maximum"),
                )
            )
        if constraints.get("enum"):
            expectations.append(
                _expectation("expect_column_values_to_be_in_set", column=column.name, value_set=constraints["enum"])
            )
    return expectations


def write_suite(table: Table) -> bool:
    """Regenerate the generated part of a table's suite; returns True when the file changed."""
    path = Path(table.suite_path)
    existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    hand_written = [e for e in existing.get("expectations", []) if (e.get("meta") or {}).get("hdh_origin") != GENERATED]
    document = {
        "name": f"{table.domain}.{table.name}",
        "expectations": generated_expectations(table) + hand_written,
        "meta": {"hdh_schema": Path(table.schema_path).name},
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def write_all(catalogue: Catalogue) -> list[Path]:
    return [Path(t.suite_path) for d in catalogue.domains for t in d.tables if write_suite(t)]
