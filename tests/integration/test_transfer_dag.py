"""The transfer DAG through Airflow's dag.test(), against real Azurite, SeaweedFS and ledger databases."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pyarrow.parquet as pq
import pytest

from hdh_migration.layout import STAGING_PREFIX, is_run_key, manifest_key, partition_dir, run_token

CLEAN_PARTITIONS = [
    ("dcir", "2024-02-01"),
    ("pmsi_mco", "2023"),
    ("causes_deces", "2022"),
    ("beneficiaires", "2024-06-30"),
]


def _states(run) -> dict[str, str]:
    states = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(str(ti.state))
    return {task: ",".join(sorted(s)) for task, s in states.items()}


def _manifest(migration, domain: str, table: str, partition: str) -> dict | None:
    t = migration.catalogue.domain(domain).table(table)
    return migration.target.get_json(manifest_key(domain, table, t.partition_column, partition))


def _assert_committed_equal_to_source(migration, domain: str, partition: str) -> None:
    """Every table: manifest present, each final object equal to its source, nothing left in staging."""
    dom = migration.catalogue.domain(domain)
    for table in dom.tables:
        manifest = _manifest(migration, domain, table.name, partition)
        assert manifest is not None, f"{table.name}: no manifest"
        prefix = partition_dir(domain, table.name, table.partition_column, partition)
        listed = migration.source.list_objects(prefix, table.source_extension)
        assert [o["name"] for o in manifest["source_objects"]] == [o.name for o in listed]
        final_keys = migration.target_keys(prefix)
        assert final_keys == sorted(f["key"] for f in manifest["files"])
        assert len(final_keys) == len(listed)
        total_rows = 0
        for obj, entry in zip(listed, sorted(manifest["files"], key=lambda f: f["key"]), strict=True):
            landed = migration.target_bytes(entry["key"])
            assert hashlib.sha256(landed).hexdigest() == entry["sha256"]
            source_table = migration.read_source(domain, table.name, obj.name)
            if table.format == "parquet":
                assert entry["sha256"] == hashlib.sha256(migration.source_bytes(obj.name)).hexdigest()
            else:
                assert pq.read_table(io.BytesIO(landed)).equals(source_table)
            assert entry["rows"] == source_table.num_rows
            total_rows += source_table.num_rows
        assert manifest["rows"] == total_rows > 0
        record = migration.ledger.get(domain, table.name, partition)
        assert record.state == "committed" and record.rows == total_rows and record.bytes == manifest["bytes"]
    assert migration.target_keys(f"{STAGING_PREFIX}/") == []


@pytest.mark.parametrize(("domain", "partition"), CLEAN_PARTITIONS)
def test_clean_partition_is_copied_validated_committed_and_reconciled(migration, domain, partition):
    from hdh_migration.board import board_view

    migration.seed(domains=[domain])
    run = migration.run(domain, partition)
    assert str(run.state) == "success", _states(run)
    _assert_committed_equal_to_source(migration, domain, partition)

    dom = migration.catalogue.domain(domain)
    manifests = [_manifest(migration, domain, t.name, partition) for t in dom.tables]
    view = board_view(migration.catalogue, migration.ledger)
    (shown,) = [d for d in view["domains"] if d["domain"] == domain]
    source_bytes = sum(o["size"] for m in manifests for o in m["source_objects"])
    assert shown["partitions_committed"] == len(dom.tables)
    assert (shown["source_bytes_committed"], shown["source_bytes_expected"]) == (source_bytes, source_bytes)
    assert shown["partitions_of_unknown_size"] == shown["partitions_expected"] - len(dom.tables)
    # the throughput chart is aggregated per period: the bytes stored by this run's commits
    assert sum(p["bytes"] for p in view["throughput"]["points"]) == sum(m["bytes"] for m in manifests)
    assert (shown["partitions_in_flight"], view["in_flight"], view["problems"]) == (0, [], [])


@pytest.mark.parametrize("ledger_backend", ["postgres"], indirect=True)
def test_clean_partition_with_the_ledger_in_postgresql(migration):
    migration.seed(domains=["pmsi_mco"])
    run = migration.run("pmsi_mco", "2022")
    assert str(run.state) == "success", _states(run)
    assert migration.ledger.engine.dialect.name == "postgresql"
    _assert_committed_equal_to_source(migration, "pmsi_mco", "2022")


def test_rerun_of_a_committed_partition_is_a_no_op_unless_forced(migration):
    migration.seed(domains=["dcir"])
    assert str(migration.run("dcir", "2024-01-01").state) == "success"
    prefix = "dcir/"
    before = {k: migration.target.head(k)["LastModified"] for k in migration.target_keys(prefix)}
    attempts = migration.ledger.get("dcir", "ER_PRS_F", "2024-01-01").attempts

    run = migration.run("dcir", "2024-01-01")
    assert str(run.state) == "success"
    after = {k: migration.target.head(k)["LastModified"] for k in migration.target_keys(prefix)}
    assert after == before, "an unchanged committed partition must not be rewritten"
    assert migration.ledger.get("dcir", "ER_PRS_F", "2024-01-01").attempts == attempts
    kinds = [e["kind"] for e in migration.ledger.events("dcir")]
    assert kinds.count("unchanged") == 2  # both tables

    run = migration.run("dcir", "2024-01-01", force=True)
    assert str(run.state) == "success"
    after = migration.target_keys(prefix)
    assert len(after) == len(before) and not set(after) & set(before), "a forced rerun writes a set of its own"
    token = run_token(run.run_id)
    assert all(is_run_key(k, token) for k in after), "the old set is removed once the manifest names the new one"
    assert migration.ledger.get("dcir", "ER_PRS_F", "2024-01-01").attempts == attempts + 1
    _assert_committed_equal_to_source(migration, "dcir", "2024-01-01")


def test_crash_between_upload_and_manifest_is_repaired_by_the_next_run(migration):
    migration.seed(domains=["pmsi_mco"])
    crashed = migration.run("pmsi_mco", "2023", mark_success_pattern="commit_partition|reconcile_partition")
    assert _states(crashed)["commit_partition"] == "success"  # marked, never ran: the "crash"
    target = migration.target
    pending = target.client.list_multipart_uploads(Bucket=target.bucket, Prefix="pmsi_mco/").get("Uploads", [])
    assert pending, "the crashed run left its uploads unfinished under their final keys"
    assert migration.target_keys("pmsi_mco/") == [], "an unfinished upload is invisible"
    assert _manifest(migration, "pmsi_mco", "T_MCOaaB", "2023") is None
    # The crash hit mid-commit: one upload was completed, without a manifest; and a stray key.
    table = migration.catalogue.domain("pmsi_mco").table("T_MCOaaB")
    source_name = migration.source.list_objects("pmsi_mco/T_MCOaaB/SOR_ANN=2023/", table.source_extension)[0].name
    stray = partition_dir("pmsi_mco", "T_MCOaaB", "SOR_ANN", "2023") + "part-00077.parquet"
    for key in (pending[0]["Key"], stray):
        target.client.put_object(Bucket=target.bucket, Key=key, Body=migration.source_bytes(source_name))

    run = migration.run("pmsi_mco", "2023")
    assert str(run.state) == "success", _states(run)
    _assert_committed_equal_to_source(migration, "pmsi_mco", "2023")


def test_changed_source_object_is_detected_retransferred_and_recorded(migration):
    from hdh_synthetic import add_late_rows

    migration.seed(domains=["dcir"])
    assert str(migration.run("dcir", "2024-03-01").state) == "success"
    rows_before = _manifest(migration, "dcir", "ER_PRS_F", "2024-03-01")["rows"]

    late = add_late_rows(
        migration.catalogue, "dcir", "2024-03-01", seed=7, rows_per_partition=300, files_per_partition=2
    )
    run = migration.run("dcir", "2024-03-01")
    assert str(run.state) == "success", _states(run)
    manifest = _manifest(migration, "dcir", "ER_PRS_F", "2024-03-01")
    assert manifest["rows"] > rows_before
    late_names = late if isinstance(late, list) else [late]
    assert set(late_names) <= {o["name"] for o in manifest["source_objects"]} | {
        o["name"] for o in _manifest(migration, "dcir", "ER_PHA_F", "2024-03-01")["source_objects"]
    }
    changes = [json.loads(e["detail"]) for e in migration.ledger.events("dcir") if e["kind"] == "source_changed"]
    assert changes and any(set(c["added"]) & set(late_names) for c in changes)
    _assert_committed_equal_to_source(migration, "dcir", "2024-03-01")


def test_corrupted_target_object_is_detected_then_repaired(migration):
    migration.seed(domains=["beneficiaires"])
    assert str(migration.run("beneficiaires", "2024-06-30").state) == "success"
    manifest = _manifest(migration, "beneficiaires", "IR_BEN_R", "2024-06-30")
    victim = manifest["files"][0]["key"]
    target = migration.target
    target.client.put_object(Bucket=target.bucket, Key=victim, Body=b"not the data")

    run = migration.run("beneficiaires", "2024-06-30")
    assert str(run.state) == "failed"
    assert _states(run)["reconcile_partition"] == "failed"
    record = migration.ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30")
    assert record.state == "failed" and victim in record.last_error

    run = migration.run("beneficiaires", "2024-06-30")  # not committed any more: re-transferred
    assert str(run.state) == "success", _states(run)
    _assert_committed_equal_to_source(migration, "beneficiaires", "2024-06-30")


def test_read_back_catches_an_object_altered_after_upload(migration, tmp_path):
    from hdh_migration.errors import IntegrityError

    target = migration.target
    target.ensure_bucket()
    payload = tmp_path / "payload"
    payload.write_bytes(b"A" * 1000)
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    target.upload_file(payload, "_staging/x/part-00000.parquet", sha, {})
    target.verify_object("_staging/x/part-00000.parquet", sha, 1000)
    # Same size and same checksum metadata, different bytes: only the read-back can tell.
    target.client.put_object(
        Bucket=target.bucket, Key="_staging/x/part-00000.parquet", Body=b"B" * 1000, Metadata={"hdh-sha256": sha}
    )
    with pytest.raises(IntegrityError, match="sha256 read back from the store differs"):
        target.verify_object("_staging/x/part-00000.parquet", sha, 1000)


def test_duplicate_keys_across_files_quarantine_the_partition_and_promote_nothing(migration):
    migration.seed(domains=["pmsi_mco"])
    prefix = partition_dir("pmsi_mco", "T_MCOaaB", "SOR_ANN", "2022")
    first = migration.source.list_objects(prefix, "parquet")[0]
    migration.source.container_client.upload_blob(
        prefix + "part-00042.parquet", migration.source_bytes(first.name), overwrite=True
    )
    run = migration.run("pmsi_mco", "2022")
    assert str(run.state) == "failed"
    assert _states(run)["validate_partition"] == "failed"
    assert migration.target_keys("pmsi_mco/") == []
    assert _manifest(migration, "pmsi_mco", "T_MCOaaB", "2022") is None
    record = migration.ledger.get("pmsi_mco", "T_MCOaaB", "2022")
    assert record.state == "quarantined"
    assert "expect_compound_columns_to_be_unique_across_partition(ETA_NUM,RSA_NUM)" in record.last_error
    assert migration.target_keys("_staging/pmsi_mco/T_MCOaaB/") == [], "a quarantined table's staging is removed"
    reports = migration.target_keys("_quarantine/pmsi_mco/T_MCOaaB/SOR_ANN=2022/")
    (report_key,) = [k for k in reports if k.endswith(".json")]
    report = migration.target.get_json(report_key)
    assert report["failing_expectations"] == ["expect_compound_columns_to_be_unique_across_partition(ETA_NUM,RSA_NUM)"]
    assert report["severity"] == "data"
    assert "domain=pmsi_mco table=T_MCOaaB partition=2022" in record.last_error


def test_missing_partition_fails_with_a_clear_message(migration):
    migration.seed(domains=["dcir"])
    # A partition of the plan (first..cutover) that Azure does not hold.
    container = migration.source.container_client
    prefix = partition_dir("dcir", "ER_PHA_F", "FLX_DIS_DTD", "2024-02-01")
    gone = [blob.name for blob in container.list_blobs(name_starts_with=prefix)]
    assert gone
    for name in gone:
        container.delete_blob(name)
    run = migration.run("dcir", "2024-02-01")
    assert str(run.state) == "failed"
    record = migration.ledger.get("dcir", "ER_PHA_F", "2024-02-01")
    assert record.state == "failed"
    assert "domain=dcir table=ER_PHA_F partition=2024-02-01" in record.last_error
    assert "no source objects" in record.last_error and "optional: true" in record.last_error


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("https://s3.eu-west-3.amazonaws.com", "non-sovereign pattern *.amazonaws.com"),
        ("http://s3.fr-par.scw.cloud", "only https is allowed outside loopback"),
        ("https://minio.example.org", "not on the sovereign allow-list"),
    ],
)
def test_guard_refuses_a_non_sovereign_target_before_any_byte_moves(migration, monkeypatch, capfd, endpoint, reason):
    migration.seed(domains=["beneficiaires"])
    conn = json.loads(os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    conn["extra"]["endpoint_url"] = endpoint
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", json.dumps(conn))
    run = migration.run("beneficiaires", "2024-06-30")
    assert str(run.state) == "failed"
    assert _states(run)["plan_partition"] == "failed"
    out, err = capfd.readouterr()
    assert reason in out + err
    assert migration.ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30") is None
