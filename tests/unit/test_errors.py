"""Errors carry where they happened as data (``ref``): alerts, the ledger and reports read it, never the text."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from hdh_migration import leases
from hdh_migration.alerts import failure_alert
from hdh_migration.errors import IntegrityError, PrivacyIncident, QuarantinedError, Where
from hdh_migration.quarantine import mark_waiting

OBJECT = "dcir/ER_PHA_F/FLX_DIS_DTD=2024-01-01/part-0.parquet"
# A message whose text names another place than the error's data: only the data counts.
MISLEADING = "domain=other table=T partition=1999-01-01 object=x: size differs (rule: x=y is not a location)"


def test_the_label_names_what_is_known_in_order():
    ref = Where("dcir", "ER_PHA_F", "2024-01-01")
    assert ref.label == str(ref) == "domain=dcir table=ER_PHA_F partition=2024-01-01"
    assert Where("dcir", partition="2024-01-01").label == "domain=dcir partition=2024-01-01"
    assert Where("dcir", obj="_cutover/dcir.json").label == "domain=dcir object=_cutover/dcir.json"
    assert ref.with_object(OBJECT).label == f"domain=dcir table=ER_PHA_F partition=2024-01-01 object={OBJECT}"
    assert Where("dcir", partition="2024-01-01").with_table("ER_PHA_F") == ref
    assert Where(obj="_manifests/x.json").label == "object=_manifests/x.json", "a store key alone has no domain"


def test_location_is_the_data_the_error_carries_never_its_text():
    ref = Where("dcir", "ER_PHA_F", "2024-01-01", OBJECT)
    error = IntegrityError(MISLEADING, ref=ref)
    assert error.location() == {"domain": "dcir", "table": "ER_PHA_F", "partition": "2024-01-01", "object": OBJECT}
    assert IntegrityError(MISLEADING).location() == {}, "a location in the text alone is not read"


def _context(error):
    ti = SimpleNamespace(dag_id="hdh_cutover__dcir", task_id="verify", run_id="manual__1", map_index=-1, try_number=1)
    run = SimpleNamespace(conf={}, data_interval_start=dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
    return {"ti": ti, "exception": error, "dag_run": run}


def test_an_alert_takes_its_location_from_the_error_data():
    alert = failure_alert("dcir", _context(IntegrityError(MISLEADING, ref=Where("dcir", "ER_PHA_F", "2024-01-01"))))
    assert (alert.domain, alert.table, alert.partition, alert.object) == ("dcir", "ER_PHA_F", "2024-01-01", None)
    assert alert.summary.endswith("at domain=dcir table=ER_PHA_F partition=2024-01-01")
    bare = failure_alert("dcir", _context(IntegrityError(MISLEADING)))
    assert (bare.domain, bare.table, bare.partition) == ("dcir", None, None), "nothing parsed out of the message"


class _Ledger:
    def __init__(self):
        self.states, self.released = [], []

    def set_state(self, domain, table, partition, state, **fields):
        self.states.append((domain, table, partition, state, fields.get("last_error")))

    def release_partition(self, domain, partition, run_id):
        self.released.append((domain, partition, run_id))


def test_the_ledger_records_a_failure_where_the_reference_says(monkeypatch):
    ledger = _Ledger()
    monkeypatch.setattr(leases, "open_ledger", lambda: ledger)
    ref = Where("dcir", "ER_PHA_F", "2024-01-01", OBJECT)
    leases.record_failure(ref, IntegrityError(MISLEADING, ref=ref), "run-1")
    assert ledger.states == [("dcir", "ER_PHA_F", "2024-01-01", "failed", MISLEADING)]
    assert ledger.released == [("dcir", "2024-01-01", "run-1")]


def test_the_waiting_note_names_the_quarantined_tables_from_their_data():
    ledger = _Ledger()
    quarantined = [
        QuarantinedError(MISLEADING, ref=Where("dcir", "ER_PHA_F", "2024-01-01")),
        PrivacyIncident("PRIVACY INCIDENT " + MISLEADING, ref=Where("dcir", "ER_UCD_F", "2024-01-01")),
    ]
    note = mark_waiting(ledger, "dcir", "2024-01-01", quarantined, {"ER_PRS_F": {}}, "run-1")
    assert note.startswith(" | ER_PRS_F passed and waits for ER_PHA_F, ER_UCD_F:")
    assert ledger.states == [
        (
            "dcir",
            "ER_PRS_F",
            "2024-01-01",
            "validated",
            "waits for ER_PHA_F, ER_UCD_F (quarantined in the same partition)",
        )
    ]


def test_a_privacy_incident_is_a_quarantine_with_its_own_severity():
    assert issubclass(PrivacyIncident, QuarantinedError)
    assert PrivacyIncident.severity == "privacy"
