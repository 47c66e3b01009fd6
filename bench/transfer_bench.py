"""Transfer benchmark: a raw SDK stream, the amazon provider's operator and our DAG tasks, side by side.

Seeds one partition of synthetic SNDS data into Azure (Azurite locally), then copies it to the
sovereign S3 store (SeaweedFS locally) three ways, each in its own child process:

  a  raw streamed copy: azure-storage-blob ranged download -> boto3 upload_fileobj (multipart, no
     spool, no hash, no check);
  b  the amazon provider's AzureBlobStorageToS3Operator, executed directly (temp file, no check);
  c  our transfer: the hdh_migration.transfer task bodies called in process, in DAG order
     (plan_partition -> transfer_object per object -> validate_partition -> commit_partition ->
     reconcile_partition), with a fresh SQLite ledger and a catalogue copy of its own.

It prints MB/s (source bytes / wall seconds of the copy; seeding and imports excluded), the ratios
c/a and c/b, the peak RSS of each child, our peak RSS for one partition at 1x and 16x size, and
where c's time goes (self time per phase). A JSON document with every figure is printed on one
line and written to bench/results/ (ignored by git).

Run inside the project environment (``source scripts/env.sh``, stand-ins started):

    python bench/transfer_bench.py            # ~1 GB partition (+ a 1/16 partition for the RSS check)
    python bench/transfer_bench.py --quick    # ~200 MB smoke run
    python bench/transfer_bench.py --gb 4     # 4 GB
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import importlib.util
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("hdh_migration") is None:
    sys.path.append(str(ROOT / "plugins"))
# The project tree under test is the one whose hdh_migration is imported: PYTHONPATH=<copy>/plugins
# benchmarks a prototype copy (its plugins, dags, schemas and expectations) with this same script.
TREE = Path(importlib.util.find_spec("hdh_migration").origin).resolve().parents[2]
CATALOGUE = TREE / "dags" / "domains.yaml"

SOURCE_CONN_ID = "hdh_azure_source"
TARGET_CONN_ID = "hdh_sovereign_target"
SOURCE_ENV = "AIRFLOW_CONN_HDH_AZURE_SOURCE"
TARGET_ENV = "AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"
RESULTS_DIR = ROOT / "bench" / "results"
MB = 1e6
MiB = 1 << 20
SIZE_FACTOR = 16  # the RSS check: the main partition is 16x the small one
PROBE_ROWS = 65_536
RESULT_MARK = "BENCH_RESULT "
MACHINE_NOTE = "2 cores, shared: ratios matter, not absolute MB/s"
# Issue 13's targets: c/a >= 0.5, c/b >= 1.0; the copy adds at most 100 MB of RSS over a task
# process's import baseline at 16x, and peak RSS grows at most 1.2x from 1x to 16x; the checks beyond
# decoding cost at most 15 CPU seconds per GB of source.
TARGETS = {"c/a": 0.5, "c/b": 1.0, "rss_16x_over_1x": 1.2, "copy_added_mb": 100, "checks_cpu_s_per_gb": 15}
VARIANTS = {
    "a": "raw SDK stream (azure-storage-blob -> boto3 upload_fileobj)",
    "b": "AzureBlobStorageToS3Operator (amazon provider)",
    "c": "hdh transfer (plan/transfer/validate/commit/reconcile)",
}
CHECKS = {
    "a": "none",
    "b": "none",
    "c": "sha256 read-back, GX suite, fingerprint, PK uniqueness, manifest, reconcile",
}


# ---------------------------------------------------------------------------------------------
# clients, straight from the SDKs (variant a and the harness itself: no Airflow imported)


def _connection(env_var: str) -> dict:
    text = os.environ.get(env_var)
    if not text:
        raise SystemExit(f"{env_var} is not set: run `source scripts/env.sh` first (and `scripts/stack.sh start`)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise SystemExit(f"{env_var} is not a JSON connection; the bench reads the scripts/env.sh form") from None


def transfer_settings() -> dict:
    """Part size, upload concurrency and read chunk of the target connection (as our transfer uses them)."""
    extra = _connection(TARGET_ENV).get("extra", {})
    return {
        "part_size": int(extra.get("part_size_mb", 16)) * MiB,
        "concurrency": int(extra.get("upload_concurrency", 4)),
        "read_chunk": int(extra.get("read_chunk_mb", 8)) * MiB,
    }


def blob_service(read_chunk: int = 8 * MiB):
    from azure.storage.blob import BlobServiceClient

    extra = _connection(SOURCE_ENV).get("extra", {})
    if "connection_string" not in extra:
        raise SystemExit(f"{SOURCE_ENV} has no extra.connection_string; the bench needs the scripts/env.sh form")
    return BlobServiceClient.from_connection_string(
        extra["connection_string"], max_single_get_size=read_chunk, max_chunk_get_size=read_chunk
    )


def s3_client(pool: int = 10):
    """A plain boto3 client on the target connection, behind the same sovereignty guard as ours."""
    import boto3
    from botocore.config import Config

    from hdh_migration.target import check_sovereign_endpoint, check_target_connection, guard_client

    conn = _connection(TARGET_ENV)
    extra = conn.get("extra", {})
    check_target_connection(conn.get("login"), conn.get("password"), extra, None)
    endpoint = check_sovereign_endpoint(extra.get("endpoint_url"), extra.get("provider_profile", "generic"))
    client = boto3.client(
        "s3",
        endpoint_url=extra["endpoint_url"],
        region_name=extra.get("region_name"),
        aws_access_key_id=conn.get("login"),
        aws_secret_access_key=conn.get("password"),
        # The same protocol settings as our target (path style, s3v4, checksums only when required).
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=pool,
        ),
    )
    return guard_client(client, endpoint)


def clear_bucket(s3, bucket: str, delete: bool = False) -> None:
    """Delete every object and unfinished upload of a bucket (and the bucket itself if asked)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    if delete:
        s3.delete_bucket(Bucket=bucket)


def ensure_bucket(s3, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def bucket_objects(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        sizes.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return sizes


# ---------------------------------------------------------------------------------------------
# memory


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssMeter:
    """Peak RSS of this process over its whole life, and over the copy window alone.

    The window peak resets the kernel's high-water mark (``/proc/self/clear_refs``, 5) after the
    imports, so it shows the memory the copy itself needs on top of the libraries.
    """

    def __init__(self):
        self.lifetime_kb = 0
        self.baseline_kb = 0

    def start_window(self) -> None:
        self.lifetime_kb = max(_status_kb("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        self.baseline_kb = _status_kb("VmRSS")
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")

    def report(self) -> dict:
        window_kb = max(_status_kb("VmHWM"), self.baseline_kb)
        return {
            "peak_rss_mb": round(max(self.lifetime_kb, window_kb) / 1024, 1),
            "window_peak_rss_mb": round(window_kb / 1024, 1),
            "baseline_rss_mb": round(self.baseline_kb / 1024, 1),
        }


# ---------------------------------------------------------------------------------------------
# phase timing for variant c (self time, so the phases add up to the wall time)


class Phases:
    """Self time per phase. Phases timed off the main thread are reported apart, as "(background)":
    they overlap the main thread's work and are not part of the sum that makes the wall time."""

    def __init__(self):
        self.self_s: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def phase(self, name: str):
        stack = self._local.__dict__.setdefault("stack", [])
        if threading.current_thread() is not threading.main_thread():
            name += " (background)"
        frame = [time.perf_counter(), 0.0]
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            elapsed = time.perf_counter() - frame[0]
            with self._lock:
                self.self_s[name] += elapsed - frame[1]
                self.calls[name] += 1
            if stack:
                stack[-1][1] += elapsed

    def timed(self, function, name: str):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return wrapper

    def timed_iter(self, function, name: str):
        """Time spent producing each item of what ``function`` returns (a generator)."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            iterator = iter(function(*args, **kwargs))
            while True:
                with self.phase(name):
                    item = next(iterator, StopIteration)
                if item is StopIteration:
                    return
                yield item

        return wrapper

    def patch(self, owner, attribute: str, name: str, iterator: bool = False) -> None:
        original = getattr(owner, attribute)
        setattr(owner, attribute, (self.timed_iter if iterator else self.timed)(original, name))

    def report(self) -> dict:
        return {
            name: {"s": round(seconds, 3), "calls": self.calls[name]}
            for name, seconds in sorted(self.self_s.items(), key=lambda item: -item[1])
        }


class _TimedDigest:
    """A sha256 whose update() is timed as its own phase."""

    def __init__(self, phases: Phases):
        self._digest = hashlib.sha256()
        self._update = phases.timed(self._digest.update, "sha256 (all streams)")

    def update(self, data) -> None:
        self._update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def instrument_transfer(phases: Phases) -> None:
    """Wrap the project's building blocks in phase timers (their behaviour is unchanged)."""
    import pyarrow.parquet as pq

    from hdh_migration import integrity, source, target, validation

    phases.patch(source.AzureSource, "__init__", "source client setup (WasbHook)")
    phases.patch(source.AzureSource, "download_to", "azure ranged read + spool write")
    phases.patch(pq.ParquetFile, "iter_batches", "parquet decode", iterator=True)
    phases.patch(validation.SuiteRunner, "__init__", "suite setup (SuiteRunner init)")
    phases.patch(validation.SuiteRunner, "validate", "suite validate (SuiteRunner.validate)")
    phases.patch(integrity.Fingerprint, "update", "content fingerprint")
    phases.patch(integrity.KeyHashSpill, "update", "primary-key hashing + spill")
    # a staticmethod: wrapped as one again, or the instance would be passed as the batch
    integrity.RowHasher.frame = staticmethod(phases.timed(integrity.RowHasher.frame, "polars view of the batch"))
    phases.patch(target.SovereignTarget, "upload_file", "upload (multipart from spool)")
    phases.patch(target.SovereignTarget, "verify_object", "read-back at commit (head + GET)")
    phases.patch(target.SovereignTarget, "complete_upload", "commit (complete the run's uploads)")
    integrity.sha256_stream = functools.partial(_TimedDigest, phases)

    original_init = target.SovereignTarget.__init__

    def target_init(self, *args, **kwargs):
        with phases.phase("target client setup (S3Hook)"):
            original_init(self, *args, **kwargs)
        self.client.upload_file = phases.timed(self.client.upload_file, "key-hash files upload")

    target.SovereignTarget.__init__ = target_init


# ---------------------------------------------------------------------------------------------
# the three variants (each runs in a child process)


def run_raw(spec: dict, phases: Phases) -> dict:
    """(a) Stream each blob from Azure into a boto3 multipart upload: no spool, no hash, no check."""
    from boto3.s3.transfer import TransferConfig

    settings = spec["settings"]
    container = blob_service(settings["read_chunk"]).get_container_client(spec["container"])
    s3 = s3_client(pool=max(10, settings["concurrency"] * 2))
    config = TransferConfig(
        multipart_threshold=settings["part_size"],
        multipart_chunksize=settings["part_size"],
        max_concurrency=settings["concurrency"],
    )
    objects = 0

    def copy() -> None:
        nonlocal objects
        for prefix in spec["prefixes"]:
            for blob in container.list_blobs(name_starts_with=prefix):
                stream = container.download_blob(blob.name)  # ranged GETs of read_chunk, lazily
                s3.upload_fileobj(stream, spec["bucket"], spec["dest_prefix"] + blob.name, Config=config)
                objects += 1

    timing = _timed(copy)
    return {"objects": objects, **timing}


def run_operator(spec: dict, phases: Phases) -> dict:
    """(b) The amazon provider's AzureBlobStorageToS3Operator, executed directly."""
    from airflow.providers.amazon.aws.transfers.azure_blob_to_s3 import AzureBlobStorageToS3Operator

    # The operator builds its own S3 client, which the guard cannot hook: its connection is checked
    # (a local comparison on the stand-in's synthetic data; the package never uses this operator).
    s3_client().close()
    operator = AzureBlobStorageToS3Operator(
        task_id="bench_azure_blob_to_s3",
        wasb_conn_id=SOURCE_CONN_ID,
        container_name=spec["container"],
        prefix=spec["operator_prefix"],
        aws_conn_id=TARGET_CONN_ID,
        dest_s3_key=f"s3://{spec['bucket']}/{spec['dest_prefix']}",
    )
    files: list[str] = []
    timing = _timed(lambda: files.extend(operator.execute(context={})))
    return {"objects": len(files), **timing}


_WORKER: dict = {}


def _worker_start() -> None:
    """A task process of c's ``transfer_object``, started as Airflow starts one: a fresh interpreter that
    imports what the copy uses (before the clock, as for every variant), then its own phase timers and its
    own RSS window, so its import baseline is its own."""
    _preload("c")
    _WORKER["phases"] = phases = Phases()
    instrument_transfer(phases)
    _WORKER["meter"] = meter = RssMeter()
    meter.start_window()


def _worker_transfer(item: dict, run_id: str) -> tuple[dict, dict, dict, int]:
    """One ``transfer_object`` task body in a worker: its result, the worker's phases and RSS so far."""
    from hdh_migration import transfer

    phases = _WORKER["phases"]
    with phases.phase("step: transfer_object (rest)"):
        result = transfer.transfer_object(item, run_id)
    return result, phases.report(), _WORKER["meter"].report(), os.getpid()


def run_ours(spec: dict, phases: Phases) -> dict:
    """(c) Our task bodies, in the DAG's order.

    ``c_workers`` > 1: the ``transfer_object`` tasks run in that many worker processes at once, as
    the DAG's mapped tasks run in the transfer pool's slots, each in a task process of its own; the
    other tasks run in this process. Their RSS is reported per worker (a task process's own).

    With ``cprofile_dir`` set, only plan_partition and the first object of each table run, each
    under cProfile (a profile of where one object's time goes; not a throughput run).
    """
    import multiprocessing

    from hdh_migration import transfer

    instrument_transfer(phases)
    domain, partition = spec["domain"], spec["partition"]
    run_id = f"bench__{uuid.uuid4().hex[:12]}"
    out: dict = {}
    workers = spec.get("c_workers", 1)
    pool = None
    if workers > 1 and not spec.get("cprofile_dir"):
        # Fresh processes, started (and their imports done) before the clock.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start)
        for future in [pool.submit(time.sleep, 0.5) for _ in range(workers)]:
            future.result()

    def transfer_all(objects: list[dict]) -> list[dict]:
        if pool is None:
            results = []
            for item in objects:
                with phases.phase("step: transfer_object (rest)"):
                    results.append(transfer.transfer_object(item, run_id))
            return results
        outcomes = list(pool.map(_worker_transfer, objects, [run_id] * len(objects)))
        per_worker: dict[int, tuple[dict, dict]] = {}
        for _, worker_phases, rss, pid in outcomes:
            per_worker[pid] = (worker_phases, rss)  # each report is the worker's total so far
        out["workers"] = [rss for _, rss in per_worker.values()]
        out["worker_phases"] = {}
        for worker_phases, _ in per_worker.values():
            for name, figures in worker_phases.items():
                total = out["worker_phases"].setdefault(name, {"s": 0.0, "calls": 0})
                total["s"] = round(total["s"] + figures["s"], 3)
                total["calls"] += figures["calls"]
        return [outcome[0] for outcome in outcomes]

    def run() -> None:
        with phases.phase("step: plan_partition"):
            plan = transfer.plan_partition(domain, partition, run_id, force=True)
        results = transfer_all(plan["objects"])
        with phases.phase("step: validate_partition"):
            verdicts = transfer.validate_partition(plan["tables"], results, run_id)
        with phases.phase("step: commit_partition (rest)"):
            transfer.commit_partition(plan["tables"], results, verdicts, run_id)
        with phases.phase("step: reconcile_partition"):
            out["reconciled"] = transfer.reconcile_partition(domain, partition, run_id)
        out["objects"] = len(results)
        out["rows"] = sum(r["rows"] for r in results)
        out["object_seconds"] = [r["duration_s"] for r in results]

    def profile() -> None:
        import cProfile
        import pstats

        plan = transfer.plan_partition(domain, partition, run_id, force=True)
        firsts = {item["table"]: item for item in reversed(plan["objects"])}
        for table, item in sorted(firsts.items()):
            profiler = cProfile.Profile()
            result = profiler.runcall(transfer.transfer_object, item, run_id)
            path = Path(spec["cprofile_dir"]) / f"c-cprofile-{table}"
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            text.write(f"{table}: {item['source']['name']}, {item['source']['size']} bytes, {result['rows']} rows\n")
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(50)
            path.with_suffix(".txt").write_text(text.getvalue())
            stats.dump_stats(path.with_suffix(".prof"))
        out["objects"] = len(firsts)

    try:
        timing = _timed(profile if spec.get("cprofile_dir") else run)
    finally:
        if pool is not None:
            pool.shutdown()
    return {**out, **timing, "phases": phases.report()}


def run_cpu(spec: dict, phases: Phases) -> dict:
    """CPU seconds per GB of source spent decoding, and in the checks beyond decoding (suite, content
    fingerprint, primary-key hashes): the first object of each table, spooled locally (untimed), decoded
    batch by batch as ``copy_object`` decodes it and checked by the same ``BatchChecks``. Process CPU time
    (polars' own threads included), with nothing else running in this process."""
    from hdh_migration.errors import Where
    from hdh_migration.objects import BatchChecks
    from hdh_migration.readers import BATCH_ROWS, open_parquet
    from hdh_migration.resources import current_catalogue

    domain = current_catalogue().domain(spec["domain"])
    partition = spec["partition"]
    container = blob_service().get_container_client(spec["container"])
    measured = {"bytes": 0, "decode": 0.0, "checks": 0.0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hdh-bench-cpu-") as spool:
        for table in domain.tables:
            name = next(iter(container.list_blobs(name_starts_with=table.source_dir(partition)))).name
            path = Path(spool) / "object"
            with open(path, "wb") as handle:
                container.download_blob(name).readinto(handle)
            checks = BatchChecks(
                table, partition, domain.grain, Path(spool), 4, Where(domain.name, table.name, partition, name)
            )
            batches = open_parquet(path).iter_batches(batch_size=BATCH_ROWS, use_threads=False)
            while True:
                before = time.process_time()
                batch = next(batches, None)
                decoded = time.process_time()
                measured["decode"] += decoded - before
                if batch is None:
                    break
                checks(batch)
                measured["checks"] += time.process_time() - decoded
            if checks.keys is not None:
                checks.keys.close()
            measured["bytes"] += path.stat().st_size
    gb = measured["bytes"] / 1e9
    return {
        "objects": len(domain.tables),
        "bytes": measured["bytes"],
        "decode_cpu_s_per_gb": round(measured["decode"] / gb, 1),
        "checks_cpu_s_per_gb": round(measured["checks"] / gb, 1),
        "wall_s": round(time.perf_counter() - started, 3),
    }


RUNNERS = {"a": run_raw, "b": run_operator, "c": run_ours, "cpu": run_cpu}


def _timed(function) -> dict:
    started = time.perf_counter()
    function()
    return {"wall_s": round(time.perf_counter() - started, 3)}


def _preload(variant: str, lazy: bool = False) -> None:
    """Import what the variant needs before the timed window (every variant pays its imports outside).

    ``lazy``: import only the clients; the rest is imported inside the window when the code asks for
    it, as in a fresh Airflow task process (its time and memory then count).
    """
    import boto3  # noqa: F401
    from azure.storage.blob import BlobServiceClient  # noqa: F401

    if lazy:
        return
    if variant in ("b", "c"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook  # noqa: F401
        from airflow.sdk import BaseHook  # noqa: F401
    if variant == "b":
        from airflow.providers.amazon.aws.transfers.azure_blob_to_s3 import AzureBlobStorageToS3Operator  # noqa: F401
    if variant in ("c", "cpu"):
        import pandas  # noqa: F401
        import polars  # noqa: F401
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from hdh_migration import gx_expectations, integrity, ledger, objects, transfer, validation  # noqa: F401

        # GX imports most of itself lazily, when a context is first built: build one and drop it, so the
        # import baseline holds GX's modules as a task process's does once it has validated anything.
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        gx.get_context(mode="ephemeral")


def child_main(spec: dict) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    meter = RssMeter()
    started = time.perf_counter()
    _preload(spec["variant"], lazy=spec.get("lazy_imports", False))
    import_s = time.perf_counter() - started
    meter.start_window()
    outcome = RUNNERS[spec["variant"]](spec, Phases())
    print(RESULT_MARK + json.dumps({**outcome, **meter.report(), "import_s": round(import_s, 2)}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# seeding (parent)


def write_catalogue(path: Path, name: str, domain: str, tables: list[str]) -> Path:
    """A copy of the demo catalogue with its own container and bucket (as tests/conftest.py does),
    absolute schema and suite paths, only the benchmarked tables in the benchmarked domain, and no
    bandwidth caps (the raw copies it is compared with run uncapped)."""
    import yaml

    source = CATALOGUE
    raw = yaml.safe_load(source.read_text())
    raw["source_container"] = name
    raw["target_bucket"] = name
    raw.pop("bandwidth_mb_s", None)
    for wave in raw.get("waves", {}).values():
        wave.pop("bandwidth_mb_s", None)
    for domain_raw in raw["domains"].values():
        domain_raw.pop("bandwidth_mb_s", None)
        for table in domain_raw["tables"].values():
            table["schema"] = str((source.parent / table["schema"]).resolve())
            table["suite"] = str((source.parent / table["suite"]).resolve())
    raw["domains"][domain]["tables"] = {t: raw["domains"][domain]["tables"][t] for t in tables}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _probe_bytes_per_row(table_name: str, domain: str, partition: str) -> float:
    from hdh_migration.catalogue import load_catalogue
    from hdh_synthetic import file_batches, write_file

    catalogue = load_catalogue(CATALOGUE)
    table = catalogue.domain(domain).table(table_name)
    sink = io.BytesIO()
    rows = write_file(
        table,
        file_batches(catalogue, table, partition, 0, rows_per_partition=PROBE_ROWS, files_per_partition=1),
        sink,
    )
    return len(sink.getvalue()) / rows


def _seed_file(job: dict) -> tuple[str, int]:
    """Generate one source file into a spool, upload it to Azure; returns (blob name, bytes)."""
    from hdh_migration.catalogue import load_catalogue
    from hdh_synthetic import blob_name, file_batches, write_file

    catalogue = load_catalogue(CATALOGUE)  # generation follows the full catalogue's links
    table = catalogue.domain(job["domain"]).table(job["table"])
    name = blob_name(table, job["partition"], job["file_index"])
    batches = file_batches(
        catalogue,
        table,
        job["partition"],
        job["file_index"],
        seed=job["seed"],
        rows_per_partition=job["rows"],
        files_per_partition=job["files"],
    )
    container = blob_service().get_container_client(job["container"])
    with tempfile.TemporaryDirectory(prefix="hdh-bench-seed-") as spool:
        path = Path(spool) / "part"
        write_file(table, batches, path)
        size = path.stat().st_size
        with open(path, "rb") as data:
            container.upload_blob(name, data, length=size, overwrite=True, max_concurrency=2)
    return name, size


def seed(pool, container: str, domain: str, tables: list[str], partition: str, rows: int, files: int, seed_value: int):
    """Seed one partition of the tables into a container, unless it already holds exactly that data."""
    from azure.core.exceptions import ResourceExistsError

    from hdh_migration.catalogue import load_catalogue
    from hdh_synthetic import blob_name

    client = blob_service().get_container_client(container)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    catalogue = load_catalogue(CATALOGUE)
    expected = {blob_name(catalogue.domain(domain).table(t), partition, i) for t in tables for i in range(files)}
    present = {blob.name: blob.size for blob in client.list_blobs()}
    marker = client.get_container_properties().metadata.get("bench_rows")
    if set(present) == expected and marker == str(rows):
        return present, 0.0, True
    started = time.perf_counter()
    jobs = [
        {
            "container": container,
            "domain": domain,
            "table": t,
            "partition": partition,
            "file_index": i,
            "rows": rows,
            "files": files,
            "seed": seed_value,
        }
        for t in tables
        for i in range(files)
    ]
    sizes = dict(pool.map(_seed_file, jobs))
    client.set_container_metadata({"bench_rows": str(rows)})
    return sizes, time.perf_counter() - started, False


# ---------------------------------------------------------------------------------------------
# parent: run, summarise, print


def schedule(variants: list[str], round_index: int) -> list[str]:
    """One round: the cheap variants bracket ours (a b c b a), rotated from round to round."""
    cheap = [v for v in variants if v != "c"]
    shift = round_index % len(cheap) if cheap else 0
    cheap = cheap[shift:] + cheap[:shift]
    return cheap + (["c"] if "c" in variants else []) + cheap[::-1]


def run_child(spec: dict, env_overrides: dict, log_path: Path) -> dict:
    env = {**os.environ, **env_overrides}
    with open(log_path, "w") as log:
        process = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"variant {spec['variant']} failed (exit {process.returncode}); log {log_path}:\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def _check_copy(s3, bucket: str, prefix: str, source: dict[str, int], variant: str) -> None:
    """The harness's own sanity check that a run moved every byte (untimed, outside the variant)."""
    landed = bucket_objects(s3, bucket, prefix)
    if variant == "c":
        landed = {k: v for k, v in landed.items() if not k.startswith(("_manifests/", "_staging/"))}
        if len(landed) != len(source):
            raise SystemExit(f"variant c landed {len(landed)} objects for {len(source)} sources")
        return
    expected = {prefix + name: size for name, size in source.items()}
    if landed != expected:
        raise SystemExit(f"variant {variant} did not land the source objects: {len(landed)} of {len(expected)}")


def tree_state() -> str:
    """The git commit of the tree under test, and a digest of its uncommitted changes if any."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(TREE), *args], capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    diff = git("diff", "HEAD", "--", "plugins", "dags", "schemas", "expectations")
    return commit + (f"+dirty:{hashlib.sha256(diff.encode()).hexdigest()[:10]}" if diff else "")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _c_memory(c_runs: list[dict]) -> dict:
    """The memory of c's heaviest process over its runs: the process that runs plan, validate and commit,
    or a task process of ``transfer_object``. ``copy_added_mb``: its peak over its own import baseline."""
    processes = [p for run in c_runs for p in [run, *run.get("workers", [])]]
    return {
        "peak_rss_mb": max(p["peak_rss_mb"] for p in processes),
        "baseline_rss_mb": max(p["baseline_rss_mb"] for p in processes),
        "copy_added_mb": round(max(p["window_peak_rss_mb"] - p["baseline_rss_mb"] for p in processes), 1),
    }


def summarise(runs: list[dict], x1: dict, source_bytes: int, x1_bytes: int, config: dict) -> dict:
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_variant[run["variant"]].append(run)
    variants = {}
    for variant, items in sorted(by_variant.items()):
        rates = [source_bytes / MB / r["wall_s"] for r in items]
        variants[variant] = {
            "what": VARIANTS[variant],
            "checks": CHECKS[variant],
            "mb_s": round(statistics.median(rates), 1),
            "mb_s_runs": [round(rate, 1) for rate in rates],
            "wall_s": round(statistics.median(r["wall_s"] for r in items), 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in items),
            "window_peak_rss_mb": max(r["window_peak_rss_mb"] for r in items),
            "baseline_rss_mb": max(r["baseline_rss_mb"] for r in items),
            "import_s": round(statistics.median(r["import_s"] for r in items), 2),
            "objects": items[0]["objects"],
        }
    ratios = {}
    if "c" in variants:
        for other in ("a", "b"):
            if other in variants:
                ratios[f"c/{other}"] = round(variants["c"]["mb_s"] / variants[other]["mb_s"], 3)
    summary = {
        "machine": f"{os.cpu_count()} cores",
        "note": MACHINE_NOTE,
        "config": config,
        "source_bytes": source_bytes,
        "variants": variants,
        "ratios": ratios,
        "targets": {},
    }
    if "c/a" in ratios:
        summary["targets"]["c/a >= 0.5"] = _verdict(ratios["c/a"] >= TARGETS["c/a"])
    if "c/b" in ratios:
        summary["targets"]["c/b >= 1.0"] = _verdict(ratios["c/b"] >= TARGETS["c/b"])
    if x1 and "c" in variants:
        x16 = _c_memory(by_variant["c"])
        x1_memory = _c_memory([x1])
        rss = {
            "1x": {"bytes": x1_bytes, **x1_memory},
            "16x": {"bytes": source_bytes, **x16},
            "peak_ratio": round(x16["peak_rss_mb"] / x1_memory["peak_rss_mb"], 3),
            "1x_mb_s": round(x1_bytes / MB / x1["wall_s"], 1),
        }
        summary["rss_scaling"] = rss
        summary["targets"]["peak RSS 16x <= 1.2 x 1x"] = _verdict(rss["peak_ratio"] <= TARGETS["rss_16x_over_1x"])
        summary["targets"]["copy-added RSS at 16x <= 100 MB"] = _verdict(
            x16["copy_added_mb"] <= TARGETS["copy_added_mb"]
        )
    if "c" in variants:
        c_runs = by_variant["c"]
        phases: dict[str, dict] = defaultdict(lambda: {"s": 0.0, "calls": 0})
        for run in c_runs:
            for name, figures in run["phases"].items():
                phases[name]["s"] += figures["s"] / len(c_runs)
                phases[name]["calls"] = figures["calls"]
        workers = config.get("c_workers", 1)
        for run in c_runs:
            for name, figures in run.get("worker_phases", {}).items():
                phases[f"{name} [in {workers} task processes]"]["s"] += figures["s"] / len(c_runs) / workers
                phases[f"{name} [in {workers} task processes]"]["calls"] = figures["calls"]
        wall = variants["c"]["wall_s"]
        summary["c_phases"] = {
            name: {"s": round(f["s"], 2), "share": round(f["s"] / wall, 3), "calls": f["calls"]}
            for name, f in sorted(phases.items(), key=lambda item: -item[1]["s"])
        }
    return summary


def print_summary(summary: dict) -> None:
    gb = summary["source_bytes"] / 1e9
    print()
    print(
        f"Transfer benchmark: {summary['config']['domain']} {summary['config']['tables']}, {gb:.2f} GB in "
        f"{summary['variants'].get('a', summary['variants'].get('c', {})).get('objects', '?')} objects, "
        f"{summary['config']['rounds']} round(s); machine: {summary['machine']}"
    )
    header = f"{'variant':<62} {'MB/s':>7} {'wall s':>7} {'peak RSS':>9} {'window':>7} {'import s':>8}  checks"
    print(header)
    print("-" * len(header))
    for variant, v in summary["variants"].items():
        print(
            f"{variant}  {v['what']:<59} {v['mb_s']:>7.1f} {v['wall_s']:>7.1f} {v['peak_rss_mb']:>6.0f} MB "
            f"{v['window_peak_rss_mb']:>4.0f} MB {v['import_s']:>8.1f}  {v['checks']}"
        )
    print("  (MB/s: median over runs of source bytes / wall seconds; peak RSS: whole child process;")
    print("   window: peak RSS during the copy, measured from the post-import high-water mark reset)")
    for name, value in summary["ratios"].items():
        print(f"ratio {name} = {value:.2f}")
    if "rss_scaling" in summary:
        r = summary["rss_scaling"]
        print(
            f"c's heaviest process, one partition: 1x ({r['1x']['bytes'] / MB:.0f} MB) peak RSS "
            f"{r['1x']['peak_rss_mb']:.0f} MB, {r['1x']['copy_added_mb']:.0f} MB over its import baseline; 16x "
            f"({r['16x']['bytes'] / MB:.0f} MB) {r['16x']['peak_rss_mb']:.0f} MB, {r['16x']['copy_added_mb']:.0f} MB "
            f"over its baseline of {r['16x']['baseline_rss_mb']:.0f} MB; peak ratio 16x/1x {r['peak_ratio']:.2f}"
        )
    if "cpu_per_gb" in summary:
        cpu = summary["cpu_per_gb"]
        print(
            f"CPU s per GB of source ({cpu['bytes'] / MB:.0f} MB, one object per table): decode "
            f"{cpu['decode_cpu_s_per_gb']}, checks beyond decoding {cpu['checks_cpu_s_per_gb']}"
        )
    for name, verdict in summary["targets"].items():
        print(f"target {name}: {verdict}")
    if "c_phases" in summary:
        print("\nwhere c's time goes (self time, seconds; mean over rounds; a task process's phases are per process):")
        for name, figures in summary["c_phases"].items():
            print(f"  {name:<48} {figures['s']:>8.2f}  {figures['share']:>6.1%}  x{figures['calls']}")
    print(f"\nnote: {MACHINE_NOTE}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the benchmarked partition in GB (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: ~0.2 GB, one round")
    parser.add_argument("--domain", default="dcir", help="catalogue domain (default dcir: parquet, the hot path)")
    parser.add_argument("--tables", nargs="*", help="tables of the domain (default: all of them)")
    parser.add_argument("--files", type=int, default=8, help="files per table in the partition (default 8)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of a b c b a (default 1)")
    parser.add_argument("--variants", default="abc", help="which variants to run (default abc)")
    parser.add_argument("--seed", type=int, default=42, help="synthetic data seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="seeding processes")
    parser.add_argument("--no-rss-check", action="store_true", help="skip the 1x partition (RSS scaling check)")
    parser.add_argument("--cprofile", action="store_true", help="extra c run: cProfile of one object per table")
    parser.add_argument(
        "--c-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="task processes running c's transfer_object at once, as the transfer pool's slots do (default: cores)",
    )
    parser.add_argument("--no-cpu", action="store_true", help="skip the serial c run that measures CPU s per GB")
    parser.add_argument(
        "--lazy-imports", action="store_true", help="import the libraries inside the timed window, as a task does"
    )
    parser.add_argument("--keep-source", action="store_true", help="keep the seeded containers to reuse next time")
    parser.add_argument("--label", default="", help="a label stored with the results (e.g. a prototype's name)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.gb, args.rounds = min(args.gb, 0.2), 1
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))

    from hdh_migration.catalogue import load_catalogue
    from hdh_migration.layout import partition_dir

    catalogue = load_catalogue(CATALOGUE)
    domain = catalogue.domain(args.domain)
    tables = args.tables or [t.name for t in domain.tables]
    partition = domain.partitions()[0]
    settings = transfer_settings()
    service, s3 = blob_service(), s3_client()
    try:
        next(iter(service.list_containers()), None)
        s3.list_buckets()
    except Exception as err:  # noqa: BLE001 - any failure here means the stand-ins are not reachable
        raise SystemExit(f"Azure or S3 is not reachable ({type(err).__name__}): run `scripts/stack.sh start`") from None

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    logs = RESULTS_DIR / f"transfer-{stamp}-logs"
    logs.mkdir()
    workdir = Path(tempfile.mkdtemp(prefix="hdh-bench-"))
    print(f"bench: {args.domain} {tables} partition {partition}, ~{args.gb} GB, logs in {logs}", flush=True)

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        per_row = sum(
            pool.map(functools.partial(_probe_bytes_per_row, domain=domain.name, partition=partition), tables)
        )
        rows = max(args.files, round(args.gb * 1e9 / per_row))
        key = f"{args.domain}|{','.join(tables)}|{partition}|{rows}|{args.files}|{args.seed}"
        name = "hdhbench-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        x1_name, raw_bucket, op_bucket = f"{name}-x1", f"{name}-raw", f"{name}-op"
        source, seed_s, reused = seed(pool, name, domain.name, tables, partition, rows, args.files, args.seed)
        print(
            f"bench: {'reused' if reused else 'seeded'} {sum(source.values()) / MB:.0f} MB in {len(source)} objects "
            f"({rows} rows per table) in {seed_s:.0f} s",
            flush=True,
        )
        x1_source, x1_bytes = {}, 0
        if not args.no_rss_check and "c" in args.variants:
            x1_rows = max(args.files, rows // SIZE_FACTOR)
            x1_source, x1_seed_s, _ = seed(
                pool, x1_name, domain.name, tables, partition, x1_rows, args.files, args.seed
            )
            x1_bytes = sum(x1_source.values())
            print(f"bench: 1x partition {x1_bytes / MB:.0f} MB in {x1_seed_s:.0f} s", flush=True)
    source_bytes = sum(source.values())
    prefixes = [partition_dir(domain.name, t, domain.table(t).partition_column, partition) for t in tables]
    catalogues = {
        "16x": write_catalogue(workdir / "main.yaml", name, domain.name, tables),
        "1x": write_catalogue(workdir / "x1.yaml", x1_name, domain.name, tables),
    }
    for bucket in (raw_bucket, op_bucket):
        ensure_bucket(s3, bucket)

    def spec_for(variant: str, size: str = "16x", **extra) -> tuple[dict, dict]:
        container = name if size == "16x" else x1_name
        spec = {
            "variant": variant,
            "container": container,
            "domain": domain.name,
            "partition": partition,
            "prefixes": prefixes,
            "operator_prefix": f"{domain.name}/",
            "bucket": {"a": raw_bucket, "b": op_bucket, "c": container}[variant],
            "dest_prefix": "bench/",
            "settings": settings,
            "lazy_imports": args.lazy_imports,
            "c_workers": args.c_workers,
            **extra,
        }
        env = {
            "HDH_CATALOGUE": str(catalogues[size]),
            "HDH_SPOOL_DIR": str(workdir / "spool"),
            "AIRFLOW_CONN_HDH_LEDGER": json.dumps(
                {"conn_type": "sqlite", "host": str(workdir / f"ledger-{uuid.uuid4().hex[:8]}.db")}
            ),
            "GX_ANALYTICS_ENABLED": "false",
        }
        return spec, env

    runs = []
    order = [v for v in "abc" if v in args.variants]
    try:
        for round_index in range(args.rounds):
            for variant in schedule(order, round_index):
                spec, env = spec_for(variant)
                clear_bucket(s3, spec["bucket"])
                result = run_child(spec, env, logs / f"{len(runs) + 1:02d}-{variant}-round{round_index + 1}.log")
                _check_copy(s3, spec["bucket"], spec["dest_prefix"] if variant != "c" else "", source, variant)
                runs.append({"variant": variant, "round": round_index + 1, **result})
                print(
                    f"bench: round {round_index + 1} {variant}: {source_bytes / MB / result['wall_s']:.1f} MB/s, "
                    f"{result['wall_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
                    f"(window {result['window_peak_rss_mb']:.0f} MB)"
                    + (f"; c's heaviest process: {_c_memory([result])}" if variant == "c" else ""),
                    flush=True,
                )
        x1 = {}
        if x1_source:
            spec, env = spec_for("c", size="1x")
            clear_bucket(s3, spec["bucket"])
            x1 = run_child(spec, env, logs / "c-1x.log")
            print(
                f"bench: c at 1x: {x1_bytes / MB / x1['wall_s']:.1f} MB/s; c's heaviest process: {_c_memory([x1])}",
                flush=True,
            )
        cpu_run = {}
        if "c" in args.variants and not args.no_cpu:
            spec, env = spec_for("c")
            cpu_run = run_child({**spec, "variant": "cpu"}, env, logs / "cpu.log")
            print(
                f"bench: CPU s per GB of source: decode {cpu_run['decode_cpu_s_per_gb']}, checks beyond decoding "
                f"{cpu_run['checks_cpu_s_per_gb']} ({cpu_run['bytes'] / MB:.0f} MB in {cpu_run['objects']} objects)",
                flush=True,
            )
        if args.cprofile:
            spec, env = spec_for("c", cprofile_dir=str(logs))
            clear_bucket(s3, spec["bucket"])
            run_child(spec, env, logs / "c-cprofile.log")
            print(f"bench: cProfile of one object per table in {logs}/c-cprofile-*.txt", flush=True)
    finally:
        for bucket in (raw_bucket, op_bucket, name, x1_name):
            with contextlib.suppress(Exception):
                clear_bucket(s3, bucket, delete=True)
        if not args.keep_source:
            for container in (name, x1_name):
                with contextlib.suppress(Exception):
                    service.delete_container(container)
        shutil.rmtree(workdir, ignore_errors=True)

    config = {
        "domain": domain.name,
        "tables": tables,
        "partition": partition,
        "gb": args.gb,
        "files_per_table": args.files,
        "rows_per_table": rows,
        "rounds": args.rounds,
        "settings": settings,
        "seed_s": round(seed_s, 1),
        "label": args.label,
        "lazy_imports": args.lazy_imports,
        "c_workers": args.c_workers,
        "tree": str(TREE),
        "tree_state": tree_state(),
    }
    summary = summarise(runs, x1, source_bytes, x1_bytes, config)
    if cpu_run:
        summary["cpu_per_gb"] = {k: cpu_run[k] for k in ("decode_cpu_s_per_gb", "checks_cpu_s_per_gb", "bytes")}
        summary["targets"]["checks beyond decoding <= 15 CPU s/GB"] = _verdict(
            cpu_run["checks_cpu_s_per_gb"] <= TARGETS["checks_cpu_s_per_gb"]
        )
    summary["runs"] = runs
    if args.cprofile:
        summary["cprofile"] = sorted(str(path) for path in logs.glob("c-cprofile-*.txt"))
    print_summary(summary)
    result_path = RESULTS_DIR / f"transfer-{stamp}.json"
    result_path.write_text(json.dumps(summary, indent=2))
    print("BENCH_JSON " + json.dumps(summary, separators=(",", ":")))
    print(f"results: {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
