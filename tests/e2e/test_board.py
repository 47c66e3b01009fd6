"""The on-call board in a real Airflow api-server, looked at in a real headless Chromium.

One api-server for the module, with its own Airflow database, the simple auth manager (one
``viewer`` user with a password) and a seeded SQLite ledger. A failing mapped task instance is
made by a real ``dag.test()`` run in that database, so the board's log links come from Airflow.
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
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
PORT = int(os.environ.get("HDH_API_PORT", "8080"))
BASE = f"http://127.0.0.1:{PORT}"
USER = "oncall"

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
"""


def _seed_ledger(url: str, failing_run_id: str) -> None:
    from hdh_migration.ledger import Ledger, events_table

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
        ledger.set_state(
            domain, table, partition, "committed", run_id=run_id, rows=rows, bytes=size, duration_s=seconds
        )

    # beneficiaires: cut over, its one snapshot committed.
    planned("beneficiaires", "IR_BEN_R", "2024-06-30", "manual__b1", 2, 40 * mb)
    committed("beneficiaires", "IR_BEN_R", "2024-06-30", "manual__b1", 1000, 40 * mb, 20.0)
    ledger.set_domain_state("beneficiaires", "cut_over")
    # causes_deces: 2022 committed, 2023 quarantined by two expectations.
    ledger.set_domain_state("causes_deces", "transferring")
    for partition, size in (("2022", 12 * mb), ("2023", 13 * mb)):
        planned("causes_deces", "KI_CCI_R", partition, f"manual__c{partition}", 1, size)
    committed("causes_deces", "KI_CCI_R", "2022", "manual__c2022", 500, 10 * mb, 4.0)
    ledger.record_event(
        "causes_deces",
        "quarantine_report",
        {
            "expectations": QUARANTINED_EXPECTATIONS,
            "severity": "data",
            "docs_key": "_quarantine/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/abc.html",
        },
        table_name="KI_CCI_R",
        partition="2023",
        run_id="manual__c2023",
    )
    ledger.set_state("causes_deces", "KI_CCI_R", "2023", "quarantined", run_id="manual__c2023", last_error=LEAKY_ERROR)
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
    ledger.set_state("dcir", "ER_PRS_F", "2024-03-01", "transferring", run_id="scheduled__2024-03-01")
    # pmsi_mco: 2022 committed for one table; a privacy incident on T_MCOaaC 2023.
    ledger.set_domain_state("pmsi_mco", "transferring")
    committed("pmsi_mco", "T_MCOaaB", "2022", "scheduled__2022", 30_000, 80 * mb, 16.0)
    ledger.record_event(
        "pmsi_mco",
        "quarantine_report",
        {"expectations": [NIR_EXPECTATION], "severity": "privacy", "docs_key": None},
        table_name="T_MCOaaC",
        partition="2023",
        run_id="scheduled__2023",
    )
    ledger.set_state(
        "pmsi_mco",
        "T_MCOaaC",
        "2023",
        "quarantined",
        run_id="scheduled__2023",
        last_error=f"PRIVACY INCIDENT {LEAKY_ERROR}",
    )
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
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=6)
    with ledger.engine.begin() as conn:
        ids = conn.execute(
            sa.select(events_table.c.id).where(events_table.c.kind == "partition_committed").order_by(events_table.c.id)
        ).scalars()
        for i, event_id in enumerate(list(ids)):
            conn.execute(
                sa.update(events_table).where(events_table.c.id == event_id).values(at=start + dt.timedelta(hours=i))
            )


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
    """A running api-server with the board, its password, and the failing dcir run's id."""
    tmp = tmp_path_factory.mktemp("board")
    password = secrets.token_urlsafe(12)
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    ledger_url = f"sqlite:///{tmp / 'ledger.db'}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": BASE,
        "AIRFLOW_CONN_HDH_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(tmp / "ledger.db")}),
    }
    env.pop("HDH_CATALOGUE", None)
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
        yield {"password": password, "failing_run_id": failing_run_id}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _token(password: str) -> str:
    request = urllib.request.Request(
        f"{BASE}/auth/token",
        data=json.dumps({"username": USER, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def _get(path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{BASE}{path}", headers=headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize("path", ["/hdh/board", "/hdh/board.json", "/hdh/board-icon.svg"])
def test_board_refuses_calls_without_login(board, path):
    status, body = _get(path)
    assert status in (401, 403), (status, body[:200])
    status, body = _get(path, token="not-a-token")
    assert status in (401, 403), (status, body[:200])
    assert CANARY not in body


def test_board_json_with_a_token(board):
    status, body = _get("/hdh/board.json", _token(board["password"]))
    assert status == 200, body[:300]
    view = json.loads(body)
    domains = {d["domain"]: d for d in view["domains"]}
    assert [d["domain"] for d in view["domains"]] == ["beneficiaires", "causes_deces", "dcir", "pmsi_mco"]
    assert (domains["dcir"]["wave"], domains["dcir"]["state"]) == (2, "transferring")
    assert (domains["dcir"]["partitions_committed"], domains["dcir"]["partitions_expected"]) == (3, 6)
    assert (domains["dcir"]["source_bytes_committed"], domains["dcir"]["source_bytes_expected"]) == (750e6, 1000e6)
    assert domains["dcir"]["partitions_of_unknown_size"] == 2
    (failed,) = domains["dcir"]["problems"]
    assert [(link["task_id"], link["map_index"]) for link in failed["log_links"]] == [("transfer_object", 1)]
    assert failed["log_links"][0]["url"] == (
        f"/dags/hdh_transfer__dcir/runs/{board['failing_run_id']}/tasks/transfer_object/mapped/1"
    )
    (quarantined,) = domains["causes_deces"]["problems"]
    assert quarantined["expectations"] == QUARANTINED_EXPECTATIONS
    assert (
        quarantined["log_links"][0]["url"]
        == "/dags/hdh_transfer__causes_deces/runs/manual__c2023/tasks/validate_partition"
    )
    assert domains["pmsi_mco"]["problems"][0]["privacy_incident"] is True
    assert view["gap_scan"]["gaps"] == 2
    assert len(view["throughput"]) == 6
    assert RAW_NIR not in body and CANARY not in body


def test_board_in_the_airflow_ui(board):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1250})
            page.set_default_timeout(60_000)
            page.goto(f"{BASE}/")
            page.get_by_label("Username").fill(USER)
            page.get_by_label("Password").fill(board["password"])
            page.get_by_role("button", name="Sign in").click()
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
            expect(dcir.locator(".bytes")).to_have_text("750.0 MB / \u2265 1.00 GB")
            expect(dcir).to_contain_text("2 partition(s) not planned yet")
            beneficiaires = frame.locator('table.domains tr[data-domain="beneficiaires"]')
            expect(beneficiaires.locator(".state")).to_have_text("cut over")
            expect(beneficiaires.locator(".partitions")).to_have_text("1 / 1")
            expect(frame.locator('table.domains tr[data-domain="causes_deces"] .bytes')).to_have_text(
                "12.0 MB / 25.0 MB"
            )

            problems = frame.locator("tr.problem")
            expect(problems).to_have_count(3)
            quarantined = frame.locator('tr.problem[data-domain="causes_deces"] .expectations code')
            expect(quarantined).to_have_text(QUARANTINED_EXPECTATIONS)
            privacy = frame.locator('tr.problem[data-domain="pmsi_mco"] .expectations')
            expect(privacy).to_have_text(f"PRIVACY INCIDENT {NIR_EXPECTATION}")
            expect(frame.locator("#gap-scan .gap-checked")).to_have_text("13")
            expect(frame.locator("#gap-scan .gap-count")).to_have_text("2")
            expect(frame.locator("#gap-scan .gap-backfills")).to_have_text("1")
            expect(frame.locator("#gap-scan li")).to_have_text(["dcir ER_PHA_F 2024-03-01", "pmsi_mco T_MCOaaC 2022"])
            expect(frame.locator("svg#throughput circle")).to_have_count(6)

            frame.get_by_role("link", name="log: transfer_object [1]").click()
            expect(page).to_have_url(
                f"{BASE}/dags/hdh_transfer__dcir/runs/{board['failing_run_id']}/tasks/transfer_object/mapped/1"
            )
            expect(page.get_by_role("heading", name="transfer_object [1]")).to_be_visible()
            expect(page.get_by_role("link", name="Logs", exact=True)).to_be_visible()
        finally:
            browser.close()
    assert "PRIVACY INCIDENT" in html
    assert RAW_NIR not in html and CANARY not in html
