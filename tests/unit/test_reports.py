"""Data Docs pages render from redacted results for every table, and carry no data value."""

from __future__ import annotations

import pyarrow as pa

from hdh_migration.catalogue import load_catalogue
from hdh_migration.reports import render_data_docs
from hdh_migration.synthetic import generate_file
from hdh_migration.validation import SuiteRunner, partition_parameters, summary_shape

CANARY = "ZQXCANARY"


def test_every_table_renders_a_redacted_data_docs_page():
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
                result["success"] = False  # render every expectation as a failure, the richest page
            page = render_data_docs(summary_shape(results, f"{domain.name}.{table.name}"), "manual__test")
            assert f"{domain.name}.{table.name}" in page
            assert CANARY not in page, table.name
