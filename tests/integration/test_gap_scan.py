"""The gap scan through a real Airflow: api-server, scheduler (LocalExecutor) and dag-processor on a
PostgreSQL metadata database of its own, against Azurite, SeaweedFS and a ledger.

Seeded state: dcir in Azure for 2024-01, 2024-02 and 2024-03; 2024-01 committed by a scheduled-style
run, 2024-03 failed (one table's objects were away during its run), 2024-02 never run. The
``hdh_gap_scan`` DAG must find 2024-02 and 2024-03, ask Airflow (REST, simple auth manager token)
for one backfill with reprocess behaviour ``failed``, and the scheduler must fill both.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from conftest import POSTGRES_ADMIN_URL, ROOT, _drop_servers_state, write_catalogue
from polling import wait_until

from hdh_migration.layout import manifest_key, partition_dir

pytestmark = [pytest.mark.integration, pytest.mark.scheduler]

DATABASE = "hdh_gapscan_test"
API_PORT = 13080
SERVER_PORTS = {
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "13010",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "13011",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "13012",
}
DOMAIN, TRANSFER_DAG = "dcir", "hdh_transfer__dcir"
PARTITIONS = ("2024-01-01", "2024-02-01", "2024-03-01")
USER = "hdh_gap_scan"


def _only_dcir(raw: dict) -> None:
    raw["domains"] = {DOMAIN: raw["domains"][DOMAIN]}


class Api:
    """The test's own client of Airflow's REST API (a token from the simple auth manager)."""

    def __init__(self, base: str, password: str):
        self.base = base
        token = requests.post(f"{base}/auth/token", json={"username": USER, "password": password}, timeout=180)
        assert token.status_code == 201, token.text
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def __call__(self, method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, f"{self.base}/api/v2{path}", headers=self.headers, timeout=180, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def runs(self, dag_id: str) -> list[dict]:
        return self("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def wait(self, what: str, check, timeout: float = 420.0, every: float = 2.0):
        return wait_until(check, timeout, what, every)


def _wait_for_port(process: subprocess.Popen, url: str, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A migration of dcir only, and a real Airflow serving a temp DAG folder over it."""
    from hdh_migration.catalogue import TRANSFER_POOL, cached_catalogue

    tmp = tmp_path_factory.mktemp("gapscan")
    name = f"t{uuid.uuid4().hex[:12]}"
    catalogue = write_catalogue(tmp / "domains.yaml", name, _only_dcir)
    dags = tmp / "dags"
    dags.mkdir()
    for dag_file in ("hdh_transfer.py", "hdh_gap_scan.py"):
        shutil.copy(ROOT / "dags" / dag_file, dags / dag_file)
    password = secrets.token_urlsafe(16)
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    base = f"http://127.0.0.1:{API_PORT}"
    env = {
        "HDH_CATALOGUE": str(catalogue),
        "HDH_SPOOL_DIR": str(tmp / "spool"),
        "AIRFLOW_CONN_HDH_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(tmp / "ledger.db")}),
        "AIRFLOW_CONN_HDH_AIRFLOW_API": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": API_PORT, "login": USER, "password": password}
        ),
    }
    servers_env = {
        **os.environ,
        **env,
        **SERVER_PORTS,
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DATABASE}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "PYTHONUNBUFFERED": "1",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp / "logs"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    }
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow_bin, "db", "migrate"], env=servers_env, check=True, capture_output=True)
    slots = str(cached_catalogue().transfer_slots)
    subprocess.run(
        [airflow_bin, "pools", "set", TRANSFER_POOL, slots, "transfer_object tasks"],
        env=servers_env,
        check=True,
        capture_output=True,
    )
    processes = []
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cached_catalogue.cache_clear()
    try:
        for command in (
            ["api-server", "--host", "127.0.0.1", "--port", str(API_PORT), "--workers", "1"],
            ["dag-processor"],
            ["scheduler"],
        ):
            log = tmp / f"{command[0]}.log"
            with open(log, "w") as out:
                processes.append(
                    (
                        subprocess.Popen(
                            [airflow_bin, *command], env=servers_env, stdout=out, stderr=subprocess.STDOUT
                        ),
                        log,
                    )
                )
        _wait_for_port(processes[0][0], f"{base}/api/v2/monitor/health", processes[0][1])
        yield {"api": Api(base, password), "tmp": tmp, "processes": processes}
    finally:
        for process, _ in reversed(processes):
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                process.kill()
        _drop_servers_state()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cached_catalogue.cache_clear()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))


def _run_state(api: Api, dag_id: str, logical_date: str) -> str | None:
    states = [r["state"] for r in api.runs(dag_id) if (r["logical_date"] or "").startswith(logical_date)]
    return states[-1] if states else None


def _finished(api: Api, dag_id: str, logical_date: str) -> str | None:
    state = _run_state(api, dag_id, logical_date)
    return state if state in ("success", "failed") else None


@pytest.mark.timeout(2400)  # three Airflow servers and five runs; minutes on a loaded 2-core machine
def test_gap_scan_backfills_the_missing_and_failed_partitions_through_the_scheduler(airflow):
    from hdh_migration.resources import current_catalogue as _catalogue
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target
    from hdh_synthetic import seed_azure

    api = airflow["api"]
    catalogue = _catalogue()
    seed_azure(catalogue, seed=11, rows_per_partition=120, files_per_partition=1)
    source, target, ledger = _source(), _target(), _ledger()
    api.wait("the DAGs to be parsed", lambda: {d["dag_id"] for d in api("GET", "/dags")["dags"]} >= {TRANSFER_DAG})

    # 2024-01 commits; 2024-03 fails: ER_PHA_F's objects are away during its run, then come back.
    away_prefix = partition_dir(DOMAIN, "ER_PHA_F", "FLX_DIS_DTD", "2024-03-01")
    away = {
        b.name: source.container_client.download_blob(b.name).readall()
        for b in source.container_client.list_blobs(name_starts_with=away_prefix)
    }
    assert away
    for blob in away:
        source.container_client.delete_blob(blob)
    api("PATCH", f"/dags/{TRANSFER_DAG}", json={"is_paused": False})
    for start, end in (("2024-01-01", "2024-02-01"), ("2024-03-01", "2024-04-01")):
        # The interval given, as a scheduled run has it (a bare logical date would mean the interval ending there).
        interval = {"data_interval_start": f"{start}T00:00:00Z", "data_interval_end": f"{end}T00:00:00Z"}
        api(
            "POST", f"/dags/{TRANSFER_DAG}/dagRuns", json={"logical_date": f"{start}T00:00:00Z", "conf": {}, **interval}
        )
    api.wait("2024-01 to succeed", lambda: _finished(api, TRANSFER_DAG, "2024-01-01"))
    api.wait("2024-03 to fail", lambda: _finished(api, TRANSFER_DAG, "2024-03-01"))
    assert _run_state(api, TRANSFER_DAG, "2024-01-01") == "success"
    assert _run_state(api, TRANSFER_DAG, "2024-03-01") == "failed"
    assert ledger.get(DOMAIN, "ER_PHA_F", "2024-03-01").state == "failed"
    # The scheduler gave the failed run its deadline, on our reference; the backfill below must clear
    # that run (Airflow's own queued-at reference would make the clear fail: apache/airflow#70368).
    metadata = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DATABASE}")
    with metadata.connect() as conn:
        references = conn.execute(
            sa.text(
                "SELECT a.reference FROM deadline d JOIN deadline_alert a ON d.deadline_alert_id = a.id "
                "JOIN dag_run r ON d.dagrun_id = r.id WHERE r.dag_id = :dag AND r.state = 'failed'"
            ),
            {"dag": TRANSFER_DAG},
        ).scalars()
        assert [r["reference_type"] for r in references] == ["TransferQueuedAt"]
    metadata.dispose()
    for blob, data in away.items():
        source.container_client.upload_blob(blob, data)

    # The gap scan, as the scheduler runs it once unpaused.
    api("PATCH", "/dags/hdh_gap_scan", json={"is_paused": False})
    api.wait(
        "the gap scan to finish", lambda: any(r["state"] in ("success", "failed") for r in api.runs("hdh_gap_scan"))
    )
    assert [r["state"] for r in api.runs("hdh_gap_scan")] == ["success"]
    scan = ledger.last_gap_scan()
    report = scan["report"]
    request = report["domains"][DOMAIN]["request"]
    assert request["status"] == "created", request
    assert scan["dry_run"] is False and scan["partitions_checked"] == 6 and scan["gaps"] == 4 and scan["backfills"] == 1
    findings = {(f["table"], f["partition"]): f["reason"] for f in report["domains"][DOMAIN]["findings"]}
    assert findings == {
        ("ER_PHA_F", "2024-02-01"): "missing",
        ("ER_PRS_F", "2024-02-01"): "missing",
        ("ER_PHA_F", "2024-03-01"): "failed",
        ("ER_PRS_F", "2024-03-01"): "missing",  # its run stopped at ER_PHA_F, before planning it
    }
    assert request["ranges"] == [["2024-02-01", "2024-03-01"]]
    assert target.get_json(report["report_key"]) == json.loads(json.dumps(report))

    # The backfill the scan asked for fills both partitions through the scheduler.
    backfill = api("GET", f"/backfills/{request['backfill_id']}")
    assert backfill["dag_id"] == TRANSFER_DAG and backfill["reprocess_behavior"] == "failed"
    api.wait(
        "the backfill to complete",
        lambda: api("GET", f"/backfills/{request['backfill_id']}")["completed_at"],
        timeout=900,
    )
    for day in PARTITIONS:
        assert _run_state(api, TRANSFER_DAG, day) == "success", day
        for table in catalogue.domain(DOMAIN).tables:
            assert ledger.get(DOMAIN, table.name, day).state == "committed", (table.name, day)
            assert target.get_json(manifest_key(DOMAIN, table.name, table.partition_column, day)) is not None
