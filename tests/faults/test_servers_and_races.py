"""Faults 1, 2, 5 and 6 on the production profile (scripts/prod.sh), one profile start for the four.

The profile's services reach SeaweedFS, Azurite and the ledger's PostgreSQL through the fault
proxies of this process (faults/fixtures.py), which pass everything through until a test arms
them; this process checks the servers directly. Each test triggers its runs through the REST API,
so that the scheduler and the two Celery workers run them, strikes its fault at the moment the
proxy sees, then checks the runs and their task instances through the REST API and the invariants
of faults/invariants.py. Each test moves a domain of its own:

1. SeaweedFS dies with SIGKILL in the middle of a multipart upload, and is back 20 s later (beneficiaires);
2. Azurite answers 503 Service Unavailable, then resets connections, in mid-transfer (causes_deces);
5. the ledger's PostgreSQL refuses connections, once while planning, once right after the commit
   point (pmsi_mco);
6. the same partition is triggered twice at once: the second run waits for the first one's write
   lease instead of interleaving its writes (dcir).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa
from faults.fixtures import proxied_connections
from faults.invariants import assert_survived
from polling import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.prod, pytest.mark.timeout(1800)]

# Retries 10 s apart at first (doubling) instead of 30 s: the faults below last 4 to 20 s.
RETRY_DELAY_S = 10
S3_DOWN_S = 20  # longer than boto3's own retries, so the task fails and Airflow's retry has to resume
AZURE_FAULT_S = 5
LEDGER_REFUSED_S = 4
# The race: dcir's 2024-01-01 partition (2 tables, 2 files of 2000 rows each) is ~0.6 MB; at
# 0.04 MB/s, one transfer at a time (read and written in turn), the first run holds the
# partition's write lease some 45 s, long enough for the second run to reach it.
RACE_DOMAIN, RACE_PARTITION = "dcir", "2024-01-01"


def PROFILE_ENV(env: dict) -> dict:  # noqa: N802 - the profile fixture's hook
    # 5 MiB parts sent one at a time: fault 1's ~6 MB object is a multipart upload of 2 parts.
    return {
        "HDH_RETRY_DELAY_S": str(RETRY_DELAY_S),
        **proxied_connections(env, part_size_mb=5, upload_concurrency=1),
    }


def PROFILE_CATALOGUE(raw: dict) -> None:  # noqa: N802 - the profile fixture's hook
    raw["domains"][RACE_DOMAIN].update(bandwidth_mb_s=0.04, max_transfers=1)


def _dag(domain: str) -> str:
    return f"hdh_transfer__{domain}"


def _tries(profile, domain: str, run_id: str, task_id: str) -> list[int]:
    return [ti["try_number"] for ti in profile.api.task_instances(_dag(domain), run_id) if ti["task_id"] == task_id]


def _landed(migration, domain: str, partition: str) -> dict:
    """Partitions, objects and rows of one domain partition's manifests (the bucket holds every test's)."""
    from hdh_migration.layout import manifest_key

    manifests = [
        json.loads(migration.target_bytes(manifest_key(domain, table.name, table.partition_column, partition)))
        for table in migration.catalogue.domain(domain).tables
    ]
    return {
        "partitions": len(manifests),
        "objects": sum(len(m["files"]) for m in manifests),
        "rows": sum(m["rows"] for m in manifests),
    }


def _assert_run_succeeded(profile, domain: str, run: dict) -> None:
    assert run["state"] == "success", run
    states = {ti["state"] for ti in profile.api.task_instances(_dag(domain), run["dag_run_id"])}
    assert states <= {"success", "skipped"}, states


def test_azure_503_then_connection_resets_during_the_transfer(profile, proxies):
    domain, partition = "causes_deces", "2022"
    profile.migration.seed(domains=[domain], rows_per_partition=2000, files_per_partition=2)
    faults = {"part-00000": "http503", "part-00001": "reset"}
    struck = []

    def fail_on_first_download(proxy, method: str, target: str) -> None:
        for part, mode in faults.items():
            if method == "GET" and f"/{part}." in target and mode not in struck:
                struck.append(mode)
                proxy.fault_for(mode, AZURE_FAULT_S)

    proxies.azure.on_request = fail_on_first_download
    run = profile.wait_for_run(_dag(domain), profile.trigger(_dag(domain), partition), 900)

    assert sorted(struck) == ["http503", "reset"], "the downloads were not struck"
    assert proxies.azure.faulted > 0
    _assert_run_succeeded(profile, domain, run)
    assert_survived(profile.migration, {domain: [partition]})
    assert _landed(profile.migration, domain, partition) == {"partitions": 1, "objects": 2, "rows": 2000}


def test_ledger_refuses_connections_while_planning_and_after_the_manifest(profile, proxies):
    domain, partition = "pmsi_mco", "2022"
    profile.migration.seed(domains=[domain], rows_per_partition=2000, files_per_partition=2)
    struck = []

    def refuse_the_ledger(proxy, method: str, target: str) -> None:
        # HEAD of the bucket: plan_partition's ensure_bucket, between its first and second ledger calls.
        # PUT of a manifest: the commit point, just before commit_partition records it in the ledger.
        moment = "plan" if method == "HEAD" and target.rstrip("/").count("/") == 1 else None
        if method == "PUT" and "/_manifests/" in target:
            moment = "commit"
        if moment and moment not in struck:
            struck.append(moment)
            proxies.ledger.fault_for("refuse", LEDGER_REFUSED_S)

    proxies.s3.on_request = refuse_the_ledger
    run = profile.wait_for_run(_dag(domain), profile.trigger(_dag(domain), partition), 900)

    assert struck == ["plan", "commit"]
    assert proxies.ledger.connections > 0, "the services did not reach the ledger through the proxy"
    _assert_run_succeeded(profile, domain, run)
    for task_id in ("plan_partition", "commit_partition"):
        tries = _tries(profile, domain, run["dag_run_id"], task_id)
        assert max(tries) > 1, f"{task_id} was not retried: {tries}"
    assert_survived(profile.migration, {domain: [partition]})


def _lease_holder(migration) -> str | None:
    from hdh_migration.ledger import leases_table

    with migration.ledger.engine.connect() as conn:
        return conn.execute(
            sa.select(leases_table.c.run_id).where(
                leases_table.c.domain == RACE_DOMAIN, leases_table.c.partition == RACE_PARTITION
            )
        ).scalar()


def test_the_same_partition_triggered_twice_at_once(profile, proxies):
    # Two runs of different logical dates (both inside the DAG's start..end dates) given the same
    # partition in their conf, as a manual trigger racing a scheduled or backfill run would be.
    migration, dag = profile.migration, _dag(RACE_DOMAIN)
    migration.seed(domains=[RACE_DOMAIN], rows_per_partition=2000, files_per_partition=2)
    first = profile.trigger(dag, RACE_PARTITION, logical_date="2024-01-01T00:00:00+00:00")
    # The second run starts once the first one holds the partition's write lease: started
    # together, one could finish before the other began.
    holder = wait_until(lambda: _lease_holder(migration), 600, "the first run holding the write lease", every=0.5)
    assert holder == first
    second = profile.trigger(dag, RACE_PARTITION, logical_date="2024-02-01T00:00:00+00:00")
    for run_id in (first, second):
        _assert_run_succeeded(profile, RACE_DOMAIN, profile.wait_for_run(dag, run_id, 900))

    ledger = migration.ledger
    events = ledger.events(RACE_DOMAIN)
    busy = [e for e in events if e["kind"] == "partition_busy"]
    assert [e["run_id"] for e in busy] == [second], (
        "the second run did not wait for the first one's write lease",
        [(e["kind"], e["run_id"], str(e["at"])) for e in events],
    )
    tables = [table.name for table in migration.catalogue.domain(RACE_DOMAIN).tables]
    unchanged = [e for e in events if e["kind"] == "unchanged"]
    assert len(unchanged) == len(tables), "the second run should find every table of the partition done"
    assert {e["run_id"] for e in unchanged} == {second}
    for table in tables:
        assert ledger.get(RACE_DOMAIN, table, RACE_PARTITION).attempts == 1, f"{table} transferred twice"
    assert_survived(migration, {RACE_DOMAIN: [RACE_PARTITION]})


def test_s3_store_killed_mid_multipart_upload_then_restarted(profile, proxies, seaweedfs):
    domain, partition = "beneficiaires", "2024-06-30"
    profile.migration.seed(domains=[domain], rows_per_partition=100_000, files_per_partition=1)
    struck = threading.Event()

    def kill_on_second_part(proxy, method: str, target: str) -> None:
        if method == "PUT" and "partNumber=2&" in target + "&" and not struck.is_set():
            struck.set()
            seaweedfs.kill()
            threading.Timer(S3_DOWN_S, seaweedfs.start).start()

    proxies.s3.on_request = kill_on_second_part
    run_id = profile.trigger(_dag(domain), partition)
    wait_until(struck.is_set, 600, "the store killed at the second part of the upload", every=1)
    killed_at = time.monotonic()
    run = profile.wait_for_run(_dag(domain), run_id, 900)

    _assert_run_succeeded(profile, domain, run)
    tries = _tries(profile, domain, run_id, "transfer_object")
    assert max(tries) > 1, "the killed upload was not retried by Airflow"
    # The retry asked the store for the parts of the upload saved in task_state_store (ListParts):
    # it resumed that upload, with whatever parts the killed store kept, instead of starting blind.
    assert any(method == "GET" and "uploadId=" in target for method, target in proxies.s3.requests)
    assert_survived(profile.migration, {domain: [partition]})
    assert _landed(profile.migration, domain, partition) == {"partitions": 1, "objects": 1, "rows": 100_000}
    print(f"S3 store killed: run success {time.monotonic() - killed_at:.1f} s after the kill, tries {tries}")
