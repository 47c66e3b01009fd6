"""Generated data passes the full suite of every table: the demo's (schemas/), and the real SNDS tables
of tests/data/schema-snds added by configuration alone. A failing expectation here is a generator that
ignores the plan (keys, nomenclatures, plausible ranges), or a rule a real table would fail too."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import DEMO_CATALOGUE, add_new_tables, write_catalogue

from hdh_migration.catalogue import load_catalogue
from hdh_migration.validation import SuiteRunner, partition_parameters
from hdh_synthetic import generate_file

ROWS, FILES = 2000, 2  # the demo's volume: 2000 rows is where the keys of a narrow column collide


def _new_tables_catalogue(tmp_path_factory):
    return load_catalogue(write_catalogue(tmp_path_factory.mktemp("new") / "domains.yaml", "new", add_new_tables))


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    return {"demo": load_catalogue(DEMO_CATALOGUE), "new": _new_tables_catalogue(tmp_path_factory)}


def _failures(catalogue, domain, table) -> dict[str, list[str]]:
    failing = {}
    for partition in domain.partitions():
        runner = SuiteRunner(table.suite_path, partition_parameters(domain.grain, partition))
        files = [
            generate_file(catalogue, table, partition, i, seed=42, rows_per_partition=ROWS, files_per_partition=FILES)
            for i in range(FILES)
        ]
        for arrow in files:
            for batch in arrow.to_batches():
                runner.validate(batch)
        bad = sorted(f"{r['type']}({r['kwargs'].get('column', '')})" for r in runner.results() if not r["success"])
        everything = pa.concat_tables(files)
        if table.primary_key:
            keys = everything.group_by(list(table.primary_key)).aggregate([]).num_rows
            if keys != everything.num_rows:
                bad.append(f"primary key {list(table.primary_key)}: {everything.num_rows - keys} duplicates")
        if bad:
            failing[partition] = bad
    return failing


@pytest.mark.parametrize("which", ["demo", "new"])
def test_every_table_passes_its_generated_and_hand_written_expectations(catalogues, which):
    catalogue = catalogues[which]
    if which == "demo":
        tables = [(d, t) for d in catalogue.domains for t in d.tables]
    else:
        tables = [(d, t) for d in catalogue.domains for t in d.tables if "schema-snds" in str(t.schema_path)]
        assert sorted(t.name for _, t in tables) == ["ER_UCD_F", "NS_PRS_F", "T_HADaaB", "T_SSRaaB"]
    failing = {f"{d.name}.{t.name}": f for d, t in tables if (f := _failures(catalogue, d, t))}
    assert failing == {}


def test_the_yearmonth_parameter_matches_the_months_of_the_partition_at_every_grain():
    import re

    def matches(grain: str, partition: str) -> list[str]:
        regex = partition_parameters(grain, partition)["partition_yearmonth_regex"]
        texts = ["202212", "202301", "202306", "202312", "202313", "202401", "202402", "202406", "2024021"]
        return [t for t in texts if re.fullmatch(regex, t)]

    assert matches("yearly", "2023") == ["202301", "202306", "202312"]
    assert matches("monthly", "2024-02-01") == ["202402"]
    assert matches("snapshot", "2024-06-30") == ["202406"]
