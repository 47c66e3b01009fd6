"""Leftovers of runs: what a run removes after its verdict, and what the next run (or the gap scan)
sweeps under the partition's lease: other runs' staging, unfinished uploads and final objects that
no manifest names.
"""

from __future__ import annotations

import datetime as dt
import logging

from hdh_migration.catalogue import Domain, Table
from hdh_migration.errors import Where
from hdh_migration.layout import is_run_key, partition_dir, run_staging_prefix, staging_prefix
from hdh_migration.leases import SWEEPER_PREFIX
from hdh_migration.manifest import Manifest
from hdh_migration.resources import open_ledger, open_target
from hdh_migration.states import PartitionState

log = logging.getLogger(__name__)


LEFTOVERS_LISTED = 100  # keys named in a leftover report (and its event); the count is always whole


SWEEP_LEASE = dt.timedelta(minutes=10)


SWEEPABLE_STATES = (PartitionState.COMMITTED, PartitionState.QUARANTINED)


def sweep_leftovers(target, ledger, table: Table, partition: str, keep_token: str | None, run_id: str) -> dict:
    """Remove the staging that other runs left in a table's partition (and their unfinished uploads).

    Call it under the partition's lease only: no other run writes the partition then, so every other
    run's staging there is a leftover (a run that crashed, or whose post-commit cleanup failed). The
    sweep is counted and named by key in a ``leftovers_swept`` event.
    """
    prefix = staging_prefix(table.domain, table.name, table.partition_column, partition)
    keep = (
        run_staging_prefix(table.domain, table.name, table.partition_column, partition, keep_token)
        if keep_token
        else None
    )
    found = {k for k in target.list_keys(prefix) if keep is None or not k.startswith(keep)}
    aborted = target.abort_uploads(prefix, keep=keep)
    # Final keys: another run's unfinished uploads, and objects no manifest names (a run that died
    # between completing its uploads and writing its manifest).
    final_dir = partition_dir(table.domain, table.name, table.partition_column, partition)
    manifest = Manifest.load(target, table, partition)
    committed = set(manifest.files) if manifest else set()
    others = (lambda key: not is_run_key(key, keep_token)) if keep_token else None
    aborted += target.abort_uploads(final_dir, select=others)
    unnamed = {k for k in target.list_keys(final_dir) if k not in committed and (others is None or others(k))}
    found |= unnamed
    target.delete_keys(sorted(found))
    remaining = found.intersection(target.list_keys(prefix) + target.list_keys(final_dir))
    swept = sorted(found - remaining)
    report = {
        "swept": len(swept),
        "aborted_uploads": aborted,
        "remaining": len(remaining),
        "keys": swept[:LEFTOVERS_LISTED],
    }
    if found or aborted:
        ledger.record_event(
            table.domain, "leftovers_swept", report, table_name=table.name, partition=partition, run_id=run_id
        )
        log.info(
            "%s: swept %d leftover staging object(s) and %d unfinished upload(s) of other runs (%d not removed): %s",
            Where(table.domain, table.name, partition),
            len(swept),
            aborted,
            len(remaining),
            report["keys"],
        )
    return report


def sweep_partition(domain: Domain, partition: str, tables: list[str], sweeper: str) -> dict:
    """The gap scan's sweep of one partition's leftover staging, when no run is writing it.

    It takes the partition's lease as ``SWEEPER_PREFIX + sweeper`` (a run that wants it waits the few
    seconds of the sweep), and sweeps a table only if its ledger state is terminal (committed or
    quarantined): a run in flight, or a failed one that may be cleared, keeps its staging.
    """
    ledger, target = open_ledger(), open_target()
    holder_id = SWEEPER_PREFIX + sweeper
    holder = ledger.claim_partition(domain.name, partition, holder_id, SWEEP_LEASE)
    if holder:
        return {"swept": [], "kept": [{"table": t, "reason": f"run {holder} holds the partition"} for t in tables]}
    swept, kept = [], []
    try:
        for name in sorted(tables):
            record = ledger.get(domain.name, name, partition)
            state = record.state if record else None
            if state not in SWEEPABLE_STATES:
                kept.append({"table": name, "reason": f"ledger state {state}: a run may still resume it"})
                continue
            report = sweep_leftovers(target, ledger, domain.table(name), partition, None, holder_id)
            swept.append({"table": name, **report})
    finally:
        ledger.release_partition(domain.name, partition, holder_id)
    return {"swept": swept, "kept": kept}


def clean_after(target, ledger, table: Table, partition: str, token: str, run_id: str, stale: list[str]) -> dict:
    """Best effort: remove this run's staging and unfinished uploads, and the ``stale`` final keys.

    Never raises: it runs after a verdict (quarantine) or after the commit point, which a cleanup
    fault must not undo. What stays is counted, named by key and recorded (``cleanup_leftovers``);
    the partition's next run or the gap scan sweeps it. Other runs' staging is never touched here.
    """
    own = run_staging_prefix(table.domain, table.name, table.partition_column, partition, token)
    final_dir = partition_dir(table.domain, table.name, table.partition_column, partition)
    steps = {
        "staging": lambda: target.delete_keys(target.list_keys(own)),
        "uploads": lambda: (
            target.abort_uploads(own) + target.abort_uploads(final_dir, select=lambda key: is_run_key(key, token))
        ),
        "stale final keys": lambda: target.delete_keys(stale),
    }
    errors = []
    for step, action in steps.items():
        try:
            action()
        except Exception as error:  # noqa: BLE001 - best effort; only the class is kept (a message may quote a body)
            errors.append(f"{step}: {type(error).__name__}")
    try:
        leftovers = target.list_keys(own) + [k for k in stale if target.head(k) is not None]
    except Exception as error:  # noqa: BLE001 - the store is unreachable: count everything as left
        errors.append(f"listing: {type(error).__name__}")
        leftovers = [own, *stale]
    report = {"leftovers": len(leftovers), "keys": sorted(leftovers)[:LEFTOVERS_LISTED], "errors": errors}
    if leftovers or errors:
        log.warning(
            "%s: the cleanup left %d object(s) behind (%s); the partition's next run or the gap scan removes them: %s",
            Where(table.domain, table.name, partition),
            len(leftovers),
            "; ".join(errors) or "no error reported",
            report["keys"],
        )
        try:
            ledger.record_event(
                table.domain, "cleanup_leftovers", report, table_name=table.name, partition=partition, run_id=run_id
            )
        except Exception as error:  # noqa: BLE001 - the warning above is the report then
            log.warning("%s: leftovers not recorded in the ledger (%s)", Where(table.domain), type(error).__name__)
    return report
