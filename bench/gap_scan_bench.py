"""Gap-scan benchmark: how many partitions per second the scan checks, against the raw listings alone.

Builds a large synthetic migration state, once (``--reuse`` keeps it between runs):

- a catalogue of ``--domains`` monthly domains x ``--tables`` tables x ``--months`` partitions
  (default 10 x 5 x 1000 = 50,000 table-partitions), each table pointing at an existing schema file;
- Azure (Azurite): one empty blob per table-partition, ``<domain>/<TABLE>/FLX_DIS_DTD=<v>/part-00000.parquet``;
- the sovereign store (SeaweedFS): a tiny manifest per committed table-partition under ``_manifests/``;
- a SQLite ledger with one row per table-partition that was ever tried.

State mix (deterministic): ~97% committed, 1% never transferred, 1% failed, 0.5% committed in the
ledger but without a manifest, 0.1% quarantined (each costs one extra listing of its partition).

Timed (seeding is never timed):

  in memory  compare + plan + report (serialised) on the three listings built in memory as the
             scan receives them (``--months`` partitions per table): the scan's own work, no I/O;
  baseline   on the servers, the raw listings alone: every blob of the container (flat
             ``list_blobs``), every key under ``_manifests/``, every ledger row; no parsing;
  scan       on the servers, ``gaps.run_gap_scan(dry_run=True)``: the three listings (Azure per
             table with a delimiter, manifests, ledger), the comparison, one extra listing per
             quarantined partition, the backfill plan, the report written to the store and the ledger.

Baseline and scan run side by side on the same seeded state (``--seeded-months`` partitions per
table; seeding 50,000 objects takes minutes on an idle machine, far more on a loaded one).

Run inside the project environment (``source scripts/env.sh``, stand-ins started):

    python bench/gap_scan_bench.py                        # 50,000 in memory and 50,000 seeded
    python bench/gap_scan_bench.py --reuse                # reuse the seeded state
    python bench/gap_scan_bench.py --seeded-months 20     # 50,000 in memory, 1,000 seeded: a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

NAME = "hdh-gapbench"
PARTITION_COLUMN = "FLX_DIS_DTD"


def _months_back(last: dt.date, count: int) -> dt.date:
    index = last.year * 12 + last.month - 1 - (count - 1)
    return dt.date(index // 12, index % 12 + 1, 1)


def write_catalogue(path: Path, domains: int, tables: int, months: int) -> Path:
    last = dt.date(2024, 12, 1)
    raw = {
        "version": 1,
        "source_container": NAME,
        "target_bucket": NAME,
        "waves": {1: {"start": "2024-01-01", "window": {"timezone": "UTC", "weekdays": "all", "weekends": "all"}}},
        "domains": {
            f"bench_d{d:02d}": {
                "owner": "team-bench",
                "wave": 1,
                "grain": "monthly",
                "first_partition": _months_back(last, months).isoformat(),
                "cutover_partition": last.isoformat(),
                "tables": {
                    f"T_BENCH{t:02d}": {
                        "format": "parquet",
                        "partition_column": PARTITION_COLUMN,
                        "primary_key": None,
                        "schema": str(ROOT / "schemas" / "ER_PRS_F.json"),
                        "suite": str(ROOT / "expectations" / "dcir" / "ER_PRS_F.json"),
                    }
                    for t in range(tables)
                },
            }
            for d in range(domains)
        },
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def state_of(domain: str, table: str, partition: str) -> str:
    """The deterministic synthetic state of one table-partition."""
    bucket = int(hashlib.sha256(f"{domain}/{table}/{partition}".encode()).hexdigest()[:8], 16) % 1000
    if bucket < 10:
        return "missing"
    if bucket < 20:
        return "failed"
    if bucket < 25:
        return "manifest_missing"
    if bucket < 26:
        return "quarantined"
    return "committed"


def seed(catalogue, jobs: int) -> dict:
    """Azure blobs, manifests and ledger rows for every table-partition; returns counts and seconds."""
    import sqlalchemy as sa

    from hdh_migration.layout import manifest_key, partition_dir
    from hdh_migration.ledger import partitions_table
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target

    started = time.perf_counter()
    source, target, ledger = _source(), _target(), _ledger()
    if not source.container_client.exists():
        source.container_client.create_container()
    target.ensure_bucket()
    items = [
        (domain.name, table.name, partition, state_of(domain.name, table.name, partition))
        for domain in catalogue.domains
        for table in domain.tables
        for partition in domain.partitions()
    ]

    def put_blob(item):
        domain, table, partition, _ = item
        name = partition_dir(domain, table, PARTITION_COLUMN, partition) + "part-00000.parquet"
        source.container_client.upload_blob(name, b"", overwrite=True)

    def put_manifest(item):
        domain, table, partition, _ = item
        target.client.put_object(
            Bucket=target.bucket, Key=manifest_key(domain, table, PARTITION_COLUMN, partition), Body=b"{}"
        )

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(put_blob, items))
        list(pool.map(put_manifest, [i for i in items if i[3] in ("committed", "quarantined")]))
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "domain": domain,
            "table_name": table,
            "partition": partition,
            "state": "committed" if state == "manifest_missing" else state,
            "attempts": 1,
            "updated_at": now - dt.timedelta(days=1),
            "last_error": None,
        }
        for domain, table, partition, state in items
        if state != "missing"
    ]
    with ledger.engine.begin() as conn:
        conn.execute(sa.delete(partitions_table))
        conn.execute(sa.insert(partitions_table), rows)
    return {"table_partitions": len(items), "ledger_rows": len(rows), "seconds": time.perf_counter() - started}


def baseline(catalogue) -> dict:
    """The raw listings alone, the floor under any scan."""
    import sqlalchemy as sa

    from hdh_migration.ledger import partitions_table
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target

    source, target, ledger = _source(), _target(), _ledger()
    started = time.perf_counter()
    blobs = sum(1 for _ in source.container_client.list_blobs())
    azure = time.perf_counter() - started
    started = time.perf_counter()
    keys = len(target.list_keys("_manifests/"))
    manifests = time.perf_counter() - started
    started = time.perf_counter()
    with ledger.engine.connect() as conn:
        rows = len(conn.execute(sa.select(partitions_table)).all())
    ledger_s = time.perf_counter() - started
    return {
        "blobs": blobs,
        "manifests": keys,
        "ledger_rows": rows,
        "seconds": {"azure": azure, "manifests": manifests, "ledger": ledger_s, "total": azure + manifests + ledger_s},
    }


def observed_in_memory(catalogue):
    """The three listings as the scan would receive them, built in memory from the same state mix."""
    from hdh_migration.gaps import LedgerRow, Observed

    now = dt.datetime.now(dt.UTC)
    azure, manifests, ledger = {}, set(), {}
    for domain in catalogue.domains:
        for table in domain.tables:
            azure[(domain.name, table.name)] = set(domain.partitions())
            for partition in domain.partitions():
                state = state_of(domain.name, table.name, partition)
                if state in ("committed", "quarantined"):
                    manifests.add((domain.name, table.name, partition))
                if state != "missing":
                    ledger_state = "committed" if state == "manifest_missing" else state
                    ledger[(domain.name, table.name, partition)] = LedgerRow(
                        ledger_state, 1, now - dt.timedelta(days=1)
                    )
    return Observed(azure=azure, manifests=manifests, ledger=ledger)


def in_memory(catalogue) -> dict:
    """Comparison, plan and report (serialised) on listings fetched once; no I/O is timed."""
    from hdh_migration import gaps

    observed = observed_in_memory(catalogue)
    started = time.perf_counter()
    compared = gaps.compare(catalogue, observed, dt.datetime.now(dt.UTC))
    plans = gaps.plan_backfills(catalogue, compared["findings"])
    report = gaps.build_report(catalogue, compared, compared["findings"], plans, {"dry_run": True})
    json.dumps(report, sort_keys=True)
    seconds = time.perf_counter() - started
    quarantined = sum(1 for f in compared["findings"] if f.reason == "quarantined_waiting")
    return {"checked": compared["checked"], "seconds": seconds, "gaps": report["gaps"], "quarantined": quarantined}


def on_servers(catalogue, reuse: bool, jobs: int) -> dict:
    """The whole scan (dry run) on the seeded servers, and the raw listings alone beside it."""
    from hdh_migration import gaps

    seeded = None
    if not reuse:
        checked = sum(len(d.tables) * len(d.partitions()) for d in catalogue.domains)
        print(f"seeding {checked} table-partitions in Azurite, SeaweedFS and the ledger (not timed) ...", flush=True)
        seeded = seed(catalogue, jobs)
        print(f"seeded in {seeded['seconds']:.1f} s", flush=True)
    base = baseline(catalogue)
    report = gaps.run_gap_scan(dry_run=True, run_id="gap_scan_bench")
    return {"seeded": seeded, "baseline": base, "scan": report["seconds"], "checked": report["partitions_checked"]}


def _rate(count: int, seconds: float) -> str:
    return f"{count / max(seconds, 1e-9):>14,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--months", type=int, default=1000, help="partitions per table of the in-memory state")
    parser.add_argument(
        "--seeded-months", type=int, default=1000, help="partitions per table seeded on the servers (0: skip)"
    )
    parser.add_argument("--jobs", type=int, default=32, help="threads for seeding")
    parser.add_argument("--reuse", action="store_true", help="reuse the state seeded by a previous run")
    parser.add_argument("--state-dir", default=os.environ.get("HDH_STATE_DIR") or tempfile.gettempdir())
    args = parser.parse_args()

    from hdh_migration.catalogue import load_catalogue

    state_dir = Path(args.state_dir) / "gap_scan_bench"
    state_dir.mkdir(parents=True, exist_ok=True)
    big = load_catalogue(write_catalogue(state_dir / "in_memory.yaml", args.domains, args.tables, args.months))
    memory = in_memory(big)
    result = {"in_memory": memory}
    print(f"{'what':<58} {'checked':>8} {'seconds':>8} {'partitions/s':>14}")
    print(
        f"{'compare + plan + report, listings fetched once (no I/O)':<58} {memory['checked']:>8} "
        f"{memory['seconds']:>8.2f} {_rate(memory['checked'], memory['seconds'])}"
    )
    if args.seeded_months:
        os.environ["HDH_CATALOGUE"] = str(
            write_catalogue(state_dir / "domains.yaml", args.domains, args.tables, args.seeded_months)
        )
        os.environ["AIRFLOW_CONN_HDH_LEDGER"] = json.dumps(
            {"conn_type": "sqlite", "host": str(state_dir / "ledger.db")}
        )
        from hdh_migration.resources import current_catalogue as _catalogue

        servers = on_servers(_catalogue(), args.reuse, args.jobs)
        result["servers"] = servers
        checked, base, scan = servers["checked"], servers["baseline"]["seconds"], servers["scan"]
        print(
            f"{'baseline: raw listings alone (Azurite, SeaweedFS, ledger)':<58} {checked:>8} "
            f"{base['total']:>8.2f} {_rate(checked, base['total'])}"
        )
        print(
            f"{'scan, dry run, on the servers (report written)':<58} {checked:>8} "
            f"{scan['total']:>8.2f} {_rate(checked, scan['total'])}"
        )
        print(f"scan / baseline: {scan['total'] / max(base['total'], 1e-9):.2f}x")
        print("scan phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in scan.items()))
        print("baseline phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in base.items()))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
