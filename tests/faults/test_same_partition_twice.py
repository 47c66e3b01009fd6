"""Fault 6: the same partition is triggered twice at once; the two runs must never interleave writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
import yaml
from faults.invariants import assert_survived

pytestmark = pytest.mark.faults

# A monthly domain: two runs of different logical dates (both inside the DAG's start..end dates) given
# the same partition in their conf, as a manual trigger racing a scheduled or backfill run would be.
DOMAIN, PARTITION = "dcir", "2024-01-01"

# Each run in its own process, as two workers would run them: dag.test() of the same DAG and partition.
RUN_PARTITION = """
import datetime as dt, sys
from hdh_migration.catalogue import load_catalogue
from hdh_migration.dag_factory import build_transfer_dag
dag = build_transfer_dag(load_catalogue(sys.argv[1]).domain(sys.argv[2]), with_deadline=False)  # for dag.test()
run = dag.test(logical_date=dt.datetime.fromisoformat(sys.argv[4]), run_conf={"partition": sys.argv[3]})
print("RUN_STATE", run.state, flush=True)
"""


def _slow_transfers(migration, seconds: float) -> None:
    """Cap the domain's bandwidth so that its transfer holds the write lease about ``seconds``."""
    from hdh_migration.catalogue import cached_catalogue

    size = sum(b.size for b in migration.source.container_client.list_blobs() if f"={PARTITION}/" in b.name)
    raw = yaml.safe_load(migration.catalogue_path.read_text())
    raw["domains"][DOMAIN]["bandwidth_mb_s"] = size / seconds / 1_000_000
    raw["domains"][DOMAIN]["max_transfers"] = 1
    migration.catalogue_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cached_catalogue.cache_clear()


def _start(migration, logical_date: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            RUN_PARTITION,
            str(migration.catalogue_path),
            DOMAIN,
            PARTITION,
            logical_date,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def _lease_holder(migration) -> str | None:
    from hdh_migration.ledger import leases_table

    with migration.ledger.engine.connect() as conn:
        return conn.execute(
            sa.select(leases_table.c.run_id).where(
                leases_table.c.domain == DOMAIN, leases_table.c.partition == PARTITION
            )
        ).scalar()


@pytest.mark.parametrize("ledger_backend", ["postgres"], indirect=True)
def test_the_same_partition_triggered_twice_at_once(migration):
    migration.seed(domains=[DOMAIN], rows_per_partition=2000, files_per_partition=2)
    _slow_transfers(migration, seconds=30)
    # The second run starts once the first one holds the partition's write lease (a process takes
    # seconds to import Airflow: started together, one could finish before the other began).
    first = _start(migration, "2024-01-01T00:00:00+00:00")
    deadline = time.monotonic() + 300
    while _lease_holder(migration) is None:
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first run never took the partition's write lease"
        time.sleep(0.5)
    runs = [first, _start(migration, "2024-02-01T00:00:00+00:00")]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    states = [re.findall(r"^RUN_STATE (\w+)", out, re.MULTILINE) for out in outputs]
    assert states == [["success"], ["success"]], [out[-3000:] for out in outputs]

    ledger = migration.ledger
    events = ledger.events(DOMAIN)
    busy = [e for e in events if e["kind"] == "partition_busy"]
    assert len(busy) == 1, (
        "the second run did not wait for the first one's write lease",
        [(e["kind"], e["run_id"], str(e["at"])) for e in events],
        [re.findall(r"^.*(?:lease|MB|transfer_object).*$", out, re.MULTILINE)[-8:] for out in outputs],
    )
    tables = [table.name for table in migration.catalogue.domain(DOMAIN).tables]
    unchanged = [e for e in events if e["kind"] == "unchanged"]
    assert len(unchanged) == len(tables), "the second run should find every table of the partition done"
    assert {e["run_id"] for e in unchanged} == {busy[0]["run_id"]}
    for table in tables:
        assert ledger.get(DOMAIN, table, PARTITION).attempts == 1, f"{table} transferred twice"
    assert_survived(migration, {DOMAIN: [PARTITION]})
