"""The on-call board and the validation reports, served by the plugin's FastAPI app behind Airflow's auth.

``/hdh/board`` is a server-rendered page (shown inside the Airflow UI as the "Migration" external
view), ``/hdh/board.json`` the same facts as JSON. Both are built from the ledger and the
catalogue only: names, states, counts, sizes, times and run ids, never a data value.
``/hdh/reports/<domain>/<TABLE>/<PARTCOL>=<value>/<run>`` renders a quarantine report (see
``reports``). Who may read what is decided on the project's own DAG ids: the board needs every DAG
of the project, a report its domain's transfer DAG. Every response carries a Content-Security-Policy
that allows this origin only: the pages load their stylesheet and script from ``/hdh/static/``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from html import escape
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

PROBLEM_STATES = ("failed", "quarantined")
IN_FLIGHT_STATES = ("transferring", "validated")


# ---------------------------------------------------------------------------------------------
# the facts


def board_view(catalogue, ledger, failed_task_instances: dict | None = None, ui_base: str = "") -> dict:
    """Everything the board shows, as JSON-ready values.

    ``failed_task_instances`` maps ``(dag_id, run_id)`` to the ``(task_id, map_index)`` of its failed
    task instances in Airflow's database, for the log links; without an entry, a quarantined
    partition links to its run's ``validate_partition`` and a failed one to its run.
    """
    from hdh_migration.cli import status_rows
    from hdh_migration.naming import transfer_dag_id

    failed_task_instances = failed_task_instances or {}
    rows = ledger.partitions()
    records = {(r.domain, r.table_name, r.partition): r for r in rows}
    planned_bytes = _latest_details(ledger.events(kinds=("planned",)))
    quarantine_reports = _latest_details(ledger.events(kinds=("quarantine_report",)))
    status = {row["domain"]: row for row in status_rows(catalogue, ledger, rows)}
    domains = []
    for domain in sorted(catalogue.domains, key=lambda d: (d.wave, d.name)):
        row = status[domain.name]
        dag_id = transfer_dag_id(domain.name)
        expected = [(domain.name, t.name, p) for t in domain.tables for p in domain.partitions()]
        known, committed_source, unknown = 0, 0, 0
        for key in expected:
            record = records.get(key)
            size = planned_bytes.get(key, {}).get("source_bytes")
            if size is None and record is not None and record.state == "committed":
                size = record.bytes
            if size is None:
                unknown += 1
                continue
            known += size
            if record is not None and record.state == "committed":
                committed_source += size
        problems = [
            _problem(records[key], dag_id, quarantine_reports.get(key), failed_task_instances, ui_base)
            for key in sorted(records)
            if key[0] == domain.name and records[key].state in PROBLEM_STATES
        ]
        domains.append(
            {
                "domain": domain.name,
                "wave": domain.wave,
                "grain": domain.grain,
                "owner": domain.owner,
                "state": row["state"],
                "dag_id": dag_id,
                "dag_url": f"{ui_base}/dags/{dag_id}",
                "partitions_committed": row["partitions_committed"],
                "partitions_expected": row["partitions_expected"],
                "partitions_in_flight": sum(
                    1 for key in expected if key in records and records[key].state in IN_FLIGHT_STATES
                ),
                "rows_committed": row["rows"],
                "bytes_committed_in_store": row["bytes"],
                "source_bytes_committed": committed_source,
                "source_bytes_expected": known,
                "partitions_of_unknown_size": unknown,
                "problems": problems,
                "cutover": {k: row["cutover"][k] for k in ("action", "at", "by")} if row["cutover"] else None,
                "verify": {k: row["verify"][k] for k in ("at", "passed")} if row["verify"] else None,
            }
        )
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "domains": domains,
        "gap_scan": _gap_scan(ledger.last_gap_scan()),
        "throughput": _throughput(ledger.events(kinds=("partition_committed",))),
    }


def _latest_details(events: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Per (domain, table, partition), the JSON detail of its latest event among these."""
    latest = {}
    for event in events:
        latest[(event["domain"], event["table_name"], event["partition"])] = json.loads(event["detail"] or "{}")
    return latest


def _problem(record, dag_id: str, report: dict | None, failed_task_instances: dict, ui_base: str) -> dict:
    from hdh_migration.reports import report_link

    run_url = run_page(ui_base, dag_id, record.run_id or "")
    failed = failed_task_instances.get((dag_id, record.run_id), [])
    if not failed and record.state == "quarantined":
        failed = [("validate_partition", -1)]
    quarantined = record.state == "quarantined" and report is not None
    return {
        "table": record.table_name,
        "partition": record.partition,
        "state": record.state,
        "attempts": record.attempts,
        "since": record.updated_at.isoformat(timespec="seconds"),
        "run_id": record.run_id,
        "expectations": report["expectations"] if quarantined else [],
        "privacy_incident": quarantined and report["severity"] == "privacy",
        "report_url": report_link(report["report_key"]) if quarantined and report.get("report_key") else None,
        "run_url": run_url if record.run_id else None,
        "log_links": [
            {
                "task_id": task_id,
                "map_index": map_index,
                "url": f"{run_url}/tasks/{task_id}" + (f"/mapped/{map_index}" if map_index >= 0 else ""),
            }
            for task_id, map_index in failed
        ]
        if record.run_id
        else [],
    }


def run_page(ui_base: str, dag_id: str, run_id: str) -> str:
    """A DAG run's page in the Airflow UI."""
    return f"{ui_base}/dags/{dag_id}/runs/{quote(run_id, safe=':+')}"


def _gap_scan(scan: dict | None) -> dict | None:
    """The last gap scan's counts, and the gaps it listed (``report["gaps"]``: domain, table, partition)."""
    if scan is None:
        return None
    gaps = scan["report"].get("gaps") if isinstance(scan["report"], dict) else None
    return {
        "started_at": scan["started_at"].isoformat(timespec="seconds"),
        "finished_at": scan["finished_at"].isoformat(timespec="seconds"),
        "dry_run": scan["dry_run"],
        "partitions_checked": scan["partitions_checked"],
        "gaps": scan["gaps"],
        "backfills": scan["backfills"],
        "run_id": scan["run_id"],
        "gap_list": [
            {k: str(gap[k]) for k in ("domain", "table", "partition") if k in gap}
            for gap in (gaps if isinstance(gaps, list) else [])
            if isinstance(gap, dict)
        ],
    }


def _throughput(events: list[dict]) -> list[dict]:
    """One point per committed partition: when, its bytes, its duration (plan to commit)."""
    from hdh_migration.ledger import as_utc

    points = []
    for event in events:
        counts = json.loads(event["detail"] or "{}")
        if counts.get("bytes") and counts.get("duration_s"):
            points.append(
                {
                    "at": as_utc(event["at"]).isoformat(timespec="seconds"),
                    "domain": event["domain"],
                    "bytes": counts["bytes"],
                    "duration_s": counts["duration_s"],
                    "mb_per_s": counts["bytes"] / 1e6 / counts["duration_s"],
                }
            )
    return points


# ---------------------------------------------------------------------------------------------
# the page


def _mb(size: int) -> str:
    return f"{size / 1e9:,.2f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def _badge(state: str) -> str:
    return f'<span class="badge state-{escape(state)}">{escape(state.replace("_", " "))}</span>'


def _bar(done: int, total: int, label: str, caption: str = "") -> str:
    share = done / total if total else 0.0
    return (
        f'<progress class="bar" value="{done}" max="{max(total, 1)}" aria-label="{escape(label)}"></progress>'
        f'<div class="barlabel">{caption} <span class="muted">({share:.0%})</span></div>'
    )


def _domain_row(d: dict) -> str:
    unknown = d["partitions_of_unknown_size"]
    size_note = f'<div class="muted">+ {unknown} partition(s) not planned yet, size unknown</div>' if unknown else ""
    problems = len(d["problems"])
    return (
        f'<tr data-domain="{escape(d["domain"])}">'
        f'<td><a href="{escape(d["dag_url"])}" class="airflow domain">{escape(d["domain"])}</a>'
        f'<div class="muted">{escape(d["grain"])}, {escape(d["owner"])}</div></td>'
        f'<td class="wave">wave {d["wave"]}</td>'
        f'<td class="state">{_badge(d["state"])}</td>'
        "<td>"
        + _bar(
            d["partitions_committed"],
            d["partitions_expected"],
            f"partitions of {d['domain']}",
            f'<span class="partitions">{d["partitions_committed"]} / {d["partitions_expected"]}</span> partitions',
        )
        + "</td><td>"
        + _bar(
            d["source_bytes_committed"],
            d["source_bytes_expected"],
            f"bytes of {d['domain']}",
            f'<span class="bytes">{_mb(d["source_bytes_committed"])} / {"&ge; " if unknown else ""}'
            f"{_mb(d['source_bytes_expected'])}</span>",
        )
        + size_note
        + f'</td><td class="num">{d["partitions_in_flight"]}</td>'
        f'<td class="num{" alert" if problems else ""}">{problems}</td>'
        f"<td>{_cutover_cell(d)}</td></tr>"
    )


def _cutover_cell(d: dict) -> str:
    parts = []
    if d["cutover"]:
        parts.append(f"{escape(d['cutover']['action'])} {escape(d['cutover']['at'][:16].replace('T', ' '))}")
    if d["verify"]:
        verdict = "verified" if d["verify"]["passed"] else "VERIFY FAILED"
        parts.append(f"{verdict} {escape(d['verify']['at'][:10])}")
    return "<br>".join(parts) or '<span class="muted">-</span>'


def _problem_rows(domains: list[dict]) -> str:
    rows = []
    for d in domains:
        for p in d["problems"]:
            expectations = "".join(f"<code>{escape(name)}</code>" for name in p["expectations"]) or (
                '<span class="muted">see the task log</span>'
            )
            if p["privacy_incident"]:
                expectations = '<span class="privacy">PRIVACY INCIDENT</span> ' + expectations
            links = [
                f'<a href="{escape(link["url"])}" class="airflow">log: {escape(link["task_id"])}'
                + (f" [{link['map_index']}]" if link["map_index"] >= 0 else "")
                + "</a>"
                for link in p["log_links"]
            ]
            if p["report_url"]:
                links.append(f'<a href="{escape(p["report_url"])}">validation report</a>')
            rows.append(
                f'<tr class="problem" data-domain="{escape(d["domain"])}" data-table="{escape(p["table"])}">'
                f"<td>{escape(d['domain'])}</td><td>{escape(p['table'])}</td><td class='nowrap'>{escape(p['partition'])}</td>"
                f"<td>{_badge(p['state'])}</td><td class='expectations'>{expectations}</td>"
                f"<td class='num'>{p['attempts']}</td><td class='nowrap'>{escape(p['since'][:16].replace('T', ' '))}</td>"
                f"<td class='links'>{'<br>'.join(links)}</td></tr>"
            )
    if not rows:
        return '<p class="ok">No quarantined or failed partition.</p>'
    return (
        '<table class="problems"><thead><tr><th>domain</th><th>table</th><th>partition</th><th>state</th>'
        "<th>failing expectations</th><th>attempts</th><th>since (UTC)</th><th>where to look</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _gap_scan_html(scan: dict | None) -> str:
    if scan is None:
        return '<p class="muted" id="gap-scan">No gap scan has run yet.</p>'
    mode = " (a dry run: nothing triggered)" if scan["dry_run"] else ""
    gaps = "".join(
        f"<li>{escape(g.get('domain', ''))} {escape(g.get('table', ''))} {escape(g.get('partition', ''))}</li>"
        for g in scan["gap_list"][:20]
    )
    more = f"<li>and {len(scan['gap_list']) - 20} more</li>" if len(scan["gap_list"]) > 20 else ""
    return (
        f'<div id="gap-scan"><p>Finished <b>{escape(scan["finished_at"][:16].replace("T", " "))} UTC</b>{mode}: '
        f'<b class="gap-checked">{scan["partitions_checked"]}</b> partitions checked, '
        f'<b class="gap-count{" alert" if scan["gaps"] else ""}">{scan["gaps"]}</b> gap(s), '
        f'<b class="gap-backfills">{scan["backfills"]}</b> backfill(s) asked for.</p>'
        + (f'<ul class="gaps">{gaps}{more}</ul>' if gaps else "")
        + "</div>"
    )


def throughput_svg(points: list[dict], width: int = 960, height: int = 260) -> str:
    """Per committed partition, its MB/s (bytes over plan-to-commit time) against commit time."""
    if not points:
        return '<p class="muted" id="throughput">No partition committed yet.</p>'
    left, right, top, bottom = 60, 20, 16, 40
    times = [dt.datetime.fromisoformat(p["at"]).timestamp() for p in points]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    peak = max(p["mb_per_s"] for p in points)
    y_max = _nice_ceiling(peak)

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - right) if t1 > t0 else (left + width - right) / 2

    def y(v: float) -> float:
        return top + (1 - v / y_max) * (height - top - bottom)

    grid = []
    for i in range(5):
        value = y_max * i / 4
        grid.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    ticks = sorted({t0, t0 + span / 2, t1}) if t1 > t0 else [t0]
    for t in ticks:
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%m-%d %H:%M")
        anchor = "start" if t == t0 and t1 > t0 else "end" if t == t1 and t1 > t0 else "middle"
        grid.append(f'<text x="{x(t):.1f}" y="{height - bottom + 18}" text-anchor="{anchor}">{label} UTC</text>')
    ordered = sorted(zip(times, points, strict=True), key=lambda tp: tp[0])
    line = " ".join(f"{x(t):.1f},{y(p['mb_per_s']):.1f}" for t, p in ordered)
    dots = "".join(
        f'<circle cx="{x(t):.1f}" cy="{y(p["mb_per_s"]):.1f}" r="3.5"><title>{escape(p["domain"])} '
        f"{p['mb_per_s']:.2f} MB/s, {_mb(p['bytes'])} in {p['duration_s']:.0f} s</title></circle>"
        for t, p in ordered
    )
    total_bytes = sum(p["bytes"] for p in points)
    total_time = sum(p["duration_s"] for p in points)
    return (
        f'<svg id="throughput" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="throughput per committed partition, MB/s">'
        f"{''.join(grid)}"
        f'<text x="14" y="{(height - bottom) / 2:.0f}" transform="rotate(-90 14 {(height - bottom) / 2:.0f})" '
        f'text-anchor="middle">MB/s</text>'
        f'<polyline points="{line}" class="series"/>{dots}</svg>'
        f'<p class="muted">{len(points)} committed partition(s), {_mb(total_bytes)} in {total_time:,.0f} s of '
        f"partition time ({total_bytes / 1e6 / total_time:.2f} MB/s on average). Each point: one partition's "
        "bytes over its time from plan to commit.</p>"
    )


def _nice_ceiling(value: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at or above ``value``."""
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude)


def render_board(view: dict, root: str) -> str:
    """The board's page; ``root`` is where the plugin's app is mounted (its stylesheet and script)."""
    domains = view["domains"]
    committed = sum(d["partitions_committed"] for d in domains)
    expected = sum(d["partitions_expected"] for d in domains)
    problems = sum(len(d["problems"]) for d in domains)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<title>SNDS migration - on-call board</title>
<link rel="stylesheet" href="{escape(root)}/static/hdh.css"><script src="{escape(root)}/static/hdh.js" defer></script>
</head>
<body>
<header><h1>SNDS migration: on-call board</h1>
<div class="muted">{escape(view["generated_at"][:19].replace("T", " "))} UTC, refreshes every minute.
{committed} / {expected} partitions committed across {len(domains)} domains;
<span class="{"alert" if problems else ""}">{problems} need attention</span>.</div></header>
<section><h2>Domains</h2>
<table class="domains"><thead><tr><th>domain</th><th>wave</th><th>state</th>
<th>partitions committed / expected</th><th>source bytes committed / expected</th>
<th>in flight</th><th>needs attention</th><th>cutover</th></tr></thead>
<tbody>{"".join(_domain_row(d) for d in domains)}</tbody></table></section>
<section><h2>Quarantined and failed partitions</h2>{_problem_rows(domains)}</section>
<div class="two">
<section><h2>Last gap scan</h2>{_gap_scan_html(view["gap_scan"])}</section>
<section class="wide"><h2>Throughput</h2>{throughput_svg(view["throughput"])}</section>
</div>
<footer class="muted">Names, states, counts and sizes from the migration ledger; no data value is shown.
Expected partitions come from the catalogue (partitions &times; tables); expected bytes are the source sizes
listed when each partition was planned. The same facts as JSON: <a href="{escape(root)}/board.json">board.json</a>.
</footer>
</body></html>"""


# ---------------------------------------------------------------------------------------------
# the app


def _failed_task_instances(session, keys: set[tuple[str, str]]) -> dict:
    """The failed task instances of these (dag_id, run_id), from Airflow's database."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    if not keys:
        return {}
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index)
        .where(
            TaskInstance.dag_id.in_({d for d, _ in keys}),
            TaskInstance.run_id.in_({r for _, r in keys}),
            TaskInstance.state == "failed",
        )
        .order_by(TaskInstance.task_id, TaskInstance.map_index)
    )
    found: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for dag_id, run_id, task_id, map_index in rows:
        if (dag_id, run_id) in keys:
            found.setdefault((dag_id, run_id), []).append((task_id, map_index))
    return found


def _ui_base() -> str:
    from urllib.parse import urlparse

    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _current_view() -> dict:
    from airflow.utils.session import create_session

    from hdh_migration.naming import transfer_dag_id
    from hdh_migration.resources import current_catalogue as _catalogue
    from hdh_migration.resources import open_ledger as _ledger

    ledger = _ledger()
    keys = {
        (transfer_dag_id(r.domain), r.run_id) for r in ledger.partitions() if r.state in PROBLEM_STATES and r.run_id
    }
    with create_session() as session:
        failed = _failed_task_instances(session, keys)
    return board_view(_catalogue(), ledger, failed, _ui_base())


def project_dag_ids(catalogue) -> list[str]:
    """Every DAG of the project whose facts the board shows: per domain, transfer and cutover; the gap scan."""
    from hdh_migration.naming import GAP_SCAN_DAG_ID, cutover_dag_id, transfer_dag_id

    per_domain = [make(d.name) for d in catalogue.domains for make in (transfer_dag_id, cutover_dag_id)]
    return sorted([*per_domain, GAP_SCAN_DAG_ID])


def _require_dags(user, dag_ids: list[str]) -> None:
    """Refuse (403) unless the user may read every one of these DAGs, as Airflow's auth manager decides.

    The DAG ids are the project's own, never a request parameter: Airflow's ``requires_access_dag``
    takes the DAG id from the path or the query string, so ``?dag_id=<any DAG the user may read>``
    would have opened the board.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    teams = DagModel.get_dag_id_to_team_name_mapping(dag_ids)
    requests = [{"method": "GET", "details": DagDetails(id=d, team_name=teams.get(d))} for d in dag_ids]
    if not get_auth_manager().batch_is_authorized_dag(requests, user=user):
        raise HTTPException(status_code=403, detail="Forbidden: you may not read the migration's DAGs")


def _root(request: Request) -> str:
    """Where this app is mounted (``/hdh`` under the api-server's base path): its pages link from there."""
    return request.scope.get("root_path", "").rstrip("/")


# Only this app's own origin, for everything: no inline script or style, no plugin, no <base>, and
# framing only by the Airflow UI itself (the board is its "Migration" external view, an iframe).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {"hdh.css": "text/css; charset=utf-8", "hdh.js": "text/javascript; charset=utf-8"}


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import get_user

    from hdh_migration.naming import transfer_dag_id
    from hdh_migration.reports import render_report, report_ref, run_id_of
    from hdh_migration.resources import current_catalogue as _catalogue
    from hdh_migration.resources import open_target as _target

    # No /docs, /redoc nor /openapi.json: they would describe the app to anyone, without login.
    app = FastAPI(title="hdh-migration", docs_url=None, redoc_url=None, openapi_url=None)
    static = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    # Airflow's own authentication (a token in the header or the UI's cookie); the user, for the checks below.
    user_of_request = Depends(get_user)

    def every_project_dag(user=user_of_request) -> None:
        _require_dags(user, project_dag_ids(_catalogue()))

    board_readers = [Depends(every_project_dag)]
    logged_in = [user_of_request]

    @app.get("/board", response_class=HTMLResponse, dependencies=board_readers)
    def get_board(request: Request) -> HTMLResponse:
        return HTMLResponse(render_board(_current_view(), _root(request)))

    @app.get("/board.json", dependencies=board_readers)
    def get_board_json() -> dict:
        return _current_view()

    @app.get("/board-icon.svg", dependencies=logged_in)
    def get_icon() -> Response:
        return Response(_ICON, media_type="image/svg+xml")

    @app.get("/static/{name}", dependencies=logged_in)
    def get_static(name: str) -> Response:
        if name not in static:
            raise HTTPException(status_code=404, detail="no such file")
        return Response(static[name], media_type=STATIC_TYPES[name])

    @app.get("/reports/{domain}/{table}/{partition_dir}/{run_token}", response_class=HTMLResponse)
    def get_report(
        domain: str, table: str, partition_dir: str, run_token: str, request: Request, user=user_of_request
    ) -> HTMLResponse:
        ref = report_ref(_catalogue(), domain, table, partition_dir, run_token)
        if ref is None:
            raise HTTPException(status_code=404, detail="not a validation report")
        _require_dags(user, [transfer_dag_id(ref.domain)])  # the DAG whose validate_partition wrote it
        document = _target().get_json(ref.key)
        if not isinstance(document, dict):
            raise HTTPException(status_code=404, detail="report not found")
        run_id = run_id_of(document)
        run_url = run_page(_ui_base(), transfer_dag_id(ref.domain), run_id) if run_id else None
        return HTMLResponse(render_report(ref, document, root=_root(request), run_url=run_url))

    return app


_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2">'
    '<rect x="3" y="13" width="4" height="8"/><rect x="10" y="8" width="4" height="13"/>'
    '<rect x="17" y="3" width="4" height="18"/></svg>'
)
