"""The migration catalogue: which domains and tables move, in which wave, from which partition.

Waves say when: each has a start date and a transfer window (``windows.TransferWindow``); domains
refer to their wave by number. Bandwidth caps (MB/s: global, per wave, per domain) are shared
evenly by the ``transfer_object`` tasks that may run under them at once (``bandwidth_share``).

The catalogue is one YAML file (``dags/domains.yaml``). Loading it is cheap: it imports only the
standard library and PyYAML, so DAG files can build their DAGs from it at parse time.

Every error names the file, the domain, the table and the field, and says what to write instead.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from hdh_migration.errors import ConfigurationError
from hdh_migration.layout import partition_dir, partition_from_dir, table_prefix
from hdh_migration.throttle import BandwidthShare, bandwidth_share
from hdh_migration.windows import TransferWindow, parse_day_spec

GRAINS = ("monthly", "yearly", "snapshot")
FORMATS = ("parquet", "csv")
SNAPSHOT_PARTITION_COLUMN = "snapshot"
# How long one partition transfer may take before its deadline alert fires, unless the domain says.
DEFAULT_EXPECTED_DURATION_MINUTES = 120
# A partition in flight whose transfer made no progress for this long is shown as stalled, unless the domain says.
DEFAULT_STALL_MINUTES = 30
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_MAX_TRANSFERS = 8
# The Airflow pool of every transfer_object task; the catalogue's transfer_slots must equal its size.
TRANSFER_POOL = "hdh_transfer"
DEFAULT_TRANSFER_SLOTS = 16

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[2] / "dags" / "domains.yaml"
# A yearly table family: one source table per year, the year in its name (T_MCOaaB -> T_MCO22B, T_MCO23B).
YEAR_PLACEHOLDERS = {"{aa}": r"(?P<aa>[0-9]{2})", "{aaaa}": r"(?P<aaaa>[0-9]{4})"}
# Where a domain's data is read from: Azure Blob (the default) or any S3-compatible store (a second
# move, from the interim French host to the final one).
SOURCE_KINDS = ("azure", "s3")
DEFAULT_SOURCE_CONN_ID = "hdh_azure_source"


class CatalogueError(ConfigurationError, ValueError):
    """The catalogue file is not a valid migration plan."""


@dataclass(frozen=True)
class CsvDialect:
    delimiter: str = ";"
    decimal_point: str = ","
    encoding: str = "latin-1"
    header: bool = True


@dataclass(frozen=True)
class Table:
    domain: str
    name: str
    format: str
    partition_column: str
    primary_key: tuple[str, ...]
    schema_path: Path
    suite_path: Path
    optional: bool = False
    csv: CsvDialect | None = None
    # A yearly family's source table name, the year as {aa} or {aaaa}: "T_MCO{aa}B". None: one source
    # table, its partitions in folders named by the partition column (<TABLE>/<PARTCOL>=<value>/).
    source_name: str | None = None

    @property
    def source_extension(self) -> str:
        return self.format

    def source_table(self, partition: str) -> str:
        """The source table holding ``partition``: the family member of its year, or the table itself."""
        if self.source_name is None:
            return self.name
        return self.source_name.replace("{aaaa}", partition).replace("{aa}", partition[2:])

    def source_dir(self, partition: str) -> str:
        """The source folder of a partition's objects: ``<domain>/<TABLE>/<PARTCOL>=<value>/``, or for a
        yearly family ``<domain>/<TABLE of the year>/`` (``pmsi_mco/T_MCO23B/``)."""
        if self.source_name is None:
            return partition_dir(self.domain, self.name, self.partition_column, partition)
        return table_prefix(self.domain, self.source_table(partition))

    def source_listing_prefix(self) -> str:
        """What one delimited listing of the source covers to find every partition of the table."""
        return f"{self.domain}/" if self.source_name else table_prefix(self.domain, self.name)

    def source_partition(self, listed_dir: str) -> str | None:
        """The partition of a folder listed under ``source_listing_prefix()``, or None if not one of ours."""
        if self.source_name is None:
            return partition_from_dir(self.source_listing_prefix(), self.partition_column, listed_dir)
        pattern = re.escape(self.source_name)
        for placeholder, group in YEAR_PLACEHOLDERS.items():
            pattern = pattern.replace(re.escape(placeholder), group)
        match = re.fullmatch(f"{re.escape(self.source_listing_prefix())}{pattern}/", listed_dir)
        if match is None:
            return None
        found = match.groupdict()
        return found["aaaa"] if found.get("aaaa") else f"20{found['aa']}"


@dataclass(frozen=True)
class SourceSpec:
    """A domain's source: ``kind`` azure (``container``, default the catalogue's ``source_container``) or
    s3 (``bucket`` and a key ``prefix`` under which the domain's layout starts), read through ``conn_id``.

    ``chained`` (s3 only): the source is an earlier hop of this migration and holds its signed cutover
    record (``<prefix>_cutover/<domain>.json``); the cutover embeds it (chain of custody).
    """

    kind: str = "azure"
    conn_id: str = DEFAULT_SOURCE_CONN_ID
    container: str = ""
    bucket: str = ""
    prefix: str = ""
    chained: bool = False

    def describe(self, key: str = "") -> str:
        """Where ``key`` (relative to the domain's layout) is, for messages: ``container/key`` or ``s3://bucket/key``."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}{key}"
        return f"{self.container}/{key}"


@dataclass(frozen=True)
class Domain:
    name: str
    owner: str
    wave: int
    grain: str
    first_partition: str
    cutover_partition: str
    tables: tuple[Table, ...]
    description: str = ""
    bandwidth_mb_s: float | None = None
    max_transfers: int = DEFAULT_MAX_TRANSFERS
    expected_duration_minutes: int = DEFAULT_EXPECTED_DURATION_MINUTES
    stall_minutes: int = DEFAULT_STALL_MINUTES
    source: SourceSpec = field(default_factory=SourceSpec)
    # Days the old copy (the source) is kept after the cutover before it may be decommissioned; None:
    # the catalogue sets none, and the decommission refuses.
    retention_days: int | None = None

    @property
    def expected_duration(self) -> dt.timedelta:
        """How long a partition transfer may run (from queued) before its deadline alert fires."""
        return dt.timedelta(minutes=self.expected_duration_minutes)

    def logical_date(self, partition: str) -> dt.datetime:
        """The logical date (data interval start, midnight UTC) of the transfer run of ``partition``."""
        day = partition_start(self.grain, partition)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

    def run_partition(self, explicit: str | None, interval_start: dt.date | None) -> str:
        """The partition a run moves: the one asked for (checked), else the run's data interval's."""
        if explicit:
            partition_start(self.grain, explicit)  # raises on a malformed value
            return explicit
        if self.grain == "snapshot":
            return self.cutover_partition
        return partition_value(self.grain, interval_start)

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables)
        raise CatalogueError(f"domain {self.name!r} has no table {name!r} (known: {known})")

    def partitions(self) -> list[str]:
        """Every partition value from the first to the planned cutover partition, in order."""
        if self.grain == "snapshot":
            return [self.cutover_partition]
        first = partition_start(self.grain, self.first_partition)
        last = partition_start(self.grain, self.cutover_partition)
        values = []
        current = first
        while current <= last:
            values.append(partition_value(self.grain, current))
            current = next_partition_start(self.grain, current)
        return values


@dataclass(frozen=True)
class Wave:
    number: int
    window: TransferWindow
    bandwidth_mb_s: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Catalogue:
    path: Path
    source_container: str
    target_bucket: str
    domains: tuple[Domain, ...] = field(default_factory=tuple)
    waves: tuple[Wave, ...] = field(default_factory=tuple)
    transfer_slots: int = DEFAULT_TRANSFER_SLOTS
    bandwidth_mb_s: float | None = None
    # The sovereignty guard's settings (target.py): the regions outside France the target may use,
    # and the one CA bundle its connection may name (extra.verify).
    target_eea_regions: tuple[str, ...] = ()
    target_ca_bundle: str | None = None

    def domain(self, name: str) -> Domain:
        for domain in self.domains:
            if domain.name == name:
                return domain
        known = ", ".join(d.name for d in self.domains)
        raise CatalogueError(f"{self.path}: no domain {name!r} (known: {known})")

    def wave(self, domain: Domain) -> Wave:
        return next(wave for wave in self.waves if wave.number == domain.wave)

    def bandwidth(self, domain: Domain) -> BandwidthShare:
        """What one transfer task of ``domain`` may move per second, each direction."""
        slots = self.transfer_slots
        wave = self.wave(domain)
        wave_tasks = sum(d.max_transfers for d in self.domains if d.wave == domain.wave)
        return bandwidth_share(
            [
                (f"global cap over pool {TRANSFER_POOL}", self.bandwidth_mb_s, slots),
                (f"wave {wave.number} cap", wave.bandwidth_mb_s, min(slots, wave_tasks)),
                (f"domain {domain.name} cap", domain.bandwidth_mb_s, min(slots, domain.max_transfers)),
            ]
        )


def partition_start(grain: str, value: str) -> dt.date:
    """The first day covered by a partition value of this grain."""
    if grain == "monthly":
        day = dt.date.fromisoformat(value)
        if day.day != 1:
            raise ValueError(f"monthly partition {value!r} must be the first day of a month")
        return day
    if grain == "yearly":
        if not re.fullmatch(r"\d{4}", value):
            raise ValueError(f"yearly partition {value!r} must be a 4-digit year")
        return dt.date(int(value), 1, 1)
    return dt.date.fromisoformat(value)


def partition_value(grain: str, day: dt.date) -> str:
    """The partition value that holds ``day`` at this grain (as written in object keys)."""
    if grain == "monthly":
        return day.replace(day=1).isoformat()
    if grain == "yearly":
        return f"{day.year:04d}"
    return day.isoformat()


def next_partition_start(grain: str, day: dt.date) -> dt.date:
    if grain == "monthly":
        return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
    if grain == "yearly":
        return dt.date(day.year + 1, 1, 1)
    raise ValueError("a snapshot has no next partition")


def _require(mapping: dict, key: str, where: str, kind: type | tuple[type, ...]):
    if key not in mapping:
        raise CatalogueError(f"{where}: missing field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CatalogueError(f"{where}: field {key!r} must be a {expected}, got {value!r}")
    return value


def _check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise CatalogueError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _partition_field(raw: dict, key: str, grain: str, where: str) -> str:
    value = raw.get(key)
    if isinstance(value, dt.date):
        value = value.isoformat()
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise CatalogueError(f"{where}: field {key!r} must be a partition value, got {value!r}")
    try:
        partition_start(grain, value)
    except ValueError as err:
        raise CatalogueError(f"{where}: field {key!r}: {err}") from None
    return value


def _bandwidth(raw: dict, where: str) -> float | None:
    value = raw.get("bandwidth_mb_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CatalogueError(f"{where}: field 'bandwidth_mb_s' must be a positive number of MB/s, got {value!r}")
    return float(value)


def _positive_int(raw: dict, key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CatalogueError(f"{where}: field {key!r} must be a whole number of at least 1, got {value!r}")
    return value


def _load_window(raw, start, where: str) -> TransferWindow:
    where = f"{where}, field 'window'"
    if raw is None:
        return TransferWindow(start=start)
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping with 'timezone', 'weekdays' and 'weekends'")
    _check_keys(raw, {"timezone", "weekdays", "weekends"}, where)
    timezone = _require(raw, "timezone", where, str)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):
        raise CatalogueError(
            f"{where}: field 'timezone' {timezone!r} is not an IANA timezone such as Europe/Paris"
        ) from None
    days = {}
    for key in ("weekdays", "weekends"):
        try:
            days[key] = parse_day_spec(_require(raw, key, where, (str, list)))
        except ValueError as err:
            raise CatalogueError(f"{where}: field {key!r}: {err}") from None
    if not days["weekdays"] and not days["weekends"]:
        raise CatalogueError(f"{where}: the window is never open; give 'weekdays' or 'weekends' a range or 'all'")
    return TransferWindow(timezone=timezone, start=start, **days)


def _load_wave(number, raw, where: str) -> Wave:
    where = f"{where}, wave {number!r}"
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise CatalogueError(f"{where}: waves are numbered 1, 2, ...")
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping of fields")
    _check_keys(raw, {"start", "window", "bandwidth_mb_s", "description"}, where)
    start = raw.get("start")
    if isinstance(start, str):
        try:
            start = dt.datetime.fromisoformat(start) if "T" in start else dt.date.fromisoformat(start)
        except ValueError:
            start = None
    if not isinstance(start, dt.date):
        raise CatalogueError(
            f"{where}: field 'start' must be a date such as \"2026-12-01\" (or an ISO datetime), got {raw.get('start')!r}"
        )
    return Wave(
        number=number,
        window=_load_window(raw.get("window"), start, where),
        bandwidth_mb_s=_bandwidth(raw, where),
        description=str(raw.get("description", "")),
    )


def _load_csv_dialect(raw: dict, where: str) -> CsvDialect:
    """The CSV dialect, each setting checked here: a wrong one would otherwise fail only when a file is read."""
    import codecs

    _check_keys(raw, {"delimiter", "decimal_point", "encoding", "header"}, where)
    dialect = CsvDialect(**raw)
    for key in ("delimiter", "decimal_point"):
        value = getattr(dialect, key)
        if not isinstance(value, str) or len(value) != 1 or value in '\r\n"':
            raise CatalogueError(
                f"{where}: field {key!r} must be one character (not a quote or a newline), got {value!r}"
            )
    if dialect.delimiter == dialect.decimal_point:
        raise CatalogueError(f"{where}: fields 'delimiter' and 'decimal_point' must differ")
    if not isinstance(dialect.encoding, str):
        raise CatalogueError(f"{where}: field 'encoding' must be a Python codec name such as latin-1 or utf-8")
    try:
        codecs.lookup(dialect.encoding)
    except LookupError:
        raise CatalogueError(
            f"{where}: field 'encoding' is {dialect.encoding!r}, which is not a known encoding; write a Python codec "
            "name such as latin-1, cp1252 or utf-8"
        ) from None
    if not isinstance(dialect.header, bool):
        raise CatalogueError(
            f"{where}: field 'header' must be true (the first line names the columns) or false (no header line: "
            f"the columns are the schema's, in its order), got {dialect.header!r}"
        )
    return dialect


def _load_table(domain: str, grain: str, name: str, raw: dict, base: Path, where: str) -> Table:
    where = f"{where}, table {name!r}"
    if not _NAME.match(name):
        raise CatalogueError(f"{where}: table names are SNDS identifiers such as ER_PRS_F")
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping of fields")
    _check_keys(
        raw, {"format", "partition_column", "primary_key", "schema", "suite", "optional", "csv", "source_name"}, where
    )
    fmt = _require(raw, "format", where, str)
    if fmt not in FORMATS:
        raise CatalogueError(f"{where}: field 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
    partition_column = _require(raw, "partition_column", where, str)
    if grain == "snapshot" and partition_column != SNAPSHOT_PARTITION_COLUMN:
        raise CatalogueError(
            f"{where}: field 'partition_column' must be {SNAPSHOT_PARTITION_COLUMN!r} for a snapshot domain"
        )
    primary_key = raw.get("primary_key")
    if primary_key is not None and (
        not isinstance(primary_key, list) or not primary_key or not all(isinstance(c, str) for c in primary_key)
    ):
        raise CatalogueError(f"{where}: field 'primary_key' must be a list of column names, or null for none")
    schema_path = (base / _require(raw, "schema", where, str)).resolve()
    if not schema_path.is_file():
        raise CatalogueError(f"{where}: field 'schema' names {schema_path}, which does not exist")
    suite_path = (base / _require(raw, "suite", where, str)).resolve()
    csv = None
    if fmt == "csv":
        dialect = raw.get("csv") or {}
        if not isinstance(dialect, dict):
            raise CatalogueError(f"{where}: field 'csv' must be a mapping")
        csv = _load_csv_dialect(dialect, f"{where}, field 'csv'")
    elif "csv" in raw:
        raise CatalogueError(f"{where}: field 'csv' applies only to format csv")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise CatalogueError(f"{where}: field 'optional' must be true or false")
    source_name = _source_name(raw, grain, where)
    return Table(
        domain=domain,
        name=name,
        format=fmt,
        partition_column=partition_column,
        primary_key=tuple(primary_key or ()),
        schema_path=schema_path,
        suite_path=suite_path,
        optional=optional,
        csv=csv,
        source_name=source_name,
    )


def _source_name(raw: dict, grain: str, where: str) -> str | None:
    """``source_name``: a yearly family's table name with the year as {aa} (2 digits) or {aaaa}."""
    if "source_name" not in raw:
        return None
    value = raw["source_name"]
    example = "write it as the SNDS names its yearly tables, e.g. source_name: T_MCO{aa}B (T_MCO22B, T_MCO23B)"
    if grain != "yearly":
        raise CatalogueError(f"{where}: field 'source_name' names one table per year: only a yearly domain has one")
    if not isinstance(value, str) or sum(value.count(p) for p in YEAR_PLACEHOLDERS) != 1:
        raise CatalogueError(f"{where}: field 'source_name' must hold the year once, as {{aa}} or {{aaaa}}; {example}")
    if not _NAME.match(value.replace("{aaaa}", "2023").replace("{aa}", "23")):
        raise CatalogueError(f"{where}: field 'source_name' {value!r} is not an SNDS table name; {example}")
    return value


def _load_source(raw, container: str, where: str) -> SourceSpec:
    """A domain's ``source``: absent (Azure, the catalogue's container), or a mapping naming its kind."""
    where = f"{where}, field 'source'"
    if raw is None:
        return SourceSpec(container=container)
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping such as {{kind: s3, conn_id: ..., bucket: ..., prefix: ''}}")
    kind = raw.get("kind", "azure")
    if kind not in SOURCE_KINDS:
        raise CatalogueError(f"{where}: field 'kind' must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")
    conn_id = raw.get("conn_id", DEFAULT_SOURCE_CONN_ID)
    if not isinstance(conn_id, str) or not conn_id:
        raise CatalogueError(f"{where}: field 'conn_id' must name an Airflow connection")
    if kind == "azure":
        _check_keys(raw, {"kind", "conn_id", "container"}, where)
        container = raw.get("container", container)
        if not isinstance(container, str) or not container:
            raise CatalogueError(f"{where}: field 'container' must be a container name")
        return SourceSpec(kind=kind, conn_id=conn_id, container=container)
    _check_keys(raw, {"kind", "conn_id", "bucket", "prefix", "chained"}, where)
    bucket = _require(raw, "bucket", where, str)
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str) or prefix.startswith("/") or (prefix and not prefix.endswith("/")):
        raise CatalogueError(f"{where}: field 'prefix' must be empty or a key prefix ending with '/', got {prefix!r}")
    chained = raw.get("chained", True)
    if not isinstance(chained, bool):
        raise CatalogueError(f"{where}: field 'chained' must be true or false")
    return SourceSpec(kind=kind, conn_id=conn_id, bucket=bucket, prefix=prefix, chained=chained)


def _load_domain(name: str, raw: dict, base: Path, where: str, waves: dict[int, Wave], container: str = "") -> Domain:
    where = f"{where}, domain {name!r}"
    if not _DOMAIN.match(name):
        raise CatalogueError(f"{where}: domain names are lower-case identifiers such as pmsi_mco")
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping of fields")
    _check_keys(
        raw,
        {
            "owner",
            "wave",
            "grain",
            "first_partition",
            "cutover_partition",
            "tables",
            "description",
            "bandwidth_mb_s",
            "max_transfers",
            "expected_duration_minutes",
            "stall_minutes",
            "source",
            "retention_days",
        },
        where,
    )
    owner = _require(raw, "owner", where, str)
    wave = _require(raw, "wave", where, int)
    if wave not in waves:
        known = ", ".join(str(n) for n in sorted(waves)) or "none"
        raise CatalogueError(
            f"{where}: field 'wave' is {wave}, which is not declared under 'waves' (declared: {known})"
        )
    grain = _require(raw, "grain", where, str)
    if grain not in GRAINS:
        raise CatalogueError(f"{where}: field 'grain' must be one of {', '.join(GRAINS)}, got {grain!r}")
    first = _partition_field(raw, "first_partition", grain, where)
    cutover = _partition_field(raw, "cutover_partition", grain, where)
    if partition_start(grain, cutover) < partition_start(grain, first):
        raise CatalogueError(f"{where}: field 'cutover_partition' {cutover} comes before 'first_partition' {first}")
    expected = raw.get("expected_duration_minutes", DEFAULT_EXPECTED_DURATION_MINUTES)
    if isinstance(expected, bool) or not isinstance(expected, int) or not 1 <= expected <= 7 * 24 * 60:
        raise CatalogueError(
            f"{where}: field 'expected_duration_minutes' must be a whole number of minutes from 1 to 10080 (a week), "
            f"got {expected!r}"
        )
    retention = raw.get("retention_days")
    if retention is not None and (isinstance(retention, bool) or not isinstance(retention, int) or retention < 0):
        raise CatalogueError(
            f"{where}: field 'retention_days' must be a whole number of days (0 or more) the old copy is kept after "
            f"the cutover, got {retention!r}"
        )
    tables_raw = _require(raw, "tables", where, dict)
    if not tables_raw:
        raise CatalogueError(f"{where}: field 'tables' is empty")
    tables = tuple(
        _load_table(name, grain, table_name, tables_raw[table_name], base, where) for table_name in sorted(tables_raw)
    )
    for table in tables:
        if table.source_name and "{aaaa}" not in table.source_name and not 2000 <= int(first) <= int(cutover) <= 2099:
            raise CatalogueError(
                f"{where}, table {table.name!r}: field 'source_name' writes the year on 2 digits ({{aa}}), which names "
                f"2000 to 2099 only; the partitions {first} to {cutover} need {{aaaa}}"
            )
    return Domain(
        name=name,
        owner=owner,
        wave=wave,
        grain=grain,
        first_partition=first,
        cutover_partition=cutover,
        tables=tables,
        description=str(raw.get("description", "")),
        bandwidth_mb_s=_bandwidth(raw, where),
        max_transfers=_positive_int(raw, "max_transfers", DEFAULT_MAX_TRANSFERS, where),
        expected_duration_minutes=expected,
        stall_minutes=_positive_int(raw, "stall_minutes", DEFAULT_STALL_MINUTES, where),
        source=_load_source(raw.get("source"), container, where),
        retention_days=retention,
    )


def load_catalogue(path: str | os.PathLike | None = None) -> Catalogue:
    """Load and validate the catalogue; ``HDH_CATALOGUE`` overrides the default file."""
    import yaml

    path = Path(path or os.environ.get("HDH_CATALOGUE") or DEFAULT_CATALOGUE).resolve()
    where = str(path)
    try:
        # libyaml's loader, when PyYAML has it: the pure-Python one takes ~0.4 s for the full SNDS (~220 tables),
        # and every DAG file pays it at each parse.
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise CatalogueError(f"{where}: the catalogue file does not exist") from None
    except yaml.YAMLError as err:
        raise CatalogueError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: expected a mapping with 'source_container', 'target_bucket' and 'domains'")
    _check_keys(
        raw,
        {
            "version",
            "source_container",
            "target_bucket",
            "target_eea_regions",
            "target_ca_bundle",
            "bandwidth_mb_s",
            "transfer_slots",
            "waves",
            "domains",
        },
        where,
    )
    if raw.get("version") != 1:
        raise CatalogueError(f"{where}: field 'version' must be 1")
    waves_raw = _require(raw, "waves", where, dict)
    waves = {number: _load_wave(number, waves_raw[number], where) for number in sorted(waves_raw, key=str)}
    domains_raw = _require(raw, "domains", where, dict)
    container = _require(raw, "source_container", where, str)
    domains = tuple(
        _load_domain(name, domains_raw[name], path.parent, where, waves, container) for name in sorted(domains_raw)
    )
    return Catalogue(
        path=path,
        source_container=container,
        target_bucket=_require(raw, "target_bucket", where, str),
        domains=domains,
        waves=tuple(waves.values()),
        transfer_slots=_positive_int(raw, "transfer_slots", DEFAULT_TRANSFER_SLOTS, where),
        bandwidth_mb_s=_bandwidth(raw, where),
        target_eea_regions=_eea_regions(raw, where),
        target_ca_bundle=_ca_bundle(raw, where),
    )


def _eea_regions(raw: dict, where: str) -> tuple[str, ...]:
    """``target_eea_regions``: regions outside France, in the EEA, that the plan names for the target."""
    if "target_eea_regions" not in raw:
        return ()  # France only; target.py is imported only for a plan that names regions
    from hdh_migration.target import eea_region_names

    regions = raw["target_eea_regions"]
    known = eea_region_names()
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise CatalogueError(f"{where}: field 'target_eea_regions' must be a list of region names")
    unknown = sorted(set(regions) - known)
    if unknown:
        raise CatalogueError(
            f"{where}: target_eea_regions names {', '.join(unknown)}, not an EEA region of a provider profile "
            f"(France needs no entry; a region outside the EEA is never allowed). Known: {', '.join(sorted(known))}"
        )
    return tuple(regions)


def _ca_bundle(raw: dict, where: str) -> str | None:
    """``target_ca_bundle``: the absolute path of the one CA bundle the target connection may name."""
    path = raw.get("target_ca_bundle")
    if path is not None and not (isinstance(path, str) and os.path.isabs(path)):
        raise CatalogueError(f"{where}: field 'target_ca_bundle' must be an absolute path to a CA bundle file")
    return path


@lru_cache(maxsize=4)
def cached_catalogue(path: str | None = None) -> Catalogue:
    return load_catalogue(path)
