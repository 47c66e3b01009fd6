"""The work behind ``hdh_transfer__<domain>``: plan, transfer, validate, commit, reconcile.

Each function is one Airflow task body; they exchange only metadata through XCom (names, sizes,
hashes, counts), never data values. Commit protocol: an object that passed its checks is uploaded
to the run's own final key, unfinished (objects.py); the commit, under the lease, completes the
run's uploads (no copy), reads them back, and writes the manifest naming the new set with one
conditional PUT: the commit point, which switches a re-transfer from the old set to the new one.
The cleanup after it (the old set, the run's staging) is best effort; the next run sweeps what it
leaves (cleanup.py). A run that dies at any step leaves the previous manifest, its objects
untouched, or the new one.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

from hdh_migration import metrics
from hdh_migration.catalogue import Domain, Table
from hdh_migration.cleanup import clean_after, sweep_leftovers
from hdh_migration.errors import (
    IntegrityError,
    MissingPartitionError,
    PartitionLeaseLost,
    PrivacyIncident,
    QuarantinedError,
    Where,
)
from hdh_migration.layout import partition_dir, run_token
from hdh_migration.leases import (
    fence,
    hold_lease,
    record_failure,
    refuse_frozen,
    release_lease,
    renews_lease,
    wait_for_lease,
)
from hdh_migration.manifest import Manifest, utcnow
from hdh_migration.quarantine import mark_waiting, quarantine_table
from hdh_migration.resources import current_catalogue as _catalogue
from hdh_migration.resources import open_ledger as _ledger
from hdh_migration.resources import open_source as _source
from hdh_migration.resources import open_target as _target
from hdh_migration.states import DomainState, PartitionState

log = logging.getLogger(__name__)

KEY_BUCKET_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# plan


@renews_lease
def plan_partition(domain_name: str, partition: str, run_id: str, force: bool = False) -> dict:
    """List each table's source objects for the partition; skip tables already committed unchanged."""
    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    ledger = _ledger()
    domain_state = refuse_frozen(ledger, domain.name, partition)
    wait_for_lease(ledger, domain.name, partition, run_id)
    target = _target()  # the sovereignty guard runs here, before any byte moves
    target.ensure_bucket()
    if domain_state == DomainState.PLANNED:
        ledger.set_domain_state(domain.name, DomainState.TRANSFERRING, {"run_id": run_id})
    source = _source(domain.name)
    token = run_token(run_id)
    ref = Where(domain.name, partition=partition)
    for table in domain.tables:
        try:
            sweep_leftovers(target, ledger, table, partition, token, run_id)
        except Exception as error:  # noqa: BLE001 - leftovers never block a transfer; the gap scan sweeps too
            log.warning("%s: leftovers not swept (%s)", ref.with_table(table.name), type(error).__name__)
    tables, objects = [], []
    for table in domain.tables:
        table_ref = ref.with_table(table.name)
        prefix = table.source_dir(partition)
        listed = source.list_objects(prefix, table.source_extension)
        if not listed:
            if table.optional:
                log.info("%s: no source objects; the table is optional here", table_ref)
                continue
            error = MissingPartitionError(
                f"{table_ref}: no source objects under "
                f"{domain.source.describe(prefix)} (rule: planned partitions must exist in the source). "
                "Check that the partition was delivered, or mark the table 'optional: true' in the catalogue",
                ref=table_ref,
            )
            record_failure(table_ref, error, run_id)
            raise error
        manifest = Manifest.load(target, table, partition)
        listed_etags = {obj.name: obj.etag for obj in listed}
        previous = manifest.source_etags if manifest else None
        record = ledger.get(domain.name, table.name, partition)
        proven = record is not None and record.state == PartitionState.COMMITTED
        if previous == listed_etags and proven and not force:
            log.info("%s: committed and unchanged (same ETags): nothing to do", table_ref)
            ledger.record_event(domain.name, "unchanged", table_name=table.name, partition=partition, run_id=run_id)
            continue
        if previous is not None and previous != listed_etags:
            changes = manifest.source_changes(listed_etags)
            log.info("%s: source changed since the last commit: %s", table_ref, changes)
            ledger.record_event(
                domain.name, "source_changed", changes, table_name=table.name, partition=partition, run_id=run_id
            )
        total_bytes = sum(obj.size for obj in listed)
        buckets = max(1, math.ceil(total_bytes / KEY_BUCKET_BYTES))
        # What every task of the table needs from the plan: names, the run's token, the key buckets.
        common = {"domain": domain.name, "table": table.name, "partition": partition}
        common |= {"run_token": token, "key_buckets": buckets}
        listed_dicts = [obj.as_dict() for obj in listed]
        tables.append({**common, "objects": listed_dicts, "bytes": total_bytes, "started_at": utcnow()})
        objects.extend({**common, "source": source_object} for source_object in listed_dicts)
        ledger.record_event(
            domain.name,
            "planned",
            {"objects": len(listed), "source_bytes": total_bytes},
            table_name=table.name,
            partition=partition,
            run_id=run_id,
        )
        ledger.set_state(
            domain.name,
            table.name,
            partition,
            PartitionState.TRANSFERRING,
            run_id=run_id,
            new_attempt=True,
            last_error=None,
        )
    if not tables:
        release_lease(ledger, domain.name, partition, run_id)
    log.info(
        "%s: %d table(s) to transfer, %d object(s), %.1f MB",
        ref,
        len(tables),
        len(objects),
        sum(t["bytes"] for t in tables) / 1e6,
    )
    return {"tables": tables, "objects": objects}


# ---------------------------------------------------------------------------------------------
# transfer


@renews_lease
def transfer_object(item: dict, run_id: str, task_state_store=None) -> dict:
    """Move one source object: stream, hash, check per batch, convert if CSV, upload (see objects.py)."""
    from hdh_migration.objects import copy_object

    return copy_object(item, run_id, task_state_store)


# ---------------------------------------------------------------------------------------------
# validate


def _results_by_table(results: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for result in results or []:
        grouped.setdefault(result["table"], []).append(result)
    return grouped


@renews_lease
def validate_partition(tables: list[dict], results: list[dict], run_id: str) -> dict:
    """Whole-partition checks GX cannot make batch by batch, then the verdict per table.

    A table that fails is quarantined (redacted report under ``_quarantine/``, the run's uploads and staging
    removed, nothing published); the others are validated. Any quarantine fails the task, so nothing commits.
    """
    from hdh_migration.integrity import integrity_checks
    from hdh_migration.validation import (
        INTEGRITY_CHECKS,
        blocking_failures,
        expectation_id,
        merge_results,
        summary_shape,
    )

    catalogue = _catalogue()
    grouped = _results_by_table(results)
    ledger = _ledger()
    verdicts, quarantined = {}, []
    if tables:
        hold_lease(ledger, tables[0]["domain"], tables[0]["partition"], run_id)
    target = _target() if tables else None
    for planned in tables:
        table = catalogue.domain(planned["domain"]).table(planned["table"])
        partition = planned["partition"]
        ref = Where(table.domain, table.name, partition)
        table_results = grouped.get(table.name, [])
        transferred = {r["source"]["name"] for r in table_results}
        missing = [o["name"] for o in planned["objects"] if o["name"] not in transferred]
        if missing:
            error = IntegrityError(
                f"{ref}: objects planned but not transferred: {missing}. Re-run the partition", ref=ref
            )
            record_failure(ref, error, run_id)
            raise error
        totals: dict[str, dict] = {}
        for result in table_results:
            merge_results(totals, result["validation"])
        all_uploaded = all(r["uploaded"] for r in table_results)
        rows, partition_checks = integrity_checks(target, table, planned["key_buckets"], table_results, all_uploaded)
        broken = [c for c in partition_checks if c["type"] in INTEGRITY_CHECKS and not c["success"]]
        if broken:
            error = IntegrityError(
                f"{ref}: {', '.join(c['type'] for c in broken)} failed: the copy differs from the source. "
                "Nothing was promoted. Re-run the partition; if it persists, report a bug",
                ref=ref,
            )
            record_failure(ref, error, run_id)
            raise error
        summary = summary_shape(list(totals.values()) + partition_checks, f"{table.domain}.{table.name}")
        waived = ledger.waived(table.domain, table.name, partition)
        blocking = blocking_failures(summary["results"], waived)
        if blocking or not all_uploaded:
            failing_objects: dict[str, list[str]] = {}
            for result in table_results:
                for entry in result["validation"]:
                    if not entry["success"]:
                        failing_objects.setdefault(expectation_id(entry), []).append(result["source"]["name"])
            unreadable = [r["unreadable"] for r in table_results if r.get("unreadable")]
            quarantined.append(
                quarantine_table(target, ledger, table, planned, summary, blocking, failing_objects, run_id, unreadable)
            )
            continue
        summary["waived"] = sorted(waived & {expectation_id(r) for r in summary["results"] if not r["success"]})
        verdicts[table.name] = summary
        # last_error=None: a table that waited for another one's quarantine in an earlier run waits no more
        ledger.set_state(
            table.domain, table.name, partition, PartitionState.VALIDATED, run_id=run_id, rows=rows, last_error=None
        )
    if quarantined:
        wait_note = mark_waiting(ledger, tables[0]["domain"], tables[0]["partition"], quarantined, verdicts, run_id)
        release_lease(ledger, tables[0]["domain"], tables[0]["partition"], run_id)
        privacy = any(isinstance(e, PrivacyIncident) for e in quarantined)
        raise (PrivacyIncident if privacy else QuarantinedError)(
            " | ".join(str(e) for e in quarantined) + wait_note,
            ref=quarantined[0].ref.with_table(", ".join(e.ref.table for e in quarantined)),
        )
    return verdicts


# ---------------------------------------------------------------------------------------------
# commit


@renews_lease
def commit_partition(tables: list[dict], results: list[dict], verdicts: dict, run_id: str) -> list[dict]:
    """Complete the run's uploads and write the manifest last, under the lease; record the commit in the
    ledger at once; then remove the old set and clean up, best effort; release the lease."""
    from hdh_migration.target import SHA256_METADATA

    catalogue = _catalogue()
    grouped = _results_by_table(results)
    ledger = _ledger()
    for domain_name in sorted({planned["domain"] for planned in tables}):
        # A cutover may have frozen the domain while this run was transferring: nothing lands then.
        refuse_frozen(ledger, domain_name, tables[0]["partition"])
        hold_lease(ledger, domain_name, tables[0]["partition"], run_id)
    committed = []
    target = _target() if tables else None
    for planned in tables:
        table = catalogue.domain(planned["domain"]).table(planned["table"])
        partition = planned["partition"]
        ref = Where(table.domain, table.name, partition)
        table_results = sorted(grouped.get(table.name, []), key=lambda r: r["target"]["key"])
        key = Manifest.key_for(table, partition)
        fence(ledger, table, partition, run_id)
        # The manifest this run may replace, seen under the lease: the conditional write below fails if
        # another one is written meanwhile.
        previous = target.head(key)
        manifest = Manifest.load(target, table, partition) if previous is not None else None
        landed = {r["target"]["key"]: r["target"]["sha256"] for r in table_results}
        if manifest is not None and manifest.run_id == run_id and landed == manifest.files:
            # A retry after the commit point (the ledger failed to record it): finish without publishing again.
            manifest_sha256 = previous["Metadata"][SHA256_METADATA]
            log.info("%s: already committed by this run; finishing after the commit point", ref)
        else:
            manifest, manifest_sha256 = _publish(
                target, ledger, ref, table, planned, table_results, verdicts, run_id, previous and previous["ETag"]
            )
        # The commit point is behind us: the ledger follows the manifest before anything else can fail.
        ledger.set_state(
            table.domain, table.name, partition, PartitionState.COMMITTED, **manifest.committed_fields(manifest_sha256)
        )
        metrics.partition_committed(table.domain)
        final_dir = partition_dir(table.domain, table.name, table.partition_column, partition)
        try:  # the old set: every final key the new manifest does not name
            stale = [k for k in target.list_keys(final_dir) if k not in manifest.files]
        except Exception as error:  # noqa: BLE001 - after the commit point: the next run's commit removes them
            log.warning("%s: stale final keys not listed (%s)", ref, type(error).__name__)
            stale = []
        leftovers = clean_after(target, ledger, table, partition, planned["run_token"], run_id, stale)
        log.info(
            "%s: committed %d file(s), %d rows, %.1f MB; %d stale key(s) to remove; %d object(s) left behind",
            ref,
            len(manifest.files),
            manifest.rows,
            manifest.bytes / 1e6,
            len(stale),
            leftovers["leftovers"],
        )
        committed.append({"domain": table.domain, "table": table.name, "partition": partition, "manifest": key})
    for domain_name in sorted({planned["domain"] for planned in tables}):
        release_lease(ledger, domain_name, tables[0]["partition"], run_id)
        metrics.lag(catalogue, ledger, domain_name)  # once per partition, not per table committed
    return committed


def _publish(
    target, ledger, ref: Where, table: Table, planned: dict, table_results: list, verdicts: dict, run_id: str, replacing
):
    """Complete the run's uploads, read each object back, then write the manifest: the commit point.

    ``replacing`` is the ETag of the manifest seen under the lease (None: there was none). The manifest
    is written only if that is still the one in the store (``If-Match`` / ``If-None-Match``), and only
    after the lease is checked once more: a run whose lease was taken over never writes it.
    """
    from botocore.exceptions import ClientError

    partition = planned["partition"]

    def complete_and_read_back(final: dict) -> None:
        target.complete_upload(final["key"], final["upload"])
        try:
            target.verify_object(final["key"], final["sha256"], final["size"])
        except IntegrityError:
            object_ref = ref.with_object(final["key"])
            error = IntegrityError(
                f"{object_ref}: the object read back differs from "
                "the checked bytes (rule: size and sha256 equal the source's). Re-run the partition",
                ref=object_ref,
            )
            record_failure(ref, error, run_id)
            raise error from None

    with ThreadPoolExecutor(max_workers=target.settings.concurrency) as pool:
        list(pool.map(complete_and_read_back, [r["target"] for r in table_results]))
    waivers = ledger.waivers(table.domain, table.name, partition)
    manifest = Manifest.build(table, planned, table_results, verdicts.get(table.name), waivers, run_id)
    fence(ledger, table, partition, run_id)
    try:
        key = Manifest.key_for(table, partition)
        return manifest, target.put_json(key, manifest.body, if_match=replacing, if_absent=replacing is None)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    raise PartitionLeaseLost(
        f"{ref}: another run wrote the partition's manifest after this run "
        "checked its lease (rule: only the lease holder writes the manifest). This run stops without writing; "
        "the other run's manifest stands",
        ref=ref,
    )


# ---------------------------------------------------------------------------------------------
# reconcile


def reconcile_partition(domain_name: str, partition: str, run_id: str) -> dict:
    """Check every table's manifest against the live source listing and the landed objects."""
    catalogue = _catalogue()
    domain: Domain = catalogue.domain(domain_name)
    target, source, ledger = _target(), _source(domain.name), _ledger()
    report = {}
    for table in domain.tables:
        ref = Where(domain.name, table.name, partition)
        manifest = Manifest.load(target, table, partition)
        if manifest is None:
            if table.optional:
                continue
            raise IntegrityError(
                f"{ref}: no manifest after commit (rule: manifest written last). Re-run the partition", ref=ref
            )
        problems = manifest.problems(target, source, table)
        if problems:
            error = IntegrityError(f"{ref}: reconciliation failed: {'; '.join(problems)}", ref=ref)
            record_failure(ref, error, run_id)
            raise error
        counts = {"rows": manifest.rows, "files": len(manifest.files)}
        ledger.record_event(
            domain.name, "reconciled", counts, table_name=table.name, partition=partition, run_id=run_id
        )
        report[table.name] = {**counts, "bytes": manifest.bytes}
    return report
