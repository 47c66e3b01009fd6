"""The project's custom Great Expectations (GX 1.x); importing this module registers them.

Once imported, a suite refers to them by type name, like any core expectation:
``{"type": "expect_column_values_to_not_contain_raw_nir", "kwargs": {"column": "FREE_TEXT"}}``.
"""

from __future__ import annotations

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation, ColumnMapExpectation
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


class _PartitionCheck(BatchExpectation):
    """A check hdh_migration makes across all files of a partition, in bounded memory.

    GX validates one record batch at a time and cannot see a whole partition; these classes only
    register the checks' names, so their results take GX's shape and render in Data Docs.
    """

    metric_dependencies = ()

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        raise NotImplementedError(f"{self.expectation_type} is computed by hdh_migration.transfer, not by GX")


class ExpectCompoundColumnsToBeUniqueAcrossPartition(_PartitionCheck):
    """Primary-key uniqueness across every file of a partition (hashed keys, bucketed on disk)."""

    column_list: list[str]


class ExpectTableRowCountToEqualSource(_PartitionCheck):
    """The rows landed equal the rows read from the source, for the whole partition."""


class ExpectPartitionContentFingerprintToMatchSource(_PartitionCheck):
    """The order-independent content fingerprint of the landed files equals the source's."""


class ExpectFileToBeValidParquet(_PartitionCheck):
    """The source object opens and reads as parquet to its end (not truncated, not corrupt)."""


class ExpectTableColumnTypesToMatchSchema(_PartitionCheck):
    """The parquet column types are the Arrow types of the table's Table Schema file."""

    column_list: list[str]


class ExpectCsvToParseWithSchemaTypes(_PartitionCheck):
    """Every CSV cell parses as its column's declared type."""


class ExpectBatchChecksToComplete(_PartitionCheck):
    """Every check of the suite runs to its end on every batch; a check that raises fails this one."""


class ExpectFileEncodingToBeLatin1(_PartitionCheck):
    """A CSV declared Latin-1 holds no UTF-8 or UTF-16 byte sequences."""
