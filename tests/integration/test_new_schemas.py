"""Real SNDS tables the demo does not use move by configuration alone: every domain committed and cut over.

tests/data/schema-snds holds four schemas copied from schema-snds (MPL-2.0): T_SSRaaB (no year column,
only year-months), T_HADaaB, NS_PRS_F and ER_UCD_F (no primaryKey in its schema: the catalogue gives it
one). tests/data/catalogue/new_tables.yaml adds them to the tests' catalogue: ER_UCD_F into dcir, and the
domains dcirs, pmsi_had and pmsi_ssr, whose tables are yearly families (T_SSR22B, T_SSR23B: the year in
the table's name). Generated data, then dag.test() of every partition and cutover.
"""

from __future__ import annotations

import pytest
from conftest import add_new_tables, write_catalogue
from test_cutover import _cutover

DOMAINS = ["dcir", "dcirs", "pmsi_had", "pmsi_ssr"]
NEW_TABLES = {"dcir": {"ER_UCD_F"}, "dcirs": {"NS_PRS_F"}, "pmsi_had": {"T_HADaaB"}, "pmsi_ssr": {"T_SSRaaB"}}


@pytest.mark.timeout(2400)  # six dag.test() runs and four cutovers; minutes on a loaded 2-core machine
def test_real_schemas_added_by_configuration_migrate_without_quarantine_and_cut_over(migration):
    from hdh_migration.catalogue import cached_catalogue

    def new_tables_one_month_each(raw: dict) -> None:
        add_new_tables(raw)
        for name in ("dcir", "dcirs"):  # one month of each claims domain is enough; the yearly families keep both
            raw["domains"][name]["first_partition"] = raw["domains"][name]["cutover_partition"]

    write_catalogue(migration.catalogue_path, migration.name, new_tables_one_month_each)
    cached_catalogue.cache_clear()
    catalogue = migration.catalogue
    for domain, tables in NEW_TABLES.items():
        assert tables <= {t.name for t in catalogue.domain(domain).tables}
    migration.seed(domains=["beneficiaires", *DOMAINS])
    # PMSI HAD and SSR are yearly families: one source table per year, the year in its name
    from hdh_migration.source import partitions_in

    ssr = catalogue.domain("pmsi_ssr").table("T_SSRaaB")
    assert ssr.source_name == "T_SSR{aa}B"
    assert [o.name for o in migration.source.list_objects("pmsi_ssr/T_SSR23B/", "parquet")] == [
        "pmsi_ssr/T_SSR23B/part-00000.parquet",
        "pmsi_ssr/T_SSR23B/part-00001.parquet",
    ]
    for table in (ssr, catalogue.domain("pmsi_had").table("T_HADaaB")):
        assert partitions_in(migration.source, table) == {"2022", "2023"}

    for name in DOMAINS:
        domain = catalogue.domain(name)
        for partition in domain.partitions():
            run = migration.run(name, partition)
            assert str(run.state) == "success", (name, partition)
        states = {
            (t.name, p): migration.ledger.get(name, t.name, p).state for t in domain.tables for p in domain.partitions()
        }
        assert set(states.values()) == {"committed"}, states
    assert migration.target_keys("_quarantine/") == []
    manifest = migration.target.get_json("_manifests/pmsi_ssr/T_SSRaaB/SOR_ANN=2023.json")
    assert manifest["rows"] == 300 and len(manifest["files"]) == 2
    assert [o["name"] for o in manifest["source_objects"]] == [
        "pmsi_ssr/T_SSR23B/part-00000.parquet",
        "pmsi_ssr/T_SSR23B/part-00001.parquet",
    ]
    # the target's layout is the table's, whatever the source's: one folder per year under T_SSRaaB
    files = sorted(manifest["files"], key=lambda f: f["key"])
    assert migration.target_keys("pmsi_ssr/T_SSRaaB/SOR_ANN=2023/") == [f["key"] for f in files]
    assert [f["source"] for f in files] == [
        "pmsi_ssr/T_SSR23B/part-00000.parquet",
        "pmsi_ssr/T_SSR23B/part-00001.parquet",
    ]
    assert all(f["key"].startswith("pmsi_ssr/T_SSRaaB/SOR_ANN=2023/part-0000") for f in files)

    for name in DOMAINS:
        run = _cutover(migration, name)
        assert str(run.state) == "success", name
        record = migration.target.get_json(f"_cutover/{name}.json")
        assert record["state"] == "cut_over" and NEW_TABLES[name] <= {e["table"] for e in record["entries"]}, name
    assert {d: migration.ledger.domain_state(d) for d in DOMAINS} == dict.fromkeys(DOMAINS, "cut_over")
