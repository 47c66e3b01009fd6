"""The gap scan: partitions delivered in Azure but not committed in the sovereign store, backfilled.

Three listings, each fetched once and concurrently: the source container per table (partition directories parsed
from the names, ``walk_blobs`` with a delimiter, so one entry per partition however many part
files it holds), the ``_manifests/`` prefix of the sovereign store, and the ledger's partition
rows. A partition of the catalogue's range is committed only when the ledger says ``committed``
AND its manifest exists. Every other partition present in Azure is a gap, except those held back
on purpose (see ``HOLD_REASONS``). Each domain with gaps gets one Airflow backfill of its transfer
DAG over the span of its gaps, created through Airflow's REST API (tasks of Airflow 3 cannot touch
the metadata database), with reprocess behaviour ``failed``: failed runs are cleared and run again,
successful runs are left alone, and a partition inside the span without a run gets one (a committed,
unchanged partition is then a fast no-op). A snapshot domain has no schedule to backfill: its
partition is triggered as one run.

The scan also sweeps leftover staging (``_staging/``, one more listing): objects that a run's
best-effort cleanup could not remove, or that a crashed run left, in partitions whose tables are
committed or quarantined, under the partition's lease (``cleanup.sweep_partition``); a dry run only
lists them.

The report (names, partitions, reasons, counts and object keys only; never a data value) goes to
``_reports/gap_scan/<started>.json`` in the sovereign store and to the ledger (``record_gap_scan``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from hdh_migration.airflow_api import AirflowApi, AirflowApiError
from hdh_migration.catalogue import Catalogue, Domain
from hdh_migration.layout import (
    MANIFEST_PREFIX,
    STAGING_PREFIX,
    gap_scan_report_key,
    parse_manifest_key,
    parse_staging_key,
)
from hdh_migration.ledger import as_utc
from hdh_migration.naming import transfer_dag_id
from hdh_migration.source import partitions_in
from hdh_migration.states import FROZEN_STATES, PartitionState

log = logging.getLogger(__name__)

REPROCESS_BEHAVIOR = "failed"
BACKFILL_MAX_ACTIVE_RUNS = 4
MAX_FAILED_ATTEMPTS = 3
LISTING_THREADS = 8
IN_FLIGHT_FOR = dt.timedelta(hours=12)
REPORT_LIST_LIMIT = 1000

# Gaps that trigger a backfill, and partitions held back (reported, never backfilled), with why.
BACKFILL_REASONS = {
    "missing": "in Azure, never transferred",
    "failed": "the last run failed",
    "manifest_missing": "the ledger says committed but the manifest is missing",
    "unindexed": "a manifest exists but the ledger does not say committed",
    "stale": "transferring or validated for longer than the in-flight window: the run died",
    "quarantined_changed": "quarantined, and the source changed or a waiver was recorded since",
}
HOLD_REASONS = {
    "in_flight": "a run is transferring it now",
    "failed_too_often": "failed in max_attempts runs or more: triage it before running it again",
    "quarantined_waiting": "quarantined: waits for a fixed source in Azure or a waiver",
}


@dataclass(frozen=True)
class LedgerRow:
    """What the comparison needs of a ledger partition row."""

    state: str
    attempts: int
    updated_at: dt.datetime


@dataclass
class Observed:
    """The three listings a scan compares, fetched once."""

    azure: dict[tuple[str, str], set[str]]
    manifests: set[tuple[str, str, str]]
    ledger: dict[tuple[str, str, str], LedgerRow]
    listing_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    domain: str
    table: str
    partition: str
    reason: str

    @property
    def backfill(self) -> bool:
        return self.reason in BACKFILL_REASONS


# ---------------------------------------------------------------------------------------------
# listings


def list_manifests(target) -> set[tuple[str, str, str]]:
    """``(domain, table, partition)`` of every manifest in the sovereign store: one listing."""
    return {parsed for key in target.list_keys(f"{MANIFEST_PREFIX}/") if (parsed := parse_manifest_key(key))}


def ledger_rows(ledger) -> dict[tuple[str, str, str], LedgerRow]:
    return {
        (r.domain, r.table_name, r.partition): LedgerRow(r.state, r.attempts, as_utc(r.updated_at))
        for r in ledger.partitions()
    }


def observe(catalogue: Catalogue, sources: dict, target, ledger, threads: int = LISTING_THREADS) -> Observed:
    """Fetch the three listings, concurrently (each is latency-bound); time each. ``sources``: each domain's."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(name: str, fetch):
        started = time.perf_counter()
        result = fetch()
        seconds[name] = time.perf_counter() - started
        return result

    def azure_listings() -> dict:
        tables = [(domain.name, table) for domain in catalogue.domains for table in domain.tables]
        with ThreadPoolExecutor(threads) as pool:
            listed = pool.map(
                lambda item: partitions_in(sources[item[0]], item[1]),
                tables,
            )
            return {(domain, table.name): values for (domain, table), values in zip(tables, listed, strict=True)}

    seconds: dict[str, float] = {}
    with ThreadPoolExecutor(2) as pool:
        azure = pool.submit(timed, "azure", azure_listings)
        manifests = pool.submit(timed, "manifests", lambda: list_manifests(target))
        rows = timed("ledger", lambda: ledger_rows(ledger))
        return Observed(azure=azure.result(), manifests=manifests.result(), ledger=rows, listing_seconds=seconds)


# ---------------------------------------------------------------------------------------------
# comparison


def compare(
    catalogue: Catalogue,
    observed: Observed,
    now: dt.datetime,
    *,
    max_attempts: int = MAX_FAILED_ATTEMPTS,
    in_flight_for: dt.timedelta = IN_FLIGHT_FOR,
) -> dict:
    """Classify every partition of the catalogue's range; pure, no I/O.

    Returns ``{"checked", "committed", "not_in_azure", "findings", "outside_range"}``; a quarantined
    partition present in Azure is returned as ``quarantined_waiting`` (``refine_quarantined`` looks
    at the source and the waivers to tell whether it changed since).
    """
    checked = committed = 0
    not_in_azure: dict[str, int] = defaultdict(int)
    findings: list[Finding] = []
    outside: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for domain in catalogue.domains:
        expected = domain.partitions()
        expected_set = set(expected)
        for table in domain.tables:
            present = observed.azure.get((domain.name, table.name), set())
            extra = sorted(present - expected_set)
            if extra:
                outside[domain.name][table.name] = extra
            for partition in expected:
                checked += 1
                key = (domain.name, table.name, partition)
                row = observed.ledger.get(key)
                manifested = key in observed.manifests
                if row is not None and row.state == PartitionState.COMMITTED and manifested:
                    committed += 1
                    continue
                if partition not in present:
                    not_in_azure[domain.name] += 1
                    continue
                reason = _reason(row, manifested, now, max_attempts, in_flight_for)
                findings.append(Finding(domain.name, table.name, partition, reason))
    return {
        "checked": checked,
        "committed": committed,
        "not_in_azure": dict(not_in_azure),
        "findings": findings,
        "outside_range": {d: dict(t) for d, t in outside.items()},
    }


def _reason(row: LedgerRow | None, manifested: bool, now, max_attempts: int, in_flight_for) -> str:
    if row is None or row.state == PartitionState.PLANNED:
        return "unindexed" if manifested else "missing"
    if row.state == PartitionState.COMMITTED:
        return "manifest_missing"
    if row.state == PartitionState.FAILED:
        return "failed" if row.attempts < max_attempts else "failed_too_often"
    if row.state == PartitionState.QUARANTINED:
        return "quarantined_waiting"
    if now - row.updated_at < in_flight_for:
        return "in_flight"
    return "stale"


def refine_quarantined(
    findings: list[Finding], catalogue: Catalogue, observed: Observed, sources: dict, ledger
) -> list:
    """A quarantined partition goes back to a backfill only if something changed since it was
    quarantined: a source object modified later, or a waiver recorded later. Otherwise re-running it
    would quarantine it again, at every scan, forever."""
    refined = []
    for finding in findings:
        if finding.reason != "quarantined_waiting":
            refined.append(finding)
            continue
        table = catalogue.domain(finding.domain).table(finding.table)
        since = observed.ledger[(finding.domain, finding.table, finding.partition)].updated_at
        listed = sources[finding.domain].list_objects(table.source_dir(finding.partition), table.source_extension)
        changed = any(as_utc(dt.datetime.fromisoformat(o.last_modified)) > since for o in listed)
        waived = any(
            as_utc(dt.datetime.fromisoformat(w["at"])) > since
            for w in ledger.waivers(finding.domain, finding.table, finding.partition)
        )
        refined.append(
            Finding(finding.domain, finding.table, finding.partition, "quarantined_changed")
            if changed or waived
            else finding
        )
    return refined


def contiguous_ranges(domain: Domain, partitions: set[str]) -> list[tuple[str, str]]:
    """The partitions as ``(first, last)`` runs of consecutive catalogue partitions."""
    ranges: list[list[str]] = []
    previous_index = None
    for index, partition in enumerate(domain.partitions()):
        if partition not in partitions:
            continue
        if previous_index is not None and index == previous_index + 1:
            ranges[-1][1] = partition
        else:
            ranges.append([partition, partition])
        previous_index = index
    return [(first, last) for first, last in ranges]


def plan_backfills(catalogue: Catalogue, findings: list[Finding]) -> dict[str, dict]:
    """Per domain with gaps: the contiguous ranges and the one request that covers them.

    Airflow runs one backfill per DAG at a time, so a domain gets one backfill over the span of its
    ranges; partitions inside the span that are committed are skipped by Airflow (their run
    succeeded) or are fast no-ops (committed and unchanged).
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for finding in findings:
        if finding.backfill:
            wanted[finding.domain].add(finding.partition)
    plans = {}
    for name in sorted(wanted):
        domain = catalogue.domain(name)
        ranges = contiguous_ranges(domain, wanted[name])
        dag_id = transfer_dag_id(name)
        if domain.grain == "snapshot":
            plans[name] = {"dag_id": dag_id, "kind": "trigger", "partition": ranges[0][0], "ranges": ranges}
            continue
        plans[name] = {
            "dag_id": dag_id,
            "kind": "backfill",
            "ranges": ranges,
            "from_date": domain.logical_date(ranges[0][0]).isoformat(),
            "to_date": domain.logical_date(ranges[-1][1]).isoformat(),
            "reprocess_behavior": REPROCESS_BEHAVIOR,
            "partitions": len(wanted[name]),
        }
    return plans


# ---------------------------------------------------------------------------------------------
# leftover staging


def sweep_staging(catalogue: Catalogue, target, sweeper: str, dry_run: bool = False) -> dict:
    """Find leftover staging (one listing) and sweep it partition by partition; counts and keys only."""
    from hdh_migration.cleanup import sweep_partition

    found: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key in target.list_keys(f"{STAGING_PREFIX}/"):
        parsed = parse_staging_key(key)
        if parsed is not None:
            domain, table, partition, _run_token = parsed
            found[(domain, partition)][table] += 1
    known = {domain.name: domain for domain in catalogue.domains}
    partitions = []
    for (domain, partition), tables in sorted(found.items()):
        entry = {"domain": domain, "partition": partition, "objects": sum(tables.values())}
        if dry_run:
            entry.update(swept=[], kept=[{"table": t, "reason": "dry run"} for t in sorted(tables)])
        elif domain not in known:
            entry.update(swept=[], kept=[{"table": t, "reason": "domain not in the catalogue"} for t in sorted(tables)])
        else:
            entry.update(sweep_partition(known[domain], partition, sorted(tables), sweeper))
        partitions.append(entry)
    return {
        "objects_found": sum(p["objects"] for p in partitions),
        "objects_swept": sum(s["swept"] for p in partitions for s in p["swept"]),
        "partitions": partitions[:REPORT_LIST_LIMIT],
        "partitions_truncated": max(0, len(partitions) - REPORT_LIST_LIMIT),
    }


# ---------------------------------------------------------------------------------------------
# the requests, through Airflow's REST API


def request_backfills(plans: dict[str, dict], api: AirflowApi, frozen: set[str]) -> list[str]:
    """Create each planned backfill (or trigger, for a snapshot); record the outcome in the plan.

    Returns the DAG ids whose request failed."""
    failures = []
    for name, plan in plans.items():
        if name in frozen:
            plan["status"] = "skipped: the domain is cut over (frozen); roll it back first"
            continue
        try:
            plan["dag_paused"] = api.dag(plan["dag_id"])["is_paused"]
            if plan["kind"] == "trigger":
                if api.active_runs(plan["dag_id"]):
                    plan["status"] = "skipped: a run is already queued or running"
                    continue
                plan["dag_run_id"] = api.trigger(plan["dag_id"], {"partition": plan["partition"]})["dag_run_id"]
                plan["status"] = "triggered"
                continue
            running = api.active_backfill(plan["dag_id"])
            if running:
                plan["backfill_id"] = running["id"]
                plan["status"] = "skipped: a backfill of this DAG is already running; the next scan retries"
                continue
            plan["backfill_id"] = api.create_backfill(
                plan["dag_id"],
                plan["from_date"],
                plan["to_date"],
                plan["reprocess_behavior"],
                max_active_runs=BACKFILL_MAX_ACTIVE_RUNS,
            )["id"]
            plan["status"] = "created"
        except AirflowApiError as error:
            plan["status"] = f"error: {error}"
            failures.append(plan["dag_id"])
            log.error("gap scan: %s: %s", plan["dag_id"], error)
            continue
        if plan["dag_paused"]:
            log.warning("gap scan: %s is paused: its runs wait until it is unpaused", plan["dag_id"])
    return failures


# ---------------------------------------------------------------------------------------------
# the scan


def build_report(catalogue: Catalogue, compared: dict, findings: list[Finding], plans: dict, meta: dict) -> dict:
    """The scan's JSON report: names, partitions, reasons and counts; no data value."""
    domains = {}
    for domain in catalogue.domains:
        mine = [f for f in findings if f.domain == domain.name]
        counts: dict[str, int] = defaultdict(int)
        for finding in mine:
            counts[finding.reason] += 1
        domains[domain.name] = {
            "gaps": sum(1 for f in mine if f.backfill),
            "held": sum(1 for f in mine if not f.backfill),
            "by_reason": dict(sorted(counts.items())),
            "not_in_azure": compared["not_in_azure"].get(domain.name, 0),
            "findings": [
                {"table": f.table, "partition": f.partition, "reason": f.reason} for f in mine[:REPORT_LIST_LIMIT]
            ],
            "findings_truncated": max(0, len(mine) - REPORT_LIST_LIMIT),
            "request": plans.get(domain.name),
        }
    return {
        **meta,
        "partitions_checked": compared["checked"],
        "partitions_committed": compared["committed"],
        "gaps": sum(1 for f in findings if f.backfill),
        "held": sum(1 for f in findings if not f.backfill),
        "backfills": sum(1 for p in plans.values() if p.get("status") in ("created", "triggered")),
        "reasons": {**BACKFILL_REASONS, **HOLD_REASONS},
        "domains": domains,
        "outside_range": compared["outside_range"],
    }


def run_gap_scan(
    *,
    dry_run: bool = False,
    run_id: str | None = None,
    max_attempts: int = MAX_FAILED_ATTEMPTS,
    api: AirflowApi | None = None,
) -> dict:
    """Scan, create the backfills (unless ``dry_run``), write the report to the store and the ledger."""
    from hdh_migration.resources import current_catalogue as _catalogue
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target

    started_at = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    catalogue, ledger, target = _catalogue(), _ledger(), _target()
    sources = {domain.name: _source(domain.name) for domain in catalogue.domains}
    target.ensure_bucket()  # a store with no bucket yet holds no manifest; the report goes there
    observed = observe(catalogue, sources, target, ledger)
    try:
        leftovers = sweep_staging(catalogue, target, run_id or started_at.isoformat(), dry_run=dry_run)
    except Exception as error:  # noqa: BLE001 - leftovers never block the scan's backfills; the next scan retries
        log.warning("gap scan: leftover staging not swept (%s)", type(error).__name__)
        leftovers = {"error": type(error).__name__}
    compare_clock = time.perf_counter()
    compared = compare(catalogue, observed, started_at, max_attempts=max_attempts)
    findings = refine_quarantined(compared["findings"], catalogue, observed, sources, ledger)
    plans = plan_backfills(catalogue, findings)
    compare_seconds = time.perf_counter() - compare_clock
    failures = []
    if dry_run:
        for plan in plans.values():
            plan["status"] = "dry run: not created"
    elif plans:
        frozen = {name for name in plans if ledger.domain_state(name) in FROZEN_STATES}
        failures = request_backfills(plans, api or AirflowApi.from_connection(), frozen)
    report_key = gap_scan_report_key(started_at)
    report = build_report(
        catalogue,
        compared,
        findings,
        plans,
        {
            "started_at": started_at.isoformat(timespec="seconds"),
            "dry_run": dry_run,
            "run_id": run_id,
            "report_key": report_key,
            "staging_leftovers": leftovers,
            "seconds": {
                **{f"list_{k}": round(v, 3) for k, v in observed.listing_seconds.items()},
                "compare": round(compare_seconds, 3),
                "total": round(time.perf_counter() - clock, 3),
            },
        },
    )
    target.put_json(report_key, report)
    ledger.record_gap_scan(
        started_at=started_at,
        dry_run=dry_run,
        partitions_checked=report["partitions_checked"],
        gaps=report["gaps"],
        backfills=report["backfills"],
        report=report,
        run_id=run_id,
    )
    log.info(
        "gap scan: %d partition(s) checked, %d gap(s), %d held, %d backfill(s) %s in %.1f s; report %s",
        report["partitions_checked"],
        report["gaps"],
        report["held"],
        len(plans) if dry_run else report["backfills"],
        "planned (dry run)" if dry_run else "requested",
        report["seconds"]["total"],
        report_key,
    )
    if failures:
        # After the report: it names each failed request. Retrying the scan is safe (a running
        # backfill is found and skipped, not doubled).
        raise AirflowApiError(f"gap scan: the backfill request failed for {', '.join(failures)}; see {report_key}")
    return report
