"""The status model shared by the CLI and the board, read from a real SQLite or PostgreSQL ledger.

Problems in order of severity then age, stall detection from the domain's ``stall_minutes``, the
window's state and next opening, the ETA at the measured rate, a bounded burn-down, and the indexes
the board's queries use.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa
from conftest import reach_state, write_catalogue

from hdh_migration.board import board_view, render_board
from hdh_migration.catalogue import load_catalogue
from hdh_migration.ledger import INDEXES, Ledger, events_table, partitions_table
from hdh_migration.status import BURN_DOWN_POINTS, migration_status

POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
CANARY = "ZQXCANARY"
RAW_NIR = "253072B07300470"
MB = 1_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        yield Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    name = f"hdh_status_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    ledger = Ledger(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    yield ledger
    ledger.engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _at(ledger, moment: dt.datetime, domain: str, table: str, partition: str) -> None:
    """Move a partition's row and its events back in time, as if written then."""
    with ledger.engine.begin() as conn:
        key = (partitions_table.c.domain == domain, partitions_table.c.table_name == table,
               partitions_table.c.partition == partition)  # fmt: skip
        conn.execute(sa.update(partitions_table).where(*key).values(updated_at=moment))
        ekey = (events_table.c.domain == domain, events_table.c.table_name == table,
                events_table.c.partition == partition)  # fmt: skip
        conn.execute(sa.update(events_table).where(*ekey).values(at=moment))


def _seed(ledger, now: dt.datetime) -> None:
    hours = dt.timedelta(hours=1)
    # dcir: two months committed over the last hours, one failed long ago, one stalled, one moving
    for i, (table, month) in enumerate([("ER_PHA_F", "2024-01-01"), ("ER_PRS_F", "2024-01-01")]):
        ledger.record_event("dcir", "planned", {"source_bytes": 300 * MB}, table_name=table, partition=month,
                            run_id=f"r{i}")  # fmt: skip
        reach_state(ledger, "dcir", table, month, "committed", run_id=f"r{i}", rows=10, bytes=250 * MB, duration_s=60.0)
        _at(ledger, now - (2 - i) * hours, "dcir", table, month)
    ledger.set_state("dcir", "ER_PHA_F", "2024-02-01", "failed", run_id="r2", last_error=f"value {RAW_NIR} {CANARY}")
    _at(ledger, now - 30 * hours, "dcir", "ER_PHA_F", "2024-02-01")
    for table, run_id, last in (("ER_PRS_F", "stuck", 45), ("ER_PHA_F", "moving", 2)):
        partition = "2024-03-01"
        ledger.record_event("dcir", "planned", {"source_bytes": 400 * MB}, table_name=table, partition=partition,
                            run_id=run_id)  # fmt: skip
        ledger.set_state("dcir", table, partition, "transferring", run_id=run_id, new_attempt=True)
        _at(ledger, now - dt.timedelta(minutes=60), "dcir", table, partition)
        ledger.record_event("dcir", "transfer_progress", {"bytes": 120 * MB}, table_name=table, partition=partition,
                            run_id=run_id)  # fmt: skip
        with ledger.engine.begin() as conn:
            conn.execute(
                sa.update(events_table)
                .where(events_table.c.kind == "transfer_progress", events_table.c.run_id == run_id)
                .values(at=now - dt.timedelta(minutes=last))
            )
    # causes_deces: a quarantine (newer than the failure) and, older, a privacy incident in pmsi_mco
    for domain, table, partition, severity, age in (
        ("causes_deces", "KI_CCI_R", "2023", "data", 1),
        ("pmsi_mco", "T_MCOaaC", "2023", "privacy", 50),
    ):
        ledger.record_event(domain, "quarantine_report",
                            {"expectations": ["expect_x(COL)"], "severity": severity,
                             "report_key": f"_quarantine/{domain}/{table}/X={partition}/0123456789abcdef.json"},
                            table_name=table, partition=partition, run_id="q")  # fmt: skip
        reach_state(ledger, domain, table, partition, "quarantined", run_id="q", last_error=f"{CANARY} {RAW_NIR}")
        _at(ledger, now - age * hours, domain, table, partition)


def test_problems_come_most_severe_first_then_newest_and_stalls_follow_the_catalogue(ledger, tmp_path):
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    _seed(ledger, now)
    status = migration_status(load_catalogue(), ledger, now=now)
    kinds = [(p["kind"], p["domain"], p["table"]) for p in status["problems"]]
    assert kinds == [
        ("privacy_incident", "pmsi_mco", "T_MCOaaC"),
        ("failed", "dcir", "ER_PHA_F"),
        ("quarantined", "causes_deces", "KI_CCI_R"),
        ("stalled", "dcir", "ER_PRS_F"),
    ]
    flights = {f["table"]: f for f in status["in_flight"]}
    assert flights["ER_PRS_F"]["stalled"] and not flights["ER_PHA_F"]["stalled"]
    assert flights["ER_PRS_F"]["progress_age_s"] == 45 * 60
    assert flights["ER_PHA_F"]["bytes_moved"] == 120 * MB
    assert flights["ER_PHA_F"]["mb_per_s"] == pytest.approx(120 / (58 * 60), abs=1e-3)
    dcir = next(d for d in status["domains"] if d["domain"] == "dcir")
    assert (dcir["partitions_committed"], dcir["partitions_in_flight"], dcir["partitions_stalled"]) == (2, 2, 1)

    # a longer stall_minutes for dcir: nothing stalled any more
    def patient(raw):
        raw["domains"]["dcir"]["stall_minutes"] = 60

    catalogue = load_catalogue(write_catalogue(tmp_path / "patient.yaml", "patient", patient))
    status = migration_status(catalogue, ledger, now=now)
    assert [p["kind"] for p in status["problems"]] == ["privacy_incident", "failed", "quarantined"]


def test_window_closed_eta_and_burn_down(ledger, tmp_path):
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)  # a Tuesday, 11:00 in Paris

    def nights(raw):
        raw["waves"][2]["window"] = {"timezone": "Europe/Paris", "weekdays": "20:00-06:00", "weekends": "all"}

    catalogue = load_catalogue(write_catalogue(tmp_path / "nights.yaml", "nights", nights))
    _seed(ledger, now)
    status = migration_status(catalogue, ledger, now=now)
    wave1, wave2 = status["waves"]
    assert wave1["window"]["open"] and wave1["window"]["next_open"] is None
    assert not wave2["window"]["open"]
    assert wave2["window"]["next_open"] == "2026-12-01T19:00:00+00:00"  # 20:00 in Paris
    # 600 MB of source committed in the last hours: the window was closed since 05:00 UTC, so the rate is
    # measured on the open time only (the commits of 08:00 and 09:00 fell outside it: no open time, no rate)
    assert wave2["rate_mb_s"] is None and wave2["eta"] is None
    status = migration_status(load_catalogue(), ledger, now=now)
    wave2 = status["waves"][1]
    # measured from the first commit (two hours ago, to the bucket): 600 MB over about two hours
    assert wave2["rate_mb_s"] == pytest.approx(600 / (2 * 3600), rel=0.1)
    eta = dt.datetime.fromisoformat(wave2["eta"])
    expected = now + dt.timedelta(seconds=wave2["source_bytes_remaining"] / (wave2["rate_mb_s"] * MB))
    assert abs((eta - expected).total_seconds()) < 15 * 60
    assert 0 < len(wave2["burn_down"]) <= BURN_DOWN_POINTS + 1
    assert wave2["burn_down"][-1]["remaining"] == wave2["source_bytes_remaining"]
    remaining = [p["remaining"] for p in wave2["burn_down"]]
    assert remaining == sorted(remaining, reverse=True)


def test_the_board_shows_no_error_text_and_times_in_the_catalogues_zone(ledger):
    now = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    _seed(ledger, now)
    view = board_view(load_catalogue(), ledger, now=now)
    page = render_board(view, "/hdh")
    text = json.dumps(view)
    for leak in (CANARY, RAW_NIR):
        assert leak not in page and leak not in text
    # 12:00 UTC is 14:00 in Paris in July; UTC on hover
    assert (
        '<time datetime="2026-07-01T12:00:00+00:00" title="2026-07-01 12:00 UTC">2026-07-01 14:00 CEST</time>' in page
    )
    assert (
        page.index('data-kind="privacy_incident"')
        < page.index('data-kind="failed"')
        < page.index('data-kind="quarantined"')
        < page.index('data-kind="stalled"')
    )


def test_the_ledger_creates_the_boards_indexes_on_an_existing_ledger(ledger):
    names = {index.name for index in INDEXES}
    with ledger.engine.begin() as conn:
        for index in INDEXES:
            conn.execute(sa.text(f"DROP INDEX {index.name}"))
    inspector = sa.inspect(ledger.engine)
    assert not names & {i["name"] for t in ("hdh_event", "hdh_partition") for i in inspector.get_indexes(t)}
    again = Ledger(ledger.engine.url.render_as_string(hide_password=False))
    inspector = sa.inspect(again.engine)
    found = {i["name"] for t in ("hdh_event", "hdh_partition", "hdh_cutover_history") for i in inspector.get_indexes(t)}
    assert names <= found
    again.engine.dispose()


def test_an_older_ledger_gets_source_bytes_from_its_plans(ledger):
    ledger.record_event("dcir", "planned", {"source_bytes": 300 * MB}, table_name="ER_PHA_F", partition="2024-01-01")
    ledger.set_state("dcir", "ER_PHA_F", "2024-01-01", "transferring", run_id="r1")
    ledger.record_event("dcir", "planned", {"source_bytes": 310 * MB}, table_name="ER_PHA_F", partition="2024-01-01")
    assert ledger.get("dcir", "ER_PHA_F", "2024-01-01").source_bytes == 310 * MB, "the latest plan's, kept at once"
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE hdh_partition DROP COLUMN source_bytes"))
    again = Ledger(ledger.engine.url.render_as_string(hide_password=False))
    assert again.get("dcir", "ER_PHA_F", "2024-01-01").source_bytes == 310 * MB
    again.engine.dispose()


def test_the_eta_counts_only_the_windows_open_hours():
    from hdh_migration.status import window_eta
    from hdh_migration.windows import TransferWindow, parse_day_spec

    nights = TransferWindow("Europe/Paris", parse_day_spec("20:00-06:00"), parse_day_spec("all"))
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)  # a Tuesday, closed until 20:00 in Paris
    for hours in (5, 100, 1000):  # within a night, over weeks (whole weeks skipped), over months
        eta = window_eta(nights, now, hours * 3600 * MB, MB)  # at 1 MB/s
        # the same, minute by minute
        left, at = hours * 60, now
        while left:
            if nights.is_open(at):
                left -= 1
            at += dt.timedelta(minutes=1)
        assert abs((eta - at).total_seconds()) <= 15 * 60, (hours, eta, at)
    assert window_eta(nights, now, 400 * 24 * 3600 * MB, MB) is None, "past a year"
