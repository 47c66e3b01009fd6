"""Deterministic synthetic SNDS data: the demo's source, the tests' fixtures, the benchmarks' load.

Every cell is a pure function of (seed, table, partition, column, row number), computed with a
counter-based hash rather than a stateful random stream. That is what lets one table recompute the
rows of another anywhere: a pharmacy line recomputes the nine keys of its claim, a death certificate
the pseudonyms of its beneficiary. Foreign keys therefore join across files, tables and domains while
each file is generated on its own, in record batches of at most 64k rows: memory stays bounded
whatever the volume.

A column takes its values from the first rule that applies:

1. the partition column holds the partition value;
2. the columns of a foreign key to a catalogue table are copied from a referenced row, and so are
   the other columns the referenced table has under the same name and type (a beneficiary's sex and
   birth year follow their pseudonym). The referenced row is the same row number when the foreign
   key covers the table's primary key (T_MCOaaC extends T_MCOaaB one to one), a row of the same
   file in the same partition for a table of the same domain (ER_PHA_F lines of ER_PRS_F claims),
   otherwise any row of the referenced domain's cutover partition (the IR_BEN_R snapshot);
3. unique columns, and one column of the primary key (the catalogue's ``primary_key``, else the
   schema's ``primaryKey``) that has none, are a bijection of the row number: keys stay unique
   across every file of a partition, late files included;
4. a nomenclature the column names or describes gives real codes from a small built-in sample
   (``nomenclatures``: ICD-10, CCAM, FINESS, ATC, CIP, UCD);
5. name rules give plausible SNDS values: GHM codes, départements with 2A/2B, sex, French free
   text, dates ordered care <= processing <= flux within the partition, month-only dates (``%m``)
   on the first of their month, years of the row's events (birth years only for births);
6. anything else follows its Table Schema type, length and constraints, narrowed to the range its
   meaning allows (ages, rates, days, counts), so a new table generates from its schema file alone.

The beneficiary pool is IR_BEN_R's snapshot: ``rows_per_partition`` beneficiaries, so seed every
domain with the same volume. No run of digits reaches 13 characters, in strings or integers, so
nothing generated can look like a raw NIR (13 digits, 15 with its key) to the privacy guard.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hdh_migration.catalogue import Catalogue, CsvDialect, Table, load_catalogue, partition_start
from hdh_migration.layout import part_name
from hdh_migration.schema import Column, TableSchema, arrow_type, load_table_schema
from hdh_synthetic import nomenclatures

DEFAULT_WASB_CONN_ID = "hdh_azure_source"
BATCH_ROWS = 65_536
PARQUET_COMPRESSION = "zstd"

# A raw NIR is 13 digits, 15 with its key: integers keep at most 12 digits, and strings of 13
# characters or more get a letter every 8 characters.
_MAX_INTEGER = 10**12 - 1
_LETTER_EVERY = 8
_DIGIT_STRING_MAX = 13
_HEX_FROM_WIDTH = 16
_DIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_LETTERS = np.frombuffer(b"GHJKLMNPQRSTUVWXYZ", dtype=np.uint8)  # never hex digits
_IDENTITY_MAX_DIGITS = 15  # 16^15 = 2^60: room for any row count, no uint64 overflow

_TYPICAL_NUMBER_MAX = 9_999  # amounts, prices, rates: a 9-digit declared length is not a typical value
_NULL_RATES = (0.0, 0.0, 0.0, 0.01, 0.05, 0.2, 0.5, 0.9)  # SNDS extracts have many sparse columns
_DAYS_BEFORE_MONTHLY_FLUX = 180  # DCIR care is ~99% reported within 6 months
_SNAPSHOT_HISTORY_DAYS = 3650
_CARE_SPAN_DAYS = 14
_OLDEST_AGE_YEARS = 95
_EPOCH = dt.date(1970, 1, 1)

_GHM = ("05M092", "04M053", "01C041", "06K04J", "14Z14A", "15M05A", "23M20T", "28Z04Z", "11M04T", "08C482")
_METRO_DEPARTMENTS = tuple(f"{n:02d}" for n in range(1, 96) if n != 20) + ("2A", "2B")
_OVERSEAS_DEPARTMENTS = ("971", "972", "973", "974", "976")
# Only Latin-1 characters: the CépiDc export is Latin-1, which has no em dash, no œ, no curly quote.
# Some values carry ';' and '"' on purpose, so the CSV quoting is exercised.
_PLACES = (
    "Hôpital Sainte-Anne", "Domicile - Besançon", "Voie publique, Nîmes", "Clinique Saint-Éloi",
    "Maison de retraite Les Glycines", "Centre hospitalier d'Orléans", "Forêt de Fontainebleau",
    "Rue de l'Église; Sète", 'Lieu-dit "Les Pâquerettes", Ardèche', "Établissement pénitentiaire de Fresnes",
    "Plage de Saint-Raphaël", "Chantier naval, Saint-Nazaire", "Piscine municipale d'Évry",
)  # fmt: skip
_PROFESSIONS = (
    "Aide-soignante", "Éleveur", "Infirmière", "Boulanger-pâtissier", "Agricultrice", "Ébéniste",
    "Employée de crèche", "Ingénieur d'études", "Cheffe de rayon", "Sans profession", "Maçon",
    "Secrétaire médicale", "Étudiante", "Aide à domicile", "Professeure des écoles",
)  # fmt: skip
_PLAUSIBLE_VALUES = {
    "BEN_SEX_COD": (1, 2),
    "COD_SEX": ("1", "2"),
    "BEN_RNG_GEM": (1, 1, 1, 1, 1, 1, 1, 1, 2, 3),  # twins are rare
}


def _departments(width: int) -> tuple[str, ...]:
    """Département codes as SNDS writes them: '075', '02A', '971' on 3 characters, '75', '2A' on 2."""
    if width >= 3:
        return tuple(f"0{d}" for d in _METRO_DEPARTMENTS) + _OVERSEAS_DEPARTMENTS
    return _METRO_DEPARTMENTS


# string columns by name: the values for a column of a given width (too long ones are dropped later)
_VOCABULARIES = (
    (re.compile(r"DPT|_DEP$"), _departments),
    (re.compile(r"CIM|DGN"), lambda width: nomenclatures.ICD10),
    (re.compile(r"GHM"), lambda width: _GHM),
    (re.compile(r"(PFG|PRO).*_LIB$"), lambda width: _PROFESSIONS),
    (re.compile(r"_LIB$"), lambda width: _PLACES),
)
_PROCESSING_DATE = re.compile(r"^FLX_")
_END_DATE = re.compile(r"(_DTF|_AMF)$|^SOR_")


# --- volume -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Volume:
    """How much to generate: the ``**volume`` keyword arguments of the public functions, and their defaults."""

    seed: int = 42
    rows_per_partition: int = 2000
    files_per_partition: int = 3

    def __post_init__(self):
        if self.rows_per_partition < 1 or self.files_per_partition < 1:
            raise ValueError(
                f"rows_per_partition ({self.rows_per_partition}) and files_per_partition "
                f"({self.files_per_partition}) must be at least 1"
            )

    @property
    def late_file_rows(self) -> int:
        return -(-self.rows_per_partition // self.files_per_partition)

    def file_rows(self, file_index: int) -> tuple[int, int]:
        """The row numbers [start, end) of a file; indexes past files_per_partition are late files."""
        if file_index < 0:
            raise ValueError(f"file index {file_index} must be >= 0")
        rows, files = self.rows_per_partition, self.files_per_partition
        if file_index < files:
            return file_index * rows // files, (file_index + 1) * rows // files
        start = rows + (file_index - files) * self.late_file_rows
        return start, start + self.late_file_rows

    def file_bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row number, the [start, end) of the file that holds it (vectorised file_rows)."""
        total, files, late = self.rows_per_partition, self.files_per_partition, self.late_file_rows
        regular = rows < total
        index = np.where(regular, ((rows + 1) * files - 1) // total, files + (rows - total) // late)
        start = np.where(regular, index * total // files, total + (index - files) * late)
        end = np.where(regular, (index + 1) * total // files, start + late)
        return start, end


# --- counter-based randomness ---------------------------------------------------------------------


def _stable_key(*parts) -> int:
    """A 64-bit key from text, identical on every machine and run (unlike hash())."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _hash_bits(key: int, rows: np.ndarray) -> np.ndarray:
    """64 uniform bits per row number: splitmix64 of (row number, key)."""
    z = rows * np.uint64(0x9E3779B97F4A7C15)
    z += np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _below(bits: np.ndarray, probability: float) -> np.ndarray:
    return bits < np.uint64(int(probability * 2**64))


def _uniform_ints(bits: np.ndarray, low: int, high) -> np.ndarray:
    """Integers in [low, high]; ``high`` may be an array (one bound per row)."""
    span = np.asarray(high, dtype=np.int64) - low + 1
    divisor = np.uint64(span) if span.ndim == 0 else span.astype(np.uint64)  # a scalar divides much faster
    values = (bits % divisor).view(np.int64)  # below 2^63: the same numbers
    values += low
    return values


def _permute(rows: np.ndarray, size: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, size): distinct row numbers always get distinct values.

    An invertible mix on the smallest power of two holding ``size``, applied again to the values
    that land outside (cycle walking), which keeps it a bijection of [0, size) itself.
    """
    bits = max(1, (size - 1).bit_length())
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64((bits + 1) // 2)
    multipliers = [np.uint64(_stable_key(key, i) | 1) for i in range(2)]
    offset = np.uint64(key)
    values = rows.astype(np.uint64)
    pending = np.arange(len(values))
    current = values.copy()
    while pending.size:
        x = current
        for multiplier in multipliers:
            x = (x * multiplier + offset) & mask
            x ^= x >> shift
        values[pending] = x
        outside = x >= np.uint64(size)
        pending, current = pending[outside], x[outside]
    return values


# --- column specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What values a column may hold, from its Table Schema type, length and constraints."""

    type: str
    width: int | None = None
    min_width: int = 0
    low: float | None = None
    high: float | None = None
    scale: int = 0
    enum: tuple | None = None

    def allows(self, value) -> bool:
        if self.enum is not None and value not in self.enum:
            return False
        if isinstance(value, str):
            return self.min_width <= len(value) <= (self.width or len(value))
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def contains(self, other: _Spec) -> bool:
        """Every value ``other`` generates is a valid value here (to copy a column across tables)."""
        if self.type != other.type or other.scale > self.scale:
            return False
        if self.enum is not None and (other.enum is None or not set(other.enum) <= set(self.enum)):
            return False
        if self.type == "string":
            return self.width >= other.width and self.min_width <= other.min_width
        low_ok = self.low is None or (other.low is not None and other.low >= self.low)
        high_ok = self.high is None or (other.high is not None and other.high <= self.high)
        return low_ok and high_ok

    def intersect(self, other: _Spec) -> _Spec:
        """The values valid in both columns: a key shared by two tables must fit both schemas."""

        def tighter(a, b, pick):
            return b if a is None else a if b is None else pick(a, b)

        if self.enum is None or other.enum is None:
            enum = self.enum or other.enum
        else:
            enum = tuple(v for v in self.enum if v in other.enum)
        return _Spec(
            type=self.type,
            width=tighter(self.width, other.width, min),
            min_width=max(self.min_width, other.min_width),
            low=tighter(self.low, other.low, max),
            high=tighter(self.high, other.high, min),
            scale=min(self.scale, other.scale),
            enum=enum,
        )


def _column_spec(column: Column) -> _Spec:
    constraints = column.constraints
    # "" is the schemas' missing value: an enum listing it allows nulls, not empty strings
    enum = tuple(v for v in constraints["enum"] if v != "") if "enum" in constraints else None
    if column.type == "string":
        min_width = int(constraints.get("minLength", 0))
        return _Spec("string", width=column.max_length or max(min_width, 8), min_width=min_width, enum=enum)
    if column.type in ("integer", "number"):
        digits, _, decimals = (column.length or "").partition(",")
        integer_digits = int(digits) if digits.isdigit() else 9
        high = min(10**integer_digits - 1, _MAX_INTEGER if column.type == "integer" else _TYPICAL_NUMBER_MAX)
        high = min(high, constraints.get("maximum", high))
        scale = 0 if column.type == "integer" else (int(decimals) if decimals.isdigit() else 2)
        return _Spec(column.type, low=constraints.get("minimum", 0), high=high, scale=scale, enum=enum)
    return _Spec(column.type, low=constraints.get("minimum"), high=constraints.get("maximum"), enum=enum)


def _plausible_spec(column: Column) -> _Spec:
    """The column's spec narrowed to the range its meaning allows (no 2,527-year ages, no 2,626% rates)."""
    spec = _column_spec(column)
    meaning = nomenclatures.plausible_range(column) if spec.type in ("integer", "number") else None
    if meaning is None or spec.enum is not None:
        return spec
    low, high = max(spec.low, meaning[0]), min(spec.high, meaning[1])
    return dataclasses.replace(spec, low=low, high=high) if low <= high else spec


def _fits(column: Column, spec: _Spec, code) -> bool:
    """A nomenclature's code fits the column as declared. Its integers may reach 13 digits: the generator's
    12-digit cap keeps random numbers from looking like a NIR, and the samples' codes (CIP13 from 34009)
    never do."""
    if not isinstance(code, int):
        return spec.allows(code)
    digits = (column.length or "").partition(",")[0]
    constraints = column.constraints
    return (
        (not digits.isdigit() or len(str(abs(code))) <= int(digits))
        and constraints.get("minimum", code) <= code <= constraints.get("maximum", code)
        and (spec.enum is None or code in spec.enum)
    )


def _foreign_keys(schema: TableSchema) -> Iterator[tuple[str, list[str], list[str]]]:
    """(referenced table, columns here, columns there) for each declared foreign key."""

    def as_list(value):
        return [value] if isinstance(value, str) else list(value)

    for foreign_key in schema.foreign_keys:
        reference = foreign_key["reference"]
        yield reference["resource"], as_list(foreign_key["fields"]), as_list(reference["fields"])


def _catalogue_table(catalogue: Catalogue, name: str) -> Table | None:
    return next((t for d in catalogue.domains for t in d.tables if t.name == name), None)


@lru_cache(maxsize=8)
def _key_specs(catalogue: Catalogue) -> dict[tuple[str, str], _Spec]:
    """The spec of every column that a foreign key links, intersected over everything it links to.

    ER_PRS_F declares PRS_ORD_NUM on 5 digits where ER_PHA_F says 1 to 100: the claims' keys must
    satisfy both, or the pharmacy lines that copy them would break their own schema.
    """
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(node):
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    specs = {}
    for domain in catalogue.domains:
        for table in domain.tables:
            schema = load_table_schema(table.schema_path)
            for resource, here, there in _foreign_keys(schema):
                referenced = _catalogue_table(catalogue, resource)
                if referenced is None:
                    continue
                referenced_schema = load_table_schema(referenced.schema_path)
                for mine, theirs in zip(here, there, strict=True):
                    specs[(table.name, mine)] = _column_spec(schema.column(mine))
                    specs[(resource, theirs)] = _column_spec(referenced_schema.column(theirs))
                    parent[root((table.name, mine))] = root((resource, theirs))
    merged: dict[tuple[str, str], _Spec] = {}
    for node, spec in specs.items():
        top = root(node)
        merged[top] = merged[top].intersect(spec) if top in merged else spec
    return {node: merged[root(node)] for node in specs}


# --- per-table plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    """Columns of this table copied from rows of a referenced table, through one foreign key."""

    name: str  # the foreign key, e.g. "IR_BEN_R(BEN_NIR_PSA, BEN_RNG_GEM)"
    parent: _TableContext
    columns: dict[str, str]  # column here -> column there
    mirrors_rows: bool
    same_domain: bool


@dataclass(eq=False)
class _TableContext:
    """Everything that does not depend on the row: specs, links, identity columns, the date window."""

    catalogue: Catalogue
    table: Table
    partition: str
    volume: _Volume
    schema: TableSchema = field(init=False)
    grain: str = field(init=False)

    def __post_init__(self):
        self.schema = load_table_schema(self.table.schema_path)
        # The plan's key is what the transfer checks: a table whose schema declares none may have one there.
        self.primary_key = tuple(self.table.primary_key or self.schema.primary_key)
        self.grain = self.catalogue.domain(self.table.domain).grain
        self.scope = _stable_key(self.volume.seed, self.table.domain, self.table.name, self.partition)
        self._keys: dict[str, int] = {}

    def key(self, tag: str) -> int:
        if tag not in self._keys:
            self._keys[tag] = _stable_key(self.scope, tag)
        return self._keys[tag]

    @cached_property
    def specs(self) -> dict[str, _Spec]:
        linked = _key_specs(self.catalogue)
        return {c.name: linked.get((self.table.name, c.name)) or _plausible_spec(c) for c in self.schema.columns}

    @cached_property
    def links(self) -> list[_Link]:
        primary_key = set(self.primary_key)
        references, sourced = [], set()
        for resource, here, there in _foreign_keys(self.schema):
            referenced = _catalogue_table(self.catalogue, resource)
            if referenced is None or sourced & set(here):
                continue
            same_domain = referenced.domain == self.table.domain
            partition = self.partition if same_domain else self.catalogue.domain(referenced.domain).cutover_partition
            parent = _context(self.catalogue, referenced, partition, self.volume)
            references.append(
                (f"{resource}({', '.join(here)})", parent, dict(zip(here, there, strict=True)), same_domain)
            )
            sourced |= set(here)
        links = []
        for name, parent, columns, same_domain in references:
            attributes = {c: c for c in self._shared_attributes(parent) if c not in sourced}
            sourced |= set(attributes)
            mirrors_rows = bool(primary_key) and primary_key <= set(columns) | {self.table.partition_column}
            links.append(_Link(name, parent, columns | attributes, mirrors_rows, same_domain))
        return links

    def _shared_attributes(self, parent: _TableContext) -> list[str]:
        """Columns the referenced table has under the same name, that can be copied as they are."""
        return [
            column.name
            for column in parent.schema.columns
            if column.name in self.specs
            and column.name not in self.primary_key
            and column.name not in (self.table.partition_column, parent.table.partition_column)
            and column.type not in ("date", "datetime", "yearmonth")  # each table keeps its own timeline
            and not self.schema.column(column.name).constraints.get("unique")
            and self.specs[column.name].contains(parent.specs[column.name])
        ]

    @cached_property
    def sources(self) -> dict[str, tuple[_Link, str]]:
        return {mine: (link, theirs) for link in self.links for mine, theirs in link.columns.items()}

    @cached_property
    def timeline_scope(self) -> _TableContext:
        """A one-to-one extension shares its parent's dates (a stay's exit is the same in B and C)."""
        mirror = next((link for link in self.links if link.mirrors_rows), None)
        return mirror.parent.timeline_scope if mirror else self

    @cached_property
    def identity_columns(self) -> frozenset[str]:
        """Columns computed as a bijection of the row number, so that the primary key is unique."""
        own = [c for c in self.schema.columns if c.name not in self.sources and c.name != self.table.partition_column]
        unique = {c.name for c in own if c.constraints.get("unique")}
        key = set(self.primary_key) - {self.table.partition_column}
        if not key or key & unique or any(link.mirrors_rows for link in self.links):
            return frozenset(unique)
        candidates = [c for c in own if c.name in key and c.type in ("integer", "string")]
        if not candidates:
            raise ValueError(
                f"{self.table.domain}/{self.table.name}: no integer or string column of the primary key "
                f"{sorted(key)} can carry unique values; declare one in {self.table.schema_path.name}"
            )
        # a column with nomenclature codes (a FINESS ETA_NUM) keeps them: another key column carries the identity
        chosen = max(
            candidates,
            key=lambda c: (
                not nomenclatures.codes(c, self.specs[c.name].width),
                c.type == "integer",
                self.capacity(c.name),
            ),
        )
        return frozenset(unique | {chosen.name})

    def capacity(self, name: str) -> int:
        """How many distinct values the column can hold as an identity."""
        spec = self.specs[name]
        if spec.type == "integer":
            return int(spec.high) - int(spec.low) + 1
        base, digits = _string_layout(spec.width)
        return base ** min(len(digits), _IDENTITY_MAX_DIGITS)

    @cached_property
    def never_null(self) -> frozenset[str]:
        linked = {name for (table, name) in _key_specs(self.catalogue) if table == self.table.name}
        required = {c.name for c in self.schema.columns if c.constraints.get("required")}
        return frozenset(
            linked | required | set(self.primary_key) | self.identity_columns | {self.table.partition_column}
        )

    @cached_property
    def window(self) -> tuple[int, int]:
        """First and last day (days since 1970) of the dates this partition's rows may carry."""
        start = (partition_start(self.grain, self.partition) - _EPOCH).days
        if self.grain == "monthly":  # care happens before the flux that reports it
            return start - _DAYS_BEFORE_MONTHLY_FLUX, start - 1
        if self.grain == "yearly":
            year = int(self.partition)
            return start, (dt.date(year, 12, 31) - _EPOCH).days
        return start - _SNAPSHOT_HISTORY_DAYS, start


@lru_cache(maxsize=64)
def _context(catalogue: Catalogue, table: Table, partition: str, volume: _Volume) -> _TableContext:
    return _TableContext(catalogue, table, partition, volume)


# --- values ---------------------------------------------------------------------------------------


def _string_layout(width: int) -> tuple[int, list[int]]:
    """The digit base and the positions holding digits; the other positions hold letters.

    Short codes are decimal (SNDS codes mostly are); from 16 characters they are hexadecimal, like
    the pseudonyms. From 13 characters a letter every 8 positions breaks any run of digits.
    """
    base = 16 if width >= _HEX_FROM_WIDTH else 10
    if width < _DIGIT_STRING_MAX:
        return base, list(range(width))
    return base, [p for p in range(width) if p % _LETTER_EVERY != _LETTER_EVERY - 1]


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    count, width = chars.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)))


def _with_nulls(array: pa.Array, null: np.ndarray) -> pa.Array:
    """The same values with a validity bitmap set from ``null`` (no copy of the values)."""
    validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(array.type, len(array), [validity, *array.buffers()[1:]], offset=array.offset)


def _months(days) -> np.ndarray:
    """Months since January 1970."""
    return np.asarray(days).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _yearmonths(days: np.ndarray, window: tuple[int, int]) -> pa.Array:
    """'YYYYMM' texts, taken from the few months of the window rather than formatted row by row."""
    first, last = _months(window)
    labels = pa.array([f"{1970 + m // 12}{m % 12 + 1:02d}" for m in range(first, last + 1)])
    return labels.take(pa.array(_months(days) - first))


def _years(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


@lru_cache(maxsize=64)
def _vocabulary(values: tuple, table_schema_type: str) -> pa.Array:
    return pa.array(values, type=arrow_type(table_schema_type))


class _Frame:
    """The columns of one table at some row numbers, each computed once, on demand."""

    def __init__(self, context: _TableContext, rows: np.ndarray):
        self.context = context
        self.rows = rows
        self._unsigned_rows = rows.astype(np.uint64)
        self._columns: dict[str, pa.Array] = {}
        self._parents: dict[str, _Frame] = {}
        self._days: dict[str, np.ndarray] = {}

    def bits(self, tag: str, scope: _TableContext | None = None) -> np.ndarray:
        return _hash_bits((scope or self.context).key(tag), self._unsigned_rows)

    def column(self, name: str) -> pa.Array:
        if name not in self._columns:
            source = self.context.sources.get(name)
            if source:
                link, theirs = source
                values = self._parent(link).column(theirs)
            else:
                values = self._values(name, self.context.specs[name])
                rate = 0.0 if name in self.context.never_null else _NULL_RATES[_stable_key(name) % len(_NULL_RATES)]
                if rate:
                    values = _with_nulls(values, _below(self.bits(f"{name}:null"), rate))
            self._columns[name] = values
        return self._columns[name]

    def _parent(self, link: _Link) -> _Frame:
        if link.name not in self._parents:
            if link.mirrors_rows:
                rows = self.rows
            elif link.same_domain:
                start, end = self.context.volume.file_bounds(self.rows)
                rows = _uniform_ints(self.bits(f"link:{link.name}"), 0, end - start - 1) + start
            else:
                rows = _uniform_ints(self.bits(f"link:{link.name}"), 0, self.context.volume.rows_per_partition - 1)
            self._parents[link.name] = _Frame(link.parent, rows)
        return self._parents[link.name]

    def _day(self, kind: str) -> np.ndarray:
        """Row dates shared by the columns of a kind, ordered event <= end <= processing."""
        if kind not in self._days:
            scope = self.context.timeline_scope
            first, last = self.context.window
            if kind == "event":
                days = _uniform_ints(self.bits("day:event", scope), first, last)
            elif kind == "end":
                days = np.minimum(
                    self._day("event") + _uniform_ints(self.bits("day:end", scope), 0, _CARE_SPAN_DAYS), last
                )
            else:
                end = self._day("end")
                days = end + _uniform_ints(self.bits("day:processing", scope), 0, last - end)
            self._days[kind] = days
        return self._days[kind]

    def _values(self, name: str, spec: _Spec) -> pa.Array:
        context = self.context
        if name == context.table.partition_column:
            return self._partition_values(spec)
        if name in context.identity_columns:
            return self._identity(name, spec)
        plausible = tuple(v for v in _PLAUSIBLE_VALUES.get(name, ()) if spec.allows(v))
        if plausible:
            return self._choice(name, spec, plausible)
        if spec.enum:
            return self._choice(name, spec, spec.enum)
        column = context.schema.column(name)
        codes = tuple(v for v in nomenclatures.codes(column, spec.width) or () if _fits(column, spec, v))
        if codes:
            return self._choice(name, spec, codes)
        generate = getattr(self, f"_{spec.type}")
        return generate(name, spec)

    def _choice(self, name: str, spec: _Spec, values: tuple) -> pa.Array:
        picks = (self.bits(name) % np.uint64(len(values))).astype(np.int64)
        return _vocabulary(values, spec.type).take(pa.array(picks))

    def _partition_values(self, spec: _Spec) -> pa.Array:
        context = self.context
        start = partition_start(context.grain, context.partition)
        constant = {
            "date": pa.scalar(start, pa.date32()),
            "datetime": pa.scalar(dt.datetime.combine(start, dt.time()), arrow_type("datetime")),
            "year": pa.scalar(start.year, pa.int32()),
            "integer": pa.scalar(start.year, pa.int64()),
            "yearmonth": pa.scalar(f"{start.year}{start.month:02d}"),
            "string": pa.scalar(context.partition),
        }[spec.type]
        return pa.repeat(constant, len(self.rows))

    def _identity(self, name: str, spec: _Spec) -> pa.Array:
        capacity = self.context.capacity(name)
        if len(self.rows) and int(self.rows.max()) >= capacity:
            table = self.context.table
            raise ValueError(
                f"{table.domain}/{table.name}, column {name}: {int(self.rows.max()) + 1} rows do not fit the "
                f"{capacity} unique values the schema allows; generate fewer rows per partition"
            )
        values = _permute(self.rows, capacity, self.context.key(f"{name}:identity"))
        if spec.type == "integer":
            return pa.array(values.astype(np.int64) + int(spec.low))
        return self._codes(name, spec.width, unique=values)

    def _codes(self, name: str, width: int, unique: np.ndarray | None = None) -> pa.Array:
        """Fixed-width codes; the first digits spell ``unique`` when given, the rest is random."""
        base, digit_positions = _string_layout(width)
        words_per_row = -(-width // 8)
        counters = self._unsigned_rows[:, None] * np.uint64(words_per_row) + np.arange(words_per_row, dtype=np.uint64)
        words = _hash_bits(self.context.key(f"{name}:chars"), counters.ravel())
        random_bytes = words.view(np.uint8).reshape(len(self.rows), 8 * words_per_row)[:, :width]
        digits = random_bytes % np.uint8(base)
        chars = digits + np.uint8(ord("0"))
        if base == 16:
            chars += (digits > 9).astype(np.uint8) * np.uint8(ord("A") - ord("9") - 1)
        if len(digit_positions) < width:
            letters = slice(_LETTER_EVERY - 1, None, _LETTER_EVERY)
            chars[:, letters] = _LETTERS[random_bytes[:, letters] % np.uint8(len(_LETTERS))]
        if unique is not None:
            remaining = unique.copy()
            for position in digit_positions[:_IDENTITY_MAX_DIGITS]:
                chars[:, position] = _DIGITS[remaining % np.uint64(base)]
                remaining //= np.uint64(base)
        return _fixed_width_strings(chars)

    def _string(self, name: str, spec: _Spec) -> pa.Array:
        for pattern, vocabulary in _VOCABULARIES:
            if pattern.search(name):
                fitting = tuple(v for v in vocabulary(spec.width) if spec.allows(v))
                if fitting:
                    return self._choice(name, spec, fitting)
        return self._codes(name, spec.width)

    def _integer(self, name: str, spec: _Spec) -> pa.Array:
        return pa.array(_uniform_ints(self.bits(name), int(spec.low), int(spec.high)))

    def _number(self, name: str, spec: _Spec) -> pa.Array:
        """Decimals with the declared scale, skewed towards small values like amounts are."""
        factor = 10**spec.scale
        low, high = int(np.ceil(spec.low * factor)), int(np.floor(spec.high * factor))
        unit = (self.bits(name) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        steps = low + np.floor((high - low) * unit**3).astype(np.int64)
        # an integer divided by a power of ten is the double a CSV reader parses back from its text
        return pa.array(steps / factor)

    def _boolean(self, name: str, spec: _Spec) -> pa.Array:
        return pa.array((self.bits(name) & np.uint64(1)).astype(bool))

    def _date_kind(self, name: str) -> str:
        if _PROCESSING_DATE.search(name):
            return "processing"
        return "end" if _END_DATE.search(name) else "event"

    def _date(self, name: str, spec: _Spec) -> pa.Array:
        days = self._day(self._date_kind(name))
        if self.context.schema.column(name).format == "%m":  # a month only: the first of the row's month
            days = days.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        days = days.astype(np.int32)
        return pa.Array.from_buffers(pa.date32(), len(days), [None, pa.py_buffer(days)])

    def _datetime(self, name: str, spec: _Spec) -> pa.Array:
        # events in the morning, ends and processing in the afternoon: an end never precedes its start
        half_day = 43_200
        kind = self._date_kind(name)
        time_of_day = _uniform_ints(self.bits(name), 0, half_day - 1) + (0 if kind == "event" else half_day)
        stamps = self._day(kind) * 86_400 + time_of_day
        in_seconds = pa.Array.from_buffers(pa.timestamp("s"), len(stamps), [None, pa.py_buffer(stamps)])
        return in_seconds.cast(arrow_type("datetime"))

    def _yearmonth(self, name: str, spec: _Spec) -> pa.Array:
        return _yearmonths(self._day(self._date_kind(name)), self.context.window)

    def _year(self, name: str, spec: _Spec) -> pa.Array:
        """Birth years before the row's event; any other year is the year of the row's event."""
        years = _years(self._day(self._date_kind(name)))
        if nomenclatures.is_birth_year(self.context.schema.column(name)):
            years = years - _uniform_ints(self.bits(name), 0, _OLDEST_AGE_YEARS)
        if spec.low is not None or spec.high is not None:
            years = np.clip(years, spec.low, spec.high)
        return pa.array(years.astype(np.int32))


# --- public API -----------------------------------------------------------------------------------


def file_batches(
    catalogue: Catalogue, table: Table, partition: str, file_index: int, **volume: int
) -> Iterator[pa.RecordBatch]:
    """One source file's rows, as record batches of at most BATCH_ROWS rows, in schema order and types.

    ``volume``: seed, rows_per_partition, files_per_partition (defaults: ``_Volume``'s). Files 0 to
    files_per_partition - 1 split the partition's rows; a higher index is a late file:
    ``ceil(rows_per_partition / files_per_partition)`` new rows with new keys, in the same partition.
    """
    yield from _file_batches(catalogue, table, partition, file_index, _Volume(**volume))


def _file_batches(
    catalogue: Catalogue, table: Table, partition: str, file_index: int, volume: _Volume
) -> Iterator[pa.RecordBatch]:
    context = _context(catalogue, table, partition, volume)
    arrow_schema = context.schema.arrow_schema()
    start, end = volume.file_rows(file_index)
    for batch_start in range(start, end, BATCH_ROWS):
        frame = _Frame(context, np.arange(batch_start, min(batch_start + BATCH_ROWS, end), dtype=np.int64))
        yield pa.RecordBatch.from_arrays([frame.column(name) for name in arrow_schema.names], schema=arrow_schema)


def generate_file(catalogue: Catalogue, table: Table, partition: str, file_index: int, **volume: int) -> pa.Table:
    """One source file's rows as a single Arrow table (tests; stream file_batches for volumes)."""
    batches = file_batches(catalogue, table, partition, file_index, **volume)
    return pa.Table.from_batches(list(batches), schema=load_table_schema(table.schema_path).arrow_schema())


def write_file(table: Table, data: pa.Table | Iterable[pa.RecordBatch], sink: str | os.PathLike | BinaryIO) -> int:
    """Write rows as the table's source format, batch by batch; returns the number of rows written.

    parquet: zstd, one row group per batch (at most BATCH_ROWS rows). csv: the French export of the
    table's dialect (';', decimal comma, Latin-1, header, ISO dates, booleans 0/1, empty = missing).
    """
    arrow_schema = load_table_schema(table.schema_path).arrow_schema()
    batches = data.to_batches(max_chunksize=BATCH_ROWS) if isinstance(data, pa.Table) else data
    if table.format == "parquet":
        return _write_parquet(arrow_schema, batches, sink)
    if isinstance(sink, (str, os.PathLike)):
        with open(sink, "wb") as file:
            return _write_french_csv(table, arrow_schema, batches, file)
    return _write_french_csv(table, arrow_schema, batches, sink)


def _write_parquet(arrow_schema: pa.Schema, batches: Iterable[pa.RecordBatch], sink) -> int:
    import pyarrow.parquet as pq

    # Delta-packed integers and dates are smaller and quicker to compress than plain or dictionary pages
    # of uniform values; dictionaries cost more time than they save, zstd packs small vocabularies anyway.
    integer_like = [f.name for f in arrow_schema if pa.types.is_integer(f.type) or pa.types.is_temporal(f.type)]
    rows = 0
    with pq.ParquetWriter(
        sink,
        arrow_schema,
        compression=PARQUET_COMPRESSION,
        use_dictionary=False,
        column_encoding=dict.fromkeys(integer_like, "DELTA_BINARY_PACKED"),
    ) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=BATCH_ROWS)
            rows += batch.num_rows
    return rows


def _csv_field(values: pa.Array, dialect: CsvDialect) -> pa.Array:
    """One column as CSV text; nulls stay null and become empty fields."""
    if pa.types.is_boolean(values.type):
        text = pc.if_else(values, "1", "0")
    elif pa.types.is_floating(values.type):
        # Arrow prints the shortest text that parses back to the same double
        text = pc.replace_substring(pc.cast(values, pa.string()), ".", dialect.decimal_point)
    elif pa.types.is_string(values.type):
        text = values
    else:
        text = pc.cast(values, pa.string())  # integers, ISO dates and timestamps
    # One scan of the column's bytes instead of a match per value; a column that holds a delimiter,
    # a quote or a line break anywhere is quoted whole, which any CSV reader accepts.
    data = text.buffers()[2]
    characters = data.to_pybytes() if data is not None else b""
    if not any(special.encode() in characters for special in (dialect.delimiter, '"', "\n", "\r")):
        return text
    return pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")


def _write_french_csv(table: Table, arrow_schema: pa.Schema, batches: Iterable[pa.RecordBatch], file: BinaryIO) -> int:
    dialect = table.csv or CsvDialect()
    if dialect.header:
        file.write((dialect.delimiter.join(arrow_schema.names) + "\n").encode(dialect.encoding))
    rows = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        fields = [_csv_field(column, dialect) for column in batch.columns]
        lines = pc.binary_join_element_wise(*fields, dialect.delimiter, null_handling="replace")
        lines = pc.binary_join_element_wise(lines, "", "\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
        text = str(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]], "utf-8")
        try:
            file.write(text.encode(dialect.encoding))
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{table.domain}/{table.name}: {err.object[err.start : err.end]!r} cannot be written in "
                f"{dialect.encoding}, the table's CSV encoding; change the generated text or the dialect"
            ) from None
        rows += batch.num_rows
    return rows


def blob_name(table: Table, partition: str, file_index: int) -> str:
    return table.source_dir(partition) + part_name(file_index, table.source_extension)


def _container(wasb_conn_id: str, name: str):
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from azure.core.exceptions import ResourceExistsError

    container = WasbHook(wasb_conn_id=wasb_conn_id).get_conn().get_container_client(name)
    with contextlib.suppress(ResourceExistsError):  # seeding again overwrites, file by file
        container.create_container()
    return container


def _upload_file(container, catalogue: Catalogue, table: Table, partition: str, file_index: int, volume: _Volume):
    """Generate one file into a temporary spool, upload it, delete the spool; returns (name, rows, bytes)."""
    name = blob_name(table, partition, file_index)
    batches = _file_batches(catalogue, table, partition, file_index, volume)
    with tempfile.TemporaryDirectory(prefix="hdh-seed-") as spool_dir:
        spool = os.path.join(spool_dir, part_name(file_index, table.source_extension))
        rows = write_file(table, batches, spool)
        size = os.path.getsize(spool)
        with open(spool, "rb") as data:
            container.upload_blob(name, data, length=size, overwrite=True)
    return name, rows, size


def seed_azure(
    catalogue: Catalogue,
    *,
    wasb_conn_id: str = DEFAULT_WASB_CONN_ID,
    domains: Iterable[str] | None = None,
    **volume: int,
) -> dict[str, dict[str, int]]:
    """Upload every partition of every table of the chosen domains to the catalogue's source container.

    ``volume`` as file_batches'. Files are generated and uploaded one at a time. Returns
    {domain: {objects, rows, bytes}}.
    """
    volume = _Volume(**volume)
    chosen = [catalogue.domain(name) for name in domains] if domains else list(catalogue.domains)
    container = _container(wasb_conn_id, catalogue.source_container)
    summary = {}
    for domain in chosen:
        totals = {"objects": 0, "rows": 0, "bytes": 0}
        for partition in domain.partitions():
            for table in domain.tables:
                for file_index in range(volume.files_per_partition):
                    _, rows, size = _upload_file(container, catalogue, table, partition, file_index, volume)
                    totals["objects"] += 1
                    totals["rows"] += rows
                    totals["bytes"] += size
        summary[domain.name] = totals
    return summary


def add_late_rows(
    catalogue: Catalogue,
    domain_name: str,
    partition: str,
    *,
    wasb_conn_id: str = DEFAULT_WASB_CONN_ID,
    **volume: int,
) -> list[str]:
    """Add one late file to every table of an already seeded partition, as a flux still arriving does.

    The late files take the next free part index of the partition, shared by its tables so that the
    pharmacy lines of the late file reference the claims of the late file. Returns the blob names.
    """
    domain = catalogue.domain(domain_name)
    if partition not in domain.partitions():
        raise ValueError(f"{domain_name}: {partition!r} is not one of its partitions {domain.partitions()}")
    volume = _Volume(**volume)
    container = _container(wasb_conn_id, catalogue.source_container)
    taken = [volume.files_per_partition - 1]
    for table in domain.tables:
        prefix = table.source_dir(partition)
        for blob in container.list_blobs(name_starts_with=prefix):
            index = re.fullmatch(r"part-(\d+)\.\w+", blob.name[len(prefix) :])
            if index:
                taken.append(int(index.group(1)))
    file_index = max(taken) + 1
    return [_upload_file(container, catalogue, t, partition, file_index, volume)[0] for t in domain.tables]


def main_seed(argv: list[str]) -> int:
    """``python -m hdh_migration seed``: write the synthetic SNDS into the Azure source container."""
    parser = argparse.ArgumentParser(prog="python -m hdh_migration seed", description=main_seed.__doc__)
    parser.add_argument("--catalogue", help="catalogue file (default: HDH_CATALOGUE or dags/domains.yaml)")
    parser.add_argument("--conn-id", default=DEFAULT_WASB_CONN_ID, help="Airflow wasb connection of the source")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows-per-partition", type=int, default=2000)
    parser.add_argument("--files-per-partition", type=int, default=3)
    parser.add_argument("--domain", action="append", help="seed only this domain (repeatable)")
    parser.add_argument(
        "--late-partition",
        help="instead of seeding, add one late file to this partition of the single --domain (flux still arriving)",
    )
    args = parser.parse_args(argv)
    catalogue = load_catalogue(args.catalogue)
    volume = {
        "wasb_conn_id": args.conn_id,
        "seed": args.seed,
        "rows_per_partition": args.rows_per_partition,
        "files_per_partition": args.files_per_partition,
    }
    if args.late_partition:
        if not args.domain or len(args.domain) != 1:
            parser.error("--late-partition needs exactly one --domain")
        names = add_late_rows(catalogue, args.domain[0], args.late_partition, **volume)
        print(json.dumps({"late_files": names}, indent=2))
        return 0
    started = time.monotonic()
    summary = seed_azure(catalogue, domains=args.domain, **volume)
    seconds = time.monotonic() - started
    total = sum(d["bytes"] for d in summary.values())
    print(json.dumps(summary, indent=2))
    print(
        f"seeded container {catalogue.source_container!r}: {total / 1e6:.1f} MB in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
