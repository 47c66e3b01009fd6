"""Board benchmark: the on-call board's server render time on a real-scale ledger, and Chromium's time to interactive.

Seeds a ledger (SQLite and/or PostgreSQL) of ``--partitions`` table-partitions (default 50,000:
10 monthly domains x 5 tables x 1,000 months) and ``--events`` events (default 500,000), in the
mix a long migration has: ~90% committed, the rest failed, quarantined (some privacy incidents),
in flight (some stalled) or not planned yet; each committed partition with its plan, transfer
progress beats, validation and commit events, spread over 60 days. Seeding is never timed.

Timed, side by side on the same ledger (median of ``--repeat`` runs after one warm-up):

  board        ``board_view`` + ``render_board``: every query the page makes and its HTML;
  no indexes   the same after dropping the indexes the ledger creates for the board (``ledger.INDEXES``);
  trivial      a trivial page from the same ledger (its last gap scan): the floor of one request.

Then Chromium (Debian's, driven by Playwright) opens the rendered page from a loopback server with
the board's own stylesheet, script and Content-Security-Policy, and reports its navigation timing
(DOM interactive, load) against a trivial page served the same way, and the page's size.

    python bench/board_bench.py                       # SQLite and PostgreSQL, 50,000 / 500,000
    python bench/board_bench.py --backend sqlite --partitions 5000 --events 50000   # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from hdh_migration.board import (  # noqa: E402
    CONTENT_SECURITY_POLICY,
    STATIC,
    STATIC_TYPES,
    board_view,
    render_board,
)
from hdh_migration.catalogue import load_catalogue  # noqa: E402
from hdh_migration.ledger import INDEXES, Ledger, events_table, partitions_table  # noqa: E402

POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
CHROMIUM = "/usr/bin/chromium"
DOMAINS, TABLES = 10, 5
MB = 1_000_000


def write_catalogue(directory: Path, months: int) -> Path:
    """``DOMAINS`` monthly domains of ``TABLES`` tables over ``months`` months, in two waves (Paris time)."""
    first = dt.date(2026 - months // 12 - 1, 1, 1)
    last_index = months - 1
    last = dt.date(first.year + last_index // 12, last_index % 12 + 1, 1)
    schema = str(ROOT / "schemas" / "ER_PRS_F.json")
    raw = {
        "version": 1,
        "source_container": "bench",
        "target_bucket": "bench",
        "waves": {
            1: {"start": "2024-01-01", "window": {"timezone": "Europe/Paris", "weekdays": "all", "weekends": "all"}},
            2: {"start": "2024-01-01", "window": {"timezone": "Europe/Paris", "weekdays": "20:00-06:00",
                                                  "weekends": "all"}},
        },
        "domains": {
            f"bench_{d:02d}": {
                "owner": "bench",
                "wave": 1 + d % 2,
                "grain": "monthly",
                "first_partition": first.isoformat(),
                "cutover_partition": last.isoformat(),
                "tables": {
                    f"ER_B{d:02d}_{t}": {"format": "parquet", "partition_column": "FLX_DIS_DTD", "schema": schema,
                                         "suite": schema}
                    for t in range(TABLES)
                },
            }
            for d in range(DOMAINS)
        },
    }  # fmt: skip
    path = directory / "domains.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def seed(ledger: Ledger, catalogue, partitions: int, events: int, now: dt.datetime) -> dict:
    """Bulk-insert the partitions and events; returns the state mix."""
    rng = random.Random(17)
    keys = [(d.name, t.name, p) for d in catalogue.domains for t in d.tables for p in d.partitions()][:partitions]
    start = now - dt.timedelta(days=60)
    span = (now - start).total_seconds()
    rows, evs, mix = [], [], {}
    for i, (domain, table, partition) in enumerate(keys):
        roll = rng.random()
        state = (
            "committed" if roll < 0.90 else "failed" if roll < 0.906 else "quarantined" if roll < 0.91
            else "transferring" if roll < 0.914 else None
        )  # fmt: skip
        mix[state or "not planned"] = mix.get(state or "not planned", 0) + 1
        if state is None:
            continue
        at = start + dt.timedelta(seconds=span * i / len(keys))
        if state == "transferring":
            at = now - dt.timedelta(minutes=rng.choice([2, 5, 50, 90]))
        run_id = f"scheduled__{partition}"
        size = rng.randint(50, 400) * MB
        rows.append({"domain": domain, "table_name": table, "partition": partition, "state": state,
                     "rows": 1000 if state == "committed" else None, "bytes": size if state == "committed" else None,
                     "duration_s": 60.0 if state == "committed" else None, "attempts": 1,
                     "last_error": "bench error" if state in ("failed", "quarantined") else None, "run_id": run_id,
                     "manifest_sha256": None, "source_etags": None, "updated_at": at, "source_bytes": size})  # fmt: skip
        base = {"domain": domain, "table_name": table, "partition": partition, "run_id": run_id}
        evs.append({**base, "at": at - dt.timedelta(minutes=30), "kind": "planned",
                    "detail": json.dumps({"objects": 4, "source_bytes": size})})  # fmt: skip
        evs.append({**base, "at": at - dt.timedelta(minutes=30), "kind": "partition_transferring", "detail": None})
        for beat in range(3):
            evs.append({**base, "at": at - dt.timedelta(minutes=20 - 5 * beat), "kind": "transfer_progress",
                        "detail": json.dumps({"bytes": size // 4})})  # fmt: skip
        if state == "quarantined":
            privacy = rng.random() < 0.1
            evs.append({**base, "at": at, "kind": "quarantine_report",
                        "detail": json.dumps({"expectations": ["expect_column_values_to_not_be_null(FLX_DIS_DTD)"],
                                              "severity": "privacy" if privacy else "data",
                                              "report_key": f"_quarantine/{domain}/{table}/FLX_DIS_DTD={partition}/"
                                                            "0123456789abcdef.json"})})  # fmt: skip
        if state != "transferring":
            evs.append({**base, "at": at, "kind": f"partition_{state}",
                        "detail": json.dumps({"rows": 1000, "bytes": size, "duration_s": 60.0})})  # fmt: skip
    while len(evs) < events:  # more progress beats, as long transfers of large objects write
        row = rows[rng.randrange(len(rows))]
        evs.append({"domain": row["domain"], "table_name": row["table_name"], "partition": row["partition"],
                    "run_id": row["run_id"], "at": row["updated_at"] - dt.timedelta(minutes=25),
                    "kind": "transfer_progress", "detail": json.dumps({"bytes": MB})})  # fmt: skip
    evs.sort(key=lambda e: e["at"])
    with ledger.engine.begin() as conn:
        for chunk in range(0, len(rows), 5000):
            conn.execute(sa.insert(partitions_table), rows[chunk : chunk + 5000])
        for chunk in range(0, len(evs), 20000):
            conn.execute(sa.insert(events_table), evs[chunk : chunk + 20000])
    for domain in catalogue.domains:
        ledger.set_domain_state(domain.name, "transferring")
    ledger.record_gap_scan(started_at=now - dt.timedelta(hours=3), dry_run=True, partitions_checked=len(keys),
                           gaps=mix.get("not planned", 0), backfills=0, report={"gaps": []})  # fmt: skip
    with ledger.engine.connect() as conn:
        counted = {
            "partitions (ledger rows)": conn.execute(sa.select(sa.func.count()).select_from(partitions_table)).scalar(),
            "events": conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar(),
        }
    if ledger.engine.dialect.name == "postgresql":
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    return {"table-partitions expected": len(keys), **counted, **{f"state {k}": v for k, v in sorted(mix.items())}}


def timed(function, repeat: int) -> tuple[float, object]:
    function()  # warm-up: connections, caches
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def trivial_page(ledger) -> str:
    scan = ledger.last_gap_scan()
    return f"<!doctype html><html><head><title>t</title></head><body>{scan['gaps'] if scan else 0}</body></html>"


def capped_ledger(ledger, cap_s: float):
    """The same ledger through a new engine whose every statement the database stops after ``cap_s`` seconds."""
    engine = sa.create_engine(ledger.engine.url, future=True)
    if engine.dialect.name == "sqlite":
        deadline = [math.inf]

        @sa.event.listens_for(engine, "connect")
        def _cap(conn, _record):
            conn.set_progress_handler(lambda: time.perf_counter() > deadline[0], 100_000)

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _start(*_args):
            deadline[0] = time.perf_counter() + cap_s
    else:

        @sa.event.listens_for(engine, "connect")
        def _cap(conn, _record):
            with conn.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {int(cap_s * 1000)}")

    capped = Ledger.__new__(Ledger)  # no schema set-up: it would create the indexes again
    capped.engine = engine
    return capped


def measure_server(ledger, catalogue, repeat: int, now: dt.datetime, cap_s: float) -> tuple[dict, str]:
    def board(ledger=ledger) -> str:
        return render_board(board_view(catalogue, ledger, now=now), "")

    board_s, page = timed(board, repeat)
    trivial_s, _ = timed(lambda: trivial_page(ledger), repeat)
    with ledger.engine.begin() as conn:
        for index in INDEXES:
            conn.execute(sa.text(f"DROP INDEX {index.name}"))
        if ledger.engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE"))
    bare = capped_ledger(ledger, cap_s)
    started = time.perf_counter()
    try:
        board(bare)
        bare_s = time.perf_counter() - started
    except sa.exc.OperationalError:  # a statement ran past the cap
        bare_s = None
    bare.engine.dispose()
    for index in INDEXES:
        index.create(ledger.engine, checkfirst=True)
    return {"board_s": board_s, "no_indexes_s": bare_s, "trivial_s": trivial_s}, page


class _Pages(BaseHTTPRequestHandler):
    pages: dict[str, tuple[bytes, str]] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        body, kind = self.pages.get(self.path.split("?")[0], (b"not found", "text/plain"))
        self.send_response(200 if self.path.split("?")[0] in self.pages else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def measure_browser(page: str, repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    _Pages.pages = {
        "/board": (page.encode(), "text/html; charset=utf-8"),
        "/trivial": (b"<!doctype html><html><head><title>t</title></head><body>ok</body></html>", "text/html"),
        **{f"/static/{name}": ((STATIC / name).read_bytes(), kind) for name, kind in STATIC_TYPES.items()},
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    timing = "() => { const n = performance.getEntriesByType('navigation')[0]; " \
             "return {interactive: n.domInteractive, load: n.loadEventEnd, nodes: document.getElementsByTagName('*').length}; }"  # fmt: skip
    results: dict[str, list[dict]] = {"board": [], "trivial": []}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                for _ in range(repeat + 1):
                    for name in results:
                        tab = browser.new_page(viewport={"width": 1440, "height": 1000})
                        tab.goto(f"{base}/{name}", wait_until="load")
                        results[name].append(tab.evaluate(timing))
                        if name == "board":  # usable: the problems' table answers a click at once
                            started = time.perf_counter()
                            tab.locator("h2").first.click()
                            results[name][-1]["click_ms"] = (time.perf_counter() - started) * 1000
                        tab.close()
            finally:
                browser.close()
    finally:
        server.shutdown()
    board = results["board"][1:]
    trivial = results["trivial"][1:]
    return {
        "page_bytes": len(page.encode()),
        "dom_nodes": board[0]["nodes"],
        "interactive_ms": statistics.median(r["interactive"] for r in board),
        "load_ms": statistics.median(r["load"] for r in board),
        "click_ms": statistics.median(r["click_ms"] for r in board),
        "trivial_interactive_ms": statistics.median(r["interactive"] for r in trivial),
        "trivial_load_ms": statistics.median(r["load"] for r in trivial),
    }


def run_backend(backend: str, args, catalogue, now: dt.datetime, tmp: Path) -> tuple[dict, str]:
    database = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
    else:
        database = f"hdh_board_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    try:
        ledger = Ledger(url)
        started = time.perf_counter()
        seeded = seed(ledger, catalogue, args.partitions, args.events, now)
        print(f"[{backend}] seeded in {time.perf_counter() - started:.0f} s (not timed): {seeded}", flush=True)
        figures, page = measure_server(ledger, catalogue, args.repeat, now, args.cap)
        ledger.engine.dispose()
        return figures, page
    finally:
        if database:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a statement may take without the indexes")
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    months = -(-args.partitions // (DOMAINS * TABLES))
    with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
        catalogue = load_catalogue(write_catalogue(Path(tmp), months))
        backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
        page = None
        for backend in backends:
            figures, page = run_backend(backend, args, catalogue, now, Path(tmp))
            bare = figures["no_indexes_s"]
            bare_text = (
                f"{bare * 1000:.0f} ms ({bare / figures['board_s']:.1f}x the board's time)"
                if bare is not None
                else f"one statement stopped after {args.cap:.0f} s, unfinished (over {args.cap / figures['board_s']:.0f}x)"
            )
            print(
                f"[{backend}] server render (board_view + render_board), median of {args.repeat}: "
                f"{figures['board_s'] * 1000:.0f} ms (budget 1000 ms); without the board's indexes {bare_text}; "
                f"a trivial page {figures['trivial_s'] * 1000:.1f} ms (the board is "
                f"{figures['board_s'] / figures['trivial_s']:.0f}x that)",
                flush=True,
            )
        if not args.no_browser and page is not None:
            b = measure_browser(page, args.repeat)
            print(
                f"[chromium] board page {b['page_bytes'] / 1000:.0f} kB, {b['dom_nodes']} elements: DOM interactive "
                f"{b['interactive_ms']:.0f} ms, load {b['load_ms']:.0f} ms, a click answered in {b['click_ms']:.0f} ms; "
                f"a trivial page: interactive {b['trivial_interactive_ms']:.0f} ms, load {b['trivial_load_ms']:.0f} ms "
                f"(the board's load is {b['load_ms'] / max(b['trivial_load_ms'], 0.1):.1f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
