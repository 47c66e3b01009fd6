"""Each kind of bad input quarantines its partition with an error naming where and which rule; nothing lands."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import set_values

from hdh_migration.layout import partition_dir


def _first_object(migration, domain: str, table_name: str, partition: str) -> str:
    table = migration.catalogue.domain(domain).table(table_name)
    prefix = partition_dir(domain, table_name, table.partition_column, partition)
    return migration.source.list_objects(prefix, table.source_extension)[0].name


def _put(migration, name: str, data: bytes) -> None:
    migration.source.container_client.upload_blob(name, data, overwrite=True)


def _parquet(arrow: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(arrow, sink, compression="zstd")
    return sink.getvalue()


def added_column(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    _put(migration, name, _parquet(arrow.append_column("BEN_NEW_COL", pa.array(["x"] * arrow.num_rows))))


def removed_column(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    _put(migration, name, _parquet(arrow.drop_columns(["BEN_RES_COM"])))


def retyped_column(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    index = arrow.schema.get_field_index("BEN_RNG_GEM")
    _put(migration, name, _parquet(arrow.set_column(index, "BEN_RNG_GEM", arrow.column(index).cast(pa.string()))))


def null_key(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    _put(migration, name, _parquet(set_values(arrow, "BEN_NIR_PSA", {0: None})))


def truncated_parquet(migration, name):
    data = migration.source_bytes(name)
    _put(migration, name, data[: len(data) // 2])


def empty_partition(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    prefix = name.rsplit("/", 1)[0] + "/"
    for blob in migration.source.container_client.list_blobs(name_starts_with=prefix):
        _put(migration, blob.name, _parquet(arrow.slice(0, 0)))


def date_outside_partition(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    _put(migration, name, _parquet(set_values(arrow, "FLX_DIS_DTD", {1: dt.date(2024, 5, 1)})))


def negative_amount(migration, name):
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    _put(migration, name, _parquet(set_values(arrow, "PHA_ACT_PRU", {2: -3.5})))


def utf8_csv(migration, name):
    text = migration.source_bytes(name).decode("latin-1")
    assert any(ord(c) > 127 for c in text), "the export holds accented French text"
    _put(migration, name, text.encode("utf-8"))


CASES = [
    ("beneficiaires", "IR_BEN_R", "2024-06-30", added_column, "expect_table_columns_to_match_ordered_list"),
    ("beneficiaires", "IR_BEN_R", "2024-06-30", removed_column, "expect_table_columns_to_match_ordered_list"),
    ("beneficiaires", "IR_BEN_R", "2024-06-30", retyped_column, "expect_table_column_types_to_match_schema"),
    ("beneficiaires", "IR_BEN_R", "2024-06-30", null_key, "expect_column_values_to_not_be_null(BEN_NIR_PSA)"),
    ("beneficiaires", "IR_BEN_R", "2024-06-30", truncated_parquet, "expect_file_to_be_valid_parquet"),
    ("beneficiaires", "IR_BEN_R", "2024-06-30", empty_partition, "expect_table_row_count_to_be_between"),
    ("dcir", "ER_PHA_F", "2024-01-01", date_outside_partition, "expect_column_values_to_be_between(FLX_DIS_DTD)"),
    ("dcir", "ER_PHA_F", "2024-01-01", negative_amount, "expect_column_values_to_be_between(PHA_ACT_PRU)"),
    ("causes_deces", "KI_CCI_R", "2023", utf8_csv, "expect_file_encoding_to_be_latin1"),
]


@pytest.mark.parametrize(
    ("domain", "table_name", "partition", "corrupt", "rule"), CASES, ids=[case[3].__name__ for case in CASES]
)
def test_bad_input_is_quarantined_with_a_clear_error(migration, domain, table_name, partition, corrupt, rule):
    migration.seed(domains=[domain])
    name = _first_object(migration, domain, table_name, partition)
    corrupt(migration, name)

    run = migration.run(domain, partition)
    assert str(run.state) == "failed"
    record = migration.ledger.get(domain, table_name, partition)
    assert record.state == "quarantined", record.last_error
    assert f"domain={domain} table={table_name} partition={partition}" in record.last_error
    assert rule in record.last_error
    if corrupt is not empty_partition:
        assert name in record.last_error, "the error names the object"
    table = migration.catalogue.domain(domain).table(table_name)
    assert migration.target_keys(partition_dir(domain, table_name, table.partition_column, partition)) == []
    assert (
        migration.target.get_json(f"_manifests/{domain}/{table_name}/{table.partition_column}={partition}.json") is None
    )
    assert migration.target_keys(f"_staging/{domain}/{table_name}/") == []
    assert any(k.endswith(".json") for k in migration.target_keys(f"_quarantine/{domain}/{table_name}/"))
