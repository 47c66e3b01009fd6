"""The on-call board and the validation reports, served by the plugin's FastAPI app behind Airflow's auth.

``/hdh/board`` is a server-rendered page (shown inside the Airflow UI as the "Migration" external
view), ``/hdh/board.json`` the same facts as JSON. Both render the status model (``status``: the
one the CLI's ``status`` prints) read from the ledger, the catalogue and Airflow's database: names,
states, counts, sizes, times and run ids, never a data value nor an error's text. Problems come
first, most severe first (privacy incidents, failed, quarantined, stalled), then newest first; then
per wave its window, rate, ETA and burn-down; per domain why nothing moves (window, paused DAG, pool
slots, transfers in flight and the age of their last progress). Times are in the catalogue's time
zone, UTC on hover; the page follows the Airflow UI's light or dark theme (``static/hdh.js``).
Every list and chart is bounded, whatever the number of partitions.
``/hdh/reports/<domain>/<TABLE>/<PARTCOL>=<value>/<run>`` renders a quarantine report (see
``reports``). Who may read what is decided on the project's own DAG ids: the board needs every DAG
of the project, a report its domain's transfer DAG. Every response carries a Content-Security-Policy
that allows this origin only: the pages load their stylesheet and script from ``/hdh/static/``.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from hdh_migration.states import PartitionState
from hdh_migration.status import AirflowFacts, migration_status

MAX_PROBLEM_ROWS = 100
MAX_FLIGHT_ROWS = 50
PROBLEM_LABELS = {
    "privacy_incident": "privacy incident",
    "failed": "failed",
    "quarantined": "quarantined",
    "stalled": "stalled",
}


# ---------------------------------------------------------------------------------------------
# the facts


def board_view(
    catalogue,
    ledger,
    failed_task_instances=None,
    ui_base: str = "",
    airflow: AirflowFacts | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """Everything the board shows, as JSON-ready values: the status model, with links into Airflow.

    ``failed_task_instances`` maps ``(dag_id, run_id)`` to the ``(task_id, map_index)`` of its failed
    task instances in Airflow's database, for the log links (or is a function that reads them for a
    set of such keys: those of the problems shown); without an entry, a quarantined partition links
    to its run's ``validate_partition`` and a failed one to its run.
    """
    from hdh_migration.naming import transfer_dag_id

    status = migration_status(catalogue, ledger, now=now, airflow=airflow)
    if callable(failed_task_instances):
        shown = status["problems"][:MAX_PROBLEM_ROWS]
        failed_task_instances = failed_task_instances(
            {(transfer_dag_id(p["domain"]), p["run_id"]) for p in shown if p["run_id"] and p["kind"] != "stalled"}
        )
    failed_task_instances = failed_task_instances or {}
    for domain in status["domains"]:
        domain["dag_url"] = f"{ui_base}/dags/{domain['dag_id']}"
        for key in ("failed", "quarantined", "last_error"):  # error text is for the CLI, never the board
            domain.pop(key)
    for problem in status["problems"]:
        problem.update(_links(problem, transfer_dag_id(problem["domain"]), failed_task_instances, ui_base))
    for flight in status["in_flight"]:
        dag_id = transfer_dag_id(flight["domain"])
        flight["run_url"] = run_page(ui_base, dag_id, flight["run_id"]) if flight["run_id"] else None
    status["gap_scan"] = _gap_scan(ledger.last_gap_scan())
    return status


def _links(problem: dict, dag_id: str, failed_task_instances: dict, ui_base: str) -> dict:
    from hdh_migration.reports import report_link

    run_id = problem["run_id"]
    run_url = run_page(ui_base, dag_id, run_id or "")
    failed = failed_task_instances.get((dag_id, run_id), [])
    if not failed and problem["state"] == PartitionState.QUARANTINED:
        failed = [("validate_partition", -1)]
    return {
        "report_url": report_link(problem["report_key"]) if problem["report_key"] else None,
        "run_url": run_url if run_id else None,
        "log_links": [
            {
                "task_id": task_id,
                "map_index": map_index,
                "url": f"{run_url}/tasks/{task_id}" + (f"/mapped/{map_index}" if map_index >= 0 else ""),
            }
            for task_id, map_index in failed
        ]
        if run_id and problem["kind"] != "stalled"
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
        "started_at": _utc_iso(scan["started_at"]),
        "finished_at": _utc_iso(scan["finished_at"]),
        "dry_run": scan["dry_run"],
        "partitions_checked": scan["partitions_checked"],
        "gaps": scan["gaps"],
        "backfills": scan["backfills"],
        "run_id": scan["run_id"],
        "gap_list": [
            {k: str(gap[k]) for k in ("domain", "table", "partition") if k in gap}
            for gap in (gaps if isinstance(gaps, list) else [])[:20]
            if isinstance(gap, dict)
        ],
        "gap_list_total": len(gaps) if isinstance(gaps, list) else 0,
    }


def _utc_iso(moment: dt.datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# the page


def _mb(size: float) -> str:
    return f"{size / 1e9:,.2f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def _badge(state: str, label: str | None = None) -> str:
    return f'<span class="badge state-{escape(state)}">{escape(label or state.replace("_", " "))}</span>'


def _time(moment: str | None, tz: str, with_zone: bool = False) -> str:
    """An instant in the catalogue's time zone, UTC on hover."""
    if not moment:
        return '<span class="muted">-</span>'
    at = dt.datetime.fromisoformat(moment)
    local = at.astimezone(ZoneInfo(tz))
    utc = at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    zone = f" {local.tzname()}" if with_zone else ""
    return f'<time datetime="{escape(moment)}" title="{utc}">{local.strftime("%Y-%m-%d %H:%M")}{zone}</time>'


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _bar(done: float, total: float, label: str, caption: str = "") -> str:
    share = done / total if total else 0.0
    return (
        f'<progress class="bar" value="{done:.0f}" max="{max(total, 1):.0f}" aria-label="{escape(label)}"></progress>'
        f'<div class="barlabel">{caption} <span class="muted">({share:.0%})</span></div>'
    )


def _window_text(window: dict, tz: str) -> str:
    if window["open"]:
        return '<span class="badge state-open">window open</span>'
    return (
        '<span class="badge state-closed">window closed</span> '
        f'<span class="nowrap next-open">opens {_time(window["next_open"], tz, with_zone=True)}</span>'
    )


def _dag_cell(d: dict) -> str:
    if d["dag_paused"] is None:
        state = '<span class="muted">unknown</span>'
    elif d["dag_paused"]:
        state = '<span class="badge state-paused">paused</span>'
    else:
        state = '<span class="badge state-active">active</span>'
    return f'<a href="{escape(d["dag_url"])}" class="airflow">DAG</a> {state}'


def _domain_row(d: dict, window: dict, tz: str) -> str:
    unknown = d["partitions_of_unknown_size"]
    size_note = f'<div class="muted">+ {unknown} partition(s) not planned yet, size unknown</div>' if unknown else ""
    stalled = d["partitions_stalled"]
    flight = f"{d['partitions_in_flight']}" + (
        f' <span class="badge state-stalled">{stalled} stalled</span>' if stalled else ""
    )
    tasks = d["pool_tasks"]
    return (
        f'<tr data-domain="{escape(d["domain"])}">'
        f'<td><a href="{escape(d["dag_url"])}" class="airflow domain">{escape(d["domain"])}</a>'
        f'<div class="muted">{escape(d["grain"])}, {escape(d["owner"])}</div></td>'
        f'<td class="wave">wave {d["wave"]}</td>'
        f'<td class="state">{_badge(d["state"])}</td>'
        f'<td class="window">{_window_text(window, tz)}</td>'
        f'<td class="dag">{_dag_cell(d)}</td>'
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
        + f'</td><td class="num pool">{tasks.get("running", 0)} running, {tasks.get("queued", 0)} queued</td>'
        f'<td class="num in-flight">{flight}</td>'
        f'<td class="num problems{" alert" if d["problems_count"] else ""}">{d["problems_count"]}</td>'
        f"<td>{_cutover_cell(d, tz)}</td></tr>"
    )


def _cutover_cell(d: dict, tz: str) -> str:
    parts = []
    if d["cutover"]:
        parts.append(f"{escape(d['cutover']['action'])} {_time(d['cutover']['at'], tz)}")
    if d["verify"]:
        verdict = "verified" if d["verify"]["passed"] else "VERIFY FAILED"
        parts.append(f"{verdict} {_time(d['verify']['at'], tz)}")
    return "<br>".join(parts) or '<span class="muted">-</span>'


def _problem_rows(view: dict, tz: str) -> str:
    rows = []
    for p in view["problems"][:MAX_PROBLEM_ROWS]:
        expectations = "".join(f"<code>{escape(name)}</code>" for name in p["expectations"])
        if p["kind"] == "privacy_incident":
            expectations = '<span class="privacy">PRIVACY INCIDENT</span> ' + expectations
        elif p["kind"] == "stalled":
            expectations = f'<span class="muted">no progress for over {p.get("stall_minutes", "")} min</span>'
        elif not expectations:
            expectations = '<span class="muted">see the task log</span>'
        links = [
            f'<a href="{escape(link["url"])}" class="airflow">log: {escape(link["task_id"])}'
            + (f" [{link['map_index']}]" if link["map_index"] >= 0 else "")
            + "</a>"
            for link in p["log_links"]
        ]
        if p["report_url"]:
            links.append(f'<a href="{escape(p["report_url"])}">validation report</a>')
        if p["kind"] == "stalled" and p["run_url"]:
            links.append(f'<a href="{escape(p["run_url"])}" class="airflow">run</a>')
        rows.append(
            f'<tr class="problem problem-{p["kind"]}" data-domain="{escape(p["domain"])}" '
            f'data-table="{escape(p["table"])}" data-kind="{p["kind"]}">'
            f"<td>{_badge(p['kind'], PROBLEM_LABELS[p['kind']])}</td>"
            f"<td>{escape(p['domain'])}</td><td>{escape(p['table'])}</td><td class='nowrap'>{escape(p['partition'])}</td>"
            f"<td class='expectations'>{expectations}</td>"
            f"<td class='num'>{p['attempts']}</td><td class='nowrap since'>{_time(p['since'], tz)}</td>"
            f"<td class='links'>{'<br>'.join(links)}</td></tr>"
        )
    for d in view["domains"]:
        for w in d["waiting"]:
            rows.append(
                f'<tr class="waiting" data-domain="{escape(d["domain"])}" data-table="{escape(w["table"])}">'
                f"<td>{_badge('validated', 'waiting')}</td><td>{escape(d['domain'])}</td><td>{escape(w['table'])}</td>"
                f"<td class='nowrap'>{escape(w['partition'])}</td>"
                f"<td class='expectations'>passed; {escape(w['waits_for'])}</td><td></td><td></td><td></td></tr>"
            )
    if not rows:
        return '<p class="ok">No privacy incident, failed, quarantined or stalled partition.</p>'
    more = view["problems_total"] - len(rows)
    return (
        '<table class="problems"><thead><tr><th>problem</th><th>domain</th><th>table</th><th>partition</th>'
        f"<th>failing expectations</th><th>attempts</th><th>since ({escape(tz)})</th><th>where to look</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        + (
            f'<p class="muted more">and {more} more: <a href="board.json">board.json</a> lists them.</p>'
            if more > 0
            else ""
        )
    )


def _flight_rows(view: dict, tz: str) -> str:
    flights = sorted(view["in_flight"], key=lambda f: (not f["stalled"], -f["progress_age_s"]))
    if not flights:
        return '<p class="muted" id="in-flight">No transfer in flight.</p>'
    rows = []
    for f in flights[:MAX_FLIGHT_ROWS]:
        size = f" / {_mb(f['source_bytes'])}" if f["source_bytes"] else ""
        rate = f"{f['mb_per_s']:.1f} MB/s" if f["mb_per_s"] is not None else '<span class="muted">-</span>'
        stalled = ' <span class="badge state-stalled">stalled</span>' if f["stalled"] else ""
        rows.append(
            f'<tr class="flight{" stalled" if f["stalled"] else ""}" data-domain="{escape(f["domain"])}" '
            f'data-table="{escape(f["table"])}">'
            f"<td>{escape(f['domain'])}</td><td>{escape(f['table'])}</td><td class='nowrap'>{escape(f['partition'])}</td>"
            f"<td>{_badge(f['state'])}{stalled}</td><td class='num moved'>{_mb(f['bytes_moved'])}{size}</td>"
            f"<td class='num rate'>{rate}</td>"
            f"<td class='num age'>{_age(f['progress_age_s'])} <span class='muted'>({_time(f['last_progress_at'], tz)})</span></td>"
            "</tr>"
        )
    more = len(flights) - len(rows)
    return (
        '<table class="flights" id="in-flight"><thead><tr><th>domain</th><th>table</th><th>partition</th><th>state</th>'
        "<th>moved</th><th>rate</th><th>last progress</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>" + (f'<p class="muted">and {more} more.</p>' if more > 0 else "")
    )


def _wave_card(w: dict, tz: str) -> str:
    if w["eta"]:
        eta = _time(w["eta"], tz, with_zone=True)
    elif w["eta_beyond_a_year"]:
        eta = "more than a year away at this rate"
    elif w["source_bytes_remaining"] <= 0 and not w["estimated"]:
        eta = "done"
    else:
        eta = '<span class="muted">no rate measured yet</span>'
    rate = f"{w['rate_mb_s']:.3g} MB/s" if w["rate_mb_s"] is not None else '<span class="muted">-</span>'
    paused = (
        f'<div class="alert paused-dags">paused: {", ".join(escape(d) for d in w["paused_dags"])}</div>'
        if w["paused_dags"]
        else ""
    )
    window = w["window"]
    hours = "" if window["always_open"] else f' <span class="muted">({escape(window["timezone"])})</span>'
    return (
        f'<div class="wave-card" data-wave="{w["wave"]}"><h3>Wave {w["wave"]}</h3>'
        f'<div class="window">{_window_text(window, tz)}{hours}</div>{paused}'
        f'<dl><dt>remaining</dt><dd class="remaining">{"&ge; " if w["estimated"] else ""}'
        f"{_mb(w['source_bytes_remaining'])}</dd>"
        f'<dt>rate (last hours, window open)</dt><dd class="rate">{rate}</dd><dt>ETA</dt><dd class="eta">{eta}</dd></dl>'
        f"{burn_down_svg(w, tz)}</div>"
    )


def _axis_times(t0: float, t1: float, tz: str) -> list[tuple[float, str]]:
    zone = ZoneInfo(tz)
    ticks = sorted({t0, t0 + (t1 - t0) / 2, t1}) if t1 > t0 else [t0]
    return [(t, dt.datetime.fromtimestamp(t, zone).strftime("%m-%d %H:%M")) for t in ticks]


def burn_down_svg(wave: dict, tz: str, width: int = 420, height: int = 150) -> str:
    """Source bytes remaining over time for one wave (at most ``status.BURN_DOWN_POINTS`` points)."""
    points = wave["burn_down"]
    if not points:
        return f'<p class="muted burn-down" id="burn-down-{wave["wave"]}">No partition committed yet.</p>'
    left, right, top, bottom = 56, 12, 10, 28
    times = [dt.datetime.fromisoformat(p["at"]).timestamp() for p in points]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    y_max = _nice_ceiling(max(max(p["remaining"] for p in points), wave["source_bytes_total"], 1) / 1e9)

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - v / 1e9 / y_max) * (height - top - bottom)

    parts = []
    for i in range(3):
        value = y_max * i / 2 * 1e9
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value / 1e9:g} GB</text>'
        )
    for t, label in _axis_times(t0, t1, tz):
        anchor = "start" if t == t0 and t1 > t0 else "end" if t == t1 and t1 > t0 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}">{label}</text>')
    line = " ".join(f"{x(t):.1f},{y(p['remaining']):.1f}" for t, p in zip(times, points, strict=True))
    return (
        f'<svg class="burn-down" id="burn-down-{wave["wave"]}" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="wave {wave["wave"]}: source bytes remaining over time">{"".join(parts)}'
        f'<polyline points="{line}" class="series"/></svg>'
    )


def throughput_svg(throughput: dict, tz: str = "UTC", width: int = 960, height: int = 220) -> str:
    """Stored bytes committed per time bucket, as MB/s (at most ``status.BURN_DOWN_POINTS`` bars)."""
    points = throughput["points"]
    if not points:
        return '<p class="muted" id="throughput">No partition committed yet.</p>'
    left, right, top, bottom = 60, 20, 16, 40
    bucket = throughput["bucket_s"]
    times = [dt.datetime.fromisoformat(p["at"]).timestamp() for p in points]
    t0, t1 = min(times), max(times) + bucket
    span = t1 - t0
    y_max = _nice_ceiling(max(p["mb_per_s"] for p in points))
    plot_w = width - left - right

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + (1 - v / y_max) * (height - top - bottom)

    parts = []
    for i in range(5):
        value = y_max * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    for t, label in _axis_times(t0, t1, tz):
        anchor = "start" if t == t0 else "end" if t == t1 else "middle"
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 18}" text-anchor="{anchor}">{label}</text>')
    bar_w = max(1.0, plot_w * bucket / span - 1)
    bars = "".join(
        f'<rect x="{x(t):.1f}" y="{y(p["mb_per_s"]):.1f}" width="{bar_w:.1f}" '
        f'height="{y(0) - y(p["mb_per_s"]):.1f}"><title>{p["mb_per_s"]:.2f} MB/s, {_mb(p["bytes"])}</title></rect>'
        for t, p in zip(times, points, strict=True)
    )
    total = sum(p["bytes"] for p in points)
    return (
        f'<svg id="throughput" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="bytes committed per {_age(bucket)}, MB/s">{"".join(parts)}'
        f'<text x="14" y="{(height - bottom) / 2:.0f}" transform="rotate(-90 14 {(height - bottom) / 2:.0f})" '
        f'text-anchor="middle">MB/s</text>{bars}</svg>'
        f'<p class="muted">{_mb(total)} committed in {len(points)} period(s) of {_age(bucket)}; each bar: the bytes '
        f"stored by the partitions committed in that period, over its length. Times in {escape(tz)}.</p>"
    )


def _nice_ceiling(value: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude)


def _gap_scan_html(scan: dict | None, tz: str) -> str:
    if scan is None:
        return '<p class="muted" id="gap-scan">No gap scan has run yet.</p>'
    mode = " (a dry run: nothing triggered)" if scan["dry_run"] else ""
    gaps = "".join(
        f"<li>{escape(g.get('domain', ''))} {escape(g.get('table', ''))} {escape(g.get('partition', ''))}</li>"
        for g in scan["gap_list"]
    )
    more = scan["gap_list_total"] - len(scan["gap_list"])
    more_item = f"<li>and {more} more</li>" if more > 0 else ""
    return (
        f'<div id="gap-scan"><p>Finished <b>{_time(scan["finished_at"], tz)}</b>{mode}: '
        f'<b class="gap-checked">{scan["partitions_checked"]}</b> partitions checked, '
        f'<b class="gap-count{" alert" if scan["gaps"] else ""}">{scan["gaps"]}</b> gap(s), '
        f'<b class="gap-backfills">{scan["backfills"]}</b> backfill(s) asked for.</p>'
        + (f'<ul class="gaps">{gaps}{more_item}</ul>' if gaps else "")
        + "</div>"
    )


def _pool_text(pool: dict | None) -> str:
    if not pool:
        return ""
    return (
        f'<span class="pool-occupancy">pool {escape(pool["name"])}: {pool["running"]} running, '
        f"{pool['queued']} queued, {pool['open']} open of {pool['total']} slots</span>"
    )


def render_board(view: dict, root: str) -> str:
    """The board's page; ``root`` is where the plugin's app is mounted (its stylesheet and script)."""
    tz = view["timezone"]
    domains = view["domains"]
    windows = {w["wave"]: w["window"] for w in view["waves"]}
    committed = sum(d["partitions_committed"] for d in domains)
    expected = sum(d["partitions_expected"] for d in domains)
    problems = view["problems_total"]
    privacy = sum(1 for p in view["problems"] if p["kind"] == "privacy_incident")
    banner = (
        f'<p class="privacy banner" id="privacy-banner">PRIVACY INCIDENT: {privacy} partition(s) quarantined '
        "with raw NIR values in the source. Alert the data protection officer.</p>"
        if privacy
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<meta name="color-scheme" content="light dark">
<title>SNDS migration - on-call board</title>
<link rel="stylesheet" href="{escape(root)}/static/hdh.css"><script src="{escape(root)}/static/hdh.js" defer></script>
</head>
<body>
<header><h1>SNDS migration: on-call board</h1>
<div class="muted">{_time(view["generated_at"], tz, with_zone=True)}, refreshes every minute; times in
{escape(tz)} (UTC on hover). {committed} / {expected} partitions committed across {len(domains)} domains;
<span class="{"alert" if problems else ""}" id="problem-count">{problems} need attention</span>.
{_pool_text(view["pool"])}</div></header>
{banner}
<section><h2>Problems, most severe first</h2>{_problem_rows(view, tz)}</section>
<section><h2>Waves</h2><div class="waves">{"".join(_wave_card(w, tz) for w in view["waves"])}</div></section>
<section><h2>Domains</h2>
<table class="domains"><thead><tr><th>domain</th><th>wave</th><th>state</th><th>transfer window</th><th>DAG</th>
<th>partitions committed / expected</th><th>source bytes committed / expected</th>
<th>pool slots</th><th>in flight</th><th>problems</th><th>cutover</th></tr></thead>
<tbody>{"".join(_domain_row(d, windows[d["wave"]], tz) for d in domains)}</tbody></table></section>
<section><h2>Transfers in flight</h2>{_flight_rows(view, tz)}</section>
<div class="two">
<section><h2>Last gap scan</h2>{_gap_scan_html(view["gap_scan"], tz)}</section>
<section class="wide"><h2>Throughput</h2>{throughput_svg(view["throughput"], tz)}</section>
</div>
<footer class="muted">Names, states, counts and sizes from the migration ledger and Airflow; no data value is
shown. Expected partitions come from the catalogue (partitions &times; tables); expected bytes are the source
sizes listed when each partition was planned (the remaining bytes of partitions not planned yet are estimated
from the planned ones). A transfer is stalled after its domain's <code>stall_minutes</code> without progress.
The same facts as JSON: <a href="{escape(root)}/board.json">board.json</a>.
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


def _airflow_facts(session, catalogue) -> AirflowFacts:
    """From Airflow's database: which transfer DAGs are paused, the transfer pool's slots, and per DAG its
    task instances holding or waiting for a slot of that pool."""
    from airflow.models.dag import DagModel
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import func, select

    from hdh_migration.catalogue import TRANSFER_POOL
    from hdh_migration.naming import transfer_dag_id

    dag_ids = [transfer_dag_id(d.name) for d in catalogue.domains]
    paused = dict(
        session.execute(select(DagModel.dag_id, DagModel.is_paused).where(DagModel.dag_id.in_(dag_ids))).all()
    )
    stats = Pool.slots_stats(session=session).get(TRANSFER_POOL)
    pool = None
    if stats is not None:
        total = stats["total"]
        pool = {
            "name": TRANSFER_POOL,
            "total": total if total != float("inf") else "unlimited",
            "running": stats["running"],
            "queued": stats["queued"] + stats.get("scheduled", 0),
            "open": stats["open"] if stats["open"] != float("inf") else "unlimited",
        }
    pool_tasks: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.state, func.count())
        .where(
            TaskInstance.pool == TRANSFER_POOL,
            TaskInstance.dag_id.in_(dag_ids),
            TaskInstance.state.in_(("running", "queued", "scheduled")),
        )
        .group_by(TaskInstance.dag_id, TaskInstance.state)
    )
    for dag_id, state, count in rows:
        slot = "running" if state == "running" else "queued"
        tasks = pool_tasks.setdefault(dag_id, {"running": 0, "queued": 0})
        tasks[slot] += count
    return AirflowFacts(paused=paused, pool=pool, pool_tasks=pool_tasks)


def _current_view() -> dict:
    from airflow.utils.session import create_session

    from hdh_migration.resources import current_catalogue as _catalogue
    from hdh_migration.resources import open_ledger as _ledger

    catalogue = _catalogue()
    with create_session() as session:
        airflow = _airflow_facts(session, catalogue)
        return board_view(catalogue, _ledger(), lambda keys: _failed_task_instances(session, keys), _ui_base(), airflow)


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
