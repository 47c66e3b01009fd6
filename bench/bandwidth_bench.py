"""Bandwidth benchmark: the measured rate of capped transfers against their cap, uncapped as baseline.

Writes one object of random bytes into Azure (Azurite locally), then, for each cap, reads it with
``AzureSource.download_to`` and uploads it with ``SovereignTarget.upload_file`` (SeaweedFS locally)
through the token bucket the transfer task uses, and prints MB/s each way and measured/cap. A
global cap shared by several processes (the pool's slots) is checked last: N processes, each at
cap/N, started together; their aggregate rate must stay under the cap.

Run inside the project environment (``source scripts/env.sh``, stand-ins started):

    python bench/bandwidth_bench.py                 # 60 MB object, caps 5, 10, 20, 40 MB/s; 4 processes at 20 MB/s
    python bench/bandwidth_bench.py --quick         # 30 MB, caps 5 and 10; 2 processes at 10 MB/s
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("hdh_migration") is None:
    sys.path.append(str(ROOT / "plugins"))

from hdh_migration.throttle import MB, TokenBucket  # noqa: E402

SOURCE_CONN_ID = "hdh_azure_source"
TARGET_CONN_ID = "hdh_sovereign_target"


def _clients(name: str):
    from hdh_migration.source import AzureSource
    from hdh_migration.target import SovereignTarget

    return AzureSource(SOURCE_CONN_ID, name), SovereignTarget(TARGET_CONN_ID, name)


def copy_once(name: str, cap_mb_s: float | None, tag: str) -> dict:
    """Read the object from Azure and upload it, each way through its own bucket at ``cap_mb_s``."""
    source, target = _clients(name)
    (obj,) = source.list_objects("bench/", "bin")
    with tempfile.TemporaryDirectory(prefix="hdh-bwbench-") as spool_dir:
        spool = Path(spool_dir) / "spool.bin"
        digest = hashlib.sha256()
        read_start = time.time()
        source.download_to(
            obj, spool, target.settings.read_chunk, digest, throttle=cap_mb_s and TokenBucket(cap_mb_s * MB)
        )
        write_start = time.time()
        target.upload_file(
            spool, f"bench/{tag}.bin", digest.hexdigest(), {}, throttle=cap_mb_s and TokenBucket(cap_mb_s * MB)
        )
        write_end = time.time()
    return {
        "bytes": obj.size,
        "read_start": read_start,
        "write_start": write_start,
        "write_end": write_end,
        "read_s": write_start - read_start,
        "write_s": write_end - write_start,
    }


def _row(label: str, cap: float | None, result: dict) -> dict:
    read = result["bytes"] / result["read_s"] / MB
    write = result["bytes"] / result["write_s"] / MB
    ratio = "" if cap is None else f"{read / cap:6.3f} {write / cap:6.3f}"
    print(f"{label:<28} {'-' if cap is None else cap:>7} {read:9.2f} {write:9.2f}   {ratio}", flush=True)
    return {"label": label, "cap_mb_s": cap, "read_mb_s": round(read, 3), "write_mb_s": round(write, 3)}


def global_cap(name: str, cap_mb_s: float, processes: int) -> dict:
    """``processes`` copies at once, each at cap/processes: the aggregate must stay under the cap.

    Aggregate rate per direction: all bytes over the span from the first start to the last end.
    """
    share = cap_mb_s / processes
    with ProcessPoolExecutor(max_workers=processes) as pool:
        results = list(
            pool.map(copy_once, [name] * processes, [share] * processes, [f"p{i}" for i in range(processes)])
        )
    total = sum(r["bytes"] for r in results)
    read_span = max(r["write_start"] for r in results) - min(r["read_start"] for r in results)
    write_span = max(r["write_end"] for r in results) - min(r["write_start"] for r in results)
    return {
        "processes": processes,
        "cap_mb_s": cap_mb_s,
        "read_mb_s": round(total / read_span / MB, 3),
        "write_mb_s": round(total / write_span / MB, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=60, help="object size in MB (10^6 bytes)")
    parser.add_argument("--caps", type=float, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--global-cap", type=float, default=20)
    parser.add_argument("--quick", action="store_true", help="30 MB, caps 5 and 10, 2 processes at 10 MB/s")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.caps, args.processes, args.global_cap = 30, [5, 10], 2, 10

    name = f"bwbench{uuid.uuid4().hex[:8]}"
    source, target = _clients(name)
    source.container_client.create_container()
    target.ensure_bucket()
    try:
        source.container_client.upload_blob("bench/part-00000.bin", os.urandom(args.mb * MB))
        print(f"object {args.mb} MB; part size {target.settings.part_size >> 20} MiB; each way paced separately")
        print(f"{'run':<28} {'cap':>7} {'read MB/s':>9} {'write MB/s':>9}   read/cap write/cap")
        rows = [_row("uncapped (baseline)", None, copy_once(name, None, "baseline"))]
        rows += [_row(f"capped {cap:g} MB/s", cap, copy_once(name, cap, f"cap{cap:g}")) for cap in args.caps]
        shared = global_cap(name, args.global_cap, args.processes)
        print(
            f"global cap {shared['cap_mb_s']:g} MB/s over {shared['processes']} processes at "
            f"{shared['cap_mb_s'] / shared['processes']:g} MB/s each: aggregate read {shared['read_mb_s']:.2f} MB/s, "
            f"write {shared['write_mb_s']:.2f} MB/s ({shared['read_mb_s'] / shared['cap_mb_s']:.3f} and "
            f"{shared['write_mb_s'] / shared['cap_mb_s']:.3f} of the cap)"
        )
        print(json.dumps({"object_mb": args.mb, "runs": rows, "global": shared}))
    finally:
        with contextlib.suppress(Exception):
            source.container_client.delete_container()
        with contextlib.suppress(Exception):
            target.delete_keys(target.list_keys(""))
            target.client.delete_bucket(Bucket=name)


if __name__ == "__main__":
    main()
