"""The project's custom Great Expectations (GX 1.x); importing this module registers them.

Once imported, a suite refers to them by type name, like any core expectation:
``{"type": "expect_column_values_to_not_contain_raw_nir", "kwargs": {"column": "FREE_TEXT"}}``.
"""

from __future__ import annotations

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

from hdh_migration.nir import raw_nir_mask


class ColumnValuesNotContainRawNir(ColumnMapMetricProvider):
    condition_metric_name = "column_values.not_contain_raw_nir"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return pd.Series(~raw_nir_mask(column), index=column.index)


class ExpectColumnValuesToNotContainRawNir(ColumnMapExpectation):
    """Expect no value of the column to hold a raw NIR (see ``hdh_migration.nir`` for the rules).

    A pseudonymised SNDS table must never carry a raw NIR, not even inside free text or spaced.
    Nulls are not counted. Run by GX directly, ``mostly`` works as for any column map expectation; the
    transfer ignores it (``hdh_migration.validation.privacy_guard``): one raw NIR blocks the partition.
    """

    map_metric = "column_values.not_contain_raw_nir"
    success_keys = ("mostly",)
