"""SNDS Table Schema files (Frictionless JSON) and the Arrow types they map to.

One place maps a Table Schema type to an Arrow type, for the generator, the CSV reader and the
validation suites alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hdh_migration.errors import ConfigurationError


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    length: str | None
    constraints: dict
    nomenclature: str | None
    format: str | None = None  # the schema's date format, e.g. "%m" for a month-only date
    description: str = ""

    @property
    def max_length(self) -> int | None:
        """The declared character length of a string column, if any."""
        if self.type != "string" or not self.length:
            return None
        try:
            return int(self.length)
        except ValueError:
            return None


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[dict, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name}")

    def arrow_schema(self):
        import pyarrow as pa

        return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in self.columns])


def arrow_type(table_schema_type: str):
    """The Arrow type that holds values of a Table Schema type, losslessly."""
    import pyarrow as pa

    mapping = {
        "string": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "date": pa.date32(),
        "datetime": pa.timestamp("ms"),  # parquet has no second unit: it would store ms
        "boolean": pa.bool_(),
        "year": pa.int32(),
        "yearmonth": pa.string(),
    }
    try:
        return mapping[table_schema_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"unsupported Table Schema type {table_schema_type!r} (supported: {', '.join(mapping)})"
        ) from None


@lru_cache(maxsize=256)
def load_table_schema(path: str | Path) -> TableSchema:
    """The Table Schema file, checked: a ``ConfigurationError`` names the file and what to fix in it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigurationError(
            f"schema file {path}: cannot be read ({type(err).__name__}). Fix the table's 'schema' field in the catalogue"
        ) from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError: the file is ours, its position helps
        raise ConfigurationError(f"schema file {path}: not valid UTF-8 JSON ({err}). Fix the file") from None
    fields = raw.get("fields") if isinstance(raw, dict) else None
    if not isinstance(fields, list) or not fields:
        raise ConfigurationError(f"schema file {path}: no 'fields' list. Fix the file: it is a Table Schema")
    for index, field in enumerate(fields):
        if not isinstance(field, dict) or not isinstance(field.get("name"), str) or not field["name"]:
            raise ConfigurationError(f"schema file {path}: field #{index + 1} has no 'name'. Fix the file")
        try:
            arrow_type(field.get("type"))
        except ValueError as err:
            raise ConfigurationError(
                f"schema file {path}: column {field['name']}: {err}. Fix its 'type' in the file"
            ) from None
    names = [f["name"] for f in fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigurationError(f"schema file {path}: column(s) {', '.join(duplicated)} declared twice. Fix the file")
    primary_key = raw.get("primaryKey") or []
    if isinstance(primary_key, str):
        primary_key = [primary_key]
    columns = tuple(
        Column(
            name=f["name"],
            type=f["type"],
            length=(str(f["length"]) if f.get("length") not in (None, "") else None),
            constraints=dict(f.get("constraints") or {}),
            nomenclature=(f.get("nomenclature") or None) if f.get("nomenclature") not in ("-", "") else None,
            format=f.get("format") if f.get("format") not in (None, "", "default") else None,
            description=str(f.get("description") or ""),
        )
        for f in fields
    )
    return TableSchema(
        name=raw.get("name", Path(path).stem),
        columns=columns,
        primary_key=tuple(primary_key),
        foreign_keys=tuple(raw.get("foreignKeys") or ()),
    )
