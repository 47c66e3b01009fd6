"""Fault 6: the same partition is triggered twice at once; the two runs must never interleave writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from faults.invariants import assert_survived

pytestmark = pytest.mark.faults

# Each run in its own process, as two workers would run them: dag.test() of the same DAG and partition.
RUN_PARTITION = """
import datetime as dt, sys
from hdh_migration.catalogue import load_catalogue
from hdh_migration.dag_factory import build_transfer_dag
dag = build_transfer_dag(load_catalogue(sys.argv[1]).domain(sys.argv[2]))
run = dag.test(logical_date=dt.datetime.fromisoformat(sys.argv[4]), run_conf={"partition": sys.argv[3]})
print("RUN_STATE", run.state, flush=True)
"""


@pytest.mark.parametrize("ledger_backend", ["postgres"], indirect=True)
def test_the_same_partition_triggered_twice_at_once(migration):
    migration.seed(domains=["beneficiaires"], rows_per_partition=2000, files_per_partition=2)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_PARTITION, str(migration.catalogue_path), "beneficiaires", "2024-06-30", day],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )
        for day in ("2024-06-30T00:00:00+00:00", "2024-07-01T00:00:00+00:00")
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    states = [re.findall(r"^RUN_STATE (\w+)", out, re.MULTILINE) for out in outputs]
    assert states == [["success"], ["success"]], [out[-3000:] for out in outputs]

    ledger = migration.ledger
    events = ledger.events("beneficiaires")
    busy = [e for e in events if e["kind"] == "partition_busy"]
    assert len(busy) == 1, "the second run did not wait for the first one's write lease"
    assert [e["kind"] for e in events].count("unchanged") == 1, "the second run should find the partition done"
    assert ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30").attempts == 1, "transferred twice"
    assert_survived(migration, {"beneficiaires": ["2024-06-30"]})
