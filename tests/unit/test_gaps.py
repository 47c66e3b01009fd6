"""The gap scan's comparison and backfill planning, on listings built by hand (no servers)."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import CATALOGUE

from hdh_migration.catalogue import load_catalogue
from hdh_migration.gaps import (
    LedgerRow,
    Observed,
    build_report,
    compare,
    contiguous_ranges,
    plan_backfills,
)
from hdh_migration.layout import manifest_key, parse_manifest_key, partition_dir, partition_from_dir, table_prefix

NOW = dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC)
DCIR = ("2024-01-01", "2024-02-01", "2024-03-01")


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(CATALOGUE)


def _committed(ledger, manifests, domain, table, partition):
    ledger[(domain, table, partition)] = LedgerRow("committed", 1, NOW - dt.timedelta(days=3))
    manifests.add((domain, table, partition))


def _everything_committed(catalogue) -> Observed:
    azure, manifests, ledger = {}, set(), {}
    for domain in catalogue.domains:
        for table in domain.tables:
            azure[(domain.name, table.name)] = set(domain.partitions())
            for partition in domain.partitions():
                _committed(ledger, manifests, domain.name, table.name, partition)
    return Observed(azure=azure, manifests=manifests, ledger=ledger)


def _reasons(result) -> dict:
    return {(f.domain, f.table, f.partition): f.reason for f in result["findings"]}


def test_nothing_to_do_when_ledger_and_manifests_agree(catalogue):
    result = compare(catalogue, _everything_committed(catalogue), NOW)
    expected = sum(len(d.tables) * len(d.partitions()) for d in catalogue.domains)
    assert result["checked"] == result["committed"] == expected == 13
    assert result["findings"] == [] and result["not_in_azure"] == {} and result["outside_range"] == {}


def test_every_gap_and_hold_is_classified(catalogue):
    observed = _everything_committed(catalogue)
    ledger, manifests = observed.ledger, observed.manifests
    del ledger[("dcir", "ER_PRS_F", "2024-01-01")]
    manifests.discard(("dcir", "ER_PRS_F", "2024-01-01"))  # never transferred
    manifests.discard(("dcir", "ER_PHA_F", "2024-02-01"))  # ledger says committed, manifest lost
    del ledger[("dcir", "ER_PHA_F", "2024-03-01")]  # manifest there, ledger lost it
    ledger[("pmsi_mco", "T_MCOaaB", "2022")] = LedgerRow("failed", 2, NOW)
    ledger[("pmsi_mco", "T_MCOaaC", "2022")] = LedgerRow("failed", 3, NOW)
    ledger[("pmsi_mco", "T_MCOaaB", "2023")] = LedgerRow("transferring", 1, NOW - dt.timedelta(hours=1))
    ledger[("pmsi_mco", "T_MCOaaC", "2023")] = LedgerRow("validated", 1, NOW - dt.timedelta(days=2))
    ledger[("causes_deces", "KI_CCI_R", "2022")] = LedgerRow("quarantined", 1, NOW)
    observed.azure[("causes_deces", "KI_CCI_R")] = {"2022", "2024", "2021"}  # 2023 not delivered yet
    del observed.ledger[("causes_deces", "KI_CCI_R", "2023")]
    result = compare(catalogue, observed, NOW)

    assert _reasons(result) == {
        ("dcir", "ER_PRS_F", "2024-01-01"): "missing",
        ("dcir", "ER_PHA_F", "2024-02-01"): "manifest_missing",
        ("dcir", "ER_PHA_F", "2024-03-01"): "unindexed",
        ("pmsi_mco", "T_MCOaaB", "2022"): "failed",
        ("pmsi_mco", "T_MCOaaC", "2022"): "failed_too_often",
        ("pmsi_mco", "T_MCOaaB", "2023"): "in_flight",
        ("pmsi_mco", "T_MCOaaC", "2023"): "stale",
        ("causes_deces", "KI_CCI_R", "2022"): "quarantined_waiting",
    }
    assert result["not_in_azure"] == {"causes_deces": 1}
    assert result["outside_range"] == {"causes_deces": {"KI_CCI_R": ["2021", "2024"]}}
    assert result["checked"] == 13 and result["committed"] == 13 - 8 - 1
    assert compare(catalogue, observed, NOW, max_attempts=4)["findings"][4].reason == "failed"


def test_a_failed_partition_absent_from_azure_is_not_a_gap(catalogue):
    observed = _everything_committed(catalogue)
    observed.ledger[("dcir", "ER_PRS_F", "2024-03-01")] = LedgerRow("failed", 1, NOW)
    observed.azure[("dcir", "ER_PRS_F")].discard("2024-03-01")
    result = compare(catalogue, observed, NOW)
    assert result["findings"] == [] and result["not_in_azure"] == {"dcir": 1}


def test_contiguous_gaps_make_ranges_and_one_backfill_per_domain(catalogue):
    dcir = catalogue.domain("dcir")
    assert contiguous_ranges(dcir, {"2024-01-01", "2024-03-01"}) == [
        ("2024-01-01", "2024-01-01"),
        ("2024-03-01", "2024-03-01"),
    ]
    assert contiguous_ranges(dcir, set(DCIR)) == [("2024-01-01", "2024-03-01")]

    observed = _everything_committed(catalogue)
    for table, partition in (("ER_PRS_F", "2024-02-01"), ("ER_PHA_F", "2024-03-01"), ("ER_PHA_F", "2024-02-01")):
        del observed.ledger[("dcir", table, partition)]
    observed.ledger[("beneficiaires", "IR_BEN_R", "2024-06-30")] = LedgerRow("failed", 1, NOW)
    observed.ledger[("pmsi_mco", "T_MCOaaB", "2023")] = LedgerRow("quarantined", 1, NOW)
    plans = plan_backfills(catalogue, compare(catalogue, observed, NOW)["findings"])

    assert set(plans) == {"dcir", "beneficiaires"}  # the quarantined partition is held, not backfilled
    assert plans["dcir"] == {
        "dag_id": "hdh_transfer__dcir",
        "kind": "backfill",
        "ranges": [("2024-02-01", "2024-03-01")],
        "from_date": "2024-02-01T00:00:00+00:00",
        "to_date": "2024-03-01T00:00:00+00:00",
        "reprocess_behavior": "failed",
        "partitions": 2,
    }
    assert plans["beneficiaires"]["kind"] == "trigger" and plans["beneficiaires"]["partition"] == "2024-06-30"


def test_report_holds_names_partitions_and_counts_only(catalogue):
    observed = _everything_committed(catalogue)
    del observed.ledger[("pmsi_mco", "T_MCOaaB", "2022")]
    observed.manifests.discard(("pmsi_mco", "T_MCOaaB", "2022"))
    compared = compare(catalogue, observed, NOW)
    plans = plan_backfills(catalogue, compared["findings"])
    report = build_report(catalogue, compared, compared["findings"], plans, {"dry_run": True})
    assert report["partitions_checked"] == 13 and report["gaps"] == 1 and report["held"] == 0
    assert report["domains"]["pmsi_mco"]["findings"] == [
        {"table": "T_MCOaaB", "partition": "2022", "reason": "missing"}
    ]
    assert report["domains"]["pmsi_mco"]["request"]["from_date"] == "2022-01-01T00:00:00+00:00"
    assert report["domains"]["dcir"] == {
        "gaps": 0,
        "held": 0,
        "by_reason": {},
        "not_in_azure": 0,
        "findings": [],
        "findings_truncated": 0,
        "request": None,
    }


@pytest.mark.parametrize(
    "name",
    ["dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/", "pmsi_mco/T_MCOaaB/SOR_ANN=2023/"],
)
def test_partition_dirs_and_manifest_keys_parse_back(name):
    domain, table, rest = name.split("/", 2)
    column, value = rest.rstrip("/").split("=")
    assert partition_dir(domain, table, column, value) == name
    assert partition_from_dir(table_prefix(domain, table), column, name) == value
    assert parse_manifest_key(manifest_key(domain, table, column, value)) == (domain, table, value)


@pytest.mark.parametrize(
    "name",
    ["dcir/ER_PRS_F/part-0.parquet", "dcir/ER_PRS_F/OTHER=2024-01-01/", "dcir/ER_PRS_F/FLX_DIS_DTD=/"],
)
def test_other_names_are_not_partitions(name):
    assert partition_from_dir("dcir/ER_PRS_F/", "FLX_DIS_DTD", name) is None
    assert parse_manifest_key(f"_manifests/{name}") is None
