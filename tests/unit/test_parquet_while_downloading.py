"""A parquet source is decoded row group by row group as its bytes land, from a footer read first."""

from __future__ import annotations

import io
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdh_migration.catalogue import load_catalogue
from hdh_migration.errors import StructuralError, Where
from hdh_migration.readers import Landed as _Landed
from hdh_migration.readers import parquet_batches as _parquet_batches
from hdh_migration.schema import load_table_schema
from hdh_synthetic import generate_file

FOOTER_TAIL = 8  # footer length (4 bytes) and magic (4 bytes)


def _source(rows: int = 5000):
    catalogue = load_catalogue()
    table = catalogue.domain("beneficiaires").table("IR_BEN_R")
    expected = load_table_schema(table.schema_path).arrow_schema()
    arrow = generate_file(catalogue, table, "2024-06-30", 0, seed=3, rows_per_partition=rows, files_per_partition=1)
    sink = io.BytesIO()
    pq.write_table(arrow, sink, row_group_size=1000, compression="zstd")
    data = sink.getvalue()
    footer_length = int.from_bytes(data[-8:-4], "little") + FOOTER_TAIL
    return table, expected, arrow, data, data[-footer_length:]


def _spool(path, data: bytes, landed: _Landed, stop_at: int | None = None) -> threading.Thread:
    """Write the bytes in small ranges, as a download does, telling ``landed`` after each."""

    def write():
        try:
            with open(path, "wb") as spool:
                for offset in range(0, stop_at if stop_at is not None else len(data), 4096):
                    chunk = data[offset : offset + 4096]
                    spool.write(chunk)
                    spool.flush()
                    landed(len(chunk))
                    time.sleep(0.0005)
        finally:
            landed.finish()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_row_groups_are_decoded_while_the_file_arrives(tmp_path):
    table, expected, arrow, data, footer = _source()
    landed = _Landed(len(data))
    path = tmp_path / "source"
    writer = _spool(path, data, landed)
    decoded, sizes_seen = [], []
    for batch in _parquet_batches(path, footer, landed, table, expected, Where("dcir")):
        decoded.append(batch)
        sizes_seen.append(path.stat().st_size)
    writer.join()
    assert pa.Table.from_batches(decoded).equals(arrow)
    assert len(decoded) == 5
    assert sizes_seen[0] < len(data), "the first row group was decoded before the file was complete"


def test_a_download_that_stops_early_stops_the_batches_without_an_error_of_their_own(tmp_path):
    table, expected, _, data, footer = _source()
    landed = _Landed(len(data))
    path = tmp_path / "source"
    writer = _spool(path, data, landed, stop_at=len(data) // 2)
    decoded = list(_parquet_batches(path, footer, landed, table, expected, Where("dcir")))
    writer.join()
    assert 0 < len(decoded) < 5 and landed.stopped_early


def test_a_footer_pointing_past_the_end_of_the_file_is_refused(tmp_path):
    table, expected, _, data, footer = _source()
    cut = data[: len(data) // 2] + footer  # the body cut, the footer kept: its last row groups are past the end
    landed = _Landed(len(cut))
    path = tmp_path / "source"
    _spool(path, cut, landed).join()
    with pytest.raises(StructuralError, match="not a readable parquet file") as refused:
        list(_parquet_batches(path, footer, landed, table, expected, Where("dcir")))
    assert refused.value.expectation == "expect_file_to_be_valid_parquet"
