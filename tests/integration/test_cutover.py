"""The cutover, rollback and verify through Airflow's dag.test(), against real Azurite, SeaweedFS and ledger."""

from __future__ import annotations

import hashlib
import json
import os

import sqlalchemy as sa

from hdh_migration.cli import main
from hdh_migration.layout import manifest_key, partition_dir

ROWS = 200
RECORD = "_cutover/{}.json"


def _states(run) -> dict[str, str]:
    states = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(str(ti.state))
    return {task: ",".join(sorted(s)) for task, s in states.items()}


def _cutover(migration, domain: str, by: str = "test-operator"):
    from hdh_migration.dag_factory import build_cutover_dag

    return build_cutover_dag(migration.catalogue.domain(domain)).test(run_conf={"by": by})


def _verify_dag(migration, domain: str, deep: bool):
    from hdh_migration.dag_factory import build_verify_dag

    return build_verify_dag(migration.catalogue.domain(domain)).test(run_conf={"deep": deep})


def _asset_events(name: str, run_id: str) -> list[dict]:
    """The extras of the events of an asset that one DAG run emitted, from Airflow's metadata database."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [
            dict(event.extra)
            for event in session.scalars(
                sa.select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name == name, AssetEvent.source_run_id == run_id)
            )
        ]


def _refusal(migration, domain: str, run_id: str) -> str:
    (event,) = [e for e in migration.ledger.events(domain) if e["kind"] == "cutover_refused" and e["run_id"] == run_id]
    return event["detail"]


def _manifest(migration, domain: str, table: str, partition: str) -> tuple[str, bytes]:
    column = migration.catalogue.domain(domain).table(table).partition_column
    key = manifest_key(domain, table, column, partition)
    return key, migration.target_bytes(key)


def _chain_root(domain: str, entries: list[dict]) -> str:
    """The documented hash chain, recomputed here without the package's code."""
    link = hashlib.sha256(f"hdh-migration cutover chain v1\n{domain}".encode()).hexdigest()
    for entry in entries:
        body = {k: v for k, v in entry.items() if k != "link_sha256"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        link = hashlib.sha256(link.encode() + b"\n" + canonical).hexdigest()
    return link


def test_cutover_is_refused_for_a_missing_partition_then_triggered_and_done_once_complete(migration):
    migration.seed(domains=["causes_deces"], rows_per_partition=ROWS)
    first = migration.run("causes_deces", "2022")
    assert str(first.state) == "success", _states(first)
    assert _states(first)["announce_cutover_partition"] == "skipped", "2022 is not the planned cutover partition"
    assert _asset_events("hdh_cutover_partition_committed__causes_deces", first.run_id) == []

    refused = _cutover(migration, "causes_deces")
    assert str(refused.state) == "failed"
    assert _states(refused)["check_completeness"] == "failed"
    assert _states(refused)["freeze_domain"] == "upstream_failed"
    message = _refusal(migration, "causes_deces", refused.run_id)
    assert "cutover refused at check_completeness: 1 problem(s)" in message
    assert "domain=causes_deces table=KI_CCI_R partition=2023: not committed" in message
    assert "Run hdh_transfer__causes_deces for partition 2023" in message
    assert migration.ledger.domain_state("causes_deces") == "transferring"
    assert migration.target_keys("_cutover/") == []
    assert _asset_events("hdh_sovereign__causes_deces", refused.run_id) == []

    cutover_partition = migration.run("causes_deces", "2023")
    assert str(cutover_partition.state) == "success", _states(cutover_partition)
    # This event is what the asset schedule of hdh_cutover__causes_deces waits for.
    assert _asset_events("hdh_cutover_partition_committed__causes_deces", cutover_partition.run_id) == [{}]
    from hdh_migration.dag_factory import build_cutover_dag

    schedule = build_cutover_dag(migration.catalogue.domain("causes_deces")).timetable.asset_condition
    assert [a.name for a in schedule.objects] == ["hdh_cutover_partition_committed__causes_deces"]

    done = _cutover(migration, "causes_deces")
    assert str(done.state) == "success", _states(done)
    assert set(_states(done).values()) == {"success"}
    record = migration.target.get_json(RECORD.format("causes_deces"))
    assert [(e["table"], e["partition"]) for e in record["entries"]] == [("KI_CCI_R", "2022"), ("KI_CCI_R", "2023")]
    assert migration.ledger.domain_state("causes_deces") == "cut_over"


def test_complete_domain_is_cut_over_recorded_announced_and_frozen(migration, capfd):
    migration.seed(domains=["beneficiaires"], rows_per_partition=ROWS)
    transfer = migration.run("beneficiaires", "2024-06-30")
    assert str(transfer.state) == "success", _states(transfer)
    assert _asset_events("hdh_cutover_partition_committed__beneficiaires", transfer.run_id) == [{}]

    run = _cutover(migration, "beneficiaires", by="dr.martin")
    assert str(run.state) == "success", _states(run)
    assert migration.ledger.domain_state("beneficiaires") == "cut_over"

    record = migration.target.get_json(RECORD.format("beneficiaires"))
    key, manifest_bytes = _manifest(migration, "beneficiaires", "IR_BEN_R", "2024-06-30")
    manifest = json.loads(manifest_bytes)
    (entry,) = record["entries"]
    assert entry["manifest_key"] == key
    assert entry["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    sources = {o["name"]: o for o in manifest["source_objects"]}
    assert entry["files"] == [
        {
            **{k: f[k] for k in ("key", "size", "sha256", "rows")},
            "source": {k: sources[f["source"]][k] for k in ("name", "etag", "sha256")},
        }
        for f in manifest["files"]
    ]
    assert all(f["source"]["sha256"] == f["sha256"] for f in entry["files"])  # parquet: a byte copy of Azure's
    for file in entry["files"]:
        assert hashlib.sha256(migration.target_bytes(file["key"])).hexdigest() == file["sha256"]
    assert record["rows"] == manifest["rows"] == sum(f["rows"] for f in entry["files"]) > 0
    assert record["root_sha256"] == _chain_root("beneficiaires", record["entries"]) == entry["link_sha256"]
    assert record["state"] == "cut_over" and record["cut_over_by"] == "dr.martin"
    assert record["dag_id"] == "hdh_cutover__beneficiaires" and record["run_id"] == run.run_id
    (cutover,) = record["history"]
    assert cutover["action"] == "cutover" and cutover["root_sha256"] == record["root_sha256"]
    assert cutover["previous_sha256"] is None
    (anchored,) = migration.ledger.cutover_history("beneficiaires")
    assert anchored["entry_sha256"] == cutover["entry_sha256"] and anchored["by"] == "dr.martin"

    (announced,) = _asset_events("hdh_sovereign__beneficiaires", run.run_id)
    assert announced["state"] == "cut_over" and announced["root_sha256"] == record["root_sha256"]
    assert announced["bucket"] == migration.name and announced["prefix"] == "beneficiaires/"
    assert announced["record_key"] == "_cutover/beneficiaires.json"

    # A write after the cutover is refused, before anything moves (a backfill run takes the same path).
    prefix = partition_dir("beneficiaires", "IR_BEN_R", "snapshot", "2024-06-30")
    before = {k: migration.target.head(k)["ETag"] for k in migration.target_keys(prefix)}
    capfd.readouterr()
    again = migration.run("beneficiaires", "2024-06-30", force=True)
    assert str(again.state) == "failed"
    assert _states(again)["plan_partition"] == "failed"
    out, err = capfd.readouterr()
    assert "FrozenDomainError" in out + err and "the domain is cut over" in out + err
    assert {k: migration.target.head(k)["ETag"] for k in migration.target_keys(prefix)} == before
    assert migration.target_bytes(key) == manifest_bytes

    # Triggering the cutover again is a no-op: every task skips, no second history entry.
    repeat = _cutover(migration, "beneficiaires")
    assert str(repeat.state) == "success" and set(_states(repeat).values()) == {"skipped"}
    assert len(migration.target.get_json(RECORD.format("beneficiaires"))["history"]) == 1

    # A lost ledger keeps the freeze: reindex restores it from the record.
    from hdh_migration.ledger import cutover_history_table, domains_table

    with migration.ledger.engine.begin() as conn:
        conn.execute(cutover_history_table.delete())
        conn.execute(domains_table.delete())
    assert main(["reindex"]) == 0
    assert migration.ledger.domain_state("beneficiaires") == "cut_over"
    assert [h["entry_sha256"] for h in migration.ledger.cutover_history("beneficiaires")] == [cutover["entry_sha256"]]


def test_cutover_is_refused_for_a_quarantined_partition_and_status_shows_it(migration, capsys):
    migration.seed(domains=["beneficiaires"], rows_per_partition=ROWS)
    prefix = partition_dir("beneficiaires", "IR_BEN_R", "snapshot", "2024-06-30")
    first = migration.source.list_objects(prefix, "parquet")[0]
    migration.source.container_client.upload_blob(prefix + "part-00042.parquet", migration.source_bytes(first.name))
    assert str(migration.run("beneficiaires", "2024-06-30").state) == "failed"
    assert migration.ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30").state == "quarantined"

    refused = _cutover(migration, "beneficiaires")
    assert str(refused.state) == "failed"
    message = _refusal(migration, "beneficiaires", refused.run_id)
    assert "domain=beneficiaires table=IR_BEN_R partition=2024-06-30: quarantined" in message
    assert "expect_compound_columns_to_be_unique_across_partition" in message
    assert "rule: no failed or quarantined partition" in message and "record a waiver" in message
    assert migration.ledger.domain_state("beneficiaires") == "transferring"
    assert migration.target_keys("_cutover/") == []

    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = {row["domain"]: row for row in json.loads(capsys.readouterr().out)}["beneficiaires"]
    assert status["quarantined"] == [{"table": "IR_BEN_R", "partition": "2024-06-30"}]
    assert status["last_error"]["error"] == message  # the refusal came after the quarantine
    assert status["cutover"] is None and status["verify"] is None
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "beneficiaires: quarantined IR_BEN_R 2024-06-30" in out
    assert "beneficiaires: last error" in out and "cutover refused at check_completeness" in out


def test_cutover_is_refused_for_a_late_arriving_source_object_or_a_newer_snapshot(migration):
    from hdh_synthetic import add_late_rows

    migration.seed(domains=["beneficiaires"], rows_per_partition=ROWS)
    assert str(migration.run("beneficiaires", "2024-06-30").state) == "success"
    (late,) = add_late_rows(
        migration.catalogue, "beneficiaires", "2024-06-30", seed=7, rows_per_partition=ROWS, files_per_partition=2
    )
    newer = partition_dir("beneficiaires", "IR_BEN_R", "snapshot", "2024-09-30") + "part-00000.parquet"
    migration.source.container_client.upload_blob(newer, migration.source_bytes(late))

    refused = _cutover(migration, "beneficiaires")
    assert str(refused.state) == "failed"
    assert _states(refused)["check_completeness"] == "success"
    assert _states(refused)["reconcile_source"] == "failed"
    message = _refusal(migration, "beneficiaires", refused.run_id)
    assert f"domain=beneficiaires table=IR_BEN_R partition=2024-06-30 object={late}: arrived in Azure after" in message
    assert "rule: no late-arriving source object" in message
    assert 'trigger hdh_transfer__beneficiaires with {"partition": "2024-06-30"}' in message
    assert (
        "domain=beneficiaires table=IR_BEN_R partition=2024-09-30: a snapshot newer than the planned 2024-06-30"
        in message
    )
    assert "rule: snapshot tables are fresh" in message and "2 problem(s)" in message
    assert migration.ledger.domain_state("beneficiaires") == "transferring"
    assert migration.target_keys("_cutover/") == []


def test_rollback_needs_a_reason_returns_to_transferring_and_history_is_append_only(migration, capsys):
    migration.seed(domains=["beneficiaires"], rows_per_partition=ROWS)
    assert str(migration.run("beneficiaires", "2024-06-30").state) == "success"
    assert main(["cutover", "--local", "--domain", "beneficiaires", "--by", "alice"]) == 0
    assert "hdh_cutover__beneficiaires: cut over by alice" in capsys.readouterr().out

    assert main(["rollback", "--local", "--domain", "beneficiaires", "--reason", " oops ", "--by", "bob"]) == 2
    refused = capsys.readouterr().err.splitlines()
    assert len(refused) == 1 and "a rollback needs a reason of at least 10 characters" in refused[0]
    assert migration.ledger.domain_state("beneficiaires") == "cut_over"

    reason = "late IR_BEN_R deliveries announced by CNAM"
    assert main(["rollback", "--local", "--domain", "beneficiaires", "--reason", reason, "--by", "bob"]) == 0
    assert migration.ledger.domain_state("beneficiaires") == "transferring"
    record = migration.target.get_json(RECORD.format("beneficiaires"))
    assert record["state"] == "rolled_back"
    assert [(h["action"], h["by"], h.get("reason")) for h in record["history"]] == [
        ("cutover", "alice", None),
        ("rollback", "bob", reason),
    ]
    assert record["history"][1]["previous_sha256"] == record["history"][0]["entry_sha256"]
    assert record["history"][1]["root_sha256"] == record["root_sha256"]
    history = migration.ledger.cutover_history("beneficiaires")
    assert [(h["action"], h["by"], h["reason"]) for h in history] == [
        ("cutover", "alice", None),
        ("rollback", "bob", reason),
    ]
    rollback_run = history[1]["run_id"]
    (announced,) = _asset_events("hdh_sovereign__beneficiaires", rollback_run)
    assert announced["state"] == "rolled_back"
    assert main(["rollback", "--local", "--domain", "beneficiaires", "--reason", reason]) == 2  # not cut over any more
    assert "not cut over (state transferring)" in capsys.readouterr().err
    assert main(["verify", "--local", "--domain", "beneficiaires"]) == 2

    rerun = migration.run("beneficiaires", "2024-06-30")  # transfers may write again
    assert str(rerun.state) == "success", _states(rerun)
    assert main(["cutover", "--local", "--domain", "beneficiaires", "--by", "carol"]) == 0
    record = migration.target.get_json(RECORD.format("beneficiaires"))
    assert [h["action"] for h in record["history"]] == ["cutover", "rollback", "cutover"]
    assert [h["entry_sha256"] for h in migration.ledger.cutover_history("beneficiaires")] == [
        h["entry_sha256"] for h in record["history"]
    ]
    assert main(["verify", "--local", "--domain", "beneficiaires"]) == 0


def test_verify_reads_nothing_from_azure_and_catches_deleted_or_altered_objects(migration, monkeypatch, capsys):
    migration.seed(domains=["beneficiaires"], rows_per_partition=ROWS)
    assert str(migration.run("beneficiaires", "2024-06-30").state) == "success"
    assert str(_cutover(migration, "beneficiaires").state) == "success"
    from hdh_migration import cutover
    from hdh_migration.errors import IntegrityError

    record = migration.target.get_json(RECORD.format("beneficiaires"))
    victim = record["entries"][0]["files"][0]
    original = migration.target_bytes(victim["key"])
    target = migration.target

    with monkeypatch.context() as azure_gone:
        conn = json.loads(os.environ["AIRFLOW_CONN_HDH_AZURE_SOURCE"])
        conn["extra"]["connection_string"] = conn["extra"]["connection_string"].replace(
            os.environ.get("HDH_AZURITE_PORT", "10000"), "9"
        )
        azure_gone.setenv("AIRFLOW_CONN_HDH_AZURE_SOURCE", json.dumps(conn))

        report = cutover.verify("beneficiaires", deep=True)
        assert report == {
            "domain": "beneficiaires",
            "root_sha256": record["root_sha256"],
            "partitions": 1,
            "objects": 2,
            "bytes": sum(f["size"] for f in record["entries"][0]["files"]),
            "deep": True,
            "problems": 0,
        }
        run = _verify_dag(migration, "beneficiaires", deep=True)
        assert str(run.state) == "success", _states(run)

        target.delete_keys([victim["key"]])
        run = _verify_dag(migration, "beneficiaires", deep=False)
        assert str(run.state) == "failed"
        (event,) = [e for e in migration.ledger.events("beneficiaires") if e["kind"] == "verify_failed"]
        detail = json.loads(event["detail"])
        assert detail["problems"] == 1
        assert detail["first_problems"] == [
            f"domain=beneficiaires table=IR_BEN_R partition=2024-06-30 object={victim['key']}: missing from the "
            "sovereign store (rule: every object of the cutover record present)"
        ]

        # Same size, same checksum metadata, other bytes: only reading the bytes back can tell.
        altered = bytes(reversed(original))
        target.client.put_object(
            Bucket=target.bucket, Key=victim["key"], Body=altered, Metadata={"hdh-sha256": victim["sha256"]}
        )
        assert cutover.verify("beneficiaires", deep=False)["problems"] == 0
        capsys.readouterr()
        assert main(["verify", "--local", "--all"]) == 1
        out = capsys.readouterr().out
        assert f"object={victim['key']}: the bytes read back differ from the sha256 in the cutover record" in out
        assert ["causes_deces", "not", "cut", "over", "-", "-", "-", "-"] in [line.split() for line in out.splitlines()]

        target.client.put_object(
            Bucket=target.bucket, Key=victim["key"], Body=original, Metadata={"hdh-sha256": victim["sha256"]}
        )
        stray = partition_dir("beneficiaires", "IR_BEN_R", "snapshot", "2024-06-30") + "part-00099.parquet"
        target.client.put_object(Bucket=target.bucket, Key=stray, Body=original)
        try:
            cutover.verify("beneficiaires", deep=True)
        except IntegrityError as error:
            assert f"object={stray}: not in the cutover record (rule: nothing written after the cutover)" in str(error)
            assert str(error).count("\n- ") == 1
        else:
            raise AssertionError("a stray object after the cutover must fail verify")
        target.delete_keys([stray])

        edited = {**record, "rows": record["rows"]}
        edited["entries"] = [{**record["entries"][0], "rows": record["entries"][0]["rows"] + 1}]
        target.put_json(RECORD.format("beneficiaires"), edited)
        capsys.readouterr()
        assert main(["verify", "--local", "--domain", "beneficiaires"]) == 1
        out = capsys.readouterr().out
        assert "the entry does not match its link in the hash chain" in out
        assert "the root hash recomputed from the entries differs from the record's" in out

        target.put_json(RECORD.format("beneficiaires"), record)
        assert cutover.verify("beneficiaires", deep=True)["problems"] == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = {row["domain"]: row for row in json.loads(capsys.readouterr().out)}["beneficiaires"]
    assert status["state"] == "cut_over"
    assert status["verify"]["passed"] is True and status["verify"]["deep"] is True
    assert status["cutover"]["action"] == "cutover" and status["cutover"]["root_sha256"] == record["root_sha256"]
    assert status["last_error"] is None
