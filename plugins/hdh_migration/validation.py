"""Great Expectations, run batch by batch, with results redacted before they leave the worker.

GX validates one record batch at a time (bounded memory); the per-expectation counts are summed
over the batches of an object, then over the objects of a partition. ``redact`` is the one place
where a GX result becomes something that may be logged, stored or sent: names and counts only,
never a data value.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Kwargs that come from the suite (names, bounds, formats), never from the data; any other kwarg is dropped.
_SAFE_KWARGS = (
    "column",
    "column_list",
    "column_A",
    "column_B",
    "min_value",
    "max_value",
    "strict_min",
    "strict_max",
    "value",
    "regex",
    "value_set",
    "or_equal",
    "ignore_row_if",
    "mostly",
)
_SAFE_RESULT_FIELDS = ("element_count", "unexpected_count", "missing_count")


def redact(expectation_result: dict) -> dict:
    """Keep the expectation's identity and the counts; drop observed and unexpected values."""
    config = expectation_result.get("expectation_config") or {}
    kwargs = config.get("kwargs") or {}
    result = expectation_result.get("result") or {}
    exception = expectation_result.get("exception_info") or {}
    redacted = {
        "type": config.get("type"),
        "kwargs": {k: kwargs[k] for k in _SAFE_KWARGS if k in kwargs},
        "success": bool(expectation_result.get("success")),
        "result": {k: int(result[k]) for k in _SAFE_RESULT_FIELDS if isinstance(result.get(k), int | float)},
    }
    if exception.get("raised_exception"):
        # The message of a failed metric may quote values: keep only that it failed.
        redacted["result"]["raised_exception"] = True
    return redacted


def merge_results(totals: dict[str, dict], results: list[dict]) -> dict[str, dict]:
    """Sum redacted per-expectation results (from batches or objects) keyed by expectation identity."""
    for result in results:
        key = json.dumps([result["type"], result["kwargs"]], sort_keys=True, default=str)
        current = totals.get(key)
        if current is None:
            totals[key] = {**result, "result": dict(result["result"])}
            continue
        current["success"] = current["success"] and result["success"]
        for field, value in result["result"].items():
            if isinstance(value, bool):
                current["result"][field] = current["result"].get(field, False) or value
            else:
                current["result"][field] = current["result"].get(field, 0) + value
    return totals


PRIVACY_EXPECTATIONS = frozenset({"expect_column_values_to_not_contain_raw_nir"})
# Checks whose failure means the copy itself is wrong: a bug or a fault, never a waivable data issue.
INTEGRITY_CHECKS = frozenset(
    {"expect_table_row_count_to_equal_source", "expect_partition_content_fingerprint_to_match_source"}
)


def expectation_id(result: dict) -> str:
    """A stable, value-free name of an expectation: ``type(column)``, used in errors and waivers."""
    kwargs = result.get("kwargs") or {}
    columns = (
        kwargs.get("column")
        or ",".join(kwargs.get("column_list") or ())
        or ",".join(c for c in (kwargs.get("column_A"), kwargs.get("column_B")) if c)
    )
    return f"{result['type']}({columns})"


def blocking_failures(results: list[dict], waived: set[str]) -> list[dict]:
    """The failed expectations that stop a partition: all but the waived ones (privacy is never waived)."""
    return [
        r
        for r in results
        if not r["success"] and (r["type"] in PRIVACY_EXPECTATIONS or expectation_id(r) not in waived)
    ]


def summary_shape(results: list[dict], suite_name: str) -> dict:
    """A GX-shaped validation summary (success, results, statistics) of redacted results."""
    evaluated = len(results)
    successful = sum(1 for r in results if r["success"])
    return {
        "suite_name": suite_name,
        "success": evaluated == successful,
        "results": results,
        "statistics": {
            "evaluated_expectations": evaluated,
            "successful_expectations": successful,
            "unsuccessful_expectations": evaluated - successful,
        },
    }


def partition_parameters(grain: str, partition: str) -> dict:
    """Suite parameters of a partition: its first and last day, and its year.

    Hand-written expectations refer to them as ``{"$PARAMETER": "partition_start"}`` and so on.
    """
    import datetime as dt

    import pandas as pd

    from hdh_migration.catalogue import next_partition_start, partition_start

    start = partition_start(grain, partition)
    end = start if grain == "snapshot" else next_partition_start(grain, start) - dt.timedelta(days=1)
    return {
        "partition_start": pd.Timestamp(start),
        "partition_end": pd.Timestamp(end),
        "partition_year": start.year,
    }


class SuiteRunner:
    """One GX ephemeral context and suite, validating Arrow record batches one at a time."""

    def __init__(self, suite_path: Path, parameters: dict | None = None):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        from hdh_migration import gx_expectations  # noqa: F401 - registers the project's expectations

        document = json.loads(Path(suite_path).read_text(encoding="utf-8"))
        self.suite_name = document["name"]
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = {"globally": False}
        self.suite = context.suites.add(gx.ExpectationSuite(**document))
        if len(self.suite.expectations) != len(document["expectations"]):
            # GX drops an expectation type it does not know with only a log line: refuse instead.
            raise ValueError(
                f"suite {self.suite_name} ({suite_path}): {len(document['expectations'])} expectations in the file, "
                f"{len(self.suite.expectations)} known to GX. Check the expectation types"
            )
        asset = context.data_sources.add_pandas("hdh").add_dataframe_asset("batch")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self.parameters = parameters or {}
        self.totals: dict[str, dict] = {}

    def validate(self, record_batch) -> None:
        frame = record_batch.to_pandas(date_as_object=False)
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(
            self.suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
            expectation_parameters=self.parameters,
        )
        merge_results(self.totals, [redact(r) for r in outcome.to_json_dict()["results"]])

    def results(self) -> list[dict]:
        return list(self.totals.values())
