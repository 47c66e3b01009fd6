"""A table that is not in the demo moves with a catalogue entry, its schema file and a generated suite."""

from __future__ import annotations

import json

from hdh_migration.suites import write_suite

ER_UCD_F = {
    "name": "ER_UCD_F",
    "title": "Prestations de médicaments en sus (UCD) - extrait pour le test",
    "missingValues": [""],
    "fields": [
        {"name": "DCT_ORD_NUM", "type": "integer", "length": "9"},
        {"name": "FLX_DIS_DTD", "type": "date", "length": "8"},
        {"name": "FLX_EMT_NUM", "type": "integer", "length": "2"},
        {"name": "FLX_TRT_DTD", "type": "date", "length": "8"},
        {"name": "ORG_CLE_NUM", "type": "string", "length": "9"},
        {"name": "UCD_UCD_COD", "type": "string", "length": "7"},
        {"name": "UCD_DLV_NBR", "type": "integer", "length": "5", "constraints": {"minimum": 0}},
        {"name": "UCD_TOP_UCD", "type": "boolean", "length": "1"},
        {"name": "UCD_ACT_MNT", "type": "number", "length": "9,2"},
    ],
    "primaryKey": ["DCT_ORD_NUM", "FLX_DIS_DTD", "FLX_EMT_NUM", "FLX_TRT_DTD", "ORG_CLE_NUM"],
}


def test_a_table_outside_the_demo_is_configuration_only(migration, tmp_path):
    from conftest import write_catalogue

    from hdh_migration.catalogue import cached_catalogue

    schema = tmp_path / "ER_UCD_F.json"
    schema.write_text(json.dumps(ER_UCD_F, ensure_ascii=False))

    def add_table(raw):
        raw["domains"]["dcir"]["tables"]["ER_UCD_F"] = {
            "format": "parquet",
            "partition_column": "FLX_DIS_DTD",
            "primary_key": ER_UCD_F["primaryKey"],
            "schema": str(schema),
            "suite": str(tmp_path / "suites" / "ER_UCD_F.json"),
        }

    write_catalogue(migration.catalogue_path, migration.name, add_table)
    cached_catalogue.cache_clear()
    table = migration.catalogue.domain("dcir").table("ER_UCD_F")
    assert write_suite(table) is True
    migration.seed(domains=["dcir"])

    run = migration.run("dcir", "2024-02-01")
    assert str(run.state) == "success"
    manifest = migration.target.get_json("_manifests/dcir/ER_UCD_F/FLX_DIS_DTD=2024-02-01.json")
    assert manifest["rows"] > 0 and len(manifest["files"]) == 2
    assert migration.ledger.get("dcir", "ER_UCD_F", "2024-02-01").state == "committed"
    checked = {r["type"] for r in manifest["validation"]["results"]}
    assert "expect_column_values_to_not_contain_raw_nir" in checked
    assert "expect_compound_columns_to_be_unique_across_partition" in checked
