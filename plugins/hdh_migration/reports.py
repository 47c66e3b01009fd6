"""Data Docs for on-call, built by GX's own renderer from redacted results only.

The page shows which expectations failed and how many rows, never a value: it is rendered from the
same redacted summary that goes to the ledger and the quarantine report.
"""

from __future__ import annotations

REPORT_XCOM_KEY = "hdh_validation_report"
REPORT_ROUTE = "/hdh/reports/"


def render_data_docs(summary: dict, run_id: str) -> str:
    """One GX Data Docs validation page (HTML) for a redacted validation summary."""
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    from hdh_migration import gx_expectations  # noqa: F401 - the project's expectation types render too

    results = []
    for entry in summary["results"]:
        counts = dict(entry["result"])
        if counts.get("element_count") and "unexpected_count" in counts:
            counts["unexpected_percent"] = 100.0 * counts["unexpected_count"] / counts["element_count"]
        if entry["type"] == "expect_table_columns_to_match_ordered_list":
            # GX orders the page by the observed columns: names from the schema, not data values.
            counts["observed_value"] = entry["kwargs"].get("column_list", [])
        results.append(
            ExpectationValidationResult(
                success=entry["success"],
                expectation_config=ExpectationConfiguration(type=entry["type"], kwargs=entry["kwargs"]),
                result=counts,
            )
        )
    statistics = dict(summary["statistics"])
    evaluated = statistics["evaluated_expectations"] or 1
    statistics["success_percent"] = 100.0 * statistics["successful_expectations"] / evaluated
    validation = ExpectationSuiteValidationResult(
        success=summary["success"],
        results=results,
        suite_name=summary["suite_name"],
        statistics=statistics,
        meta={
            "run_id": {"run_name": run_id, "run_time": None},
            "active_batch_definition": {
                "datasource_name": "hdh_migration",
                "data_connector_name": "partition",
                "data_asset_name": summary["suite_name"],
                "batch_identifiers": {},
            },
        },
    )
    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation))


def report_link(key: str) -> str:
    """The on-call link to a report kept in the sovereign store, served by the plugin's API."""
    return f"{REPORT_ROUTE}{key}"
