"""Fault 1: the sovereign S3 store (SeaweedFS) dies with SIGKILL in the middle of a multipart upload."""

from __future__ import annotations

import json
import os
import threading

import pytest
from faults.invariants import assert_survived

pytestmark = pytest.mark.faults

DOWN_S = 20  # longer than boto3's own retries, so the task fails and Airflow's retry has to resume


def _tries(run, task_id: str) -> list[int]:
    return [ti.try_number for ti in run.get_task_instances() if ti.task_id == task_id]


def test_s3_store_killed_mid_multipart_upload_then_restarted(migration, s3_proxy, seaweedfs, monkeypatch):
    migration.seed(domains=["beneficiaires"], rows_per_partition=100_000, files_per_partition=1)
    # 5 MiB parts sent one at a time: the ~6 MB object is a multipart upload of 2 parts.
    conn = json.loads(os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    conn["extra"].update(part_size_mb=5, upload_concurrency=1)
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", json.dumps(conn))
    struck = threading.Event()

    def kill_on_second_part(proxy, method: str, target: str) -> None:
        if method == "PUT" and "partNumber=2&" in target + "&" and not struck.is_set():
            struck.set()
            seaweedfs.kill()
            threading.Timer(DOWN_S, seaweedfs.start).start()

    s3_proxy.on_request = kill_on_second_part
    # Retries spaced so that the four of them outlast the outage and the restart.
    run = migration.run("beneficiaires", "2024-06-30", retry_delay_s=DOWN_S / 2)

    assert struck.is_set(), "the store was never killed: no multipart upload reached its second part"
    assert str(run.state) == "success"
    assert max(_tries(run, "transfer_object")) > 1, "the killed upload was not retried by Airflow"
    # The retry asked the store for the parts of the upload saved in task_state_store (ListParts):
    # it resumed that upload, with whatever parts the killed store kept, instead of starting blind.
    assert any(method == "GET" and "uploadId=" in target for method, target in s3_proxy.requests)
    counts = assert_survived(migration, {"beneficiaires": ["2024-06-30"]})
    assert counts == {"partitions": 1, "objects": 1, "rows": 100_000}
