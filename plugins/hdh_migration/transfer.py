"""The work behind ``hdh_transfer__<domain>``: plan, transfer, validate, commit, reconcile.

Each function is one Airflow task body. They exchange only metadata through XCom (names, sizes,
hashes, counts), never data values. Heavy libraries are imported inside the functions.

Commit protocol: each object is checked on the worker, then uploaded under the run's own
``_staging/…/<run token>/`` folder and read back (an object that fails a check never leaves the
worker), promoted to final keys by server-side copy, and only then is the partition manifest
written, by the lease holder only (a re-check under the lease, then a conditional PUT): the manifest
is the commit point. The ledger records it at once; the cleanup that follows (the run's staging, its
unfinished uploads, stale final keys) is best effort: what it leaves is reported and swept under the
lease by the partition's next run or by the gap scan. A run that dies at any step leaves either the
previous manifest (and the next run redoes the work) or the new one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
from contextlib import ExitStack
from contextvars import ContextVar
from pathlib import Path

from hdh_migration.catalogue import Catalogue, Domain, Table, cached_catalogue
from hdh_migration.errors import (
    ConfigurationError,
    DataError,
    FrozenDomainError,
    IntegrityError,
    MissingPartitionError,
    PartitionBusyError,
    PartitionLeaseLost,
    PrivacyIncident,
    QuarantinedError,
    StructuralError,
    where,
)
from hdh_migration.layout import (
    manifest_key,
    partition_dir,
    quarantine_key,
    run_staging_prefix,
    staging_key,
    staging_prefix,
    target_key,
)

log = logging.getLogger(__name__)

SOURCE_CONN_ID = "hdh_azure_source"
TARGET_CONN_ID = "hdh_sovereign_target"
LEDGER_CONN_ID = "hdh_ledger"
BATCH_ROWS = 16_384  # bounded memory per batch; smaller batches cost nothing measurable in Arrow
KEY_BUCKET_BYTES = 64 << 20
MANIFEST_VERSION = 1
# One run writes a partition at a time (see Ledger.claim_partition). Every task of the run takes the
# lease back when it starts and renews it every LEASE_RENEW_EVERY while it runs, by the database's
# clock; a run that crashed blocks its partition at most this long after its last renewal.
PARTITION_LEASE = dt.timedelta(hours=1)
LEASE_RENEW_EVERY = dt.timedelta(minutes=5)
LEFTOVERS_LISTED = 100  # keys named in a leftover report (and its event); the count is always whole
# A leftover sweep outside any run (the gap scan) holds the partition's lease under this name, briefly.
SWEEPER_PREFIX = "leftover-sweep:"
SWEEP_LEASE = dt.timedelta(minutes=10)
SWEEPABLE_STATES = ("committed", "quarantined")
LEASE_WAIT_S = 600
LEASE_POLL_S = 5


def _catalogue() -> Catalogue:
    return cached_catalogue(os.environ.get("HDH_CATALOGUE"))


def _ledger():
    from hdh_migration.ledger import Ledger

    return Ledger.from_connection(LEDGER_CONN_ID)


def _target():
    from hdh_migration.target import SovereignTarget

    catalogue = _catalogue()
    return SovereignTarget(
        TARGET_CONN_ID, catalogue.target_bucket, catalogue.target_eea_regions, catalogue.target_ca_bundle
    )


def _source(domain_name: str | None = None):
    from hdh_migration.source import open_source

    return open_source(_catalogue(), domain_name)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_token(run_id: str) -> str:
    """A short, key-safe token for a DAG run: one staging folder per run, stable across retries."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def _spool_dir() -> Path:
    root = Path(os.environ.get("HDH_SPOOL_DIR") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="hdh-spool-", dir=root))


def _record_failure(domain: str, table: str, partition: str, error: Exception, run_id: str) -> None:
    ledger = _ledger()
    ledger.set_state(domain, table, partition, "failed", run_id=run_id, last_error=str(error)[:2000])
    _release_lease(ledger, domain, partition, run_id)  # a failed run writes no more: let the next one in


class _TaskLeases:
    """The lease renewers a task body started, stopped when the body returns (see ``_renews_lease``)."""

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.renewers: dict[tuple[str, str, str], object] = {}


_task_leases: ContextVar[_TaskLeases | None] = ContextVar("hdh_task_leases", default=None)


def _renews_lease(task_body):
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


def _keep_renewing(ledger, domain: str, partition: str, run_id: str) -> None:
    from hdh_migration.ledger import LeaseRenewer

    leases = _task_leases.get()
    if leases is None or (domain, partition, run_id) in leases.renewers:
        return
    renewer = LeaseRenewer(ledger, domain, partition, run_id, PARTITION_LEASE, LEASE_RENEW_EVERY.total_seconds())
    leases.renewers[(domain, partition, run_id)] = leases.stack.enter_context(renewer)


def _release_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Stop renewing the run's lease in this task, then give it back."""
    leases = _task_leases.get()
    renewer = leases.renewers.pop((domain, partition, run_id), None) if leases else None
    if renewer is not None:
        renewer.stop()
    ledger.release_partition(domain, partition, run_id)


def _wait_for_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Take the partition's write lease, waiting a while if another run is writing the partition."""
    holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        log.info("%s: run %s is writing this partition; waiting for it", where(domain, partition=partition), holder)
        ledger.record_event(domain, "partition_busy", {"holder": holder}, partition=partition, run_id=run_id)
    deadline = time.monotonic() + LEASE_WAIT_S
    while holder and time.monotonic() < deadline:
        if not holder.startswith(SWEEPER_PREFIX) and _run_finished(holder):
            log.info("%s: run %s finished without releasing its lease; taking it over", where(domain), holder)
            holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE, stale_holder=holder)
            continue
        time.sleep(LEASE_POLL_S)
        holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        raise PartitionBusyError(
            f"{where(domain, partition=partition)}: run {holder} still holds the partition's write lease after "
            f"{LEASE_WAIT_S} s (rule: one run writes a partition at a time). This task is retried; if that run "
            f"died, clear it to finish it, or its lease expires {PARTITION_LEASE} after its last renewal"
        )
    _keep_renewing(ledger, domain, partition, run_id)


def _run_finished(run_id: str) -> bool:
    """Whether another run of the running task's DAG is neither queued nor running (finished, or deleted)."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
        alive = context["ti"].get_dr_count(context["dag"].dag_id, run_ids=[run_id], states=["queued", "running"])
    except Exception:  # noqa: BLE001 - outside a task (the command line): rely on the lease's expiry
        return False
    return alive == 0


def _hold_lease(ledger, domain: str, partition: str, run_id: str) -> None:
    """Renew the run's write lease before writing, and keep renewing it while the task runs; refuse if
    another run took it meanwhile."""
    holder = ledger.claim_partition(domain, partition, run_id, PARTITION_LEASE)
    if holder:
        raise PartitionLeaseLost(
            f"{where(domain, partition=partition)}: run {holder} took the partition's write lease after this "
            "run's expired (rule: one run writes a partition at a time). This run stops without writing; "
            "the other run completes the partition"
        )
    _keep_renewing(ledger, domain, partition, run_id)


def _fence(ledger, table: Table, partition: str, run_id: str) -> None:
    """Just before a write that makes data visible: this run holds the lease and is still the table's
    run in the ledger (no run planned it since, even one that took the lease and gave it back)."""
    _hold_lease(ledger, table.domain, partition, run_id)
    record = ledger.get(table.domain, table.name, partition)
    if record is not None and record.run_id != run_id:
        raise PartitionLeaseLost(
            f"{where(table.domain, table.name, partition)}: run {record.run_id} took the partition over since "
            "this run planned it (rule: one run writes a partition at a time). This run stops without writing; "
            "the other run's result stands"
        )


def _sweep_leftovers(target, ledger, table: Table, partition: str, keep_token: str | None, run_id: str) -> dict:
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
    target.delete_keys(sorted(found))
    remaining = found.intersection(target.list_keys(prefix))
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
            where(table.domain, table.name, partition),
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
    ledger, target = _ledger(), _target()
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
            report = _sweep_leftovers(target, ledger, domain.table(name), partition, None, holder_id)
            swept.append({"table": name, **report})
    finally:
        ledger.release_partition(domain.name, partition, holder_id)
    return {"swept": swept, "kept": kept}


def _clean_after(target, ledger, table: Table, partition: str, token: str, run_id: str, stale: list[str]) -> dict:
    """Best effort: remove this run's staging and unfinished uploads, and the ``stale`` final keys.

    Never raises: it runs after a verdict (quarantine) or after the commit point, which a cleanup
    fault must not undo. What stays is counted, named by key and recorded (``cleanup_leftovers``);
    the partition's next run or the gap scan sweeps it. Other runs' staging is never touched here.
    """
    own = run_staging_prefix(table.domain, table.name, table.partition_column, partition, token)
    steps = {
        "staging": lambda: target.delete_keys(target.list_keys(own)),
        "uploads": lambda: target.abort_uploads(own),
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
            where(table.domain, table.name, partition),
            len(leftovers),
            "; ".join(errors) or "no error reported",
            report["keys"],
        )
        try:
            ledger.record_event(
                table.domain, "cleanup_leftovers", report, table_name=table.name, partition=partition, run_id=run_id
            )
        except Exception as error:  # noqa: BLE001 - the warning above is the report then
            log.warning("%s: leftovers not recorded in the ledger (%s)", where(table.domain), type(error).__name__)
    return report


# ---------------------------------------------------------------------------------------------
# plan


def _refuse_frozen(ledger, domain: str, partition: str) -> str:
    """The domain's state, unless it is cut over: then the transfer refuses to write, and says why."""
    from hdh_migration.ledger import FROZEN_STATES

    state = ledger.domain_state(domain)
    if state in FROZEN_STATES:
        raise FrozenDomainError(
            f"{where(domain, partition=partition)}: the domain is cut over, so the French copy is the data "
            "and the transfer refuses to write. Roll the cutover back (with a reason) first if a re-transfer is "
            "really needed",
            domain=domain,
            partition=partition,
        )
    return state


@_renews_lease
def plan_partition(domain_name: str, partition: str, run_id: str, force: bool = False) -> dict:
    """List each table's source objects for the partition; skip tables already committed unchanged."""
    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    ledger = _ledger()
    domain_state = _refuse_frozen(ledger, domain.name, partition)
    _wait_for_lease(ledger, domain.name, partition, run_id)
    target = _target()  # the sovereignty guard runs here, before any byte moves
    target.ensure_bucket()
    if domain_state == "planned":
        ledger.set_domain_state(domain.name, "transferring", {"run_id": run_id})
    source = _source(domain.name)
    token = run_token(run_id)
    for table in domain.tables:
        try:
            _sweep_leftovers(target, ledger, table, partition, token, run_id)
        except Exception as error:  # noqa: BLE001 - leftovers never block a transfer; the gap scan sweeps too
            log.warning("%s: leftovers not swept (%s)", where(domain.name, table.name, partition), type(error).__name__)
    tables, objects = [], []
    for table in domain.tables:
        prefix = partition_dir(domain.name, table.name, table.partition_column, partition)
        listed = source.list_objects(prefix, table.source_extension)
        if not listed:
            if table.optional:
                log.info("%s: no source objects; the table is optional here", where(domain.name, table.name, partition))
                continue
            error = MissingPartitionError(
                f"{where(domain.name, table.name, partition)}: no source objects under "
                f"{domain.source.describe(prefix)} (rule: planned partitions must exist in the source). "
                "Check that the partition was delivered, or mark the table 'optional: true' in the catalogue",
                domain=domain.name,
                table=table.name,
                partition=partition,
            )
            _record_failure(domain.name, table.name, partition, error, run_id)
            raise error
        manifest = target.get_json(manifest_key(domain.name, table.name, table.partition_column, partition))
        listed_etags = {obj.name: obj.etag for obj in listed}
        previous = {o["name"]: o["etag"] for o in manifest["source_objects"]} if manifest else None
        record = ledger.get(domain.name, table.name, partition)
        proven = record is not None and record.state == "committed"
        if previous == listed_etags and proven and not force:
            log.info(
                "%s: committed and unchanged (same ETags): nothing to do", where(domain.name, table.name, partition)
            )
            ledger.record_event(domain.name, "unchanged", table_name=table.name, partition=partition, run_id=run_id)
            continue
        if previous is not None and previous != listed_etags:
            changes = {
                "added": sorted(set(listed_etags) - set(previous)),
                "removed": sorted(set(previous) - set(listed_etags)),
                "changed": sorted(n for n in listed_etags if n in previous and previous[n] != listed_etags[n]),
            }
            log.info("%s: source changed since the last commit: %s", where(domain.name, table.name, partition), changes)
            ledger.record_event(
                domain.name, "source_changed", changes, table_name=table.name, partition=partition, run_id=run_id
            )
        total_bytes = sum(obj.size for obj in listed)
        buckets = max(1, math.ceil(total_bytes / KEY_BUCKET_BYTES))
        tables.append(
            {
                "domain": domain.name,
                "table": table.name,
                "partition": partition,
                "run_token": token,
                "key_buckets": buckets,
                "objects": [obj.as_dict() for obj in listed],
                "bytes": total_bytes,
                "started_at": _utcnow(),
            }
        )
        for obj in listed:
            objects.append(
                {
                    "domain": domain.name,
                    "table": table.name,
                    "partition": partition,
                    "run_token": token,
                    "key_buckets": buckets,
                    "source": obj.as_dict(),
                }
            )
        ledger.record_event(
            domain.name,
            "planned",
            {"objects": len(listed), "source_bytes": total_bytes},
            table_name=table.name,
            partition=partition,
            run_id=run_id,
        )
        ledger.set_state(
            domain.name, table.name, partition, "transferring", run_id=run_id, new_attempt=True, last_error=None
        )
    if not tables:
        _release_lease(ledger, domain.name, partition, run_id)
    log.info(
        "%s: %d table(s) to transfer, %d object(s), %.1f MB",
        where(domain.name, partition=partition),
        len(tables),
        len(objects),
        sum(t["bytes"] for t in tables) / 1e6,
    )
    return {"tables": tables, "objects": objects}


# ---------------------------------------------------------------------------------------------
# transfer


def _check_columns(actual: list[str], table: Table, expected, label: str) -> None:
    """The file's columns are the schema's, in order. The error names only the schema's columns: the file's
    own names may be anything (a headerless CSV's first row), so they appear as counts and positions."""
    if actual == expected.names:
        return
    known = set(expected.names)
    missing = [n for n in expected.names if n not in actual]
    unexpected = [position for position, name in enumerate(actual, 1) if name not in known]
    details = [f"the file has {len(actual)} columns, the schema {len(expected.names)}"]
    if missing:
        details.append(f"missing {', '.join(missing)}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected column(s) at position(s) {', '.join(map(str, unexpected[:20]))}")
    if not missing and not unexpected:
        position = next(i for i, (a, b) in enumerate(zip(actual, expected.names, strict=False), 1) if a != b)
        details.append(f"another order: position {position} should be {expected.names[position - 1]}")
    header_read = table.format == "csv" and table.csv.header
    raise StructuralError(
        f"{label}: columns differ from the schema {table.schema_path.name} (rule: "
        f"expect_table_columns_to_match_ordered_list; {'; '.join(details)}). Fix the export, or update the schema "
        "file if the SNDS dictionary changed"
        + (", or set 'header: false' in the catalogue if the file has no header line" if header_read else ""),
        "expect_table_columns_to_match_ordered_list",
        column_list=expected.names,
    )


def _unreadable(label: str, rule: str, error: BaseException, next_step: str) -> StructuralError:
    """A file the readers could not decode: the rule and the exception's class, never its text (a
    library's message may quote the bytes or the value it choked on)."""
    return StructuralError(f"{label}: {next_step} (rule: {rule}; {type(error).__name__})", rule)


def _open_parquet(path: Path, metadata=None):
    """A parquet file read as a buffered stream, without pre-buffering whole row groups.

    With ``use_threads=False`` on ``iter_batches`` this keeps the reader at about one decoded row
    group (measured: 115 MB above the libraries instead of 189 MB for 65,536-row ER_PRS_F groups).
    ``metadata``: the file's footer, already read (the file may still be arriving).
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, metadata=metadata, pre_buffer=False, buffer_size=1 << 20)


PARQUET_MAGIC = b"PAR1"
FOOTER_GUESS = 64 << 10  # one ranged read holds the footer of every table here


def _unreadable_parquet(label: str, error: Exception) -> StructuralError:
    return _unreadable(
        label,
        "expect_file_to_be_valid_parquet",
        error,
        "not a readable parquet file: the object is truncated or corrupt. Re-export it, then re-run the partition",
    )


def _parquet_footer(source, obj, label: str) -> bytes:
    """The footer of a parquet source (metadata, its length, the magic), read before the rest of it."""
    tail = source.read_range(obj, max(0, obj.size - FOOTER_GUESS), min(obj.size, FOOTER_GUESS))
    if len(tail) < 12 or tail[-4:] != PARQUET_MAGIC:
        raise _unreadable_parquet(label, ValueError("no parquet footer"))
    length = int.from_bytes(tail[-8:-4], "little") + 8
    if length + 4 > obj.size:
        raise _unreadable_parquet(label, ValueError("footer longer than the file"))
    if length > len(tail):
        tail = source.read_range(obj, obj.size - length, length)
    return tail[-length:]


def _row_group_end(row_group) -> int:
    """The offset just past a row group's last column chunk."""
    end = 0
    for index in range(row_group.num_columns):
        column = row_group.column(index)
        first_page = column.dictionary_page_offset or column.data_page_offset
        end = max(end, first_page + column.total_compressed_size)
    return end


class _Landed:
    """How many bytes of a spool file are on disk, for a reader that follows its download."""

    def __init__(self, total: int):
        import threading

        self._changed = threading.Condition()
        self._total = total
        self._bytes = 0
        self._finished = False

    def __call__(self, nbytes: int) -> None:
        with self._changed:
            self._bytes += nbytes
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def wait_for(self, offset: int) -> bool:
        """Whether the first ``offset`` bytes landed; False if the download ended before them."""
        with self._changed:
            self._changed.wait_for(lambda: self._bytes >= offset or self._finished)
            return self._bytes >= offset

    @property
    def stopped_early(self) -> bool:
        with self._changed:
            return self._finished and self._bytes < self._total


def _parquet_batches(path: Path, footer: bytes, landed: _Landed, table: Table, expected, label: str):
    """Record batches of a parquet source as its row groups land, after checking its columns and types.

    ``footer`` was read first, so each row group is decoded as soon as the download has written it.
    If the download stops early, so do the batches: the caller surfaces the download's error.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(pa.BufferReader(footer))
        schema = metadata.schema.to_arrow_schema()
        _check_columns(schema.names, table, expected, label)
        wrong = [f.name for f in expected if not schema.field(f.name).type.equals(f.type)]
        if wrong:
            raise StructuralError(
                f"{label}: column types differ from the schema {table.schema_path.name} for {wrong} (rule: "
                "expect_table_column_types_to_match_schema). Fix the export's types",
                "expect_table_column_types_to_match_schema",
                column_list=wrong,
            )
        unreadable = _unreadable_codecs(metadata)
        if unreadable:
            raise StructuralError(
                f"{label}: the parquet file is compressed with {', '.join(unreadable)}, which pyarrow cannot read "
                "(rule: expect_file_to_be_valid_parquet). Re-export it with zstd, snappy or gzip, then re-run the "
                "partition",
                "expect_file_to_be_valid_parquet",
            )
        for index in range(metadata.num_row_groups):
            if not landed.wait_for(_row_group_end(metadata.row_group(index))):
                if landed.stopped_early:
                    return
                raise _unreadable_parquet(label, ValueError("a row group ends past the end of the file"))
            # Opened once the row group is on disk: Arrow bounds its reads by the file's size at opening.
            parquet = _open_parquet(path, metadata)
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[index], use_threads=False)
    except StructuralError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is the fault
        raise _unreadable_parquet(label, err) from None


def _unreadable_codecs(metadata) -> list[str]:
    """The compression codecs of a parquet file's column chunks that this pyarrow cannot decode."""
    import pyarrow as pa

    def readable(codec: str) -> bool:
        try:
            return codec == "UNCOMPRESSED" or pa.Codec.is_available(codec.lower())
        except ValueError:  # a codec pyarrow does not even name (LZO)
            return False

    codecs = {
        metadata.row_group(group).column(column).compression
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    }
    return sorted(codec for codec in codecs if not readable(codec))


def _check_encoding(path: Path, table: Table, label: str) -> None:
    """Refuse a CSV declared Latin-1 that is in fact UTF-8: Latin-1 decodes any byte, silently wrong."""
    if table.csv.encoding.lower().replace("_", "-") not in ("latin-1", "iso-8859-1", "latin1"):
        return
    utf8_sequence = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
    with open(path, "rb") as handle:
        while chunk := handle.read(4 << 20):
            if b"\x00" in chunk or utf8_sequence.search(chunk):
                raise StructuralError(
                    f"{label}: the CSV is not Latin-1 (rule: expect_file_encoding_to_be_latin1; UTF-8 or UTF-16 "
                    "byte sequences found). Re-export it in Latin-1, or declare its encoding in the catalogue",
                    "expect_file_encoding_to_be_latin1",
                )


# The positions Arrow's CSV errors give (its messages also quote the row): kept, the rest dropped.
_CSV_COLUMNS = re.compile(r"Expected (\d+) columns, got (\d+)")
_CSV_COLUMN = re.compile(r"CSV column #(\d+)")  # 0-based


def _csv_parse_error(error: BaseException, table: Table, expected, label: str) -> StructuralError:
    """Arrow's CSV error as counts and positions only (the column named from the schema): its message quotes
    the offending line or cell, so it is read here and never repeated."""
    text = str(error)
    counts = _CSV_COLUMNS.search(text)
    if counts:
        return StructuralError(
            f"{label}: a line of the CSV has {counts[2]} fields where the schema {table.schema_path.name} has "
            f"{counts[1]} columns (rule: expect_table_columns_to_match_ordered_list). Fix the export (a delimiter "
            f"inside an unquoted value, or a wrong 'delimiter' in the catalogue), then re-run the partition",
            "expect_table_columns_to_match_ordered_list",
            column_list=expected.names,
        )
    column = _CSV_COLUMN.search(text)
    detail = type(error).__name__
    if column and int(column[1]) < len(expected.names):
        detail = f"a value of column {expected.names[int(column[1])]} (#{int(column[1]) + 1}) is not its declared type"
    hint = "" if table.csv.header else ", or set 'header: true' in the catalogue if its first line names the columns"
    return StructuralError(
        f"{label}: the CSV does not parse with the schema's types (rule: expect_csv_to_parse_with_schema_types; "
        f"{detail}). Fix the export{hint}, then re-run the partition",
        "expect_csv_to_parse_with_schema_types",
    )


def _csv_batches(path: Path, table: Table, expected, label: str):
    """Stream a French CSV export (Latin-1, ';', decimal comma) as typed record batches.

    With ``header: false`` the file has no header line: its columns are the schema's, in order.
    """
    import pyarrow as pa
    from pyarrow import csv

    dialect = table.csv
    _check_encoding(path, table, label)
    if dialect.header:
        try:
            with open(path, encoding=dialect.encoding, newline="") as handle:
                header = handle.readline().rstrip("\r\n").split(dialect.delimiter)
        except UnicodeError as err:
            raise _unreadable(
                label,
                "expect_csv_to_parse_with_schema_types",
                err,
                f"the CSV's first line is not {dialect.encoding}. Re-export it, or declare its encoding in the catalogue",
            ) from None
        _check_columns([name.strip('"') for name in header], table, expected, label)
    try:
        reader = csv.open_csv(
            path,
            read_options=csv.ReadOptions(
                encoding=dialect.encoding,
                block_size=4 << 20,
                column_names=None if dialect.header else expected.names,
            ),
            parse_options=csv.ParseOptions(delimiter=dialect.delimiter),
            convert_options=csv.ConvertOptions(
                column_types=expected,
                decimal_point=dialect.decimal_point,
                strings_can_be_null=True,
                true_values=["1", "true", "True"],
                false_values=["0", "false", "False"],
            ),
        )
        yield from reader
    except pa.ArrowInvalid as err:
        raise _csv_parse_error(err, table, expected, label) from None
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is the fault
        raise _unreadable(
            label,
            "expect_csv_to_parse_with_schema_types",
            err,
            "the CSV cannot be decoded with the catalogue's dialect. Fix the export, then re-run the partition",
        ) from None


def _unreadable_result(item: dict, obj, source_sha256: str, error: StructuralError, duration: float) -> dict:
    """The transfer result of an object that could not be read as its schema says: nothing uploaded."""
    from hdh_migration.integrity import Fingerprint

    empty = Fingerprint().hexdigest()
    return {
        "domain": item["domain"],
        "table": item["table"],
        "partition": item["partition"],
        "uploaded": False,
        "source": {**obj.as_dict(), "sha256": source_sha256},
        "target": None,
        "rows": 0,
        "source_fingerprint": empty,
        "target_fingerprint": empty,
        "key_files": {},
        "key_null_rows": 0,
        "validation": [{"type": error.expectation, "kwargs": error.kwargs, "success": False, "result": {}}],
        "unreadable": str(error),  # the package's own message: names and counts, no value
        "duration_s": round(duration, 3),
    }


def _upload_and_verify(
    target, path: Path, key: str, sha256: str, source_sha256: str, label: str, state, throttle
) -> float:
    """Upload then read back and prove; returns the upload's seconds."""
    from hdh_migration.target import Progress

    size = path.stat().st_size
    started = time.monotonic()
    target.upload_file(
        path,
        key,
        sha256,
        {"hdh-source-sha256": source_sha256},
        state=state,
        progress=Progress(f"{label} upload", size),
        throttle=throttle,
    )
    upload_s = time.monotonic() - started
    target.verify_object(key, sha256, size)
    return upload_s


def _background(function):
    """Run ``function()`` in a thread of its own; returns its future."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hdh-download")
    future = pool.submit(function)
    pool.shutdown(wait=False)
    return future


def _check_spooled_footer(path: Path, footer: bytes, label: str) -> None:
    """The footer the checks decoded with is the one in the spooled bytes (the bytes uploaded)."""
    with open(path, "rb") as spooled:
        spooled.seek(-len(footer), os.SEEK_END)
        if spooled.read() != footer:
            raise IntegrityError(
                f"{label}: the parquet footer read first differs from the one downloaded after it (rule: the "
                "checked bytes are the uploaded bytes). Re-run the partition; if it persists, report a bug"
            )


@_renews_lease
def transfer_object(item: dict, run_id: str, task_state_store=None) -> dict:
    """Move one source object: stream, hash, validate per batch, convert if CSV, upload, verify."""
    import pyarrow.parquet as pq

    from hdh_migration.integrity import Fingerprint, KeyHashSpill, sha256_file, sha256_stream
    from hdh_migration.schema import load_table_schema
    from hdh_migration.source import SourceObject
    from hdh_migration.target import Progress
    from hdh_migration.throttle import bucket_for
    from hdh_migration.validation import (
        UNCHECKED_BATCH,
        SuiteRunner,
        blocking_failures,
        expectation_id,
        partition_parameters,
    )

    started = time.monotonic()
    catalogue = _catalogue()
    table = catalogue.domain(item["domain"]).table(item["table"])
    bandwidth = catalogue.bandwidth(catalogue.domain(table.domain))
    partition = item["partition"]
    obj = SourceObject(**item["source"])
    label = where(table.domain, table.name, partition, obj.name)
    final_key = target_key(obj.name, table.domain, table.name, table.partition_column, partition)
    staged_key = staging_key(final_key, item["run_token"])
    _hold_lease(_ledger(), table.domain, partition, run_id)
    spool = _spool_dir()
    try:
        target = _target()
        source = _source(table.domain)
        source_digest = sha256_stream()
        source_path = spool / "source"
        log.info("%s: bandwidth per direction: %s", label, bandwidth.describe())
        grain = catalogue.domain(table.domain).grain
        expected = load_table_schema(table.schema_path).arrow_schema()
        suite = SuiteRunner(table.suite_path, partition_parameters(grain, partition))
        source_fp = Fingerprint()
        keys = KeyHashSpill(spool, list(table.primary_key), item["key_buckets"]) if table.primary_key else None

        def check(batch) -> None:
            try:
                suite.validate(batch)
                source_fp.update(batch)
                if keys is not None:
                    keys.update(batch)
            except StructuralError as error:  # already redacted: locate it
                raise StructuralError(
                    f"{label}: {error}. Fix the source object, then re-run the partition",
                    error.expectation,
                    **error.kwargs,
                ) from None
            except OSError:
                raise  # the spool's disk: an infrastructure fault, retried
            except Exception as error:  # noqa: BLE001 - a library's message may quote a value
                raise StructuralError(
                    f"{label}: the checks could not run on a batch of {batch.num_rows} rows ({type(error).__name__}) "
                    f"(rule: {UNCHECKED_BATCH}). The object is not promoted; report the error with this object's name",
                    UNCHECKED_BATCH,
                ) from None

        landed = _Landed(obj.size)
        download_progress = Progress(f"{label} download", obj.size)

        def spooled(nbytes: int) -> None:
            download_progress(nbytes)
            landed(nbytes)

        def download() -> float:
            download_started = time.monotonic()
            try:
                source.download_to(
                    obj,
                    source_path,
                    target.settings.read_chunk,
                    source_digest,
                    spooled,
                    throttle=bucket_for(bandwidth),
                )
            finally:
                landed.finish()
            return time.monotonic() - download_started

        # A parquet source is checked row group by row group while it is still arriving (its footer is
        # read first); a CSV source is checked once spooled (its encoding is checked on the whole file).
        downloading = _background(download) if table.format == "parquet" else None
        unreadable = None
        try:
            if table.format == "parquet":
                footer = _parquet_footer(source, obj, label)
                for batch in _parquet_batches(source_path, footer, landed, table, expected, label):
                    check(batch)
            else:
                download_s = download()
                upload_path = spool / "converted.parquet"
                with pq.ParquetWriter(upload_path, expected, compression="zstd") as writer:
                    for batch in _csv_batches(source_path, table, expected, label):
                        check(batch)
                        writer.write_batch(batch, row_group_size=BATCH_ROWS)
        except StructuralError as error:
            unreadable = error
        except BaseException:
            if downloading is not None:
                downloading.exception()  # the spool file is removed below: let the download end first
            raise
        # The download's own errors (network, an ETag changed since planning) surface here and are retried.
        if downloading is not None:
            download_s = downloading.result()
        source_sha256 = source_digest.hexdigest()
        if source_path.stat().st_size != obj.size:
            raise IntegrityError(
                f"{label}: read {source_path.stat().st_size} bytes, listed {obj.size}",
                domain=table.domain,
                table=table.name,
                partition=partition,
                obj=obj.name,
            )
        if unreadable is not None:
            log.warning("%s", unreadable)
            return _unreadable_result(item, obj, source_sha256, unreadable, time.monotonic() - started)
        if table.format == "parquet":
            _check_spooled_footer(source_path, footer, label)
            # The bytes to upload are the source's, already hashed; the sha256 read back proves the copy.
            upload_path, upload_sha256, target_fp = source_path, source_sha256, source_fp
        else:
            target_fp = Fingerprint()
            for batch in _open_parquet(upload_path).iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                target_fp.update(batch)
            upload_sha256 = sha256_file(upload_path)
            if target_fp.hexdigest() != source_fp.hexdigest():
                raise IntegrityError(
                    f"{label}: the converted parquet does not reconcile with the CSV source "
                    "(rule: content fingerprint). This is a bug in the conversion: report it",
                    domain=table.domain,
                    table=table.name,
                    partition=partition,
                    obj=obj.name,
                )
        # Only now may bytes leave the worker: an object that fails a check is never sent, not even to staging.
        blocking = blocking_failures(suite.results(), _ledger().waived(table.domain, table.name, partition))
        upload_s = None
        if blocking:
            log.warning(
                "%s: %d expectation(s) failed (%s): the object is not uploaded; the partition will be quarantined",
                label,
                len(blocking),
                ", ".join(expectation_id(r) for r in blocking),
            )
        else:
            upload_s = _upload_and_verify(
                target,
                upload_path,
                staged_key,
                upload_sha256,
                source_sha256,
                label,
                task_state_store,
                bucket_for(bandwidth),
            )
        key_files = {}
        spilled = keys.close() if keys is not None else {}
        if not blocking:
            for bucket, path in spilled.items():
                key = f"{staged_key}.keys/{bucket:05d}"
                target.put_file(path, key)
                key_files[str(bucket)] = key
        result = {
            "domain": table.domain,
            "table": table.name,
            "partition": partition,
            "uploaded": not blocking,
            "source": {**obj.as_dict(), "sha256": source_sha256},
            "target": {
                "key": final_key,
                "staging_key": staged_key,
                "size": upload_path.stat().st_size,
                "sha256": upload_sha256,
            },
            "rows": source_fp.rows,
            "source_fingerprint": source_fp.hexdigest(),
            "target_fingerprint": target_fp.hexdigest(),
            "key_files": key_files,
            "key_null_rows": keys.null_rows if keys is not None else 0,
            "validation": suite.results(),
            "duration_s": round(time.monotonic() - started, 3),
            "download_s": round(download_s, 3),
            "upload_s": None if upload_s is None else round(upload_s, 3),
            "bandwidth_bytes_s": bandwidth.bytes_per_s,
        }
        log.info(
            "%s: %d rows, %.1f MB in %.1f s (%.1f MB/s)",
            label,
            result["rows"],
            obj.size / 1e6,
            result["duration_s"],
            obj.size / 1e6 / max(result["duration_s"], 1e-6),
        )
        return result
    except (DataError, ConfigurationError) as error:
        _record_failure(table.domain, table.name, partition, error, run_id)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# validate


def _results_by_table(results: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for result in results or []:
        grouped.setdefault(result["table"], []).append(result)
    return grouped


@_renews_lease
def validate_partition(tables: list[dict], results: list[dict], run_id: str) -> dict:
    """Whole-partition checks GX cannot make batch by batch, then the verdict per table.

    A table that fails is quarantined (redacted report under ``_quarantine/``, the run's staging removed,
    nothing promoted); the others are validated. Any quarantine fails the task, so nothing commits.
    """
    from hdh_migration.integrity import Fingerprint
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
        _hold_lease(ledger, tables[0]["domain"], tables[0]["partition"], run_id)
    target = _target() if tables else None
    for planned in tables:
        table = catalogue.domain(planned["domain"]).table(planned["table"])
        partition = planned["partition"]
        label = where(table.domain, table.name, partition)
        table_results = grouped.get(table.name, [])
        transferred = {r["source"]["name"] for r in table_results}
        missing = [o["name"] for o in planned["objects"] if o["name"] not in transferred]
        if missing:
            error = IntegrityError(f"{label}: objects planned but not transferred: {missing}. Re-run the partition")
            _record_failure(table.domain, table.name, partition, error, run_id)
            raise error
        totals: dict[str, dict] = {}
        for result in table_results:
            merge_results(totals, result["validation"])
        source_fp, target_fp = Fingerprint(), Fingerprint()
        for result in table_results:
            source_fp.merge(Fingerprint.parse(result["source_fingerprint"]))
            target_fp.merge(Fingerprint.parse(result["target_fingerprint"]))
        rows = sum(r["rows"] for r in table_results)
        partition_checks = [
            {
                "type": "expect_table_row_count_to_equal_source",
                "kwargs": {},
                "success": rows == source_fp.rows == target_fp.rows,
                "result": {"element_count": rows, "source_rows": source_fp.rows, "target_rows": target_fp.rows},
            },
            {
                "type": "expect_partition_content_fingerprint_to_match_source",
                "kwargs": {},
                "success": source_fp.hexdigest() == target_fp.hexdigest(),
                "result": {"element_count": rows},
            },
        ]
        partition_checks.append(
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": {"min_value": 1},
                "success": rows > 0,
                "result": {"observed_value": rows},
            }
        )
        all_uploaded = all(r["uploaded"] for r in table_results)
        if table.primary_key and all_uploaded:
            partition_checks.append(_unique_key_check(target, table, planned["key_buckets"], table_results, rows))
        broken = [c for c in partition_checks if c["type"] in INTEGRITY_CHECKS and not c["success"]]
        if broken:
            error = IntegrityError(
                f"{label}: {', '.join(c['type'] for c in broken)} failed: the copy differs from the source. "
                "Nothing was promoted. Re-run the partition; if it persists, report a bug"
            )
            _record_failure(table.domain, table.name, partition, error, run_id)
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
                _quarantine(target, ledger, table, planned, summary, blocking, failing_objects, run_id, unreadable)
            )
            continue
        summary["waived"] = sorted(waived & {expectation_id(r) for r in summary["results"] if not r["success"]})
        verdicts[table.name] = summary
        ledger.set_state(table.domain, table.name, partition, "validated", run_id=run_id, rows=rows)
    if quarantined:
        _release_lease(ledger, tables[0]["domain"], tables[0]["partition"], run_id)
        privacy = any(isinstance(e, PrivacyIncident) for e in quarantined)
        raise (PrivacyIncident if privacy else QuarantinedError)(
            " | ".join(str(e) for e in quarantined),
            domain=quarantined[0].domain,
            table=", ".join(e.table for e in quarantined),
            partition=quarantined[0].partition,
        )
    return verdicts


def _push_report_link(key: str) -> None:
    """Publish the validation report's link of the running task (the plugin shows it as an extra link)."""
    from airflow.sdk import get_current_context

    from hdh_migration.reports import REPORT_XCOM_KEY, report_link

    try:
        context = get_current_context()
    except RuntimeError:  # called outside a task (the command line): there is no task page to link from
        return
    context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=report_link(key))


def _unique_key_check(target, table: Table, buckets: int, table_results: list[dict], rows: int) -> dict:
    """Primary-key uniqueness across every file of the partition, one hash bucket at a time."""
    from hdh_migration.integrity import count_duplicate_keys

    duplicates = 0
    for bucket in range(buckets):
        chunks = [
            target.client.get_object(Bucket=target.bucket, Key=result["key_files"][str(bucket)])["Body"].read()
            for result in table_results
            if str(bucket) in result["key_files"]
        ]
        duplicates += count_duplicate_keys(chunks)
    null_rows = sum(r["key_null_rows"] for r in table_results)
    return {
        "type": "expect_compound_columns_to_be_unique_across_partition",
        "kwargs": {"column_list": list(table.primary_key)},
        "success": duplicates == 0 and null_rows == 0,
        "result": {"element_count": rows, "unexpected_count": duplicates, "missing_count": null_rows},
    }


def _quarantine(
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
    label = where(table.domain, table.name, partition)
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
            "at": _utcnow(),
            "severity": "privacy" if privacy else "data",
            "failing_expectations": failing,
            "validation": summary,
        },
    )
    _push_report_link(report_key)
    _clean_after(target, ledger, table, partition, planned["run_token"], run_id, stale=[])
    where_report = f"s3://{target.bucket}/{report_key}"
    if privacy:
        columns = sorted({r["kwargs"].get("column") for r in blocking if r["type"] in PRIVACY_EXPECTATIONS})
        error = PrivacyIncident(
            f"PRIVACY INCIDENT {label}: raw NIR values in column(s) {', '.join(columns)} "
            f"({'; '.join(n for n in located if n.startswith('expect_column_values_to_not_contain_raw_nir'))}) "
            f"(rule: expect_column_values_to_not_contain_raw_nir). Quarantined, nothing promoted, the run's staging "
            f"removed; "
            f"report {where_report}. Alert the data protection officer and have the source fixed in Azure, then "
            "re-run the partition. A privacy incident cannot be waived",
            domain=table.domain,
            table=table.name,
            partition=partition,
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
            f"{label}: quarantined: {len(failing)} expectation(s) failed: {'; '.join(located)}. Nothing was "
            f"promoted; report {where_report}. "
            + "".join(f"Unreadable: {reason}. " for reason in unreadable)
            + "Fix the source partition in Azure and re-run it, or accept these "
            f"expectations with a recorded waiver: python -m hdh_migration waive --domain {table.domain} "
            f"--table {table.name} --partition {partition} --expectation '<name>' --by '<who>' --reason '<why>'",
            domain=table.domain,
            table=table.name,
            partition=partition,
        )
    ledger.record_event(
        table.domain,
        "quarantine_report",
        {"expectations": failing, "severity": "privacy" if privacy else "data", "report_key": report_key},
        table_name=table.name,
        partition=partition,
        run_id=run_id,
    )
    ledger.set_state(table.domain, table.name, partition, "quarantined", run_id=run_id, last_error=str(error)[:4000])
    return error


# ---------------------------------------------------------------------------------------------
# commit


@_renews_lease
def commit_partition(tables: list[dict], results: list[dict], verdicts: dict, run_id: str) -> list[dict]:
    """Promote the run's staging to final keys and write the manifest last, under the lease; record the
    commit in the ledger at once; then clean up, best effort; release the lease."""
    from hdh_migration.ledger import committed_fields
    from hdh_migration.target import SHA256_METADATA

    catalogue = _catalogue()
    grouped = _results_by_table(results)
    ledger = _ledger()
    for domain_name in sorted({planned["domain"] for planned in tables}):
        # A cutover may have frozen the domain while this run was transferring: nothing lands then.
        _refuse_frozen(ledger, domain_name, tables[0]["partition"])
        _hold_lease(ledger, domain_name, tables[0]["partition"], run_id)
    committed = []
    target = _target() if tables else None
    for planned in tables:
        table = catalogue.domain(planned["domain"]).table(planned["table"])
        partition = planned["partition"]
        label = where(table.domain, table.name, partition)
        table_results = sorted(grouped.get(table.name, []), key=lambda r: r["target"]["key"])
        key = manifest_key(table.domain, table.name, table.partition_column, partition)
        _fence(ledger, table, partition, run_id)
        # The manifest this run may replace, seen under the lease: the conditional write below fails if
        # another one is written meanwhile.
        previous = target.head(key)
        manifest = target.get_json(key) if previous is not None else None
        landed = {r["target"]["key"]: r["target"]["sha256"] for r in table_results}
        if manifest is not None and manifest["run_id"] == run_id and landed == _manifest_files(manifest):
            # A retry after the commit point (the ledger failed to record it): finish without promoting again.
            manifest_sha256 = previous["Metadata"][SHA256_METADATA]
            log.info("%s: already committed by this run; finishing after the commit point", label)
        else:
            manifest, manifest_sha256 = _promote(
                target, ledger, table, planned, table_results, verdicts, run_id, previous and previous["ETag"]
            )
        # The commit point is behind us: the ledger follows the manifest before anything else can fail.
        ledger.set_state(
            table.domain, table.name, partition, "committed", **committed_fields(manifest, manifest_sha256)
        )
        listed = {f["key"] for f in manifest["files"]}
        final_dir = partition_dir(table.domain, table.name, table.partition_column, partition)
        try:
            stale = [k for k in target.list_keys(final_dir) if k not in listed]
        except Exception as error:  # noqa: BLE001 - after the commit point: the next run's commit removes them
            log.warning("%s: stale final keys not listed (%s)", label, type(error).__name__)
            stale = []
        leftovers = _clean_after(target, ledger, table, partition, planned["run_token"], run_id, stale)
        log.info(
            "%s: committed %d file(s), %d rows, %.1f MB; %d stale key(s) to remove; %d object(s) left behind",
            label,
            len(listed),
            manifest["rows"],
            manifest["bytes"] / 1e6,
            len(stale),
            leftovers["leftovers"],
        )
        committed.append({"domain": table.domain, "table": table.name, "partition": partition, "manifest": key})
    for domain_name in sorted({planned["domain"] for planned in tables}):
        _release_lease(ledger, domain_name, tables[0]["partition"], run_id)
    return committed


def _manifest_files(manifest: dict) -> dict[str, str]:
    return {f["key"]: f["sha256"] for f in manifest["files"]}


def _promote(
    target,
    ledger,
    table: Table,
    planned: dict,
    table_results: list[dict],
    verdicts: dict,
    run_id: str,
    replacing: str | None,
):
    """Copy every verified staging object to its final key, then write the manifest: the commit point.

    ``replacing`` is the ETag of the manifest seen under the lease (None: there was none). The manifest
    is written only if that is still the one in the store (``If-Match`` / ``If-None-Match``), and only
    after the lease is checked once more: a run whose lease was taken over never writes it.
    """
    from botocore.exceptions import ClientError

    from hdh_migration.target import SHA256_METADATA

    partition = planned["partition"]
    for result in table_results:
        final = result["target"]
        target.copy(final["staging_key"], final["key"])
        head = target.head(final["key"])
        if (
            head is None
            or head["ContentLength"] != final["size"]
            or head["Metadata"].get(SHA256_METADATA) != final["sha256"]
        ):
            error = IntegrityError(
                f"{where(table.domain, table.name, partition, final['key'])}: the promoted object differs from "
                "the verified staging object (rule: promotion keeps size and sha256). Re-run the partition"
            )
            _record_failure(table.domain, table.name, partition, error, run_id)
            raise error
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "domain": table.domain,
        "table": table.name,
        "partition_column": table.partition_column,
        "partition": partition,
        "files": [
            {
                "key": r["target"]["key"],
                "size": r["target"]["size"],
                "sha256": r["target"]["sha256"],
                "rows": r["rows"],
            }
            for r in table_results
        ],
        "rows": sum(r["rows"] for r in table_results),
        "bytes": sum(r["target"]["size"] for r in table_results),
        "content_fingerprint": _merge_fingerprints(r["source_fingerprint"] for r in table_results),
        "source_objects": [r["source"] for r in sorted(table_results, key=lambda r: r["source"]["name"])],
        "validation": verdicts.get(table.name),
        "waivers": ledger.waivers(table.domain, table.name, partition),
        "run_id": run_id,
        "started_at": planned["started_at"],
        "committed_at": _utcnow(),
    }
    key = manifest_key(table.domain, table.name, table.partition_column, partition)
    _fence(ledger, table, partition, run_id)
    try:
        return manifest, target.put_json(key, manifest, if_match=replacing, if_absent=replacing is None)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    raise PartitionLeaseLost(
        f"{where(table.domain, table.name, partition)}: another run wrote the partition's manifest after this run "
        "checked its lease (rule: only the lease holder writes the manifest). This run stops without writing; "
        "the other run's manifest stands"
    )


def _merge_fingerprints(texts) -> str:
    from hdh_migration.integrity import Fingerprint

    total = Fingerprint()
    for text in texts:
        total.merge(Fingerprint.parse(text))
    return total.hexdigest()


# ---------------------------------------------------------------------------------------------
# reconcile


def manifest_problems(target, source, table: Table, partition: str, manifest: dict) -> list[str]:
    """What differs between a partition's manifest, the live source listing and the landed objects."""
    from hdh_migration.target import SHA256_METADATA

    listed = source.list_objects(
        partition_dir(table.domain, table.name, table.partition_column, partition), table.source_extension
    )
    live = {o.name: o.etag for o in listed}
    recorded = {o["name"]: o["etag"] for o in manifest["source_objects"]}
    problems = []
    if live != recorded:
        problems.append("the Azure source changed since the commit; the next run re-transfers it")
    for entry in manifest["files"]:
        head = target.head(entry["key"])
        if head is None:
            problems.append(f"{entry['key']} is missing")
        elif head["ContentLength"] != entry["size"] or head["Metadata"].get(SHA256_METADATA) != entry["sha256"]:
            problems.append(f"{entry['key']} differs from its manifest entry")
    if sum(f["rows"] for f in manifest["files"]) != manifest["rows"]:
        problems.append("file row counts do not add up to the partition's")
    return problems


def reconcile_partition(domain_name: str, partition: str, run_id: str) -> dict:
    """Check every table's manifest against the live source listing and the landed objects."""
    catalogue = _catalogue()
    domain: Domain = catalogue.domain(domain_name)
    target, source, ledger = _target(), _source(domain.name), _ledger()
    report = {}
    for table in domain.tables:
        label = where(domain.name, table.name, partition)
        manifest = target.get_json(manifest_key(domain.name, table.name, table.partition_column, partition))
        if manifest is None:
            if table.optional:
                continue
            raise IntegrityError(
                f"{label}: no manifest after commit (rule: manifest written last). Re-run the partition"
            )
        problems = manifest_problems(target, source, table, partition, manifest)
        if problems:
            error = IntegrityError(f"{label}: reconciliation failed: {'; '.join(problems)}")
            _record_failure(domain.name, table.name, partition, error, run_id)
            raise error
        ledger.record_event(
            domain.name,
            "reconciled",
            {"rows": manifest["rows"], "files": len(manifest["files"])},
            table_name=table.name,
            partition=partition,
            run_id=run_id,
        )
        report[table.name] = {"rows": manifest["rows"], "bytes": manifest["bytes"], "files": len(manifest["files"])}
    return report
