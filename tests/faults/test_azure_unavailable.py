"""Fault 2: Azure (Azurite) answers 503 Service Unavailable, then resets connections, in mid-transfer."""

from __future__ import annotations

import pytest
from faults.invariants import assert_survived

pytestmark = pytest.mark.faults

FAULT_S = 5


def test_azure_503_then_connection_resets_during_the_transfer(migration, azure_proxy):
    migration.seed(domains=["beneficiaires"], rows_per_partition=2000, files_per_partition=2)
    faults = {"part-00000": "http503", "part-00001": "reset"}
    struck = []

    def fail_on_first_download(proxy, method: str, target: str) -> None:
        for part, mode in faults.items():
            if method == "GET" and f"/{part}.parquet" in target and mode not in struck:
                struck.append(mode)
                proxy.fault_for(mode, FAULT_S)

    azure_proxy.on_request = fail_on_first_download
    run = migration.run("beneficiaires", "2024-06-30", retry_delay_s=3)

    assert sorted(struck) == ["http503", "reset"], "the downloads were not struck"
    assert azure_proxy.faulted > 0
    assert str(run.state) == "success"
    counts = assert_survived(migration, {"beneficiaires": ["2024-06-30"]})
    assert counts == {"partitions": 1, "objects": 2, "rows": 2000}
