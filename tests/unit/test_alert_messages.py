"""An alert names what and where, never a data value: only the package's own messages pass."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

from hdh_migration.alerts import deadline_alert, failure_alert
from hdh_migration.errors import IntegrityError

CANARY = "ZQXCANARY"


def _context(error, conf, dag_id="hdh_transfer__dcir"):
    ti = SimpleNamespace(dag_id=dag_id, task_id="plan_partition", run_id="manual__1", map_index=-1, try_number=5)
    run = SimpleNamespace(conf=conf, data_interval_start=dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
    return {"ti": ti, "exception": error, "dag_run": run, "params": {"partition": CANARY}}


def test_a_foreign_exception_gives_its_class_only_and_a_bad_partition_is_not_echoed():
    error = ValueError(f"monthly partition {CANARY!r} must be the first day of a month")
    alert = failure_alert("dcir", _context(error, {"partition": CANARY}))
    sent = json.dumps(alert.as_dict())
    assert CANARY not in sent and CANARY not in alert.text()
    assert alert.error_type == "ValueError" and "kept out of alerts" in alert.message
    assert alert.partition is None, "a partition that does not parse is not a location"
    assert "Retries are exhausted" in alert.next_step


def test_the_run_partition_fills_in_when_the_error_does_not_name_it():
    alert = failure_alert("dcir", _context(IntegrityError("something differs"), {}))
    assert (alert.domain, alert.partition, alert.table) == ("dcir", "2024-02-01", None)
    assert alert.severity == "error" and alert.kind == "task_failure"
    other = failure_alert("dcir", _context(IntegrityError("x"), {"partition": "2024-03-01"}, "hdh_cutover__dcir"))
    assert other.partition is None, "only a transfer run moves one partition"


def test_a_deadline_alert_names_the_run_and_its_partition():
    context = {
        "dag_run": {"dag_id": "hdh_transfer__pmsi_mco", "dag_run_id": "r1", "conf": {"partition": "2023"}},
        "deadline": {"deadline_time": "2026-11-29T05:00:00+00:00"},
    }
    alert = deadline_alert("pmsi_mco", context)
    assert (alert.kind, alert.severity, alert.partition, alert.run_id) == ("deadline_missed", "warning", "2023", "r1")
    assert "120 min" in alert.summary and alert.deadline == "2026-11-29T05:00:00+00:00"
