"""Fault-suite fixtures (a plugin of tests/conftest.py): fault proxies in front of the real servers, a kill switch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
# Fault proxies listen on ports after the stand-ins' (HDH_FAULT_PORT moves them out of another's range).
FAULT_PORT = int(os.environ.get("HDH_FAULT_PORT", int(os.environ.get("HDH_AZURITE_PORT", 10000)) + 30))


S3_PROXY_PORT, AZURE_PROXY_PORT, LEDGER_PROXY_PORT = FAULT_PORT, FAULT_PORT + 1, FAULT_PORT + 2


def proxied_connections(env: dict, **target_extra) -> dict:
    """The profile environment giving its services connections through the fault proxies.

    ``HDH_PROD_CONN_*`` of scripts/prod.sh: the sovereign target (with ``target_extra`` added to its
    extra), Azure and the ledger, each through its proxy; this process keeps the direct ones.
    """
    target = json.loads(env["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    target["extra"].update(endpoint_url=f"http://127.0.0.1:{S3_PROXY_PORT}", **target_extra)
    azure = json.loads(env["AIRFLOW_CONN_HDH_AZURE_SOURCE"])
    direct = f"BlobEndpoint=http://127.0.0.1:{env['HDH_AZURITE_PORT']}/"
    azure["extra"]["connection_string"] = azure["extra"]["connection_string"].replace(
        direct, f"BlobEndpoint=http://127.0.0.1:{AZURE_PROXY_PORT}/"
    )
    ledger = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": LEDGER_PROXY_PORT,
        "schema": env["HDH_LEDGER_DB"],
        "login": "postgres",
        "password": "",
    }
    return {
        "HDH_PROD_CONN_HDH_SOVEREIGN_TARGET": json.dumps(target),
        "HDH_PROD_CONN_HDH_AZURE_SOURCE": json.dumps(azure),
        "HDH_PROD_CONN_HDH_LEDGER": json.dumps(ledger),
    }


@dataclass
class FaultProxies:
    s3: FaultProxy  # HTTP-aware, in front of SeaweedFS's S3 gateway
    azure: FaultProxy  # HTTP-aware, in front of Azurite
    ledger: FaultProxy  # TCP, in front of PostgreSQL (the ledger's connection only)

    def reset(self) -> None:
        """Pass everything again, strike nothing, forget what was seen."""
        for proxy in (self.s3, self.azure, self.ledger):
            proxy.on_request = None
            proxy.set_mode("pass")
            proxy.requests.clear()
            proxy.faulted = 0


@pytest.fixture(scope="module")
def module_proxies():
    """The three fault proxies, passing through, for a whole module (the profile's services use them)."""
    proxies = FaultProxies(
        s3=FaultProxy(S3_PROXY_PORT, int(os.environ["HDH_S3_PORT"]), http=True).start(),
        azure=FaultProxy(AZURE_PROXY_PORT, int(os.environ["HDH_AZURITE_PORT"]), http=True).start(),
        ledger=FaultProxy(LEDGER_PROXY_PORT, 5432).start(),
    )
    yield proxies
    for proxy in (proxies.s3, proxies.azure, proxies.ledger):
        proxy.stop()


@pytest.fixture
def proxies(module_proxies):
    """The module's fault proxies for one test: disarmed again after it, whatever it did."""
    module_proxies.reset()
    yield module_proxies
    module_proxies.reset()


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
