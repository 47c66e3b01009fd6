"""Alerts: what failed, where, and what to do next, sent through Airflow's notifiers.

Two channels, each configured by an Airflow connection; a channel whose connection is not defined
is off (the task log says so at INFO, and every alert is also written to the log):

- ``hdh_alert_webhook`` (http): the alert as JSON, POSTed by the http provider's ``HttpNotifier`` to
  the connection's URL; the connection's extra fields are sent as headers (a token, say).
- ``hdh_alert_smtp`` (smtp): the alert as an e-mail, by the smtp provider's ``SmtpNotifier``, to the
  comma-separated addresses of the connection's extra ``to``.

An alert holds names, never data values: the package's own message for a ``MigrationError``
(already redacted), only the exception's class for anything else, and nothing from the run's
params, conf or XCom (the partition comes from the error, or is re-derived and checked).

Only ``airflow.sdk`` and the light package modules are imported at module level: DAG files import
this module at parse time; the providers are imported when an alert is sent.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from dataclasses import asdict, dataclass

from airflow.sdk import BaseDeadlineReference, BaseNotifier, DeadlineReference, deadline_reference

from hdh_migration.errors import (
    FrozenDomainError,
    IntegrityError,
    MigrationError,
    MissingPartitionError,
    PrivacyIncident,
    QuarantinedError,
    SovereigntyError,
    Where,
)

log = logging.getLogger(__name__)

WEBHOOK_CONN_ID = "hdh_alert_webhook"
SMTP_CONN_ID = "hdh_alert_smtp"
MAX_MESSAGE_CHARS = 3000

# The first matching class gives the next step (subclasses before their parents).
NEXT_STEPS: tuple[tuple[type[BaseException], str], ...] = (
    (
        PrivacyIncident,
        "Privacy incident: alert the data protection officer now. Nothing was promoted. Have the producer "
        "fix the partition in Azure, then re-run it. It cannot be waived.",
    ),
    (
        QuarantinedError,
        "Open the Validation report (extra link of the failed task). Have the source partition fixed in "
        "Azure and re-run it, or accept the named expectations with `python -m hdh_migration waive`.",
    ),
    (
        MissingPartitionError,
        "Check that the partition was delivered to Azure, then re-run it (or mark the table optional).",
    ),
    (
        IntegrityError,
        "The copy differs from its source; nothing was promoted. Re-run the partition; if it persists, report a bug.",
    ),
    (
        SovereigntyError,
        "The guard refused the request before it was sent. Fix what the message names: the hdh_sovereign_target "
        "connection, the catalogue's target_eea_regions or target_ca_bundle, or the worker's environment.",
    ),
    (
        FrozenDomainError,
        "The domain is cut over and refuses writes. Roll it back (hdh_rollback__<domain>, with a reason) only if "
        "a re-transfer is really needed.",
    ),
    (MigrationError, "Follow the message, then clear the failed task; the DAG's docs hold its triage notes."),
)
INFRASTRUCTURE_STEP = (
    "Retries are exhausted on an infrastructure error (network, Azure, the sovereign store, the ledger). "
    "Read the task log, check the services, then clear the failed task: every task is idempotent."
)


@dataclass(frozen=True)
class Alert:
    kind: str  # task_failure | privacy_incident | deadline_missed
    severity: str  # critical | error | warning
    summary: str
    dag_id: str
    run_id: str
    domain: str
    next_step: str
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    table: str | None = None
    partition: str | None = None
    object: str | None = None
    error_type: str | None = None
    message: str | None = None
    log_url: str | None = None
    deadline: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def subject(self) -> str:
        return f"[HDH {self.severity}] {self.kind}: {self.summary}"

    def text(self) -> str:
        lines = [f"severity: {self.severity}", f"kind: {self.kind}"]
        lines += [f"{k}: {v}" for k, v in self.as_dict().items() if k not in ("severity", "kind")]
        return "\n".join(lines)

    def html(self) -> str:
        return f"<pre>{html.escape(self.text())}</pre>"


def _where(alert_fields: dict) -> str:
    return Where(*(alert_fields.get(k) for k in ("domain", "table", "partition", "object"))).label


def _next_step(error: BaseException | None) -> str:
    for cls, step in NEXT_STEPS:
        if isinstance(error, cls):
            return step
    return INFRASTRUCTURE_STEP


def _message(error: BaseException | None) -> str | None:
    """The package's own (redacted) message; for any other exception only its class: it may quote data."""
    if error is None:
        return None
    if isinstance(error, MigrationError):
        text = str(error)
        return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " [truncated: see the task log]"
    return f"{type(error).__name__} (its message is kept out of alerts: read the task log)"


def _run_partition(domain_name: str | None, dag_id: str, explicit, interval_start) -> str | None:
    """The partition a transfer run moves, re-derived and checked; None for other DAGs or a bad value."""
    from hdh_migration.catalogue import cached_catalogue

    if not dag_id.startswith("hdh_transfer__"):
        return None
    if isinstance(interval_start, str):
        interval_start = dt.datetime.fromisoformat(interval_start)
    try:
        domain = cached_catalogue().domain(domain_name)
        return domain.run_partition(
            explicit if isinstance(explicit, str) else None, interval_start and interval_start.date()
        )
    except (ValueError, TypeError, AttributeError):
        return None


def failure_alert(domain: str | None, context) -> Alert:
    """The alert for a failed task, from its context: what, where, and the next step."""
    ti = context["ti"]
    error = context.get("exception")
    dag_run = context.get("dag_run")
    located = error.location() if isinstance(error, MigrationError) else {}
    fields = {"domain": located.get("domain") or domain, "table": located.get("table"), "object": located.get("object")}
    fields["partition"] = located.get("partition") or _run_partition(
        domain,
        ti.dag_id,
        (dag_run.conf or {}).get("partition") if dag_run is not None else None,
        dag_run.data_interval_start if dag_run is not None else None,
    )
    privacy = isinstance(error, PrivacyIncident)
    error_type = type(error).__name__ if error is not None else None
    return Alert(
        kind="privacy_incident" if privacy else "task_failure",
        severity="critical" if privacy else "error",
        summary=f"{ti.dag_id}.{ti.task_id} failed ({error_type or 'no exception'}) at {_where(fields)}",
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None,
        try_number=ti.try_number,
        error_type=error_type,
        message=_message(error),
        next_step=_next_step(error),
        log_url=getattr(ti, "log_url", None),
        **fields,
    )


def deadline_alert(domain: str, context: dict) -> Alert:
    """The alert for a transfer run still unfinished at its deadline (context: Airflow's deadline context)."""
    from hdh_migration.catalogue import cached_catalogue

    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id = run.get("dag_id", f"hdh_transfer__{domain}")
    partition = _run_partition(domain, dag_id, (run.get("conf") or {}).get("partition"), run.get("data_interval_start"))
    expected = cached_catalogue().domain(domain).expected_duration_minutes
    fields = {"domain": domain, "partition": partition}
    deadline_time = deadline.get("deadline_time")
    return Alert(
        kind="deadline_missed",
        severity="warning",
        summary=f"{dag_id} run {run.get('dag_run_id')} still unfinished {expected} min after it was queued, at "
        f"{_where(fields)}",
        dag_id=dag_id,
        run_id=run.get("dag_run_id") or run.get("run_id") or "",
        next_step=(
            "Open the run's grid: a task waiting for a pool slot or a worker, a slow Azure or sovereign "
            "store (retries in the task logs), or a partition larger than usual. Nothing to undo: let it "
            "finish, or fail it and re-run the partition later. Raise expected_duration_minutes in "
            "dags/domains.yaml if this size is the new normal."
        ),
        deadline=deadline_time.isoformat() if isinstance(deadline_time, dt.datetime) else deadline_time,
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# channels


def _webhook(alert: Alert, conn):
    from airflow.providers.http.notifications.http import HttpNotifier

    return HttpNotifier(
        http_conn_id=WEBHOOK_CONN_ID, json=alert.as_dict(), headers={"Content-Type": "application/json"}
    )


def _smtp(alert: Alert, conn):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    recipients = [a.strip() for a in str(conn.extra_dejson.get("to") or "").split(",") if a.strip()]
    if not recipients:
        log.warning("alert channel smtp is off: connection %r has no extra 'to' (recipients)", SMTP_CONN_ID)
        return None
    return SmtpNotifier(smtp_conn_id=SMTP_CONN_ID, to=recipients, subject=alert.subject, html_content=alert.html())


CHANNELS = (("webhook", WEBHOOK_CONN_ID, _webhook), ("smtp", SMTP_CONN_ID, _smtp))


def _log_alert(alert: Alert) -> None:
    level = logging.WARNING if alert.severity == "warning" else logging.ERROR
    log.log(level, "HDH ALERT\n%s", alert.text())


def _off(name: str, conn_id: str) -> None:
    log.info("alert channel %s is off: connection %r is not defined", name, conn_id)


async def _deliver(alert: Alert, connection, notify) -> list[str]:
    """The one delivery path of ``send`` and ``asend``: the alert through every configured channel, one
    channel down not silencing the others; returns the channels that delivered. ``connection(conn_id)``
    and ``notify(notifier)`` are the caller's halves, awaited: plain calls for ``send``, the async paths
    for ``asend``."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    _log_alert(alert)
    delivered = []
    for name, conn_id, build in CHANNELS:
        try:
            conn = await connection(conn_id)
        except AirflowNotFoundException:
            _off(name, conn_id)
            continue
        try:
            notifier = build(alert, conn)
            if notifier is None:
                continue
            await notify(notifier)
        except Exception as error:  # noqa: BLE001 - one channel down must not silence the others
            log.error("alert channel %s failed (%s): the alert is only in this log", name, type(error).__name__)
            continue
        delivered.append(name)
    return delivered


def _complete(coroutine):
    """The result of a coroutine that never suspends (its awaits are plain calls), without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the synchronous alert path suspended: it must only make plain calls")


def send(alert: Alert, context) -> list[str]:
    """Send through every configured channel; returns the channels that delivered."""
    from airflow.sdk import BaseHook

    async def connection(conn_id: str):
        return BaseHook.get_connection(conn_id)

    async def notify(notifier) -> None:
        # notify(), not the notifier's __call__: the text must not be rendered as a Jinja template.
        notifier.notify(context)

    return _complete(_deliver(alert, connection, notify))


async def asend(alert: Alert, context) -> list[str]:
    """``send`` for the triggerer, through the notifiers' async paths."""
    from airflow.sdk import BaseHook

    async def notify(notifier) -> None:
        await notifier.async_notify(context)

    return await _deliver(alert, BaseHook.aget_connection, notify)


class FailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every hdh task: one alert per failed task, on every configured channel."""

    def __init__(self, domain: str | None):
        super().__init__()
        self.domain = domain

    def notify(self, context) -> None:
        send(failure_alert(self.domain, context), context)


@deadline_reference(DeadlineReference.TYPES.DAGRUN_QUEUED)
class TransferQueuedAt(BaseDeadlineReference):
    """The moment a transfer run was queued: what a transfer's deadline counts from.

    It is Airflow's ``DeadlineReference.DAGRUN_QUEUED_AT`` under another name. Airflow 3.3.2 cannot
    clear a failed run of a DAG whose deadline uses the built-in reference: the clear recalculates
    the deadline, reads the interval column raw and fails with HTTP 500 (apache/airflow#70368), which
    would break the on-call "Clear" and every backfill with ``reprocess_behavior: failed``. A custom
    reference is not recalculated on clear: a cleared run keeps the deadline of its first queueing.
    Registered with the scheduler by the hdh_migration plugin (``deadline_references``).
    """

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session, dag_id: str, run_id: str, **kwargs) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        return session.scalar(select(DagRun.queued_at).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


async def deadline_missed(domain: str, context: dict | None = None) -> list[str]:
    """The ``DeadlineAlert`` callback of the transfer DAGs; runs in the triggerer."""
    alert = deadline_alert(domain, context or {})
    return await asend(alert, context or {})
