"""Fault 3: the Celery worker of queue ``transfer`` is killed (SIGKILL) in the middle of a transfer.

Production profile (scripts/prod.sh): the worker, its pool processes and the task process are all
killed at once, as when its host dies; ``scripts/prod.sh start`` starts a new one. The scheduler
finds the task instance without heartbeat, Airflow retries it on the new worker, and the run ends
in success with no operator action.
"""

from __future__ import annotations

import signal
import time

import pytest
from faults.invariants import assert_survived
from polling import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.prod, pytest.mark.timeout(1800)]

DOMAIN, PARTITION, ROWS = "beneficiaires", "2024-06-30", 60_000
DAG = f"hdh_transfer__{DOMAIN}"
# A dead task is noticed after 60 s without heartbeat instead of 300 s (deploy/airflow.env keeps the default).
PROFILE_ENV = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60"}


def PROFILE_CATALOGUE(raw: dict) -> None:  # noqa: N802 - the profile fixture's hook
    # ~3.6 MB at 0.3 MB/s each way: the one transfer_object runs for some twenty seconds.
    raw["domains"][DOMAIN].update(bandwidth_mb_s=0.3, max_transfers=1)


def _transfers(api, run_id: str) -> list[dict]:
    return [ti for ti in api.task_instances(DAG, run_id) if ti["task_id"] == "transfer_object"]


def test_transfer_worker_killed_mid_transfer_then_restarted(profile):
    migration, api = profile.migration, profile.api
    migration.seed(domains=[DOMAIN], rows_per_partition=ROWS, files_per_partition=1)
    run_id = profile.trigger(DAG, PARTITION)

    def transfer_running():
        running = [ti for ti in _transfers(api, run_id) if ti["state"] == "running"]
        return running[0] if running else None

    victim = wait_until(transfer_running, 600, "transfer_object running", every=1)
    assert victim["queue"] == "transfer"
    time.sleep(4)  # into the transfer itself
    assert transfer_running(), "the transfer ended before the worker was killed: make it slower"
    killed = profile.kill("worker-transfer", signal.SIGKILL)
    assert len(killed) >= 3, f"the worker, its pool and the task process: only {killed}"
    assert not migration.target_keys("_manifests/"), "the partition was committed before the kill"
    killed_at = time.monotonic()
    restart_s = profile.start()
    run = profile.wait_for_run(DAG, run_id, 900)
    recovered_s = time.monotonic() - killed_at
    assert run["state"] == "success", run
    (transfer,) = _transfers(api, run_id)
    assert (transfer["state"], transfer["map_index"]) == ("success", victim["map_index"])
    assert transfer["try_number"] > victim["try_number"], "the killed attempt was not retried"
    assert {ti["state"] for ti in api.task_instances(DAG, run_id)} <= {"success", "skipped"}
    counts = assert_survived(migration, {DOMAIN: [PARTITION]})
    assert counts == {"partitions": 1, "objects": 1, "rows": ROWS}
    print(f"worker killed: restarted in {restart_s:.1f} s, run success {recovered_s:.1f} s after the kill")
