"""Fault 5: the ledger's PostgreSQL refuses connections, once while planning, once right after the commit point."""

from __future__ import annotations

import pytest
from faults.invariants import assert_survived

pytestmark = pytest.mark.faults

REFUSED_S = 4


@pytest.mark.parametrize("ledger_backend", ["postgres"], indirect=True)
def test_ledger_refuses_connections_while_planning_and_after_the_manifest(migration, s3_proxy, postgres_proxy):
    migration.seed(domains=["beneficiaires"], rows_per_partition=2000, files_per_partition=2)
    struck = []

    def refuse_the_ledger(proxy, method: str, target: str) -> None:
        # HEAD of the bucket: plan_partition's ensure_bucket, between its first and second ledger calls.
        # PUT of a manifest: the commit point, just before commit_partition records it in the ledger.
        moment = "plan" if method == "HEAD" and target.rstrip("/").count("/") == 1 else None
        if method == "PUT" and "/_manifests/" in target:
            moment = "commit"
        if moment and moment not in struck:
            struck.append(moment)
            postgres_proxy.fault_for("refuse", REFUSED_S)

    s3_proxy.on_request = refuse_the_ledger
    run = migration.run("beneficiaires", "2024-06-30", retry_delay_s=REFUSED_S + 1)

    assert struck == ["plan", "commit"]
    assert str(run.state) == "success"
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert tries["plan_partition"] > 1 and tries["commit_partition"] > 1, tries
    assert_survived(migration, {"beneficiaires": ["2024-06-30"]})
