"""Errors carry where they happened, for alerts: as attributes, else read back from the message's prefix."""

from __future__ import annotations

from hdh_migration.errors import IntegrityError, PrivacyIncident, QuarantinedError, parse_where, where


def test_location_prefers_the_attributes():
    error = QuarantinedError("anything at all", domain="dcir", table="ER_PHA_F", partition="2024-01-01")
    assert error.location() == {"domain": "dcir", "table": "ER_PHA_F", "partition": "2024-01-01"}


def test_location_falls_back_to_the_where_prefix_of_the_message():
    label = where("dcir", "ER_PHA_F", "2024-01-01", "dcir/ER_PHA_F/FLX_DIS_DTD=2024-01-01/part-0.parquet")
    error = IntegrityError(f"{label}: size differs (rule: x=y in the text is not a location)")
    assert error.location() == {
        "domain": "dcir",
        "table": "ER_PHA_F",
        "partition": "2024-01-01",
        "object": "dcir/ER_PHA_F/FLX_DIS_DTD=2024-01-01/part-0.parquet",
    }
    assert parse_where(f"PRIVACY INCIDENT {where('causes_deces', 'KI_CCI_R', '2023')}: raw NIR") == {
        "domain": "causes_deces",
        "table": "KI_CCI_R",
        "partition": "2023",
    }
    assert parse_where("no location here: domain=x") == {}


def test_a_privacy_incident_is_a_quarantine_with_its_own_severity():
    assert issubclass(PrivacyIncident, QuarantinedError)
    assert PrivacyIncident.severity == "privacy"
