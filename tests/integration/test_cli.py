"""The data engineers' commands against real servers: plan, status, reindex."""

from __future__ import annotations

import json

from hdh_migration.cli import main


def test_reindex_rebuilds_a_lost_ledger_from_the_manifests(migration, capsys):
    migration.seed(domains=["pmsi_mco"])
    assert str(migration.run("pmsi_mco", "2022").state) == "success"
    before = {(r.table_name, r.partition): (r.state, r.rows, r.bytes) for r in migration.ledger.partitions()}

    from hdh_migration.ledger import partitions_table

    with migration.ledger.engine.begin() as conn:
        conn.execute(partitions_table.delete())
    assert migration.ledger.partitions() == []

    assert main(["reindex"]) == 0
    after = {(r.table_name, r.partition): (r.state, r.rows, r.bytes) for r in migration.ledger.partitions()}
    assert after == before and len(after) == 2
    assert "2 committed partition(s)" in capsys.readouterr().out


def test_plan_and_status_report_partitions_objects_and_bytes(migration, capsys):
    summary = migration.seed(domains=["causes_deces"])
    assert main(["plan", "--domain", "causes_deces"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()[2:]]
    assert [(line[0], line[2], line[4]) for line in lines] == [
        ("causes_deces", "2022", "2"),
        ("causes_deces", "2023", "2"),
    ]
    planned_mb = sum(float(line[5]) for line in lines)
    assert abs(planned_mb - summary["causes_deces"]["bytes"] / 1e6) < 0.02

    assert str(migration.run("causes_deces", "2022").state) == "success"
    capsys.readouterr()  # the run's task logs
    assert main(["status", "--json"]) == 0
    status = {row["domain"]: row for row in json.loads(capsys.readouterr().out)}
    assert status["causes_deces"]["partitions_committed"] == 1
    assert status["causes_deces"]["partitions_expected"] == 2
    assert status["causes_deces"]["state"] == "transferring"
    assert status["causes_deces"]["rows"] > 0
