"""Gap-scan benchmark: how many partitions per second the scan checks, against the raw listings alone.

Builds a large synthetic migration state, once (``--reuse`` keeps it between runs):

- a catalogue of ``--domains`` monthly domains x ``--tables`` tables x ``--months`` partitions
  (default 10 x 5 x 1000 = 50,000 table-partitions), each table pointing at an existing schema file;
- Azure (Azurite): one empty blob per table-partition, ``<domain>/<TABLE>/FLX_DIS_DTD=<v>/part-00000.parquet``;
- the sovereign store (SeaweedFS): a tiny manifest per committed table-partition under ``_manifests/``;
- a SQLite ledger with one row per table-partition that was ever tried.

State mix (deterministic): ~97% committed, 1% never transferred, 1% failed, 0.5% committed in the
ledger but without a manifest, 0.1% quarantined (each costs one extra listing of its partition).

Timed, in the same run, against the same servers (seeding is never timed):

  baseline  the raw listings alone: every blob of the container (flat ``list_blobs``), every key
            under ``_manifests/``, every ledger row; no parsing, no comparison;
  scan      ``gaps.run_gap_scan(dry_run=True)``: the three listings (Azure per table with a
            delimiter, manifests, ledger), the comparison, the quarantine checks, the backfill plan,
            the report written to the store and recorded in the ledger;
  compare   the comparison alone, on the listings fetched once (pure CPU).

Run inside the project environment (``source scripts/env.sh``, stand-ins started):

    python bench/gap_scan_bench.py                  # 50,000 table-partitions (seeding: minutes, once)
    python bench/gap_scan_bench.py --reuse          # reuse the seeded state
    python bench/gap_scan_bench.py --months 100     # 5,000 table-partitions, a quick run
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
    from hdh_migration.transfer import _ledger, _source, _target

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
    from hdh_migration.transfer import _ledger, _source, _target

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--tables", type=int, default=5)
    parser.add_argument("--months", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=32, help="threads for seeding")
    parser.add_argument("--reuse", action="store_true", help="reuse the state seeded by a previous run")
    parser.add_argument("--state-dir", default=os.environ.get("HDH_STATE_DIR") or tempfile.gettempdir())
    args = parser.parse_args()

    state_dir = Path(args.state_dir) / "gap_scan_bench"
    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ["HDH_CATALOGUE"] = str(
        write_catalogue(state_dir / "domains.yaml", args.domains, args.tables, args.months)
    )
    os.environ["AIRFLOW_CONN_HDH_LEDGER"] = json.dumps({"conn_type": "sqlite", "host": str(state_dir / "ledger.db")})

    from hdh_migration import gaps
    from hdh_migration.transfer import _catalogue, _ledger, _source, _target

    catalogue = _catalogue()
    expected = args.domains * args.tables * args.months
    seeded = None
    if not args.reuse:
        print(f"seeding {expected} table-partitions (not timed in any figure below) ...", flush=True)
        seeded = seed(catalogue, args.jobs)
        print(f"seeded in {seeded['seconds']:.1f} s", flush=True)

    base = baseline(catalogue)
    report = gaps.run_gap_scan(dry_run=True, run_id="gap_scan_bench")
    observed = gaps.observe(catalogue, _source(), _target(), _ledger())
    started = time.perf_counter()
    compared = gaps.compare(catalogue, observed, dt.datetime.now(dt.UTC))
    gaps.plan_backfills(catalogue, compared["findings"])
    compare_s = time.perf_counter() - started

    checked = report["partitions_checked"]
    scan_s = report["seconds"]["total"]
    rows = [
        ("baseline: raw listings alone", base["seconds"]["total"]),
        ("scan (dry run, report written)", scan_s),
        ("compare + plan on listings fetched once", compare_s),
    ]
    print()
    print(f"table-partitions checked: {checked}   gaps: {report['gaps']}   held: {report['held']}")
    print(f"{'what':<42} {'seconds':>8} {'partitions/s':>14}")
    for label, seconds in rows:
        print(f"{label:<42} {seconds:>8.2f} {checked / max(seconds, 1e-9):>14,.0f}")
    print(f"scan / baseline: {scan_s / max(base['seconds']['total'], 1e-9):.2f}x")
    print(
        "scan phases (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in report["seconds"].items())
        + "; baseline phases (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in base["seconds"].items())
    )
    print(
        json.dumps(
            {
                "partitions_checked": checked,
                "gaps": report["gaps"],
                "held": report["held"],
                "scan_seconds": scan_s,
                "scan_phases": report["seconds"],
                "baseline": base,
                "compare_seconds": compare_s,
                "seeded": seeded,
                "under_30_s": scan_s < 30,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
