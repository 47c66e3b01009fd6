"""Fault-suite fixtures (a plugin of tests/conftest.py): fault proxies in front of the real servers, a kill switch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from faults.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
# Fault proxies listen on ports after the stand-ins' (HDH_FAULT_PORT moves them out of another's range).
FAULT_PORT = int(os.environ.get("HDH_FAULT_PORT", int(os.environ.get("HDH_AZURITE_PORT", 10000)) + 30))


def _patch_conn(monkeypatch, variable: str, change) -> None:
    conn = json.loads(os.environ[variable])
    change(conn)
    monkeypatch.setenv(variable, json.dumps(conn))


@pytest.fixture
def s3_proxy(migration, monkeypatch):
    """An HTTP-aware fault proxy in front of SeaweedFS's S3 gateway; the target connection goes through it."""
    proxy = FaultProxy(FAULT_PORT, int(os.environ["HDH_S3_PORT"]), http=True).start()
    _patch_conn(
        monkeypatch,
        "AIRFLOW_CONN_HDH_SOVEREIGN_TARGET",
        lambda c: c["extra"].update(endpoint_url=f"http://127.0.0.1:{FAULT_PORT}"),
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def azure_proxy(migration, monkeypatch):
    """An HTTP-aware fault proxy in front of Azurite; the wasb connection goes through it."""
    port = FAULT_PORT + 1
    proxy = FaultProxy(port, int(os.environ["HDH_AZURITE_PORT"]), http=True).start()
    direct = f"BlobEndpoint=http://127.0.0.1:{os.environ['HDH_AZURITE_PORT']}/"
    _patch_conn(
        monkeypatch,
        "AIRFLOW_CONN_HDH_AZURE_SOURCE",
        lambda c: c["extra"].update(
            connection_string=c["extra"]["connection_string"].replace(direct, f"BlobEndpoint=http://127.0.0.1:{port}/")
        ),
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def postgres_proxy(migration, monkeypatch):
    """A TCP fault proxy in front of PostgreSQL; the (PostgreSQL) ledger connection goes through it."""
    port = FAULT_PORT + 2
    proxy = FaultProxy(port, 5432).start()
    _patch_conn(monkeypatch, "AIRFLOW_CONN_HDH_LEDGER", lambda c: c.update(port=port))
    yield proxy
    proxy.stop()


class SeaweedFS:
    """The stack's SeaweedFS, killed with SIGKILL and restarted by ``scripts/stack.sh`` like an operator would."""

    pid_file = Path(os.environ.get("HDH_STATE_DIR", ROOT / ".local")) / "stack" / "seaweedfs.pid"

    def kill(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGKILL)

    def start(self) -> None:
        subprocess.run([ROOT / "scripts" / "stack.sh", "start"], check=True, capture_output=True, timeout=120)


@pytest.fixture
def seaweedfs():
    weed = SeaweedFS()
    yield weed
    weed.start()  # whatever the test did, leave the store running for the next one
