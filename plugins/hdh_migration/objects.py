"""One source object's copy, the body of ``transfer_object``: read, check, upload.

The object streams from Azure into a local spool file (hashed as it lands); a parquet source is
decoded row group by row group as it arrives, a CSV once spooled and converted to parquet. Each
record batch is decoded once and checked on that one decoded batch: the suite (with the raw-NIR
guard), the content fingerprint and the primary-key hashes. Only an object that passed is uploaded,
to the run's own final key, as a multipart upload the commit completes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hdh_migration import metrics
from hdh_migration.catalogue import Table
from hdh_migration.errors import ConfigurationError, DataError, IntegrityError, StructuralError, Where
from hdh_migration.layout import key_hashes_prefix, target_key
from hdh_migration.leases import hold_lease, record_failure
from hdh_migration.readers import (
    BATCH_ROWS,
    Landed,
    check_spooled_footer,
    csv_batches,
    open_parquet,
    parquet_batches,
    parquet_footer,
)
from hdh_migration.resources import current_catalogue, open_ledger, open_source, open_target

log = logging.getLogger(__name__)


def _spool_dir() -> Path:
    root = Path(os.environ.get("HDH_SPOOL_DIR") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="hdh-spool-", dir=root))


def _unreadable_result(item: dict, obj, source_sha256: str, error: StructuralError, duration: float) -> dict:
    """The transfer result of an object that could not be read as its schema says: nothing uploaded."""
    from hdh_migration.integrity import Fingerprint, fingerprint_algorithm

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
        "fingerprint_algorithm": fingerprint_algorithm(),
        "key_files": {},
        "key_null_rows": 0,
        "validation": [{"type": error.expectation, "kwargs": error.kwargs, "success": False, "result": {}}],
        "unreadable": str(error),  # the package's own message: names and counts, no value
        "duration_s": round(duration, 3),
    }


def _upload(target, path: Path, key: str, sha256: str, source_sha256: str, label: Where, state, throttle):
    """Upload to the run's final key, left unfinished (invisible) until the commit; returns the
    upload's seconds and what the commit needs to complete it."""
    from hdh_migration.target import Progress

    size = path.stat().st_size
    started = time.monotonic()
    pending = target.upload_file(
        path,
        key,
        sha256,
        {"hdh-source-sha256": source_sha256},
        state=state,
        progress=Progress(f"{label} upload", size),
        throttle=throttle,
        complete=False,
    )
    return time.monotonic() - started, pending


def _background(function):
    """Run ``function()`` in a thread of its own; returns its future."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hdh-download")
    future = pool.submit(function)
    pool.shutdown(wait=False)
    return future


class BatchChecks:
    """Every check of one object's decoded batches, each run on the same decoded batch: the suite (with
    the raw-NIR guard), the content fingerprint and the primary-key hashes (spilled under ``spool``).

    A check that cannot run raises a ``StructuralError`` located at ``ref`` and redacted: a library's
    message may quote a value, so only its class is kept.
    """

    def __init__(self, table: Table, partition: str, grain: str, spool: Path, key_buckets: int, ref: Where):
        from hdh_migration.integrity import Fingerprint, KeyHashSpill, row_hasher
        from hdh_migration.validation import SuiteRunner, partition_parameters

        self.ref = ref
        self.suite = SuiteRunner(table.suite_path, partition_parameters(grain, partition))
        self.fingerprint = Fingerprint()
        self.keys = KeyHashSpill(spool, list(table.primary_key), key_buckets) if table.primary_key else None
        self._hasher = row_hasher()

    def __call__(self, batch) -> None:
        from hdh_migration.validation import UNCHECKED_BATCH

        try:
            self.suite.validate(batch)
            frame = self._hasher.frame(batch)  # one polars view of the decoded batch, for both hashes
            self.fingerprint.update(batch, frame)
            if self.keys is not None:
                self.keys.update(batch, frame)
        except StructuralError as error:  # already redacted: locate it
            raise StructuralError(
                f"{self.ref}: {error}. Fix the source object, then re-run the partition",
                error.expectation,
                ref=self.ref,
                **error.kwargs,
            ) from None
        except OSError:
            raise  # the spool's disk: an infrastructure fault, retried
        except Exception as error:  # noqa: BLE001 - a library's message may quote a value
            raise StructuralError(
                f"{self.ref}: the checks could not run on a batch of {batch.num_rows} rows ({type(error).__name__}) "
                f"(rule: {UNCHECKED_BATCH}). The object is not promoted; report the error with this object's name",
                UNCHECKED_BATCH,
                ref=self.ref,
            ) from None


def copy_object(item: dict, run_id: str, task_state_store=None) -> dict:
    """Move one source object: stream, hash, check per batch, convert if CSV, upload (unfinished until the commit)."""
    import pyarrow.parquet as pq

    from hdh_migration.integrity import Fingerprint, fingerprint_algorithm, sha256_file, sha256_stream
    from hdh_migration.schema import load_table_schema
    from hdh_migration.source import SourceObject
    from hdh_migration.target import Progress
    from hdh_migration.throttle import bucket_for
    from hdh_migration.validation import blocking_failures, expectation_id

    started = time.monotonic()
    catalogue = current_catalogue()
    table = catalogue.domain(item["domain"]).table(item["table"])
    bandwidth = catalogue.bandwidth(catalogue.domain(table.domain))
    partition = item["partition"]
    obj = SourceObject(**item["source"])
    label = Where(table.domain, table.name, partition, obj.name)
    final_key = target_key(obj.name, table.domain, table.name, table.partition_column, partition, item["run_token"])
    hold_lease(open_ledger(), table.domain, partition, run_id)
    spool = _spool_dir()
    try:
        target = open_target()
        source = open_source(table.domain)
        source_digest = sha256_stream()
        source_path = spool / "source"
        log.info("%s: bandwidth per direction: %s", label, bandwidth.describe())
        grain = catalogue.domain(table.domain).grain
        expected = load_table_schema(table.schema_path).arrow_schema()
        checks = BatchChecks(table, partition, grain, spool, item["key_buckets"], label)
        suite, source_fp, keys = checks.suite, checks.fingerprint, checks.keys

        landed = Landed(obj.size)
        download_progress = Progress(f"{label} download", obj.size)
        beat = metrics.ProgressBeat(open_ledger(), table.domain, table.name, partition, run_id)

        def spooled(nbytes: int) -> None:
            download_progress(nbytes)
            beat(nbytes)
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
                footer = parquet_footer(source, obj, label)
                for batch in parquet_batches(source_path, footer, landed, table, expected, label):
                    checks(batch)
            else:
                download_s = download()
                upload_path = spool / "converted.parquet"
                with pq.ParquetWriter(upload_path, expected, compression="zstd") as writer:
                    for batch in csv_batches(source_path, table, expected, label):
                        checks(batch)
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
            raise IntegrityError(f"{label}: read {source_path.stat().st_size} bytes, listed {obj.size}", ref=label)
        if unreadable is not None:
            log.warning("%s", unreadable)
            return _unreadable_result(item, obj, source_sha256, unreadable, time.monotonic() - started)
        if table.format == "parquet":
            check_spooled_footer(source_path, footer, label)
            # The bytes to upload are the source's, already hashed; the sha256 read back proves the copy.
            upload_path, upload_sha256, target_fp = source_path, source_sha256, source_fp
        else:
            target_fp = Fingerprint()
            for batch in open_parquet(upload_path).iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                target_fp.update(batch)
            upload_sha256 = sha256_file(upload_path)
            if target_fp.hexdigest() != source_fp.hexdigest():
                raise IntegrityError(
                    f"{label}: the converted parquet does not reconcile with the CSV source "
                    "(rule: content fingerprint). This is a bug in the conversion: report it",
                    ref=label,
                )
        # Only now may bytes leave the worker: an object that fails a check is never sent, not even to staging.
        blocking = blocking_failures(suite.results(), open_ledger().waived(table.domain, table.name, partition))
        upload_s, pending = None, None
        if blocking:
            log.warning(
                "%s: %d expectation(s) failed (%s): the object is not uploaded; the partition will be quarantined",
                label,
                len(blocking),
                ", ".join(expectation_id(r) for r in blocking),
            )
        else:
            upload_s, pending = _upload(
                target,
                upload_path,
                final_key,
                upload_sha256,
                source_sha256,
                label,
                task_state_store,
                bucket_for(bandwidth),
            )
        spilled = keys.close() if keys is not None else {}
        key_files = {}
        if not blocking:  # small files, one request each: sent side by side
            prefix = key_hashes_prefix(final_key, item["run_token"])
            key_files = {str(bucket): f"{prefix}{bucket:05d}" for bucket in spilled}
            with ThreadPoolExecutor(max_workers=target.settings.concurrency) as pool:
                list(pool.map(target.put_file, spilled.values(), key_files.values()))
        result = {
            "domain": table.domain,
            "table": table.name,
            "partition": partition,
            "uploaded": not blocking,
            "source": {**obj.as_dict(), "sha256": source_sha256},
            "target": {
                "key": final_key,
                "size": upload_path.stat().st_size,
                "sha256": upload_sha256,
                "upload": pending,  # unfinished until the commit completes it
            },
            "rows": source_fp.rows,
            "source_fingerprint": source_fp.hexdigest(),
            "target_fingerprint": target_fp.hexdigest(),
            "fingerprint_algorithm": fingerprint_algorithm(),
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
        metrics.object_moved(beat, obj.size, result["duration_s"], uploaded=not blocking)
        return result
    except (DataError, ConfigurationError) as error:
        record_failure(label, error, run_id)
        raise
    finally:
        shutil.rmtree(spool, ignore_errors=True)
