"""Validation report pages: rendered from redacted reports for every table, names and counts only.

A report page is rendered from whatever the quarantine report in the store holds; these tests hand
it real suite results and then documents that carry values where they must never be shown (a
report written by a buggy version, or by someone with write access to the bucket).
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from html_assets import page_assets

from hdh_migration.catalogue import load_catalogue
from hdh_migration.layout import quarantine_key
from hdh_migration.reports import REPORT_ROUTE, ReportRef, render_report, report_link, report_ref
from hdh_migration.validation import SuiteRunner, expectation_id, partition_parameters, summary_shape
from hdh_synthetic import generate_file

CANARY = "ZQXCANARY"
RAW_NIR = "253072B07300470"
TOKEN = "0123456789abcdef"


def _document(table, partition: str, summary: dict, failing: list[str], severity: str = "data") -> dict:
    """A quarantine report as ``quarantine.quarantine_table`` writes it."""
    return {
        "domain": table.domain,
        "table": table.name,
        "partition_column": table.partition_column,
        "partition": partition,
        "run_id": "manual__2026-11-30T08:00:00+00:00",
        "at": "2026-11-30T08:01:02+00:00",
        "severity": severity,
        "failing_expectations": failing,
        "validation": summary,
    }


def _ref(table, partition: str) -> ReportRef:
    return ReportRef(table.domain, table.name, table.partition_column, partition, TOKEN)


def test_every_table_renders_a_redacted_report_page():
    catalogue = load_catalogue()
    for domain in catalogue.domains:
        partition = domain.partitions()[0]
        for table in domain.tables:
            data = generate_file(catalogue, table, partition, 0, seed=3, rows_per_partition=200, files_per_partition=1)
            strings = [f.name for f in data.schema if pa.types.is_string(f.type)]
            values = data.column(strings[-1]).to_pylist()
            values[0] = CANARY  # a value that fails the column's rules must show as a count only
            data = data.set_column(data.schema.get_field_index(strings[-1]), strings[-1], pa.array(values))
            runner = SuiteRunner(table.suite_path, partition_parameters(domain.grain, partition))
            for batch in data.to_batches():
                runner.validate(batch)
            results = runner.results()
            for result in results:
                result["success"] = False  # every expectation a failure: the richest page
            failing = [expectation_id(r) for r in results]
            summary = summary_shape(results, f"{domain.name}.{table.name}")
            page = render_report(
                _ref(table, partition), _document(table, partition, summary, failing), root="/hdh", run_url=None
            )
            assert f"Validation report: {domain.name}.{table.name}" in page
            assert page.count('<tr class="failed"') == len(results), table.name
            for name in failing:
                assert f"<li><code>{name}</code></li>" in page, name
            assert CANARY not in page, table.name
            assert page_assets(page) == {"/hdh/static/hdh.css", "/hdh/static/hdh.js"}


def test_a_report_page_shows_names_and_counts_only_whatever_the_document_holds():
    table = load_catalogue().domain("causes_deces").table("KI_CCI_R")
    nir = {
        "type": "expect_column_values_to_not_contain_raw_nir",
        "kwargs": {"column": "DCD_LIE_LIB", "value_set": [RAW_NIR], "regex": CANARY, "mostly": 1.0},
        "success": False,
        "result": {
            "element_count": 300,
            "unexpected_count": 2,
            "missing_count": 4,
            "partial_unexpected_list": [RAW_NIR, CANARY],
            "unexpected_list": [RAW_NIR],
            "observed_value": CANARY,
            "details": {"value_counts": [{"value": CANARY, "count": 2}]},
            "raised_exception": True,
        },
        "exception_info": {"exception_message": f"cannot parse {CANARY}"},
    }
    hostile_column = {
        "type": "expect_column_values_to_not_be_null",
        "kwargs": {"column": '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'},
        "success": True,
        "result": {"element_count": True, "unexpected_count": "7"},  # not integers: not shown
    }
    summary = summary_shape([nir, hostile_column], "causes_deces.KI_CCI_R")
    summary["sample_rows"] = [{"DCD_LIE_LIB": RAW_NIR}]
    document = {
        **_document(table, "2023", summary, ["expect_column_values_to_not_contain_raw_nir(DCD_LIE_LIB)"], "privacy"),
        "run_id": '"><img src="https://evil.example/x.png">',
        "values": [CANARY, RAW_NIR],
    }
    page = render_report(_ref(table, "2023"), document, root="/hdh", run_url="/dags/hdh_transfer__causes_deces/runs/x")
    for secret in (RAW_NIR, CANARY, "jsdelivr", "evil.example"):
        assert secret not in page, secret
    assert 'run <span class="muted">unknown</span>' in page, "a run id that is not one is not shown"
    assert "quarantined 2026-11-30 08:01:02 UTC" in page
    assert "PRIVACY INCIDENT" in page and "cannot be waived" in page
    row = page[page.index('<tr class="failed"') :]
    row = row[: row.index("</tr>")]
    assert 'rows checked <b class="count">300</b>' in row and 'unexpected <b class="count">2</b>' in row
    assert 'missing <b class="count">4</b>' in row and "(0.67% unexpected)" in row
    assert "the check raised an error" in row and "observed" not in row
    assert '<tr class="passed"' in page and 'class="count">7<' not in page
    assert page_assets(page) == {"/hdh/static/hdh.css", "/hdh/static/hdh.js"}


def test_a_waived_failure_is_shown_apart_from_the_blocking_ones():
    table = load_catalogue().domain("pmsi_mco").table("T_MCOaaB")
    regex = {
        "type": "expect_column_values_to_match_regex",
        "kwargs": {"column": "DGN_REL"},
        "success": False,
        "result": {"element_count": 10, "unexpected_count": 1},
    }
    null = {**regex, "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ETA_NUM"}}
    summary = summary_shape([regex, null], "pmsi_mco.T_MCOaaB")
    document = _document(table, "2023", summary, ["expect_column_values_to_not_be_null(ETA_NUM)"])
    page = render_report(_ref(table, "2023"), document, root="/airflow/hdh", run_url=None)
    assert page.index('data-expectation="expect_column_values_to_not_be_null(ETA_NUM)"') < page.index(
        'data-expectation="expect_column_values_to_match_regex(DGN_REL)"'
    ), "blocking failures first"
    assert '<span class="badge state-waived">waived</span>' in page
    assert "python -m hdh_migration waive --domain pmsi_mco --table T_MCOaaB --partition 2023" in page
    assert page_assets(page) == {"/airflow/hdh/static/hdh.css", "/airflow/hdh/static/hdh.js"}


def test_a_report_link_names_its_store_key_and_nothing_else():
    catalogue = load_catalogue()
    key = quarantine_key("causes_deces", "KI_CCI_R", "FLX_PER_ANN", "2023", TOKEN)
    link = report_link(key)
    assert link == f"{REPORT_ROUTE}causes_deces/KI_CCI_R/FLX_PER_ANN=2023/{TOKEN}"
    ref = report_ref(catalogue, *link.removeprefix(REPORT_ROUTE).split("/"))
    assert ref is not None and ref.key == key
    snapshot = report_ref(catalogue, "beneficiaires", "IR_BEN_R", "snapshot=2024-06-30", TOKEN)
    assert snapshot is not None and snapshot.key.startswith("_quarantine/beneficiaires/IR_BEN_R/snapshot=2024-06-30/")


@pytest.mark.parametrize(
    "parts",
    [
        ("nope", "KI_CCI_R", "FLX_PER_ANN=2023", TOKEN),  # not a domain of the catalogue
        ("causes_deces", "ER_PRS_F", "FLX_PER_ANN=2023", TOKEN),  # a table of another domain
        ("causes_deces", "KI_CCI_R", "FLX_DIS_DTD=2023", TOKEN),  # not the table's partition column
        ("causes_deces", "KI_CCI_R", "2023", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=..", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=.hidden", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023..2024", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023 ", TOKEN),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023", TOKEN.upper()),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023", TOKEN + "0"),
        ("causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023", "x.json"),
        ("_manifests", "causes_deces", "KI_CCI_R", "FLX_PER_ANN=2023.json"),
    ],
)
def test_a_report_link_that_names_no_report_of_the_catalogue_is_refused(parts):
    assert report_ref(load_catalogue(), *parts) is None
