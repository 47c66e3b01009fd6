"""The validation report of a quarantined partition: a page of our own, for on-call.

The quarantine writes the redacted JSON report to the sovereign store
(``_quarantine/<domain>/<TABLE>/<PARTCOL>=<value>/<run>.json``); the plugin's API renders it into
HTML at each request, from an allow-list of its fields: expectation names, columns and counts,
never a value, whatever else the document holds. The page loads one stylesheet and one script
from the same app and nothing else (GX's Data Docs, which this replaces, pulled scripts and styles
from public CDNs and an AWS bucket into Airflow's origin).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from html import escape

from hdh_migration.layout import QUARANTINE_PREFIX, quarantine_key

REPORT_XCOM_KEY = "hdh_validation_report"
REPORT_ROUTE = "/hdh/reports/"

# A partition value as the catalogue writes them (2023, 2024-06-30), and a run's token (layout.run_token).
_PARTITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RUN_TOKEN = re.compile(r"[0-9a-f]{16}")
_COLUMN_NAME = re.compile(r"\w{1,128}")
_RUN_ID = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")  # Airflow's default allowed_run_id_pattern
# The counts a report may show, in this order; any other field of a result is never rendered.
_COUNTS = {
    "element_count": "rows checked",
    "unexpected_count": "unexpected",
    "missing_count": "missing",
    "observed_value": "observed",
    "source_rows": "source rows",
    "target_rows": "target rows",
}


def report_link(report_key: str) -> str:
    """The on-call link to a quarantine report kept in the sovereign store, served by the plugin's API."""
    return REPORT_ROUTE + report_key.removeprefix(f"{QUARANTINE_PREFIX}/").removesuffix(".json")


@dataclass(frozen=True)
class ReportRef:
    """Which quarantine report a link names: a table of the catalogue, a partition, a run."""

    domain: str
    table: str
    partition_column: str
    partition: str
    run_token: str

    @property
    def key(self) -> str:
        return quarantine_key(self.domain, self.table, self.partition_column, self.partition, self.run_token)


def report_ref(catalogue, domain: str, table: str, partition_dir: str, run_token: str) -> ReportRef | None:
    """The report a link's parts name, or None unless they name a table of the catalogue and a run token."""
    found = next((d for d in catalogue.domains if d.name == domain), None)
    found = next((t for t in found.tables if t.name == table), None) if found else None
    column, _, partition = partition_dir.partition("=")
    if (
        found is None
        or column != found.partition_column
        or not _PARTITION.fullmatch(partition)
        or ".." in partition
        or not _RUN_TOKEN.fullmatch(run_token)
    ):
        return None
    return ReportRef(domain, table, column, partition, run_token)


def render_report(ref: ReportRef, document: dict, *, root: str, run_url: str | None) -> str:
    """The HTML page of one quarantine report.

    Where the report belongs (domain, table, partition) comes from the checked link, not from the
    document; ``root`` is where the plugin's app is mounted (its stylesheet and script), ``run_url``
    the page in Airflow of the run ``run_id_of(document)``. Fields read from the document: ``run_id``, ``at``, ``severity``,
    ``failing_expectations`` and ``validation`` (``statistics.evaluated_expectations`` and, per
    result, ``type``, the column names of ``kwargs``, ``success`` and the integer counts of ``result``).
    """
    from hdh_migration.validation import expectation_id

    validation = _dict(document.get("validation"))
    results = [r for r in validation.get("results") or [] if isinstance(r, dict) and isinstance(r.get("type"), str)]
    failing = {name for name in document.get("failing_expectations") or [] if isinstance(name, str)}
    rows = []
    for result in results:
        name = expectation_id({"type": result["type"], "kwargs": _columns(result.get("kwargs"))})
        state = "passed" if result.get("success") is True else "failed" if name in failing else "waived"
        rows.append((("failed", "waived", "passed").index(state), name, state, result))
    rows.sort(key=lambda row: row[:2])
    blocking = sorted(failing)
    evaluated = _int(_dict(validation.get("statistics")).get("evaluated_expectations"))
    privacy = document.get("severity") == "privacy"
    title = f"{ref.domain}.{ref.table} {ref.partition_column}={ref.partition}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Validation report - {escape(title)}</title>
<link rel="stylesheet" href="{escape(root)}/static/hdh.css"><script src="{escape(root)}/static/hdh.js" defer></script>
</head>
<body class="report">
<header><h1>Validation report: {escape(ref.domain)}.{escape(ref.table)}</h1>
<div class="muted">partition <b>{escape(ref.partition_column)}={escape(ref.partition)}</b>,
run {_run_link(run_id_of(document), run_url)},
quarantined {_when(document.get("at"))}</div></header>
{'<p class="privacy banner">PRIVACY INCIDENT: raw NIR values in the source.</p>' if privacy else ""}
<section id="verdict"><h2>Verdict</h2>
<p><b class="alert blocking-count">{len(blocking)}</b> blocking expectation(s) failed out of
{len(results) if evaluated is None else evaluated} evaluated: the partition is quarantined, nothing was promoted.</p>
<p>{_next_step(ref, privacy)}</p>
<ul class="blocking">{"".join(f"<li><code>{escape(name)}</code></li>" for name in blocking)}</ul></section>
<section><h2>Expectations</h2>
<table class="expectations"><thead><tr><th>state</th><th>expectation</th><th>column(s)</th><th>counts</th></tr></thead>
<tbody>{"".join(_result_row(name, state, result) for _, name, state, result in rows)}</tbody></table></section>
<footer class="muted">Expectation names, column names and counts from the redacted report
<code>{escape(ref.key)}</code> in the sovereign store; no data value is shown. The rules themselves are in the table's suite.</footer>
</body></html>"""


def _result_row(name: str, state: str, result: dict) -> str:
    counts = _dict(result.get("result"))
    shown = [(label, _int(counts.get(field))) for field, label in _COUNTS.items()]
    parts = [f'{label} <b class="count">{value:,}</b>' for label, value in shown if value is not None]
    checked, unexpected = _int(counts.get("element_count")), _int(counts.get("unexpected_count"))
    if checked and unexpected is not None:
        parts.append(f'<span class="muted">({unexpected / checked:.2%} unexpected)</span>')
    if counts.get("raised_exception") is True:
        parts.append('<span class="alert">the check raised an error</span>')
    columns = ", ".join(_column_names(result.get("kwargs")))
    return (
        f'<tr class="{state}" data-expectation="{escape(name)}"><td><span class="badge state-{state}">{state}</span></td>'
        f"<td><code>{escape(result['type'])}</code></td><td>{escape(columns)}</td>"
        f'<td class="counts">{" &middot; ".join(parts)}</td></tr>'
    )


def _next_step(ref: ReportRef, privacy: bool) -> str:
    if privacy:
        return (
            "Call the data protection officer and have the source fixed in Azure, then re-run the partition. "
            "A privacy incident cannot be waived."
        )
    return (
        "Fix the source partition in Azure and re-run it, or accept these expectations with a recorded waiver: "
        f"<code>python -m hdh_migration waive --domain {escape(ref.domain)} --table {escape(ref.table)} "
        f"--partition {escape(ref.partition)} --expectation '&lt;name&gt;' --by '&lt;who&gt;' "
        "--reason '&lt;why&gt;'</code>, with a name listed below."
    )


def run_id_of(document: dict) -> str | None:
    """The report's run id, if it reads as one."""
    run_id = document.get("run_id")
    return run_id if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) else None


def _run_link(run_id: str | None, run_url: str | None) -> str:
    if run_id is None:
        return '<span class="muted">unknown</span>'
    return f'<a href="{escape(run_url)}" class="airflow">{escape(run_id)}</a>' if run_url else escape(run_id)


def _when(at) -> str:
    """A time in UTC, if ``at`` reads as one."""
    try:
        moment = dt.datetime.fromisoformat(at)
    except (TypeError, ValueError):
        return '<span class="muted">at an unknown time</span>'
    return (
        (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
        .astimezone(dt.UTC)
        .strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def _columns(kwargs) -> dict:
    """The column names of an expectation's kwargs (GX's keys), nothing else, and only what reads as a name."""
    kwargs = _dict(kwargs)
    columns = {k: kwargs[k] for k in ("column", "column_A", "column_B") if _is_name(kwargs.get(k))}
    listed = kwargs.get("column_list")
    if isinstance(listed, list) and all(_is_name(name) for name in listed):
        columns["column_list"] = listed
    return columns


def _is_name(value) -> bool:
    return isinstance(value, str) and _COLUMN_NAME.fullmatch(value) is not None


def _column_names(kwargs) -> list[str]:
    columns = _columns(kwargs)
    return [
        *([columns["column"]] if "column" in columns else []),
        *columns.get("column_list", []),
        *(columns[k] for k in ("column_A", "column_B") if k in columns),
    ]


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
