"""The partition's write lease, as the task bodies hold it: taken, renewed while a task runs, checked
before every write that makes data visible (the fence), released at the end of the run.

One run writes a partition at a time (see ``Ledger.claim_partition``). Every task of the run takes
the lease back when it starts and renews it every ``LEASE_RENEW_EVERY`` while it runs, by the
database's clock; a run that crashed blocks its partition at most ``PARTITION_LEASE`` after its
last renewal.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from contextlib import ExitStack
from contextvars import ContextVar

from hdh_migration.catalogue import Table
from hdh_migration.errors import FrozenDomainError, PartitionBusyError, PartitionLeaseLost, Where
from hdh_migration.resources import open_ledger
from hdh_migration.states import FROZEN_STATES, PartitionState

log = logging.getLogger(__name__)


# One run writes a partition at a time (see Ledger.claim_partition). Every task of the run takes the
# lease back when it starts and renews it every LEASE_RENEW_EVERY while it runs, by the database's
# clock; a run that crashed blocks its partition at most this long after its last renewal.
PARTITION_LEASE = dt.timedelta(hours=1)


LEASE_RENEW_EVERY = dt.timedelta(minutes=5)


# A leftover sweep outside any run (the gap scan) holds the partition's lease under this name, briefly.
SWEEPER_PREFIX = "leftover-sweep:"


LEASE_WAIT_S = 600


LEASE_POLL_S = 5


def record_failure(ref: Where, error: Exception, run_id: str) -> None:
    """The table partition ``ref`` names failed: the ledger records the error; the run's lease is released."""
    ledger = open_ledger()
    ledger.set_state(
        ref.domain, ref.table, ref.partition, PartitionState.FAILED, run_id=run_id, last_error=str(error)[:2000]
    )
    release_lease(ledger, ref.domain, ref.partition, run_id)  # a failed run writes no more: let the next one in


class _TaskLeases:
    """The lease renewers a task body started, stopped when the body returns (see ``renews_lease``)."""

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.renewers: dict[tuple[str, str, str], object] = {}


_task_leases: ContextVar[_TaskLeases | None] = ContextVar("hdh_task_leases", default=None)


def renews_lease(task_body):
    """Bind lease renewal to a task body: a lease it takes is renewed in the background until it returns.

    A task that makes progress for longer than the lease (a large object, a slow store) keeps it; a task
    whose process dies stops renewing, and its lease expires ``PARTITION_LEASE`` later.
    """

    @functools.wraps(task_body)
    def run(*args, **kwargs):
        with ExitStack() as stack:
            token = _task_leases.set(_TaskLeases(stack))
            try:
                return task_body(*args, **kwargs)
            finally:
                _task_leases.reset(token)

    return run


def keep_renewing(ledger, domain: str, partition: str, run_id: str) -> None:
    from hdh_migration.ledger import LeaseRenewer

    leases = _task_leases.get()
    if leases is None or (domain, partition, run_id) in leases.renewers:
        return
    renewer = LeaseRenewer(ledger, domain, partition, run_id, PARTITION_LEASE, LEASE_RENEW_EVERY.total_seconds())
    leases.renewers[(domain, partition, run_id)] = leases.stack.enter_context(renewer)


def release_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Stop renewing the run's lease in this task, then give it back."""
    leases = _task_leases.get()
    renewer = leases.renewers.pop((domain, partition, run_id), None) if leases else None
    if renewer is not None:
        renewer.stop()
    ledger.release_partition(domain, partition, run_id)


def wait_for_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Take the partition's write lease, waiting a while if another run is writing the partition."""
    ref = Where(domain, partition=partition)
    holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        log.info("%s: run %s is writing this partition; waiting for it", ref, holder)
        ledger.record_event(domain, "partition_busy", {"holder": holder}, partition=partition, run_id=run_id)
    deadline = time.monotonic() + LEASE_WAIT_S
    while holder and time.monotonic() < deadline:
        if not holder.startswith(SWEEPER_PREFIX) and run_finished(holder):
            log.info("%s: run %s finished without releasing its lease; taking it over", Where(domain), holder)
            holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE, stale_holder=holder)
            continue
        time.sleep(LEASE_POLL_S)
        holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        raise PartitionBusyError(
            f"{ref}: run {holder} still holds the partition's write lease after "
            f"{LEASE_WAIT_S} s (rule: one run writes a partition at a time). This task is retried; if that run "
            f"died, clear it to finish it, or its lease expires {PARTITION_LEASE} after its last renewal"
        )
    keep_renewing(ledger, domain, partition, run_id)


def run_finished(run_id: str) -> bool:
    """Whether another run of the running task's DAG is neither queued nor running (finished, or deleted)."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
        alive = context["ti"].get_dr_count(context["dag"].dag_id, run_ids=[run_id], states=["queued", "running"])
    except Exception:  # noqa: BLE001 - outside a task (the command line): rely on the lease's expiry
        return False
    return alive == 0


def hold_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Renew the run's write lease before writing, and keep renewing it while the task runs; refuse if
    another run took it meanwhile."""
    holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        ref = Where(domain, partition=partition)
        raise PartitionLeaseLost(
            f"{ref}: run {holder} took the partition's write lease after this "
            "run's expired (rule: one run writes a partition at a time). This run stops without writing; "
            "the other run completes the partition",
            ref=ref,
        )
    keep_renewing(ledger, domain, partition, run_id)


def fence(ledger, table: Table, partition: str, run_id: str) -> None:
    """Just before a write that makes data visible: this run holds the lease and is still the table's
    run in the ledger (no run planned it since, even one that took the lease and gave it back)."""
    hold_lease(ledger, table.domain, partition, run_id)
    record = ledger.get(table.domain, table.name, partition)
    if record is not None and record.run_id != run_id:
        ref = Where(table.domain, table.name, partition)
        raise PartitionLeaseLost(
            f"{ref}: run {record.run_id} took the partition over since "
            "this run planned it (rule: one run writes a partition at a time). This run stops without writing; "
            "the other run's result stands",
            ref=ref,
        )


def refuse_frozen(ledger, domain: str, partition: str) -> str:
    """The domain's state, unless it is cut over: then the transfer refuses to write, and says why."""
    state = ledger.domain_state(domain)
    if state in FROZEN_STATES:
        ref = Where(domain, partition=partition)
        raise FrozenDomainError(
            f"{ref}: the domain is cut over, so the French copy is the data "
            "and the transfer refuses to write. Roll the cutover back (with a reason) first if a re-transfer is "
            "really needed",
            ref=ref,
        )
    return state
