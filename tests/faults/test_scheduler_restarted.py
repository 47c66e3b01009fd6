"""Fault 4: the scheduler is restarted during a backfill, once stopped (SIGTERM), once killed (SIGKILL).

Production profile (scripts/prod.sh): a backfill of dcir's three monthly partitions, one run at a
time. While the first run has a task running the scheduler gets SIGTERM, while the second one has,
SIGKILL; each time ``scripts/prod.sh start`` starts a new scheduler. The tasks keep running on the
workers meanwhile; the new scheduler adopts what the old one had queued and the backfill completes,
every run in success, with no operator action.
"""

from __future__ import annotations

import signal
import time

import pytest
from faults.invariants import assert_survived
from polling import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.prod, pytest.mark.timeout(2400)]

DOMAIN, ROWS, FILES = "dcir", 2000, 2
# A scheduler killed without a word leaves its job "running": the next one takes over its queued
# tasks once it has missed scheduler_health_check_threshold (30 s) and at the next orphan check
# (every 300 s by default; 30 s here to keep the test short).
PROFILE_ENV = {"AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30"}


def test_scheduler_restarted_during_a_backfill(profile):
    from hdh_migration.deployment import DomainDrive, _start_transfers, _transfers_done

    migration, api = profile.migration, profile.api
    seeded = migration.seed(domains=[DOMAIN], rows_per_partition=ROWS, files_per_partition=FILES)
    drive = DomainDrive(migration.catalogue.domain(DOMAIN))
    partitions = drive.domain.partitions()
    assert len(partitions) >= 3
    api.wait_for_dag(drive.transfer_dag, timeout=180)
    api.unpause(drive.transfer_dag)
    _start_transfers(api, drive)
    assert drive.backfill_id is not None

    def nth_run_busy(n: int):
        runs = api.dag_runs(drive.transfer_dag)
        if len(runs) < n or runs[n - 1]["state"] != "running":
            return None
        tasks = api.task_instances(drive.transfer_dag, runs[n - 1]["dag_run_id"])
        return runs if any(ti["state"] == "running" for ti in tasks) else None

    restarts = {}
    for n, sig in ((1, signal.SIGTERM), (2, signal.SIGKILL)):
        runs = wait_until(lambda n=n: nth_run_busy(n), 900, f"backfill run {n} with a task running", every=1)
        assert len(runs) == len(partitions), "the backfill creates every run up front"
        assert sum(r["state"] == "success" for r in runs) == n - 1, "not all done, as the fault needs"
        before = profile.pid("scheduler")
        profile.kill("scheduler", sig)
        restarts[sig.name] = profile.start()
        assert profile.pid("scheduler") != before

    started = time.monotonic()
    wait_until(lambda: _transfers_done(api, drive), 1200, f"backfill {drive.backfill_id} completed", every=3)
    assert sorted(drive.transfer_states.values()) == ["success"] * len(partitions)
    assert {ti["state"] for run_id in drive.run_ids for ti in api.task_instances(drive.transfer_dag, run_id)} <= {
        "success",
        "skipped",
    }
    ledger = migration.ledger
    assert {(r.partition, r.state) for r in ledger.partitions(DOMAIN)} == {(p, "committed") for p in partitions}
    counts = assert_survived(migration, {DOMAIN: partitions})
    tables = len(drive.domain.tables)
    assert counts["partitions"] == tables * len(partitions)
    assert counts["rows"] == seeded[DOMAIN]["rows"]
    print(f"scheduler restarted: {restarts} s to restart, backfill done {time.monotonic() - started:.1f} s later")
