"""The production-shaped profile (scripts/prod.sh) for tests (a plugin of tests/conftest.py).

``profile`` (module scope) starts the profile with its own state folder, Airflow database, ledger
database (PostgreSQL), Azure container and bucket, on the environment's ports, and stops it and
drops its databases afterwards. A test module tunes it with two optional module attributes:
``PROFILE_ENV`` (extra environment of every service, e.g. Airflow settings; or a function of the
profile's environment returning it, for values that depend on it such as the ledger database) and
``PROFILE_CATALOGUE`` (a function that changes the raw catalogue, see ``write_catalogue``).

Once started, this process takes the profile's own proof keys (the fingerprint key of its
secrets.env, the public half of its cutover signing key), so its fingerprints and verify agree
with the deployment's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
from conftest import ROOT, Migration, _drop_servers_state, write_catalogue
from polling import wait_until

PROD_SH = ROOT / "scripts" / "prod.sh"
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def drop_databases(*names: str) -> None:
    import psycopg2

    conn = psycopg2.connect(**POSTGRES)
    conn.autocommit = True
    with conn.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@dataclass
class Profile:
    env: dict
    dir: Path
    migration: Migration
    start_s: float = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{os.environ.get('HDH_AIRFLOW_PORT', '8080')}"

    @cached_property
    def api(self):
        from hdh_migration.airflow_api import AirflowApi

        return AirflowApi.from_password_file(self.api_url, self.dir / "passwords.json")

    def prod(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PROD_SH), command], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> float:
        """``scripts/prod.sh start`` (starts what is not running, waits until healthy); returns its seconds."""
        started = time.monotonic()
        result = self.prod("start", timeout=660)
        assert result.returncode == 0, result.stdout + result.stderr
        return time.monotonic() - started

    def trigger(self, dag_id: str, partition: str, logical_date: str | None = None) -> str:
        """A run of a transfer DAG for ``partition``, through the REST API; returns its run id."""
        self.api.wait_for_dag(dag_id, timeout=180)
        self.api.unpause(dag_id)
        return self.api.trigger(dag_id, {"partition": partition}, logical_date)["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """The run once it has finished (success or failed), read through the REST API."""

        def finished():
            run = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}", "read the run")
            return run if run["state"] in ("success", "failed") else None

        return wait_until(finished, timeout, f"{dag_id} {run_id} finished")

    def pid(self, service: str) -> int:
        return int((self.dir / "pids" / f"{service}.pid").read_text())

    def kill(self, service: str, sig: signal.Signals, timeout: float = 120) -> list[int]:
        """Send ``sig`` to a service and every process under it (task processes have groups of their own).

        Waits until they have all exited; returns their pids.
        """
        import psutil

        root = psutil.Process(self.pid(service))
        processes = [root, *root.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        assert not alive, f"{service}: still alive {timeout} s after {sig.name}: {alive}"
        return [p.pid for p in processes]


@pytest.fixture(scope="module")
def profile(request, tmp_path_factory):
    """The started profile; this process reads the same catalogue and ledger as the deployment."""
    from hdh_migration.catalogue import cached_catalogue

    api_port = int(os.environ.get("HDH_AIRFLOW_PORT", "8080"))
    if port_open(api_port):
        pytest.fail(f"port {api_port} (HDH_AIRFLOW_PORT) is taken: stop the running profile (scripts/prod.sh stop)")
    tmp = tmp_path_factory.mktemp("prod")
    name = f"p{uuid.uuid4().hex[:10]}"
    catalogue = write_catalogue(tmp / "domains.yaml", name, getattr(request.module, "PROFILE_CATALOGUE", None))
    env = {
        **os.environ,
        "HDH_PROD_DIR": str(tmp / "prod"),
        "HDH_AIRFLOW_DB": f"hdh_airflow_{name}",
        "HDH_LEDGER_DB": f"hdh_ledger_{name}",
        "HDH_CATALOGUE": str(catalogue),
        "HDH_SPOOL_DIR": str(tmp / "spool"),
        # Two cores shared with the rest of the suite: fewer task processes start faster.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "3",
        "HDH_PROD_START_TIMEOUT": "600",
    }
    extra_env = getattr(request.module, "PROFILE_ENV", {})
    env.update(extra_env(env) if callable(extra_env) else extra_env)
    ledger_conn = (
        f'{{"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "schema": "{env["HDH_LEDGER_DB"]}", '
        '"login": "postgres", "password": ""}'
    )
    profile = Profile(env=env, dir=Path(env["HDH_PROD_DIR"]), migration=Migration(name, catalogue, tmp))
    with pytest.MonkeyPatch.context() as patch:
        for key in ("HDH_CATALOGUE", "HDH_SPOOL_DIR"):
            patch.setenv(key, env[key])
        patch.setenv("AIRFLOW_CONN_HDH_LEDGER", ledger_conn)
        cached_catalogue.cache_clear()
        try:
            profile.start_s = profile.start()
            secrets = dict(
                line.split("=", 1) for line in (profile.dir / "secrets.env").read_text().splitlines() if "=" in line
            )
            patch.setenv("HDH_FINGERPRINT_KEY", secrets["HDH_FINGERPRINT_KEY"])
            patch.setenv("HDH_CUTOVER_PUBLIC_KEY", (profile.dir / "cutover-signing" / "public.key").read_text().strip())
            yield profile
        finally:
            stopped = profile.prod("stop", timeout=180)
            _drop_servers_state()
            cached_catalogue.cache_clear()
            drop_databases(env["HDH_AIRFLOW_DB"], env["HDH_LEDGER_DB"])
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for variable in (
            "HDH_AIRFLOW_PORT",
            "HDH_WORKER_LOG_PORT",
            "HDH_TRANSFER_WORKER_LOG_PORT",
            "HDH_CUTOVER_WORKER_LOG_PORT",
        ):
            if variable in os.environ:
                assert not port_open(int(os.environ[variable])), f"{variable} still open after stop"
