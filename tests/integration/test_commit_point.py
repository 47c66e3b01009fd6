"""The partition lease and the commit point, against SeaweedFS and the ledger, through a loopback proxy.

The tasks' bodies are called as Airflow calls them (plan, transfer per object, validate, commit), with
the sovereign target reached through the fault proxy of tests/faults/proxy.py, so that a test can
slow the store down, refuse its batch deletes, or write a competing manifest at the exact moment a
run sends its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from urllib.parse import unquote

import pytest
from conftest import reach_state
from faults.invariants import assert_survived
from faults.proxy import FaultProxy

from hdh_migration import leases, transfer
from hdh_migration.errors import PartitionLeaseLost, QuarantinedError
from hdh_migration.layout import STAGING_PREFIX, manifest_key, run_staging_prefix, run_token

pytestmark = pytest.mark.integration

DOMAIN, PARTITION = "dcir", "2024-01-01"
HOUR = dt.timedelta(hours=1)


class Store:
    """The proxy in front of SeaweedFS that every task of the test goes through, and a direct target."""

    def __init__(self, proxy: FaultProxy, direct):
        self.proxy, self.direct = proxy, direct

    def refuse_batch_deletes(self) -> None:
        """Answer every DeleteObjects (POST ?delete) with 503, as a store refusing the call does."""

        def refuse(proxy, method: str, target: str) -> None:
            proxy.set_mode("http503" if method == "POST" and "delete" in target.partition("?")[2] else "pass")

        self.proxy.on_request = refuse

    def disarm(self) -> None:
        self.proxy.on_request = None
        self.proxy.set_mode("pass")


@pytest.fixture
def store(migration, monkeypatch):
    direct = migration.target
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = FaultProxy(port, int(os.environ["HDH_S3_PORT"]), http=True).start()
    connection = json.loads(os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    connection["extra"]["endpoint_url"] = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", json.dumps(connection))
    yield Store(proxy, direct)
    proxy.stop()


def _up_to_commit(run_id: str, domain: str = DOMAIN, partition: str = PARTITION):
    """A run's plan, transfers and validation, as its tasks would do them."""
    plan = transfer.plan_partition(domain, partition, run_id)
    results = [transfer.transfer_object(item, run_id) for item in plan["objects"]]
    return plan, results, transfer.validate_partition(plan["tables"], results, run_id)


def _manifest_key(migration, table: str, domain: str = DOMAIN, partition: str = PARTITION) -> str:
    return manifest_key(domain, table, migration.catalogue.domain(domain).table(table).partition_column, partition)


def _run_staging(migration, run_id: str, table: str, domain: str = DOMAIN, partition: str = PARTITION) -> str:
    column = migration.catalogue.domain(domain).table(table).partition_column
    return run_staging_prefix(domain, table, column, partition, run_token(run_id))


def _events(migration, kind: str) -> list[dict]:
    return [{**e, "detail": json.loads(e["detail"])} for e in migration.ledger.events(DOMAIN, (kind,))]


def test_a_failed_cleanup_after_the_manifest_leaves_the_partition_committed_and_the_next_run_sweeps_it(
    migration, store
):
    migration.seed(domains=[DOMAIN])
    plan, results, verdicts = _up_to_commit("run-1")
    tables = [t["table"] for t in plan["tables"]]
    staged = migration.target_keys(f"{STAGING_PREFIX}/")
    assert staged and all(k.startswith(tuple(_run_staging(migration, "run-1", t) for t in tables)) for k in staged)

    store.refuse_batch_deletes()
    committed = transfer.commit_partition(plan["tables"], results, verdicts, "run-1")

    assert store.proxy.faulted > 0, "no DeleteObjects was refused"
    assert [c["table"] for c in committed] == tables
    ledger = migration.ledger
    for table in tables:
        key = _manifest_key(migration, table)
        record = ledger.get(DOMAIN, table, PARTITION)
        assert record.state == "committed", "a cleanup fault after the commit point failed the partition"
        assert record.manifest_sha256 == store.direct.head(key)["Metadata"]["hdh-sha256"], "ledger != manifest"
    assert ledger.partition_lease(DOMAIN, PARTITION) is None, "the lease outlived the commit"
    left = migration.target_keys(f"{STAGING_PREFIX}/")
    assert left == staged, "the refused deletes should have left the run's staging"
    reported = _events(migration, "cleanup_leftovers")
    assert sorted(k for e in reported for k in e["detail"]["keys"]) == left
    assert sum(e["detail"]["leftovers"] for e in reported) == len(left)
    assert all(e["detail"]["errors"] == ["staging: ClientError"] for e in reported), reported

    store.disarm()
    plan = transfer.plan_partition(DOMAIN, PARTITION, "run-2")

    assert plan["tables"] == [], "the committed, unchanged partition needs no transfer"
    assert migration.target_keys(f"{STAGING_PREFIX}/") == []
    swept = _events(migration, "leftovers_swept")
    assert sorted(k for e in swept for k in e["detail"]["keys"]) == left
    assert {e["run_id"] for e in swept} == {"run-2"}
    assert ledger.partition_lease(DOMAIN, PARTITION) is None
    assert_survived(migration, {DOMAIN: [PARTITION]})


def test_a_run_whose_lease_was_taken_over_cannot_write_the_manifest(migration, store, monkeypatch):
    migration.seed(domains=[DOMAIN])
    monkeypatch.setattr(leases, "PARTITION_LEASE", dt.timedelta(seconds=2))
    plan, results, verdicts = _up_to_commit("run-a")
    ledger = migration.ledger
    lease = ledger.partition_lease(DOMAIN, PARTITION)
    assert lease.run_id == "run-a"
    while ledger.partition_lease(DOMAIN, PARTITION).database_now <= lease.expires_at:
        time.sleep(0.2)  # run-a stalls past its lease, by the database's clock
    monkeypatch.setattr(leases, "PARTITION_LEASE", HOUR)
    taken = transfer.plan_partition(DOMAIN, PARTITION, "run-b")
    assert ledger.partition_lease(DOMAIN, PARTITION).run_id == "run-b"

    with pytest.raises(PartitionLeaseLost, match="run run-b took the partition's write lease"):
        transfer.commit_partition(plan["tables"], results, verdicts, "run-a")
    ledger.release_partition(DOMAIN, PARTITION, "run-b")  # run-b gives the lease back without committing
    with pytest.raises(PartitionLeaseLost, match="run run-b took the partition over since this run planned it"):
        transfer.commit_partition(plan["tables"], results, verdicts, "run-a")

    for table in (t["table"] for t in plan["tables"]):
        assert store.direct.head(_manifest_key(migration, table)) is None, f"{table}: run-a wrote its manifest"
    assert migration.target_keys(f"{DOMAIN}/") == [], "run-a promoted objects"
    assert [t["table"] for t in taken["tables"]] == [t["table"] for t in plan["tables"]]


def test_a_manifest_written_meanwhile_refuses_the_runs_conditional_write(migration, store):
    migration.seed(domains=[DOMAIN])
    plan, results, verdicts = _up_to_commit("run-a")
    first = plan["tables"][0]["table"]
    competing = _manifest_key(migration, first)
    struck = []

    def write_a_competing_manifest(proxy, method: str, target: str) -> None:
        # Between run-a's last check of its lease and its manifest's PUT, another writer lands a manifest.
        if method == "PUT" and unquote(target).endswith(f"/{competing}") and not struck:
            struck.append(store.direct.put_json(competing, {"run_id": "run-z"}))

    store.proxy.on_request = write_a_competing_manifest
    with pytest.raises(PartitionLeaseLost, match="another run wrote the partition's manifest"):
        transfer.commit_partition(plan["tables"], results, verdicts, "run-a")

    assert struck, "run-a never sent its manifest"
    assert store.direct.get_json(competing) == {"run_id": "run-z"}, "run-a overwrote the other manifest"
    assert migration.ledger.get(DOMAIN, first, PARTITION).state == "validated"


def test_the_store_honours_conditional_manifest_writes(migration, store):
    from botocore.exceptions import ClientError

    target = store.direct
    target.ensure_bucket()
    key = "_manifests/conditional/T/P=1.json"
    target.put_json(key, {"v": 1}, if_absent=True)
    with pytest.raises(ClientError, match="PreconditionFailed"):
        target.put_json(key, {"v": 2}, if_absent=True)
    etag = target.head(key)["ETag"]
    with pytest.raises(ClientError, match="PreconditionFailed"):
        target.put_json(key, {"v": 3}, if_match='"0123456789abcdef0123456789abcdef"')
    target.put_json(key, {"v": 4}, if_match=etag)
    assert target.get_json(key) == {"v": 4}


def test_lease_renewal_keeps_the_lease_through_a_long_step(migration, store, monkeypatch):
    migration.seed(domains=[DOMAIN])
    ttl = dt.timedelta(seconds=4)  # wide: a renewal beat stalled by a loaded machine stays inside it
    monkeypatch.setattr(leases, "PARTITION_LEASE", ttl)
    monkeypatch.setattr(leases, "LEASE_RENEW_EVERY", dt.timedelta(seconds=0.3))
    plan = transfer.plan_partition(DOMAIN, PARTITION, "run-a")
    ledger = migration.ledger
    seen = []

    def a_slow_store(proxy, method: str, target: str) -> None:
        # The object's upload (a part) stalls for twice the lease; meanwhile another run tries to take it.
        if method == "PUT" and "partNumber=" in target and not seen:
            before = ledger.partition_lease(DOMAIN, PARTITION)
            time.sleep(2 * ttl.total_seconds())
            seen.append((before, ledger.claim_partition(DOMAIN, PARTITION, "run-b", HOUR)))
            seen.append(ledger.partition_lease(DOMAIN, PARTITION))

    store.proxy.on_request = a_slow_store
    result = transfer.transfer_object(plan["objects"][0], "run-a")

    assert result["uploaded"]
    (before, intruder), after = seen
    assert intruder == "run-a", "the lease expired during the long step"
    assert after.expires_at > before.expires_at + ttl, "the expiry did not move forward"
    assert after.expires_at - after.database_now <= ttl
    # Renewal stops with the task: the lease expires, by the database's clock, and another run may take it.
    time.sleep(ttl.total_seconds() + 0.5)
    assert ledger.claim_partition(DOMAIN, PARTITION, "run-b", HOUR) is None


def test_commit_and_quarantine_leave_another_runs_staging_untouched(migration, store):
    migration.seed(domains=[DOMAIN, "pmsi_mco"])

    def plant_other_run(domain: str, partition: str, tables: list[str]) -> list[str]:
        keys = []
        for table in tables:
            prefix = _run_staging(migration, "run-other", table, domain, partition)
            keys.append(prefix + "part-00000.parquet")
            store.direct.put_bytes(keys[-1], b"another run's staged bytes", "application/octet-stream")
            client = store.direct.client
            client.create_multipart_upload(Bucket=store.direct.bucket, Key=prefix + "part-00001.parquet")
        return keys

    def uploads(prefix: str) -> list[str]:
        listed = store.direct.client.list_multipart_uploads(Bucket=store.direct.bucket, Prefix=prefix)
        return sorted(u["Key"] for u in listed.get("Uploads", []))

    # A commit: the other run's staging (planted after this run's plan swept, as a run that lost its
    # lease and still uploads would) stays; this run's goes.
    plan, results, verdicts = _up_to_commit("run-1")
    tables = [t["table"] for t in plan["tables"]]
    other = plant_other_run(DOMAIN, PARTITION, tables)
    transfer.commit_partition(plan["tables"], results, verdicts, "run-1")
    assert migration.target_keys(f"{STAGING_PREFIX}/{DOMAIN}/") == sorted(other)
    assert len(uploads(f"{STAGING_PREFIX}/{DOMAIN}/")) == len(tables)

    # A quarantine (duplicate keys across the files of pmsi_mco's T_MCOaaB), likewise.
    from hdh_migration.layout import partition_dir

    prefix = partition_dir("pmsi_mco", "T_MCOaaB", "SOR_ANN", "2022")
    first = migration.source.list_objects(prefix, "parquet")[0]
    migration.source.container_client.upload_blob(
        prefix + "part-00042.parquet", migration.source_bytes(first.name), overwrite=True
    )
    plan = transfer.plan_partition("pmsi_mco", "2022", "run-2")
    results = [transfer.transfer_object(item, "run-2") for item in plan["objects"]]
    other_pmsi = plant_other_run("pmsi_mco", "2022", ["T_MCOaaB"])
    with pytest.raises(QuarantinedError):
        transfer.validate_partition(plan["tables"], results, "run-2")
    assert migration.target_keys(f"{STAGING_PREFIX}/pmsi_mco/T_MCOaaB/") == other_pmsi
    assert uploads(f"{STAGING_PREFIX}/pmsi_mco/T_MCOaaB/") == [other_pmsi[0].replace("00000", "00001")]
    assert migration.target_keys(_run_staging(migration, "run-2", "T_MCOaaB", "pmsi_mco", "2022")) == []
    assert migration.ledger.get("pmsi_mco", "T_MCOaaB", "2022").state == "quarantined"


def test_the_gap_scan_sweeps_leftover_staging_only_where_no_run_may_resume_it(migration):
    from hdh_migration.gaps import run_gap_scan

    target, ledger = migration.target, migration.ledger
    target.ensure_bucket()
    migration.source.container_client.create_container()  # an empty Azure: no gap, so no backfill to ask for

    def leftover(domain: str, table: str, partition: str, state: str) -> str:
        key = _run_staging(migration, f"run-{state}", table, domain, partition) + "part-00000.parquet"
        target.put_bytes(key, b"staged bytes", "application/octet-stream")
        reach_state(ledger, domain, table, partition, state, run_id="run-last")
        return key

    committed = leftover("dcir", "ER_PRS_F", "2024-01-01", "committed")
    quarantined = leftover("pmsi_mco", "T_MCOaaB", "2022", "quarantined")
    in_flight = leftover("dcir", "ER_PRS_F", "2024-02-01", "transferring")
    failed = leftover("dcir", "ER_PHA_F", "2024-03-01", "failed")  # a failed run may be cleared: it keeps them
    leased = leftover("pmsi_mco", "T_MCOaaB", "2023", "committed")
    assert ledger.claim_partition("pmsi_mco", "2023", "run-writing", HOUR) is None  # a run is writing it now
    planted = sorted([committed, quarantined, in_flight, failed, leased])

    dry = run_gap_scan(dry_run=True, run_id="scan-dry")["staging_leftovers"]
    assert (dry["objects_found"], dry["objects_swept"]) == (5, 0)
    assert migration.target_keys(f"{STAGING_PREFIX}/") == planted

    report = run_gap_scan(run_id="scan-1")["staging_leftovers"]

    assert migration.target_keys(f"{STAGING_PREFIX}/") == sorted([in_flight, failed, leased])
    assert (report["objects_found"], report["objects_swept"]) == (5, 2)
    swept = sorted(k for p in report["partitions"] for s in p["swept"] for k in s["keys"])
    assert swept == sorted([committed, quarantined])
    kept = {(p["domain"], p["partition"], k["table"]): k["reason"] for p in report["partitions"] for k in p["kept"]}
    assert kept == {
        ("dcir", "2024-02-01", "ER_PRS_F"): "ledger state transferring: a run may still resume it",
        ("dcir", "2024-03-01", "ER_PHA_F"): "ledger state failed: a run may still resume it",
        ("pmsi_mco", "2023", "T_MCOaaB"): "run run-writing holds the partition",
    }
    assert ledger.last_gap_scan()["report"]["staging_leftovers"] == report
    assert ledger.partition_lease("dcir", "2024-01-01") is None, "the sweep kept the lease"
    assert ledger.partition_lease("pmsi_mco", "2023").run_id == "run-writing"
    events = ledger.events(kinds=("leftovers_swept",))
    assert {e["run_id"] for e in events} == {"leftover-sweep:scan-1"}
