"""The migration's status: one model, read from the catalogue, the ledger and (where given) Airflow.

``python -m hdh_migration status`` prints it and the on-call board (``board``) renders it: both call
``migration_status``. It answers "how far along?" and "why is nothing moving?":

- per domain: partitions and source bytes committed of expected, the domain's state, its cutover and
  last verification, its DAG paused or not, its transfer tasks holding pool slots, its transfers in
  flight, with their MB/s and the age of their last progress;
- per wave: its transfer window open or closed and when it next opens, the rate measured over the
  last hours, the ETA at that rate (counting only the window's open hours) and a burn-down (source
  bytes remaining over time, in at most ``BURN_DOWN_POINTS`` points whatever the partition count);
- the problems, most severe first, then newest first: privacy incidents, failed, quarantined and
  stalled partitions (in flight with no progress for the domain's ``stall_minutes``).

The heavy lifting is aggregated in the database (``Ledger.partition_summary``, ...), on indexes
that the ledger creates, so the cost follows the number of domains and buckets, not of partitions.
It holds names, states, counts, sizes and times only: never a data value, never an error's text
(``last_error``, for the CLI only, is the ledger's already-redacted text).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field

from hdh_migration.states import PartitionState

PROBLEM_STATES = (PartitionState.FAILED, PartitionState.QUARANTINED)
IN_FLIGHT_STATES = (PartitionState.TRANSFERRING, PartitionState.VALIDATED)
# The events that show a partition's transfer moving on: its plan, each object's bytes, its validation.
PROGRESS_KINDS = ("planned", "partition_transferring", "transfer_progress", "partition_validated")
# Problem kinds, most severe first.
SEVERITY = ("privacy_incident", "failed", "quarantined", "stalled")
MAX_PROBLEMS_READ = 2000  # the most recent problem partitions read; the count covers them all
MAX_IN_FLIGHT = 500
BURN_DOWN_POINTS = 96
RATE_WINDOW = dt.timedelta(hours=6)
ETA_STEP = dt.timedelta(minutes=15)
ETA_HORIZON = dt.timedelta(days=366)


@dataclass(frozen=True)
class AirflowFacts:
    """What Airflow's database says, where the caller could read it (the api-server; the CLI may not).

    ``paused``: DAG id -> paused; ``pool``: the transfer pool's slots (total, running, queued, open);
    ``pool_tasks``: DAG id -> its task instances holding or waiting for a slot of that pool.
    """

    paused: dict[str, bool] = field(default_factory=dict)
    pool: dict | None = None
    pool_tasks: dict[str, dict[str, int]] = field(default_factory=dict)


def display_timezone(catalogue) -> str:
    """The catalogue's time zone: its waves' windows' (the first wave's when they differ)."""
    zones = [wave.window.timezone for wave in catalogue.waves]
    return zones[0] if zones else "UTC"


def expected_ranges(catalogue) -> dict[str, tuple[list[str], str, str]]:
    """Per domain: its tables, its first and its last (cutover) partition value."""
    return {
        d.name: (
            [t.name for t in d.tables],
            d.cutover_partition if d.grain == "snapshot" else d.first_partition,
            d.cutover_partition,
        )
        for d in catalogue.domains
    }


@functools.lru_cache(maxsize=1024)
def partition_count(domain) -> int:
    """How many partitions the domain's range holds (its tables each have them all)."""
    return len(domain.partitions())


def remaining(domain, states: dict[str, dict]) -> dict:
    """A domain's lag from its ``Ledger.partition_summary`` row: the table-partitions expected and not committed,
    and their source bytes (those of partitions not planned yet estimated from the planned ones' mean size)."""
    expected = len(domain.tables) * partition_count(domain)
    committed = states.get(PartitionState.COMMITTED, {})
    sized = sum(s["sized"] for s in states.values())
    known = sum(s["source_bytes"] for s in states.values())
    unknown = max(0, expected - sized)
    estimate = known / sized * unknown if sized else 0.0
    return {
        "partitions_expected": expected,
        "partitions": expected - committed.get("partitions", 0),
        "source_bytes_known": known,
        "source_bytes": max(0.0, known + estimate - committed.get("source_bytes", 0)),
        "partitions_of_unknown_size": unknown,
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _window(wave, now: dt.datetime) -> dict:
    window = wave.window
    is_open = window.is_open(now)
    return {
        "open": is_open,
        "always_open": window.always_open and window.starts_at() is None,
        "timezone": window.timezone,
        "next_open": None if is_open else _iso(window.next_open(now)),
        "starts_at": _iso(window.starts_at()),
    }


def _open_seconds(window, start: dt.datetime, end: dt.datetime) -> float:
    """How long the window was open between two instants (to ``ETA_STEP``)."""
    seconds, at = 0.0, start
    while at < end:
        step = min(ETA_STEP, end - at)
        if window.is_open(at):
            seconds += step.total_seconds()
        at += step
    return seconds


def window_eta(window, now: dt.datetime, remaining: float, bytes_per_s: float) -> dt.datetime | None:
    """When ``remaining`` bytes are moved at this rate, counting only the window's open time; None past a year.

    Whole weeks are skipped at the open time of the first (a window repeats weekly), then the last stretch
    is walked in ``ETA_STEP``s: at most a few weeks of steps, whatever the ETA.
    """
    if remaining <= 0:
        return now
    needed, at = remaining / bytes_per_s, now
    week = dt.timedelta(days=7)
    open_per_week = _open_seconds(window, now, now + week)
    if open_per_week <= 0:
        return None
    weeks = max(0, int(needed // open_per_week) - 1)
    needed -= weeks * open_per_week
    at += weeks * week
    while at < now + ETA_HORIZON:
        if window.is_open(at):
            if needed <= ETA_STEP.total_seconds():
                return at + dt.timedelta(seconds=needed)
            needed -= ETA_STEP.total_seconds()
        at += ETA_STEP
    return None


def _last_error(domain: str, problems: list, ledger) -> dict | None:
    """The domain's most recent unresolved error: a failed or quarantined partition, a refused cutover, a failed verify."""
    from hdh_migration.errors import Where

    candidates = [
        {"at": r.updated_at, "where": Where(domain, r.table_name, r.partition).label, "error": r.last_error}
        for r in problems
    ]
    refused = ledger.last_event(domain, ("cutover_refused", "domain_cut_over"))
    if refused and refused["kind"] == "cutover_refused":
        candidates.append({"at": refused["at"], "where": Where(domain).label, "error": refused["detail"]})
    verify = ledger.last_event(domain, ("verify_failed", "verify_passed"))
    if verify and verify["kind"] == "verify_failed":
        detail = json.loads(verify["detail"])
        error = f"verify failed: {detail['problems']} problem(s), first: {detail['first_problems'][0]}"
        candidates.append({"at": verify["at"], "where": Where(domain).label, "error": error})
    if not candidates:
        return None
    last = max(candidates, key=lambda c: _utc(c["at"]))
    return {**last, "at": _utc(last["at"]).isoformat(timespec="seconds")}


def _cutover_summary(domain: str, ledger) -> dict:
    history = ledger.cutover_history(domain)
    last = history[-1] if history else None
    verify = ledger.last_event(domain, ("verify_passed", "verify_failed"))
    return {
        "cutover": {
            "action": last["action"],
            "at": last["at"].isoformat(timespec="seconds"),
            "by": last["by"],
            "reason": last["reason"],
            "run_id": last["run_id"],
            "root_sha256": last["root_sha256"],
        }
        if last
        else None,
        "verify": {
            "at": verify["at"].isoformat(timespec="seconds"),
            "passed": verify["kind"] == "verify_passed",
            **{k: v for k, v in json.loads(verify["detail"]).items() if k in ("objects", "deep", "problems")},
        }
        if verify
        else None,
    }


def _problem(record, kind: str, report: dict | None, stall: dict | None = None) -> dict:
    return {
        "kind": kind,
        "severity": SEVERITY.index(kind),
        "domain": record.domain,
        "table": record.table_name,
        "partition": record.partition,
        "state": record.state,
        "attempts": record.attempts,
        "since": _iso(stall["last_progress_at_dt"] if stall else _utc(record.updated_at)),
        "run_id": record.run_id,
        "expectations": list(report.get("expectations", []))
        if report and record.state == PartitionState.QUARANTINED
        else [],
        "report_key": report.get("report_key") if report and record.state == PartitionState.QUARANTINED else None,
        "privacy_incident": kind == "privacy_incident",
        "stall_minutes": stall["stall_minutes"] if stall else None,
    }


def _in_flight(records, progress: dict, planned: dict, catalogue, now: dt.datetime) -> list[dict]:
    flights = []
    for r in records:
        key = (r.domain, r.table_name, r.partition)
        seen = progress.get(key, {})
        updated = _utc(r.updated_at)
        last = max(seen.get("last") or updated, updated)
        started = min(seen.get("first") or updated, updated)
        moved = seen.get("bytes", 0)
        elapsed = (last - started).total_seconds()
        try:
            stall_after = catalogue.domain(r.domain).stall_minutes * 60
        except ValueError:
            continue  # a domain no longer in the catalogue
        age = max(0.0, (now - last).total_seconds())
        flights.append(
            {
                "domain": r.domain,
                "table": r.table_name,
                "partition": r.partition,
                "state": r.state,
                "run_id": r.run_id,
                "started_at": _iso(started),
                "last_progress_at": _iso(last),
                "last_progress_at_dt": last,
                "progress_age_s": round(age),
                "bytes_moved": moved,
                "source_bytes": planned.get(key, {}).get("source_bytes"),
                "mb_per_s": round(moved / 1e6 / elapsed, 3) if elapsed > 0 and moved else None,
                "stalled": age > stall_after,
                "stall_minutes": stall_after // 60,
                "record": r,
            }
        )
    return flights


def migration_status(catalogue, ledger, now: dt.datetime | None = None, airflow: AirflowFacts | None = None) -> dict:
    """The whole status: ``domains``, ``waves``, ``problems`` (most severe, then newest first), ``in_flight``."""
    from hdh_migration.naming import transfer_dag_id

    now = now or dt.datetime.now(dt.UTC)
    airflow = airflow or AirflowFacts()
    ranges = expected_ranges(catalogue)
    bucket_s = _bucket_seconds(ledger, now)
    summary, buckets = ledger.summary_and_commits(ranges, bucket_s)

    # in flight, and stalled
    flight_records = ledger.partitions_in(IN_FLIGHT_STATES, limit=MAX_IN_FLIGHT)
    flight_keys = [(r.domain, r.table_name, r.partition) for r in flight_records]
    flights = _in_flight(
        flight_records,
        ledger.flight_progress(IN_FLIGHT_STATES, PROGRESS_KINDS),
        ledger.latest_details("planned", flight_keys),
        catalogue,
        now,
    )

    # problems: privacy incidents, failed, quarantined, stalled; most severe first, then newest first
    problem_records = ledger.partitions_in(PROBLEM_STATES, limit=MAX_PROBLEMS_READ)
    problem_counts = ledger.count_in(PROBLEM_STATES)
    reports = ledger.latest_details(
        "quarantine_report",
        [(r.domain, r.table_name, r.partition) for r in problem_records if r.state == PartitionState.QUARANTINED],
    )
    problems = []
    for r in problem_records:
        report = reports.get((r.domain, r.table_name, r.partition))
        privacy = r.state == PartitionState.QUARANTINED and report is not None and report.get("severity") == "privacy"
        problems.append(_problem(r, "privacy_incident" if privacy else r.state, report))
    for flight in flights:
        if flight["stalled"]:
            problems.append(_problem(flight["record"], "stalled", None, flight))
    problems.sort(key=lambda p: p["since"] or "", reverse=True)
    problems.sort(key=lambda p: p["severity"])  # stable: newest first within a severity

    # tables that passed but wait for a quarantined table of their partition (all its tables commit together)
    waiting = [r for r in ledger.partitions_in((PartitionState.VALIDATED,), limit=MAX_PROBLEMS_READ) if r.last_error]

    domains = []
    for domain in sorted(catalogue.domains, key=lambda d: (d.wave, d.name)):
        states = summary.get(domain.name, {})
        committed = states.get(PartitionState.COMMITTED, {})
        lag = remaining(domain, states)
        dag_id = transfer_dag_id(domain.name)
        mine = [f for f in flights if f["domain"] == domain.name]
        domain_problems = [p for p in problem_records if p.domain == domain.name]
        domains.append(
            {
                "domain": domain.name,
                "wave": domain.wave,
                "grain": domain.grain,
                "owner": domain.owner,
                "state": ledger.domain_state(domain.name),
                "dag_id": dag_id,
                "dag_paused": airflow.paused.get(dag_id),
                "pool_tasks": airflow.pool_tasks.get(dag_id, {"running": 0, "queued": 0}),
                "partitions_committed": committed.get("partitions", 0),
                "partitions_expected": lag["partitions_expected"],
                "partitions_in_flight": sum(states.get(s, {}).get("partitions", 0) for s in IN_FLIGHT_STATES),
                "partitions_stalled": sum(1 for f in mine if f["stalled"]),
                "problems_count": problem_counts.get(domain.name, 0),
                "rows": committed.get("rows", 0),
                "bytes": committed.get("bytes", 0),
                "source_bytes_committed": committed.get("source_bytes", 0),
                "source_bytes_expected": lag["source_bytes_known"],
                "source_bytes_remaining": lag["source_bytes"],
                "partitions_of_unknown_size": lag["partitions_of_unknown_size"],
                "stall_minutes": domain.stall_minutes,
                "failed": [
                    {"table": r.table_name, "partition": r.partition, "state": r.state, "last_error": r.last_error}
                    for r in domain_problems
                ],
                "quarantined": [
                    {"table": r.table_name, "partition": r.partition}
                    for r in domain_problems
                    if r.state == PartitionState.QUARANTINED
                ],
                "waiting": [
                    {"table": r.table_name, "partition": r.partition, "waits_for": r.last_error}
                    for r in waiting
                    if r.domain == domain.name
                ],
                "last_error": _last_error(domain.name, domain_problems, ledger),
                **_cutover_summary(domain.name, ledger),
            }
        )
    waves = [_wave(wave, catalogue, domains, buckets, bucket_s, now) for wave in catalogue.waves]
    return {
        "generated_at": _iso(now),
        "timezone": display_timezone(catalogue),
        "domains": domains,
        "waves": waves,
        "problems": [{k: v for k, v in p.items()} for p in problems],
        "problems_total": sum(problem_counts.values()) + sum(1 for f in flights if f["stalled"]),
        "in_flight": [{k: v for k, v in f.items() if k not in ("record", "last_progress_at_dt")} for f in flights],
        "pool": airflow.pool,
        "throughput": _throughput(buckets, bucket_s),
    }


def status_rows(catalogue, ledger) -> list[dict]:
    """Per domain, the status's rows (``python -m hdh_migration status``)."""
    return migration_status(catalogue, ledger)["domains"]


def _bucket_seconds(ledger, now: dt.datetime) -> int:
    """The time bucket of the charts: the whole history of commits in ``BURN_DOWN_POINTS`` buckets."""
    first = ledger.first_commit_at()
    span = (now - first).total_seconds() if first else 3600.0
    return max(60, int(span / BURN_DOWN_POINTS) + 1)


def _wave(wave, catalogue, domains: list[dict], buckets, bucket_s: int, now: dt.datetime) -> dict:
    names = [d["domain"] for d in domains if d["wave"] == wave.number]
    mine = [d for d in domains if d["wave"] == wave.number]
    remaining = sum(d["source_bytes_remaining"] for d in mine)
    committed = sum(d["source_bytes_committed"] for d in mine)
    total = remaining + committed
    per_bucket: dict[int, int] = {}
    for domain, start, _stored, source in buckets:
        if domain in names:
            per_bucket[start] = per_bucket.get(start, 0) + source
    # bytes remaining at the end of each bucket: what was left once its commits were in
    burn_down, done = [], 0
    for start in sorted(per_bucket):
        done += per_bucket[start]
        end = min(dt.datetime.fromtimestamp(start + bucket_s, dt.UTC), now)
        burn_down.append({"at": _iso(end), "remaining": max(0, total - done)})
    if burn_down and burn_down[-1]["at"] != _iso(now):
        burn_down.append({"at": _iso(now), "remaining": remaining})
    # the measured rate: source bytes committed over the last hours, per second of open window
    since = now - RATE_WINDOW
    recent = sum(
        source
        for domain, start, _stored, source in buckets
        if domain in names and dt.datetime.fromtimestamp(start + bucket_s, dt.UTC) > since
    )
    span_start = min(
        (dt.datetime.fromtimestamp(start, dt.UTC) for domain, start, *_ in buckets if domain in names),
        default=now,
    )
    open_s = _open_seconds(wave.window, max(since, span_start), now)
    rate = recent / open_s if open_s > 0 and recent else None
    eta = window_eta(wave.window, now, remaining, rate) if rate else None
    return {
        "wave": wave.number,
        "description": wave.description,
        "domains": names,
        "window": _window(wave, now),
        "source_bytes_total": total,
        "source_bytes_remaining": remaining,
        "estimated": any(d["partitions_of_unknown_size"] for d in mine),
        "rate_mb_s": None if rate is None else round(rate / 1e6, 3),
        "eta": _iso(eta) if rate and eta else None,
        "eta_beyond_a_year": bool(rate) and eta is None,
        "burn_down": burn_down,
        "paused_dags": [d["dag_id"] for d in mine if d["dag_paused"]],
    }


def _throughput(buckets, bucket_s: int) -> dict:
    """The stored bytes committed per time bucket, as MB/s over the bucket: at most ``BURN_DOWN_POINTS`` points."""
    per_bucket: dict[int, int] = {}
    for _domain, start, stored, _source in buckets:
        per_bucket[start] = per_bucket.get(start, 0) + stored
    return {
        "bucket_s": bucket_s,
        "points": [
            {"at": _iso(dt.datetime.fromtimestamp(start, dt.UTC)), "bytes": size, "mb_per_s": size / 1e6 / bucket_s}
            for start, size in sorted(per_bucket.items())
        ],
    }
