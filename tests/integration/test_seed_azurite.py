"""Seeding the real Azurite: every file of every partition under the source layout, readable back."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from conftest import read_table_bytes

from hdh_synthetic import add_late_rows, blob_name, generate_file, main_seed, seed_azure

pytestmark = pytest.mark.integration

SEED, ROWS, FILES = 11, 90, 2


def _rows(table: pa.Table, columns: list[str]) -> set[tuple]:
    return set(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def _generated(catalogue, table, partition, file_index) -> pa.Table:
    return generate_file(
        catalogue, table, partition, file_index, seed=SEED, rows_per_partition=ROWS, files_per_partition=FILES
    )


def test_seed_uploads_every_partition_file_by_file_and_the_blobs_read_back_to_the_rows(migration):
    catalogue = migration.catalogue
    domains = ["causes_deces", "pmsi_mco"]
    summary = seed_azure(catalogue, seed=SEED, rows_per_partition=ROWS, files_per_partition=FILES, domains=domains)

    expected = {
        blob_name(table, partition, index): (table, partition, index)
        for domain in map(catalogue.domain, domains)
        for partition in domain.partitions()
        for table in domain.tables
        for index in range(FILES)
    }
    container = migration.source.container_client
    sizes = {blob.name: blob.size for blob in container.list_blobs()}
    assert set(sizes) == set(expected)
    assert "causes_deces/KI_CCI_R/FLX_PER_ANN=2023/part-00001.csv" in sizes
    assert "pmsi_mco/T_MCOaaC/SOR_ANN=2022/part-00000.parquet" in sizes
    for domain in map(catalogue.domain, domains):
        names = [n for n in expected if n.startswith(f"{domain.name}/")]
        partitions = len(domain.partitions())
        assert summary[domain.name] == {
            "objects": partitions * len(domain.tables) * FILES,
            "rows": partitions * len(domain.tables) * ROWS,
            "bytes": sum(sizes[n] for n in names),
        }
    for name, (table, partition, index) in expected.items():
        data = container.download_blob(name).readall()
        assert read_table_bytes(data, table).equals(_generated(catalogue, table, partition, index)), name


def test_late_rows_land_in_the_next_part_of_every_table_and_keep_the_join(migration):
    catalogue = migration.catalogue
    volume = {"seed": SEED, "rows_per_partition": ROWS, "files_per_partition": FILES}
    seed_azure(catalogue, domains=["dcir"], **volume)

    first = add_late_rows(catalogue, "dcir", "2024-03-01", **volume)
    second = add_late_rows(catalogue, "dcir", "2024-03-01", **volume)
    assert first == [
        "dcir/ER_PHA_F/FLX_DIS_DTD=2024-03-01/part-00002.parquet",
        "dcir/ER_PRS_F/FLX_DIS_DTD=2024-03-01/part-00002.parquet",
    ]
    assert second == [name.replace("part-00002", "part-00003") for name in first]

    container = migration.source.container_client
    lines, claims = (
        read_table_bytes(container.download_blob(name).readall(), catalogue.domain("dcir").table(name.split("/")[1]))
        for name in second
    )
    keys = list(catalogue.domain("dcir").table("ER_PRS_F").primary_key)
    assert _rows(lines, keys) <= _rows(claims, keys)
    assert len(list(container.list_blobs(name_starts_with="dcir/ER_PRS_F/FLX_DIS_DTD=2024-03-01/"))) == FILES + 2


def test_the_seed_command_seeds_the_chosen_domain(migration, capsys):
    argv = ["--catalogue", str(migration.catalogue_path), "--seed", "5", "--rows-per-partition", "40"]
    assert main_seed([*argv, "--files-per-partition", "1", "--domain", "beneficiaires"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"beneficiaires": {"objects": 1, "rows": 40, "bytes": summary["beneficiaires"]["bytes"]}}
    names = [blob.name for blob in migration.source.container_client.list_blobs()]
    assert names == ["beneficiaires/IR_BEN_R/snapshot=2024-06-30/part-00000.parquet"]
