"""Source readers: a partition object decoded as typed record batches, or a clear structural error.

A parquet source is read as its row groups land in the spool (its footer read first, its columns and
types checked against the table's schema); a CSV export (Latin-1, ';', decimal comma) is streamed
with the schema's types. An error names the object and the rule, never a value: a decoder's own
message may quote the bytes it choked on, so only its class is kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hdh_migration.catalogue import Table
from hdh_migration.errors import IntegrityError, StructuralError, Where

BATCH_ROWS = 16_384  # bounded memory per batch; smaller batches cost nothing measurable in Arrow


def check_columns(actual: list[str], table: Table, expected, label: Where) -> None:
    """The file's columns are the schema's, in order. The error names only the schema's columns: the file's
    own names may be anything (a headerless CSV's first row), so they appear as counts and positions."""
    if actual == expected.names:
        return
    known = set(expected.names)
    missing = [n for n in expected.names if n not in actual]
    unexpected = [position for position, name in enumerate(actual, 1) if name not in known]
    details = [f"the file has {len(actual)} columns, the schema {len(expected.names)}"]
    if missing:
        details.append(f"missing {', '.join(missing)}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected column(s) at position(s) {', '.join(map(str, unexpected[:20]))}")
    if not missing and not unexpected:
        position = next(i for i, (a, b) in enumerate(zip(actual, expected.names, strict=False), 1) if a != b)
        details.append(f"another order: position {position} should be {expected.names[position - 1]}")
    header_read = table.format == "csv" and table.csv.header
    raise StructuralError(
        f"{label}: columns differ from the schema {table.schema_path.name} (rule: "
        f"expect_table_columns_to_match_ordered_list; {'; '.join(details)}). Fix the export, or update the schema "
        "file if the SNDS dictionary changed"
        + (", or set 'header: false' in the catalogue if the file has no header line" if header_read else ""),
        "expect_table_columns_to_match_ordered_list",
        ref=label,
        column_list=expected.names,
    )


def unreadable(label: Where, rule: str, error: BaseException, next_step: str) -> StructuralError:
    """A file the readers could not decode: the rule and the exception's class, never its text (a
    library's message may quote the bytes or the value it choked on)."""
    return StructuralError(f"{label}: {next_step} (rule: {rule}; {type(error).__name__})", rule, ref=label)


def open_parquet(path: Path, metadata=None):
    """A parquet file read as a buffered stream, without pre-buffering whole row groups.

    With ``use_threads=False`` on ``iter_batches`` this keeps the reader at about one decoded row
    group (measured: 115 MB above the libraries instead of 189 MB for 65,536-row ER_PRS_F groups).
    ``metadata``: the file's footer, already read (the file may still be arriving).
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, metadata=metadata, pre_buffer=False, buffer_size=1 << 20)


PARQUET_MAGIC = b"PAR1"


FOOTER_GUESS = 64 << 10  # one ranged read holds the footer of every table here


def unreadable_parquet(label: Where, error: Exception) -> StructuralError:
    return unreadable(
        label,
        "expect_file_to_be_valid_parquet",
        error,
        "not a readable parquet file: the object is truncated or corrupt. Re-export it, then re-run the partition",
    )


def parquet_footer(source, obj, label: Where) -> bytes:
    """The footer of a parquet source (metadata, its length, the magic), read before the rest of it."""
    tail = source.read_range(obj, max(0, obj.size - FOOTER_GUESS), min(obj.size, FOOTER_GUESS))
    if len(tail) < 12 or tail[-4:] != PARQUET_MAGIC:
        raise unreadable_parquet(label, ValueError("no parquet footer"))
    length = int.from_bytes(tail[-8:-4], "little") + 8
    if length + 4 > obj.size:
        raise unreadable_parquet(label, ValueError("footer longer than the file"))
    if length > len(tail):
        tail = source.read_range(obj, obj.size - length, length)
    return tail[-length:]


def row_group_end(row_group) -> int:
    """The offset just past a row group's last column chunk."""
    end = 0
    for index in range(row_group.num_columns):
        column = row_group.column(index)
        first_page = column.dictionary_page_offset or column.data_page_offset
        end = max(end, first_page + column.total_compressed_size)
    return end


class Landed:
    """How many bytes of a spool file are on disk, for a reader that follows its download."""

    def __init__(self, total: int):
        import threading

        self._changed = threading.Condition()
        self._total = total
        self._bytes = 0
        self._finished = False

    def __call__(self, nbytes: int) -> None:
        with self._changed:
            self._bytes += nbytes
            self._changed.notify_all()

    def finish(self) -> None:
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def wait_for(self, offset: int) -> bool:
        """Whether the first ``offset`` bytes landed; False if the download ended before them."""
        with self._changed:
            self._changed.wait_for(lambda: self._bytes >= offset or self._finished)
            return self._bytes >= offset

    @property
    def stopped_early(self) -> bool:
        with self._changed:
            return self._finished and self._bytes < self._total


def parquet_batches(path: Path, footer: bytes, landed: Landed, table: Table, expected, label: Where):
    """Record batches of a parquet source as its row groups land, after checking its columns and types.

    ``footer`` was read first, so each row group is decoded as soon as the download has written it.
    If the download stops early, so do the batches: the caller surfaces the download's error.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(pa.BufferReader(footer))
        schema = metadata.schema.to_arrow_schema()
        check_columns(schema.names, table, expected, label)
        wrong = [f.name for f in expected if not schema.field(f.name).type.equals(f.type)]
        if wrong:
            raise StructuralError(
                f"{label}: column types differ from the schema {table.schema_path.name} for {wrong} (rule: "
                "expect_table_column_types_to_match_schema). Fix the export's types",
                "expect_table_column_types_to_match_schema",
                ref=label,
                column_list=wrong,
            )
        unreadable = unreadable_codecs(metadata)
        if unreadable:
            raise StructuralError(
                f"{label}: the parquet file is compressed with {', '.join(unreadable)}, which pyarrow cannot read "
                "(rule: expect_file_to_be_valid_parquet). Re-export it with zstd, snappy or gzip, then re-run the "
                "partition",
                "expect_file_to_be_valid_parquet",
                ref=label,
            )
        for index in range(metadata.num_row_groups):
            if not landed.wait_for(row_group_end(metadata.row_group(index))):
                if landed.stopped_early:
                    return
                raise unreadable_parquet(label, ValueError("a row group ends past the end of the file"))
            # Opened once the row group is on disk: Arrow bounds its reads by the file's size at opening.
            parquet = open_parquet(path, metadata)
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[index], use_threads=False)
    except StructuralError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is the fault
        raise unreadable_parquet(label, err) from None


def unreadable_codecs(metadata) -> list[str]:
    """The compression codecs of a parquet file's column chunks that this pyarrow cannot decode."""
    import pyarrow as pa

    def readable(codec: str) -> bool:
        try:
            return codec == "UNCOMPRESSED" or pa.Codec.is_available(codec.lower())
        except ValueError:  # a codec pyarrow does not even name (LZO)
            return False

    codecs = {
        metadata.row_group(group).column(column).compression
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    }
    return sorted(codec for codec in codecs if not readable(codec))


def check_encoding(path: Path, table: Table, label: Where) -> None:
    """Refuse a CSV declared Latin-1 that is in fact UTF-8: Latin-1 decodes any byte, silently wrong."""
    if table.csv.encoding.lower().replace("_", "-") not in ("latin-1", "iso-8859-1", "latin1"):
        return
    utf8_sequence = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
    with open(path, "rb") as handle:
        while chunk := handle.read(4 << 20):
            if b"\x00" in chunk or utf8_sequence.search(chunk):
                raise StructuralError(
                    f"{label}: the CSV is not Latin-1 (rule: expect_file_encoding_to_be_latin1; UTF-8 or UTF-16 "
                    "byte sequences found). Re-export it in Latin-1, or declare its encoding in the catalogue",
                    "expect_file_encoding_to_be_latin1",
                    ref=label,
                )


# The positions Arrow's CSV errors give (its messages also quote the row): kept, the rest dropped.
_CSV_COLUMNS = re.compile(r"Expected (\d+) columns, got (\d+)")


_CSV_COLUMN = re.compile(r"CSV column #(\d+)")  # 0-based


def csv_parse_error(error: BaseException, table: Table, expected, label: Where) -> StructuralError:
    """Arrow's CSV error as counts and positions only (the column named from the schema): its message quotes
    the offending line or cell, so it is read here and never repeated."""
    text = str(error)
    counts = _CSV_COLUMNS.search(text)
    if counts:
        return StructuralError(
            f"{label}: a line of the CSV has {counts[2]} fields where the schema {table.schema_path.name} has "
            f"{counts[1]} columns (rule: expect_table_columns_to_match_ordered_list). Fix the export (a delimiter "
            f"inside an unquoted value, or a wrong 'delimiter' in the catalogue), then re-run the partition",
            "expect_table_columns_to_match_ordered_list",
            ref=label,
            column_list=expected.names,
        )
    column = _CSV_COLUMN.search(text)
    detail = type(error).__name__
    if column and int(column[1]) < len(expected.names):
        detail = f"a value of column {expected.names[int(column[1])]} (#{int(column[1]) + 1}) is not its declared type"
    hint = "" if table.csv.header else ", or set 'header: true' in the catalogue if its first line names the columns"
    return StructuralError(
        f"{label}: the CSV does not parse with the schema's types (rule: expect_csv_to_parse_with_schema_types; "
        f"{detail}). Fix the export{hint}, then re-run the partition",
        "expect_csv_to_parse_with_schema_types",
        ref=label,
    )


def csv_batches(path: Path, table: Table, expected, label: Where):
    """Stream a French CSV export (Latin-1, ';', decimal comma) as typed record batches.

    With ``header: false`` the file has no header line: its columns are the schema's, in order.
    """
    import pyarrow as pa
    from pyarrow import csv

    dialect = table.csv
    check_encoding(path, table, label)
    if dialect.header:
        try:
            with open(path, encoding=dialect.encoding, newline="") as handle:
                header = handle.readline().rstrip("\r\n").split(dialect.delimiter)
        except UnicodeError as err:
            raise unreadable(
                label,
                "expect_csv_to_parse_with_schema_types",
                err,
                f"the CSV's first line is not {dialect.encoding}. Re-export it, or declare its encoding in the catalogue",
            ) from None
        check_columns([name.strip('"') for name in header], table, expected, label)
    try:
        reader = csv.open_csv(
            path,
            read_options=csv.ReadOptions(
                encoding=dialect.encoding,
                block_size=4 << 20,
                column_names=None if dialect.header else expected.names,
            ),
            parse_options=csv.ParseOptions(delimiter=dialect.delimiter),
            convert_options=csv.ConvertOptions(
                column_types=expected,
                decimal_point=dialect.decimal_point,
                strings_can_be_null=True,
                true_values=["1", "true", "True"],
                false_values=["0", "false", "False"],
            ),
        )
        yield from reader
    except pa.ArrowInvalid as err:
        raise csv_parse_error(err, table, expected, label) from None
    except Exception as err:  # noqa: BLE001 - whatever the decoder raises, the file is the fault
        raise unreadable(
            label,
            "expect_csv_to_parse_with_schema_types",
            err,
            "the CSV cannot be decoded with the catalogue's dialect. Fix the export, then re-run the partition",
        ) from None


def check_spooled_footer(path: Path, footer: bytes, label: Where) -> None:
    """The footer the checks decoded with is the one in the spooled bytes (the bytes uploaded)."""
    with open(path, "rb") as spooled:
        spooled.seek(-len(footer), os.SEEK_END)
        if spooled.read() != footer:
            raise IntegrityError(
                f"{label}: the parquet footer read first differs from the one downloaded after it (rule: the "
                "checked bytes are the uploaded bytes). Re-run the partition; if it persists, report a bug",
                ref=label,
            )
