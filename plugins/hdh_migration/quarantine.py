"""Quarantine: a partition that failed its checks is kept out of the store, with a redacted report
under ``_quarantine/`` (names and counts, never a value), its run's uploads and staging removed, and
an error that says what failed where and what to do next.
"""

from __future__ import annotations

import logging

from hdh_migration import metrics
from hdh_migration.catalogue import Table
from hdh_migration.cleanup import clean_after
from hdh_migration.errors import PrivacyIncident, QuarantinedError, Where
from hdh_migration.layout import quarantine_key
from hdh_migration.manifest import utcnow
from hdh_migration.resources import current_catalogue
from hdh_migration.states import PartitionState

log = logging.getLogger(__name__)


def push_report_link(key: str) -> None:
    """Publish the validation report's link of the running task (the plugin shows it as an extra link)."""
    from airflow.sdk import get_current_context

    from hdh_migration.reports import REPORT_XCOM_KEY, report_link

    try:
        context = get_current_context()
    except RuntimeError:  # called outside a task (the command line): there is no task page to link from
        return
    context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=report_link(key))


def quarantine_table(
    target,
    ledger,
    table: Table,
    planned: dict,
    summary: dict,
    blocking: list[dict],
    objects: dict,
    run_id: str,
    unreadable: list[str] = (),
):
    """Keep the failing partition out of the store: a redacted report, no staging, state quarantined."""
    from hdh_migration.validation import PRIVACY_EXPECTATIONS, expectation_id

    partition = planned["partition"]
    ref = Where(table.domain, table.name, partition)
    failing = [expectation_id(r) for r in blocking]
    located = [
        f"{name} in object(s) {', '.join(objects[name])}" if name in objects else f"{name} (whole partition)"
        for name in failing
    ]
    privacy = any(r["type"] in PRIVACY_EXPECTATIONS for r in blocking)
    report_key = quarantine_key(table.domain, table.name, table.partition_column, partition, planned["run_token"])
    target.put_json(
        report_key,
        {
            "domain": table.domain,
            "table": table.name,
            "partition_column": table.partition_column,
            "partition": partition,
            "run_id": run_id,
            "at": utcnow(),
            "severity": "privacy" if privacy else "data",
            "failing_expectations": failing,
            "validation": summary,
        },
    )
    push_report_link(report_key)
    clean_after(target, ledger, table, partition, planned["run_token"], run_id, stale=[])
    where_report = f"s3://{target.bucket}/{report_key}"
    if privacy:
        guards = [r for r in blocking if r["type"] in PRIVACY_EXPECTATIONS]
        columns = sorted({r["kwargs"].get("column") for r in guards})
        found = sorted({r["kwargs"].get("column") for r in guards if r["result"].get("unexpected_count")})
        unchecked = [c for c in columns if c not in found]
        # A guard that could not run fails closed, and says so: it found nothing, it could not look.
        what = [f"raw NIR values in column(s) {', '.join(found)}"] if found else []
        if unchecked:
            what.append(f"the raw-NIR guard could not run on column(s) {', '.join(unchecked)}, held as unsafe")
        error = PrivacyIncident(
            f"PRIVACY INCIDENT {ref}: {'; '.join(what)} "
            f"({'; '.join(n for n in located if n.startswith('expect_column_values_to_not_contain_raw_nir'))}) "
            f"(rule: expect_column_values_to_not_contain_raw_nir). Quarantined, nothing promoted, the run's staging "
            f"removed; "
            f"report {where_report}. "
            + "".join(f"Unreadable: {reason}. " for reason in unreadable)
            + "Alert the data protection officer and have the source fixed in Azure, then "
            "re-run the partition. A privacy incident cannot be waived",
            ref=ref,
        )
        ledger.record_event(
            table.domain,
            "privacy_incident",
            {"columns": columns},
            table_name=table.name,
            partition=partition,
            run_id=run_id,
        )
        log.error("%s", error)
    else:
        error = QuarantinedError(
            f"{ref}: quarantined: {len(failing)} expectation(s) failed: {'; '.join(located)}. Nothing was "
            f"promoted; report {where_report}. "
            + "".join(f"Unreadable: {reason}. " for reason in unreadable)
            + "Fix the source partition in Azure and re-run it, or accept these "
            f"expectations with a recorded waiver: python -m hdh_migration waive --domain {table.domain} "
            f"--table {table.name} --partition {partition} --expectation '<name>' --by '<who>' --reason '<why>'",
            ref=ref,
        )
    ledger.record_event(
        table.domain,
        "quarantine_report",
        {"expectations": failing, "severity": "privacy" if privacy else "data", "report_key": report_key},
        table_name=table.name,
        partition=partition,
        run_id=run_id,
    )
    ledger.set_state(
        table.domain, table.name, partition, PartitionState.QUARANTINED, run_id=run_id, last_error=str(error)[:4000]
    )
    metrics.partition_quarantined(current_catalogue(), ledger, table.domain, privacy)
    return error


def mark_waiting(ledger, domain: str, partition: str, quarantined: list, passed, run_id: str) -> str:
    """Record on each table that ``passed`` that it waits for the ``quarantined`` ones; the error's note.

    A partition commits all its tables or none (README, "One partition, all its tables"): the tables
    that passed wait, and the ledger, status and board say on which.
    """
    blockers = ", ".join(e.ref.table for e in quarantined)
    waiting = sorted(passed)
    for name in waiting:
        ledger.set_state(
            domain, name, partition, PartitionState.VALIDATED, run_id=run_id,
            last_error=f"waits for {blockers} (quarantined in the same partition)",
        )  # fmt: skip
    if not waiting:
        return ""
    return (
        f" | {', '.join(waiting)} passed and wait{'s' if len(waiting) == 1 else ''} for {blockers}: "
        "a partition commits all its tables together, so none commits until the partition's next run passes"
    )
