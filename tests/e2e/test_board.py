"""The on-call board and the validation reports in a real Airflow api-server, looked at in a real headless Chromium.

One api-server for the module, with its own Airflow database, a seeded SQLite ledger, quarantine
reports in a bucket of its own on SeaweedFS, and the simple auth manager with per-DAG grants
(``per_dag_auth_manager``): ``oncall`` may read every DAG, ``outsider`` only a DAG of another
project, ``coroner`` only ``hdh_transfer__causes_deces``. A failing mapped task instance is made by
a real ``dag.test()`` run in that database, so the board's log links come from Airflow. The browser
tests record every request the pages make: all of them go to the api-server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
PORT = int(os.environ.get("HDH_API_PORT", "8080"))
BASE = f"http://127.0.0.1:{PORT}"
USER = "oncall"
# Users allowed to read only some DAGs: another project's, or one domain's transfer DAG.
OTHER_DAG = "finance_ledger_export"
GRANTS = {"outsider": [OTHER_DAG], "coroner": ["hdh_transfer__causes_deces"]}

# Values that exist only as "data": the ledger's error text and the gap scan's report carry them
# here, as a leak would. The board must show none of them.
RAW_NIR = "253072B07300470"
CANARY = "ZQXCANARY"
LEAKY_ERROR = f"domain=causes_deces: value {RAW_NIR} in column CDC_COD ({CANARY})"
QUARANTINED_EXPECTATIONS = [
    "expect_column_values_to_match_regex(CDC_COD)",
    "expect_column_values_to_not_be_null(DCD_DAT)",
]
NIR_EXPECTATION = "expect_column_values_to_not_contain_raw_nir(NIR_ANO_17)"
# The quarantine reports in the store, as the validate_partition of these runs wrote them.
CAUSES_REPORT = "_quarantine/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/5f3a0c2e9d8b7a61.json"
PMSI_REPORT = "_quarantine/pmsi_mco/T_MCOaaC/SOR_ANN=2023/0a1b2c3d4e5f6071.json"

# A stand-in transfer DAG, run for real in the api-server's database: its mapped transfer_object
# fails at map index 1, as a network fault past its retries would.
FAILING_RUN = """
import datetime as dt
from airflow.sdk import DAG, task

with DAG("hdh_transfer__dcir", schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
    @task
    def transfer_object(item: int) -> int:
        if item == 1:
            raise RuntimeError("connection reset")
        return item

    transfer_object.expand(item=[0, 1])

run = dag.test(logical_date=dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
print("RUN_ID=" + run.run_id)

# The on-call states Airflow holds: dcir's DAG paused by an operator, the transfer pool's 16 slots.
from airflow.models.dag import DagModel
from airflow.models.pool import Pool
from airflow.utils.session import create_session
from sqlalchemy import select, update

with create_session() as session:
    session.execute(
        update(DagModel)
        .where(DagModel.dag_id.like("hdh_%"))
        .values(is_paused=DagModel.dag_id == "hdh_transfer__dcir")
    )
    print("DAGS=" + ",".join(sorted(d for (d,) in session.execute(select(DagModel.dag_id)))))
Pool.create_or_update_pool("hdh_transfer", slots=16, description="transfers", include_deferred=False)
"""


def _seed_ledger(url: str, failing_run_id: str) -> None:
    from conftest import reach_domain_state, reach_state

    from hdh_migration.ledger import Ledger, events_table, partitions_table

    ledger = Ledger(url)
    mb = 1_000_000

    def planned(domain: str, table: str, partition: str, run_id: str, objects: int, size: int) -> None:
        ledger.record_event(
            domain,
            "planned",
            {"objects": objects, "source_bytes": size},
            table_name=table,
            partition=partition,
            run_id=run_id,
        )

    def committed(domain: str, table: str, partition: str, run_id: str, rows: int, size: int, seconds: float) -> None:
        reach_state(
            ledger, domain, table, partition, "committed", run_id=run_id, rows=rows, bytes=size, duration_s=seconds
        )

    # beneficiaires: cut over, its one snapshot committed.
    planned("beneficiaires", "IR_BEN_R", "2024-06-30", "manual__b1", 2, 40 * mb)
    committed("beneficiaires", "IR_BEN_R", "2024-06-30", "manual__b1", 1000, 40 * mb, 20.0)
    reach_domain_state(ledger, "beneficiaires", "cut_over")
    # causes_deces: 2022 committed, 2023 quarantined by two expectations.
    ledger.set_domain_state("causes_deces", "transferring")
    for partition, size in (("2022", 12 * mb), ("2023", 13 * mb)):
        planned("causes_deces", "KI_CCI_R", partition, f"manual__c{partition}", 1, size)
    committed("causes_deces", "KI_CCI_R", "2022", "manual__c2022", 500, 10 * mb, 4.0)
    ledger.record_event(
        "causes_deces",
        "quarantine_report",
        {"expectations": QUARANTINED_EXPECTATIONS, "severity": "data", "report_key": CAUSES_REPORT},
        table_name="KI_CCI_R",
        partition="2023",
        run_id="manual__c2023",
    )
    reach_state(
        ledger, "causes_deces", "KI_CCI_R", "2023", "quarantined", run_id="manual__c2023", last_error=LEAKY_ERROR
    )
    # dcir: two months committed, one failed in transfer_object[1], one in flight.
    ledger.set_domain_state("dcir", "transferring")
    for month in ("2024-01-01", "2024-02-01"):
        run_id = failing_run_id if month == "2024-02-01" else f"scheduled__{month}"
        for table in ("ER_PHA_F", "ER_PRS_F"):
            planned("dcir", table, month, run_id, 4, 250 * mb)
    committed("dcir", "ER_PHA_F", "2024-01-01", "scheduled__2024-01-01", 90_000, 250 * mb, 50.0)
    committed("dcir", "ER_PRS_F", "2024-01-01", "scheduled__2024-01-01", 120_000, 250 * mb, 125.0)
    committed("dcir", "ER_PRS_F", "2024-02-01", failing_run_id, 118_000, 250 * mb, 62.5)
    ledger.set_state("dcir", "ER_PHA_F", "2024-02-01", "failed", run_id=failing_run_id, last_error=LEAKY_ERROR)
    # dcir ER_PRS_F 2024-03-01: in flight, its last progress two hours ago: stalled (the default is 30 min)
    planned("dcir", "ER_PRS_F", "2024-03-01", "scheduled__2024-03-01", 4, 250 * mb)
    ledger.set_state("dcir", "ER_PRS_F", "2024-03-01", "transferring", run_id="scheduled__2024-03-01")
    ledger.record_event("dcir", "transfer_progress", {"bytes": 40 * mb}, table_name="ER_PRS_F",
                        partition="2024-03-01", run_id="scheduled__2024-03-01")  # fmt: skip
    # pmsi_mco: 2022 committed for one table; a privacy incident on T_MCOaaC 2023.
    ledger.set_domain_state("pmsi_mco", "transferring")
    committed("pmsi_mco", "T_MCOaaB", "2022", "scheduled__2022", 30_000, 80 * mb, 16.0)
    ledger.record_event(
        "pmsi_mco",
        "quarantine_report",
        {"expectations": [NIR_EXPECTATION], "severity": "privacy", "report_key": PMSI_REPORT},
        table_name="T_MCOaaC",
        partition="2023",
        run_id="scheduled__2023",
    )
    reach_state(
        ledger,
        "pmsi_mco",
        "T_MCOaaC",
        "2023",
        "quarantined",
        run_id="scheduled__2023",
        last_error=f"PRIVACY INCIDENT {LEAKY_ERROR}",
    )
    # pmsi_mco T_MCOaaB 2023: in flight and moving, its last progress a minute ago
    planned("pmsi_mco", "T_MCOaaB", "2023", "scheduled__2023", 2, 90 * mb)
    ledger.set_state("pmsi_mco", "T_MCOaaB", "2023", "transferring", run_id="scheduled__2023")
    ledger.record_gap_scan(
        started_at=dt.datetime(2026, 11, 28, 6, 0, tzinfo=dt.UTC),
        dry_run=False,
        partitions_checked=13,
        gaps=2,
        backfills=1,
        run_id="scheduled__2026-11-28T06:00:00+00:00",
        report={
            "gaps": [
                {"domain": "dcir", "table": "ER_PHA_F", "partition": "2024-03-01", "sample": RAW_NIR},
                {"domain": "pmsi_mco", "table": "T_MCOaaC", "partition": "2022", "note": CANARY},
            ]
        },
    )
    # Spread the commits over the last hours, as a real migration's would be.
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=6)
    with ledger.engine.begin() as conn:
        rows = conn.execute(
            sa.select(events_table.c.id, events_table.c.domain, events_table.c.table_name, events_table.c.partition)
            .where(events_table.c.kind == "partition_committed")
            .order_by(events_table.c.id)
        ).all()
        for i, row in enumerate(rows):
            at = start + dt.timedelta(hours=i)
            conn.execute(sa.update(events_table).where(events_table.c.id == row.id).values(at=at))
            conn.execute(
                sa.update(partitions_table)
                .where(partitions_table.c.domain == row.domain, partitions_table.c.table_name == row.table_name,
                       partitions_table.c.partition == row.partition)
                .values(updated_at=at)
            )  # fmt: skip
        # the stalled transfer's plan, state and progress: two hours ago
        stalled = (events_table.c.domain == "dcir", events_table.c.partition == "2024-03-01")
        conn.execute(sa.update(events_table).where(*stalled).values(at=now - dt.timedelta(hours=2)))
        conn.execute(
            sa.update(partitions_table)
            .where(partitions_table.c.domain == "dcir", partitions_table.c.partition == "2024-03-01")
            .values(updated_at=now - dt.timedelta(hours=2))
        )


PARIS = ZoneInfo("Europe/Paris")


def _closed_hours() -> tuple[str, dt.datetime]:
    """An hour of the day in Paris two hours from now, and when it next starts: a window closed now."""
    now = dt.datetime.now(PARIS)
    opens = (now + dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    return f"{opens.hour:02d}:00-{opens.hour + 1:02d}:00", opens


def _close_wave_2(raw: dict) -> None:
    """Wave 2 (dcir, pmsi_mco) may move bytes one hour a day only, and that hour is not now."""
    hours, _opens = _closed_hours()
    raw["waves"][2]["window"] = {"timezone": "Europe/Paris", "weekdays": hours, "weekends": hours}


def _quarantine_reports() -> dict[str, dict]:
    """The two reports the board links to, in the shape the quarantine writes them.

    The causes_deces one also carries what a buggy writer could leave in it (the values behind a
    count, an error message): the page must show none of it.
    """
    from hdh_migration.validation import summary_shape

    def report(domain, table, column, partition, run_id, severity, results) -> dict:
        return {
            "domain": domain,
            "table": table,
            "partition_column": column,
            "partition": partition,
            "run_id": run_id,
            "at": "2026-11-29T22:10:00+00:00",
            "severity": severity,
            "failing_expectations": [f"{r['type']}({r['kwargs']['column']})" for r in results if not r["success"]],
            "validation": summary_shape(results, f"{domain}.{table}"),
        }

    def result(kind: str, column: str, success: bool, **counts) -> dict:
        return {
            "type": kind,
            "kwargs": {"column": column},
            "success": success,
            "result": {"element_count": 500, **counts},
        }

    leaky = result("expect_column_values_to_match_regex", "CDC_COD", False, unexpected_count=3)
    leaky["result"]["partial_unexpected_list"] = [RAW_NIR, CANARY]
    leaky["exception_info"] = {"exception_message": LEAKY_ERROR}
    return {
        CAUSES_REPORT: report(
            "causes_deces",
            "KI_CCI_R",
            "FLX_PER_ANN",
            "2023",
            "manual__c2023",
            "data",
            [
                leaky,
                result("expect_column_values_to_not_be_null", "DCD_DAT", False, unexpected_count=2, missing_count=2),
                result("expect_column_values_to_not_contain_raw_nir", "DCD_LIE_LIB", True, unexpected_count=0),
            ],
        ),
        PMSI_REPORT: report(
            "pmsi_mco",
            "T_MCOaaC",
            "SOR_ANN",
            "2023",
            "scheduled__2023",
            "privacy",
            [result("expect_column_values_to_not_contain_raw_nir", "NIR_ANO_17", False, unexpected_count=1)],
        ),
    }


def _wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"api-server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"api-server did not answer {url} within {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A running api-server with the board, its users' passwords, and the failing dcir run's id."""
    from conftest import write_catalogue

    from hdh_migration.resources import TARGET_CONN_ID
    from hdh_migration.target import SovereignTarget

    tmp = tmp_path_factory.mktemp("board")
    passwords = {user: secrets.token_urlsafe(12) for user in (USER, *GRANTS)}
    passwords_file = tmp / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    ledger_url = f"sqlite:///{tmp / 'ledger.db'}"
    bucket = f"t{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "per_dag_auth_manager.PerDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:viewer" for user in passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": BASE,
        "AIRFLOW_CONN_HDH_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(tmp / "ledger.db")}),
        "HDH_CATALOGUE": str(write_catalogue(tmp / "domains.yaml", bucket, _close_wave_2)),
        "HDH_TEST_DAG_GRANTS": json.dumps(GRANTS),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    target = SovereignTarget(TARGET_CONN_ID, bucket)
    target.ensure_bucket()
    for key, report in _quarantine_reports().items():
        target.put_json(key, report)
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log = tmp / "api-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The failing run is made while the server starts: the board reads Airflow's database per request.
        ran = subprocess.run([sys.executable, "-c", FAILING_RUN], env=env, capture_output=True, text=True, check=True)
        failing_run_id = next(line[7:] for line in ran.stdout.splitlines() if line.startswith("RUN_ID="))
        _seed_ledger(ledger_url, failing_run_id)
        _wait_for(f"{BASE}/api/v2/monitor/health", server, log)
        yield {"passwords": passwords, "failing_run_id": failing_run_id}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        target.delete_keys(target.list_keys(""))
        target.client.delete_bucket(Bucket=bucket)


def _token(board: dict, user: str = USER) -> str:
    request = urllib.request.Request(
        f"{BASE}/auth/token",
        data=json.dumps({"username": user, "password": board["passwords"][user]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def _call(path: str, token: str | None = None) -> tuple[int, dict, str]:
    """Status, headers (lower-case names) and body of a GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{BASE}{path}", headers=headers), timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


def _get(path: str, token: str | None = None) -> tuple[int, str]:
    status, _, body = _call(path, token)
    return status, body


CAUSES_PAGE = "/hdh/reports/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/5f3a0c2e9d8b7a61"
PMSI_PAGE = "/hdh/reports/pmsi_mco/T_MCOaaC/SOR_ANN=2023/0a1b2c3d4e5f6071"
OWN_PATHS = ["/hdh/board", "/hdh/board.json", "/hdh/board-icon.svg", "/hdh/static/hdh.css", "/hdh/static/hdh.js",
             CAUSES_PAGE]  # fmt: skip


@pytest.mark.parametrize("path", OWN_PATHS)
def test_board_and_reports_refuse_calls_without_login(board, path):
    status, body = _get(path)
    assert status in (401, 403), (status, body[:200])
    status, body = _get(path, token="not-a-token")
    assert status in (401, 403), (status, body[:200])
    assert CANARY not in body


@pytest.mark.parametrize("path", ["/hdh/docs", "/hdh/redoc", "/hdh/openapi.json", "/hdh/docs/oauth2-redirect"])
def test_the_apps_documentation_routes_are_off(board, path):
    for token in (None, _token(board)):
        status, headers, body = _call(path, token)
        assert status == 404, (path, status, body[:200])
        assert "swagger" not in body.lower() and "redoc" not in body.lower() and '"openapi"' not in body


def test_every_response_carries_the_security_headers(board):
    from hdh_migration.board import CONTENT_SECURITY_POLICY

    oncall, outsider = _token(board), _token(board, "outsider")
    calls = [(path, oncall, 200) for path in OWN_PATHS] + [
        ("/hdh/board", None, 401),
        ("/hdh/board", outsider, 403),
        (PMSI_PAGE, outsider, 403),
        ("/hdh/reports/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/ffffffffffffffff", oncall, 404),
        ("/hdh/openapi.json", oncall, 404),
        ("/hdh/static/nothing.js", oncall, 404),
    ]
    for path, token, expected in calls:
        status, headers, body = _call(path, token)
        assert status == expected, (path, status, body[:200])
        assert headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("referrer-policy") == "no-referrer", path
        assert headers.get("x-frame-options") == "SAMEORIGIN", path
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'self'"
    assert all(source in ("'self'", "'none'") for value in directives.values() for source in value.split()), (
        "only this origin: no host, no scheme, no 'unsafe-inline'"
    )


@pytest.mark.parametrize(
    "user, path, expected",
    [
        ("oncall", "/hdh/board", 200),
        ("oncall", PMSI_PAGE, 200),
        # a user of another project's DAG, even when the query string names that DAG
        ("outsider", "/hdh/board", 403),
        ("outsider", f"/hdh/board?dag_id={OTHER_DAG}", 403),
        ("outsider", f"/hdh/board.json?dag_id={OTHER_DAG}", 403),
        ("outsider", CAUSES_PAGE, 403),
        ("outsider", f"{CAUSES_PAGE}?dag_id={OTHER_DAG}", 403),
        # a user of one domain's transfer DAG reads that domain's reports, not the board nor another domain's
        ("coroner", CAUSES_PAGE, 200),
        ("coroner", PMSI_PAGE, 403),
        ("coroner", f"{PMSI_PAGE}?dag_id=hdh_transfer__causes_deces", 403),
        ("coroner", "/hdh/board?dag_id=hdh_transfer__causes_deces", 403),
        ("coroner", "/hdh/board.json?dag_id=hdh_transfer__causes_deces", 403),
    ],
)
def test_access_is_decided_on_the_projects_own_dag_ids(board, user, path, expected):
    status, body = _get(path, _token(board, user))
    assert status == expected, (user, path, status, body[:200])
    if expected == 403:
        assert "NIR" not in body and "KI_CCI_R" not in body and "T_MCOaaC" not in body


def test_board_json_with_a_token(board):
    status, body = _get("/hdh/board.json", _token(board))
    assert status == 200, body[:300]
    view = json.loads(body)
    domains = {d["domain"]: d for d in view["domains"]}
    assert [d["domain"] for d in view["domains"]] == ["beneficiaires", "causes_deces", "dcir", "pmsi_mco"]
    assert (domains["dcir"]["wave"], domains["dcir"]["state"]) == (2, "transferring")
    assert (domains["dcir"]["partitions_committed"], domains["dcir"]["partitions_expected"]) == (3, 6)
    assert (domains["dcir"]["source_bytes_committed"], domains["dcir"]["source_bytes_expected"]) == (750e6, 1250e6)
    assert domains["dcir"]["partitions_of_unknown_size"] == 1
    problems = {(p["domain"], p["kind"]): p for p in view["problems"]}
    assert [(p["kind"], p["domain"]) for p in view["problems"]] == [
        ("privacy_incident", "pmsi_mco"),
        ("failed", "dcir"),
        ("quarantined", "causes_deces"),
        ("stalled", "dcir"),
    ]
    failed = problems[("dcir", "failed")]
    assert [(link["task_id"], link["map_index"]) for link in failed["log_links"]] == [("transfer_object", 1)]
    assert failed["log_links"][0]["url"] == (
        f"/dags/hdh_transfer__dcir/runs/{board['failing_run_id']}/tasks/transfer_object/mapped/1"
    )
    quarantined = problems[("causes_deces", "quarantined")]
    assert quarantined["expectations"] == QUARANTINED_EXPECTATIONS
    assert (
        quarantined["log_links"][0]["url"]
        == "/dags/hdh_transfer__causes_deces/runs/manual__c2023/tasks/validate_partition"
    )
    assert quarantined["report_url"] == CAUSES_PAGE
    assert problems[("pmsi_mco", "privacy_incident")]["privacy_incident"] is True
    assert problems[("pmsi_mco", "privacy_incident")]["report_url"] == PMSI_PAGE
    assert view["gap_scan"]["gaps"] == 2
    assert len(view["throughput"]["points"]) == 6
    assert RAW_NIR not in body and CANARY not in body


class RequestLog:
    """Every request a browser context makes (its pages and their frames), and the console's CSP reports."""

    def __init__(self, context) -> None:
        self.urls: list[str] = []
        self.refused: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.refused.append(message.text)

    def elsewhere(self) -> list[str]:
        """The requests to any origin but the api-server's.

        A ``blob:`` URL names an object in the page's memory; its origin is the one it embeds (the
        Airflow UI makes some of its own).
        """
        return [url for url in self.urls if not url.removeprefix("blob:").startswith(f"{BASE}/")]

    def paths(self) -> set[str]:
        return {url.removeprefix(BASE).split("?")[0] for url in self.urls if url.startswith(f"{BASE}/")}


class OutsideHost:
    """A loopback HTTP server standing in for a CDN: another origin, which counts what reaches it."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sign_in(page, board: dict) -> None:
    page.goto(f"{BASE}/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(board["passwords"][USER])
    page.get_by_role("button", name="Sign in").click()


def test_board_and_report_in_the_airflow_ui_call_the_api_server_only(board):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # the UI's pages load slowly on a busy machine
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1250})
            requests = RequestLog(context)
            page = context.new_page()
            page.set_default_timeout(60_000)
            _sign_in(page, board)
            page.get_by_role("link", name="Migration").click()
            # The UI's route of the external view; under load the UI may append the view's own path.
            expect(page).to_have_url(re.compile(rf"^{re.escape(BASE)}/plugin/hdh-board(/hdh/board)?$"))
            frame = page.frame_locator("iframe")
            frame.get_by_role("heading", name="SNDS migration: on-call board").wait_for()
            page.screenshot(path=str(ARTIFACTS / "board.png"))
            html = frame.locator("html").inner_html()

            domains = frame.locator("table.domains tbody tr")
            expect(domains).to_have_count(4)
            dcir = frame.locator('table.domains tr[data-domain="dcir"]')
            expect(dcir.locator(".wave")).to_have_text("wave 2")
            expect(dcir.locator(".state")).to_have_text("transferring")
            expect(dcir.locator(".partitions")).to_have_text("3 / 6")
            expect(dcir.locator(".bytes")).to_have_text("750.0 MB / \u2265 1.25 GB")
            expect(dcir).to_contain_text("1 partition(s) not planned yet")
            expect(dcir.locator("progress").first).to_have_attribute("value", "3")
            beneficiaires = frame.locator('table.domains tr[data-domain="beneficiaires"]')
            expect(beneficiaires.locator(".state")).to_have_text("cut over")
            expect(beneficiaires.locator(".partitions")).to_have_text("1 / 1")
            # the stylesheet applies under the policy: a cut-over badge is green
            expect(beneficiaires.locator(".state .badge")).to_have_css("background-color", "rgb(47, 133, 90)")
            expect(frame.locator('table.domains tr[data-domain="causes_deces"] .bytes')).to_have_text(
                "12.0 MB / 25.0 MB"
            )

            problems = frame.locator("tr.problem")
            expect(problems).to_have_count(4)
            quarantined = frame.locator('tr.problem[data-domain="causes_deces"] .expectations code')
            expect(quarantined).to_have_text(QUARANTINED_EXPECTATIONS)
            privacy = frame.locator('tr.problem[data-domain="pmsi_mco"] .expectations')
            expect(privacy).to_have_text(f"PRIVACY INCIDENT {NIR_EXPECTATION}")
            expect(frame.locator("#gap-scan .gap-checked")).to_have_text("13")
            expect(frame.locator("#gap-scan .gap-count")).to_have_text("2")
            expect(frame.locator("#gap-scan .gap-backfills")).to_have_text("1")
            expect(frame.locator("#gap-scan li")).to_have_text(["dcir ER_PHA_F 2024-03-01", "pmsi_mco T_MCOaaC 2022"])
            expect(frame.locator("svg#throughput rect")).to_have_count(6)

            # The quarantined partition's report, opened from the board inside the UI's frame.
            frame.locator('tr.problem[data-domain="causes_deces"]').get_by_role(
                "link", name="validation report"
            ).click()
            frame.get_by_role("heading", name="Validation report: causes_deces.KI_CCI_R").wait_for()
            expect(frame.locator("tr.failed")).to_have_count(2)
            expect(frame.locator("tr.passed")).to_have_count(1)
            expect(frame.locator("ul.blocking li")).to_have_text(QUARANTINED_EXPECTATIONS)
            regex = frame.locator('tr[data-expectation="expect_column_values_to_match_regex(CDC_COD)"] .counts')
            expect(regex).to_contain_text("rows checked 500")
            expect(regex).to_contain_text("unexpected 3")
            expect(frame.locator(".badge.state-failed").first).to_have_css("background-color", "rgb(197, 48, 48)")
            page.screenshot(path=str(ARTIFACTS / "report.png"))
            report_html = frame.locator("html").inner_html()
            page.go_back()
            frame.get_by_role("heading", name="SNDS migration: on-call board").wait_for()

            # The board's script runs under the policy: a log link opens in the UI, not in the frame.
            frame.get_by_role("link", name="log: transfer_object [1]").click()
            expect(page).to_have_url(
                f"{BASE}/dags/hdh_transfer__dcir/runs/{board['failing_run_id']}/tasks/transfer_object/mapped/1"
            )
            expect(page.get_by_role("heading", name="transfer_object [1]")).to_be_visible()
            expect(page.get_by_role("link", name="Logs", exact=True)).to_be_visible()

            # The privacy incident's report, as the task's extra link opens it: a page of its own.
            report = context.new_page()
            report.goto(f"{BASE}{PMSI_PAGE}")
            expect(report.locator(".privacy.banner")).to_have_text("PRIVACY INCIDENT: raw NIR values in the source.")
            expect(report.locator("ul.blocking li")).to_have_text([NIR_EXPECTATION])
            privacy_html = report.content()
            report.close()
        finally:
            browser.close()
    assert "PRIVACY INCIDENT" in html
    for text in (html, report_html, privacy_html):
        assert RAW_NIR not in text and CANARY not in text
    assert requests.elsewhere() == [], "every request goes to the api-server"
    assert requests.refused == [], "nothing on our pages is refused by the policy: it asks for nothing it forbids"
    assert {"/hdh/board", "/hdh/static/hdh.css", "/hdh/static/hdh.js", CAUSES_PAGE, PMSI_PAGE} <= requests.paths()
    print(f"{len(requests.urls)} requests recorded, all to {BASE}")


def test_the_recorder_sees_another_origin_and_the_policy_refuses_it_on_our_pages(board):
    """The control: a request elsewhere is recorded, and one injected into our page never leaves."""
    from playwright.sync_api import sync_playwright

    outside = OutsideHost()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                context = browser.new_context()
                requests = RequestLog(context)
                page = context.new_page()
                page.set_content(f'<img src="{outside.url}/control.png">')  # a page that is not ours
                page.wait_for_function("document.images[0].complete")
                assert requests.elsewhere() == [f"{outside.url}/control.png"]
                assert outside.hits == ["/control.png"]

                context.add_cookies([{"name": "_token", "value": _token(board), "url": BASE}])
                page.goto(f"{BASE}/hdh/board")
                refused = page.evaluate(
                    """async (outside) => {
                      const refused = [];
                      document.addEventListener("securitypolicyviolation", (e) => refused.push(e.effectiveDirective));
                      const add = (tag, props) => document.head.append(Object.assign(document.createElement(tag), props));
                      add("script", {src: outside + "/npm/vega@5"});
                      add("link", {rel: "stylesheet", href: outside + "/bootstrap.min.css"});
                      add("img", {src: outside + "/pixel.png"});
                      add("script", {textContent: "window.inlineRan = true"});
                      try { await fetch(outside + "/beacon"); } catch (error) {}
                      await new Promise((resolve) => setTimeout(resolve, 1500));
                      return {refused: refused.sort(), inlineRan: window.inlineRan === true};
                    }""",
                    outside.url,
                )
            finally:
                browser.close()
    finally:
        outside.close()
    assert refused == {
        "refused": ["connect-src", "img-src", "script-src-elem", "script-src-elem", "style-src-elem"],
        "inlineRan": False,
    }
    assert outside.hits == ["/control.png"], "nothing injected into our page reached the other origin"
    assert len(requests.refused) >= 5


def _kinds(page) -> list[str]:
    return page.locator("tr.problem").evaluate_all("rows => rows.map((row) => row.dataset.kind)")


def test_each_on_call_state_in_chromium(board):
    """What on-call must see, each in the page with a screenshot kept: a privacy incident on top, wave 2's window
    closed and when it opens (Paris time, UTC on hover), dcir's DAG paused, a stalled transfer beside a moving
    one, the pool's slots; and the page in the Airflow UI's dark theme."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    _hours, opens = _closed_hours()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1400})
            requests = RequestLog(context)
            context.add_cookies([{"name": "_token", "value": _token(board), "url": BASE}])
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{BASE}/hdh/board")

            # a privacy incident on top, then failed, quarantined, stalled
            assert _kinds(page) == ["privacy_incident", "failed", "quarantined", "stalled"]
            first = page.locator("tr.problem").first
            expect(first).to_contain_text("pmsi_mco")
            expect(first.locator(".expectations")).to_have_text(f"PRIVACY INCIDENT {NIR_EXPECTATION}")
            expect(page.locator("#privacy-banner")).to_be_visible()
            problems = page.locator("section").filter(has=page.locator("table.problems"))
            problems.screenshot(path=str(ARTIFACTS / "board-privacy-on-top.png"))

            # wave 2's window closed, and when it opens: Paris time, UTC on hover
            wave2 = page.locator('.wave-card[data-wave="2"]')
            expect(wave2.locator(".window")).to_contain_text("window closed")
            opening = wave2.locator(".next-open time")
            expect(opening).to_have_text(f"{opens:%Y-%m-%d %H:%M} {opens.tzname()}")
            expect(opening).to_have_attribute("title", f"{opens.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC")
            expect(page.locator('.wave-card[data-wave="1"] .window')).to_contain_text("window open")
            for domain, state in (("dcir", "closed"), ("pmsi_mco", "closed"), ("causes_deces", "open")):
                expect(page.locator(f'table.domains tr[data-domain="{domain}"] .window')).to_contain_text(
                    f"window {state}"
                )
            page.locator("section").filter(has=page.locator(".waves")).screenshot(
                path=str(ARTIFACTS / "board-window-closed.png")
            )

            # dcir's DAG paused (in Airflow's database), and the pool's slots
            dcir = page.locator('table.domains tr[data-domain="dcir"]')
            expect(dcir.locator(".dag .badge")).to_have_text("paused")
            for domain in ("beneficiaires", "causes_deces", "pmsi_mco"):
                expect(page.locator(f'table.domains tr[data-domain="{domain}"] .dag .badge')).to_have_text("active")
            expect(wave2.locator(".paused-dags")).to_have_text("paused: hdh_transfer__dcir")
            expect(page.locator('.wave-card[data-wave="1"] .paused-dags')).to_have_count(0)
            expect(page.locator(".pool-occupancy")).to_have_text(
                "pool hdh_transfer: 0 running, 0 queued, 16 open of 16 slots"
            )
            page.locator("section").filter(has=page.locator("table.domains")).screenshot(
                path=str(ARTIFACTS / "board-dag-paused.png")
            )

            # a stalled transfer (no progress for two hours), beside one that moves
            stalled = page.locator("#in-flight tr.flight.stalled")
            expect(stalled).to_have_count(1)
            expect(stalled).to_have_attribute("data-domain", "dcir")
            expect(stalled.locator(".age")).to_contain_text("2.0 h")
            expect(stalled.locator(".moved")).to_have_text("40.0 MB / 250.0 MB")
            moving = page.locator('#in-flight tr.flight[data-domain="pmsi_mco"]')
            expect(moving).to_have_count(1)
            expect(moving.locator(".badge.state-stalled")).to_have_count(0)
            expect(dcir.locator(".in-flight")).to_have_text("1 1 stalled")
            expect(page.locator('tr.problem[data-kind="stalled"]')).to_have_attribute("data-domain", "dcir")
            page.locator("section").filter(has=page.locator("#in-flight")).screenshot(
                path=str(ARTIFACTS / "board-stalled.png")
            )
            page.screenshot(path=str(ARTIFACTS / "board-states.png"), full_page=True)
            light_html = page.content()

            # the Airflow UI in its dark theme: the board in its frame follows it
            ui = context.new_page()
            ui.set_default_timeout(60_000)
            ui.goto(f"{BASE}/")  # signed in already: the context holds the UI's token cookie
            ui.get_by_role("link", name="Migration").wait_for()
            ui.evaluate("localStorage.setItem('theme', 'dark')")
            ui.reload()
            expect(ui.locator("html")).to_have_class(re.compile(r"\bdark\b"))
            ui.get_by_role("link", name="Migration").click()
            frame = ui.frame_locator("iframe")
            frame.get_by_role("heading", name="SNDS migration: on-call board").wait_for()
            expect(frame.locator("html")).to_have_attribute("data-theme", "dark")
            expect(frame.locator("body")).to_have_css("background-color", "rgb(17, 24, 39)")
            ui.screenshot(path=str(ARTIFACTS / "board-dark.png"))
            ui.evaluate("localStorage.setItem('theme', 'light')")
            ui.reload()
            frame = ui.frame_locator("iframe")
            frame.get_by_role("heading", name="SNDS migration: on-call board").wait_for()
            expect(frame.locator("html")).to_have_attribute("data-theme", "light")
            expect(frame.locator("body")).to_have_css("background-color", "rgb(247, 250, 252)")
        finally:
            browser.close()
    assert RAW_NIR not in light_html and CANARY not in light_html
    assert requests.elsewhere() == [], "every request goes to the api-server"
    assert requests.refused == [], "nothing on the page is refused by the policy"
