"""Canaries: values planted in the sources reach no output, and a failing object's bytes never
reach the store's disks.

Every value is fresh for each test (random NIRs with a valid key, random tokens), so a leftover of
another run cannot match, and every haystack is checked to hold this run's output, so the search
can fail. The searches look for each value in the text forms it can take (as written, without its
spaces, spaced, as a number, a date in ISO, compact and French forms and as days since 1970).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from conftest import rewrite_source, set_values
from test_alerts import _mails, channels, smtp, webhook  # noqa: F401 - the alert receivers, as fixtures

from hdh_migration.schema import load_table_schema
from hdh_synthetic import write_file

_CORSICA = {"2A": "19", "2B": "18"}
SENTINEL_DATES = (dt.date(1600, 1, 1), dt.date(2999, 12, 31))  # SNDS sentinels, outside pandas' 1677-2262


def _nir(department: str | None = None) -> str:
    """A fresh 15-character NIR with a valid key (Corsican when ``department`` is 2A or 2B)."""
    department = department or f"{secrets.choice([d for d in range(1, 96) if d != 20]):02d}"
    body = (
        secrets.choice("12"),
        f"{secrets.randbelow(100):02d}",
        f"{secrets.randbelow(12) + 1:02d}",
        department,
        f"{secrets.randbelow(999) + 1:03d}",
        f"{secrets.randbelow(999) + 1:03d}",
    )
    number = int("".join(body).replace(department, _CORSICA.get(department, department), 1))
    return "".join(body) + f"{97 - number % 97:02d}"


def _spaced(nir: str) -> str:
    """The NIR as printed on a card: 2 53 07 2B 073 004 70."""
    return " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:]))


@dataclass(frozen=True)
class Canary:
    """A planted value and every text form it can take in an output."""

    what: str
    forms: tuple[str, ...]
    privacy: bool = False  # a raw NIR: never anywhere, committed data included
    fresh: bool = True  # made for this test: no other run can have written it

    @classmethod
    def nir(cls, what: str, written: str) -> Canary:
        plain = written.replace(" ", "")
        return cls(what, tuple(dict.fromkeys((written, plain, _spaced(plain)))), privacy=True)

    @classmethod
    def date(cls, what: str, day: dt.date) -> Canary:
        days = (day - dt.date(1970, 1, 1)).days
        forms = (day.isoformat(), f"{day:%Y%m%d}", f"{day.day:02d}/{day.month:02d}/{day.year}", str(days))
        return cls(what, forms, fresh=False)

    @classmethod
    def token(cls, what: str, text: str) -> Canary:
        return cls(what, (text,))

    def pattern(self) -> re.Pattern:
        # Digit boundaries, so that a day count or a NIR is not found inside a longer number.
        return re.compile("|".join(f"(?<![0-9]){re.escape(form)}(?![0-9])" for form in self.forms))


def _fresh_token(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5).upper()}"


# ---------------------------------------------------------------------------------------------
# planting


def _edit_csv(migration, name: str, table, edits: dict[tuple[int, str], str]) -> None:
    """Replace CSV fields as text ({(data row, column): text}): tokens a typed writer cannot write."""
    dialect = table.csv
    names = load_table_schema(table.schema_path).arrow_schema().names
    lines = migration.source_bytes(name).decode(dialect.encoding).split("\n")
    first = 1 if dialect.header else 0
    for (row, column), text in edits.items():
        assert dialect.delimiter not in text and "\n" not in text
        fields = lines[first + row].split(dialect.delimiter)
        fields[names.index(column)] = text
        lines[first + row] = dialect.delimiter.join(fields)
    migration.source.container_client.upload_blob(name, "\n".join(lines).encode(dialect.encoding), overwrite=True)


def _object_names(migration, domain: str, table_name: str, partition: str) -> list[str]:
    from hdh_migration.layout import partition_dir

    table = migration.catalogue.domain(domain).table(table_name)
    prefix = partition_dir(domain, table_name, table.partition_column, partition)
    return [o.name for o in migration.source.list_objects(prefix, table.source_extension)]


def _write_parquet_source(migration, name: str, arrow: pa.Table) -> None:
    """A parquet source written uncompressed and plain, so that its values are contiguous bytes."""
    sink = io.BytesIO()
    pq.write_table(arrow, sink, compression="none", use_dictionary=False)
    migration.source.container_client.upload_blob(name, sink.getvalue(), overwrite=True)


def _source_text(migration, name: str, table) -> str:
    """A source object as text: a CSV as its bytes, a parquet as its decoded values."""
    data = migration.source_bytes(name)
    if table.format == "csv":
        return data.decode(table.csv.encoding)
    return _values_text(pq.read_table(io.BytesIO(data)))


def _values_text(arrow: pa.Table) -> str:
    return "\n".join(str(value) for column in arrow.columns for value in column.to_pylist())


# ---------------------------------------------------------------------------------------------
# the haystacks


def _row_text(row) -> str:
    parts = []
    for value in row:
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value)
            with contextlib.suppress(zlib.error):
                value = zlib.decompress(value)  # compressed serialized DAGs and the like
            parts.append(value.decode("latin-1"))
        else:
            parts.append(json.dumps(value, default=str, ensure_ascii=False))
    return "\t".join(parts)


def _database_rows(url: str) -> dict[str, set[str]]:
    """Every row of every table of a database, as text, by table."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {
                table.name: {_row_text(row) for row in conn.execute(sa.select(table))}
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()


def _airflow_database_url() -> str:
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def _task_log_files(since: float) -> str:
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    return "\n".join(
        path.read_bytes().decode("latin-1")
        for path in sorted(logs.rglob("*"))
        if path.is_file() and path.stat().st_mtime >= since
    )


def _is_data(key: str) -> bool:
    """A data object: final, or staged by a table that passed (its rows are the data being moved)."""
    return not key.startswith("_") or (key.startswith("_staging/") and key.endswith(".parquet"))


def _bucket_texts(migration) -> tuple[dict[str, str], dict[str, str]]:
    """(every other object as text: manifests, reports, key files; every data object's values as text)."""
    outputs, data = {}, {}
    for key in migration.target_keys(""):
        body = migration.target_bytes(key)
        text = body.decode("latin-1")
        if body[:4] == b"PAR1":
            text += "\n" + _values_text(pq.read_table(io.BytesIO(body)))
        (data if _is_data(key) else outputs)[key] = text
    return outputs, data


def _alert_texts(webhook, smtp) -> list[str]:  # noqa: F811 - the fixtures' values
    return [r["body"].decode("utf-8") for r in webhook.received] + [mail for _, mail in _mails(smtp)]


def _hits(canaries: list[Canary], haystacks: dict[str, str]) -> list[str]:
    found = []
    for canary in canaries:
        pattern = canary.pattern()
        for where, text in haystacks.items():
            for match in pattern.finditer(text):
                context = text[max(0, match.start() - 80) : match.end() + 80].replace("\n", " ")
                found.append(f"{canary.what} ({match.group()!r}) in {where}: …{context}…")
    return found


class Outputs:
    """What a test's runs leave behind, searched for the canaries."""

    def __init__(self, migration, channels):  # noqa: F811 - the fixture's value
        self.migration = migration
        self.webhook, self.smtp = channels
        self.started = time.time()
        # Rows of Airflow's database before the runs: non-unique forms (a date) are searched only in
        # rows the runs wrote; this test's fresh values are searched in every row.
        self.airflow_before = _database_rows(_airflow_database_url())

    def search(self, canaries: list[Canary], task_logs: str) -> list[str]:
        migration = self.migration
        airflow_after = _database_rows(_airflow_database_url())
        airflow_all = "\n".join(row for rows in airflow_after.values() for row in rows)
        airflow_new = {
            f"Airflow's database, table {name}": "\n".join(rows - self.airflow_before.get(name, set()))
            for name, rows in airflow_after.items()
        }
        ledger_url = migration.ledger.engine.url.render_as_string(hide_password=False)
        ledger = "\n".join(row for rows in _database_rows(ledger_url).values() for row in rows)
        outputs, data = _bucket_texts(migration)
        alerts = _alert_texts(self.webhook, self.smtp)
        haystacks = {
            "the task logs": task_logs + _task_log_files(self.started),
            "the ledger": ledger,
            **{f"s3://{migration.target.bucket}/{key}": text for key, text in outputs.items()},
            **{f"alert {n}": text for n, text in enumerate(alerts)},
        }
        # Each haystack holds this run's output: a search of an empty place proves nothing.
        assert "transfer_object" in haystacks["the task logs"]
        assert "hdh_transfer__" in "".join(airflow_new.values()) and "transfer_object" in airflow_all
        assert '"planned"' in ledger
        assert any(key.startswith("_quarantine/") for key in outputs), "a quarantine report to search"
        assert alerts, "alerts to search"
        return (
            _hits(canaries, haystacks)
            + _hits([c for c in canaries if c.fresh], {"Airflow's database": airflow_all})
            + _hits([c for c in canaries if not c.fresh], airflow_new)
            + _hits([c for c in canaries if c.privacy], {f"data object {k}": t for k, t in data.items()})
        )


def _run_all(migration, capfd, caplog, runs: list[tuple[str, str]]) -> str:
    capfd.readouterr()
    for domain, partition in runs:
        run = migration.run(domain, partition)
        assert str(run.state) in ("success", "failed")
    # The task log reaches the captured output or the log records, depending on who configured logging first.
    return "".join(capfd.readouterr()) + caplog.text


# ---------------------------------------------------------------------------------------------
# the tests


def test_planted_values_reach_no_log_database_object_or_alert(migration, channels, capfd, caplog):  # noqa: F811
    migration.seed(domains=["causes_deces", "pmsi_mco"], rows_per_partition=240, files_per_partition=3)
    catalogue = migration.catalogue
    canaries: list[Canary] = []

    def plant(canary: Canary) -> Canary:
        canaries.append(canary)
        return canary

    raw, corsican_a, corsican_b = _nir(), _nir("2A"), _nir("2B")
    numeric = _nir()
    free = [plant(Canary.token(f"free text {n}", _fresh_token("ZQXCANARY"))) for n in range(4)]
    not_numbers = [plant(Canary.token(f"non-numeric token {n}", _fresh_token("ZQXNUM"))) for n in range(2)]
    plant(Canary.nir("raw NIR", raw))
    plant(Canary.nir("Corsican NIR 2A, spaced", _spaced(corsican_a)))
    plant(Canary.nir("Corsican NIR 2B", corsican_b))
    plant(Canary.nir("raw NIR in a number column", numeric))
    for day in SENTINEL_DATES:
        plant(Canary.date(f"date {day}", day))
    from hdh_migration.nir import find_raw_nir

    assert all(find_raw_nir(n) for n in (raw, _spaced(corsican_a), corsican_b, numeric)), "the NIRs are valid"

    # CSV (CépiDc), 2022: NIRs and free text; sentinel dates; non-numeric tokens in numeric columns.
    cepidc = catalogue.domain("causes_deces").table("KI_CCI_R")
    first, second, third = _object_names(migration, "causes_deces", "KI_CCI_R", "2022")
    rewrite_source(
        migration,
        "causes_deces",
        "KI_CCI_R",
        "2022",
        lambda t: set_values(
            set_values(t, "DCD_LIE_LIB", {3: f"vu le {raw} à Ajaccio {free[0].forms[0]}", 5: _spaced(corsican_a)}),
            "MER_PFG_LIB",
            {4: f"{corsican_b} {free[1].forms[0]}"},
        ),
    )
    arrow = migration.read_source("causes_deces", "KI_CCI_R", second)
    arrow = set_values(arrow, "BEN_DCD_DTE", {2: SENTINEL_DATES[0], 4: SENTINEL_DATES[1]})
    arrow = set_values(arrow, "BEN_NAI_MOI", {6: SENTINEL_DATES[0]})
    _upload_source(migration, second, cepidc, arrow)
    _edit_csv(migration, third, cepidc, {(2, "DCD_CAU_COD"): not_numbers[0].forms[0]})
    # 2023: a NIR as a number in an integer column, and a non-numeric token in a decimal one.
    first_2023, second_2023, _ = _object_names(migration, "causes_deces", "KI_CCI_R", "2023")
    _edit_csv(migration, first_2023, cepidc, {(1, "DCD_LIE_COD"): numeric})
    _edit_csv(migration, second_2023, cepidc, {(3, "NEO_NAI_POI"): f"3,{not_numbers[1].forms[0]}"})

    # Parquet (PMSI), 2022: NIRs and free text in strings, a NIR in an integer column; 2023: sentinel dates.
    rewrite_source(
        migration,
        "pmsi_mco",
        "T_MCOaaB",
        "2022",
        lambda t: set_values(
            set_values(t, "SOR_DES", {1: raw, 2: f"{free[2].forms[0]} {_spaced(corsican_a)}"}),
            "GRC_GHM",
            {3: corsican_b},
        ),
    )
    rewrite_source(migration, "pmsi_mco", "T_MCOaaC", "2022", lambda t: set_values(t, "RNG_NAI", {4: int(numeric)}))
    rewrite_source(
        migration,
        "pmsi_mco",
        "T_MCOaaC",
        "2023",
        lambda t: set_values(
            set_values(t, "ENT_DAT", {1: SENTINEL_DATES[0]}),
            "SOR_DAT",
            {2: SENTINEL_DATES[1]},
        ),
    )
    rewrite_source(migration, "pmsi_mco", "T_MCOaaB", "2023", lambda t: set_values(t, "ENT_PRV", {0: free[3].forms[0]}))

    # The canaries are in the sources, in the forms searched for.
    sources = "\n".join(
        _source_text(migration, name, catalogue.domain(domain).table(table))
        for domain, table, partition in (
            ("causes_deces", "KI_CCI_R", "2022"),
            ("causes_deces", "KI_CCI_R", "2023"),
            ("pmsi_mco", "T_MCOaaB", "2022"),
            ("pmsi_mco", "T_MCOaaC", "2022"),
            ("pmsi_mco", "T_MCOaaB", "2023"),
            ("pmsi_mco", "T_MCOaaC", "2023"),
        )
        for name in _object_names(migration, domain, table, partition)
    )
    for canary in canaries:
        assert canary.pattern().search(sources), f"{canary.what} is planted"

    outputs = Outputs(migration, channels)
    runs = [("causes_deces", "2022"), ("causes_deces", "2023"), ("pmsi_mco", "2022"), ("pmsi_mco", "2023")]
    task_logs = _run_all(migration, capfd, caplog, runs)

    hits = outputs.search(canaries, task_logs)
    assert not hits, f"{len(hits)} hit(s):\n" + "\n".join(hits)


def _upload_source(migration, name: str, table, arrow: pa.Table) -> None:
    """A source object replaced by rows written in its table's format (as the seed writes them)."""
    sink = io.BytesIO()
    write_file(table, arrow, sink)
    migration.source.container_client.upload_blob(name, sink.getvalue(), overwrite=True)


def test_a_headerless_csv_row_reaches_no_output(migration, channels, capfd, caplog, monkeypatch):  # noqa: F811
    """A CSV declared ``header: false``: its first row is data, and a NIR there reaches no output."""
    from conftest import write_catalogue

    from hdh_migration.catalogue import cached_catalogue

    def headerless(raw):
        raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"]["header"] = False

    write_catalogue(migration.catalogue_path, migration.name, headerless)
    cached_catalogue.cache_clear()
    migration.seed(domains=["causes_deces"], rows_per_partition=120, files_per_partition=1)
    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    assert table.csv.header is False
    raw, free = _nir("2B"), _fresh_token("ZQXCANARY")
    canaries = [Canary.nir("raw NIR in the first row", raw), Canary.token("free text in the first row", free)]
    (name,) = _object_names(migration, "causes_deces", "KI_CCI_R", "2022")
    _edit_csv(migration, name, table, {(0, "DCD_LIE_LIB"): f"{raw} {free}", (0, "MER_PFG_LIB"): free})
    first_line = migration.source_bytes(name).decode(table.csv.encoding).split("\n", 1)[0]
    assert raw in first_line and "DCD_LIE_LIB" not in first_line, "the NIR is in the first row, no header"

    outputs = Outputs(migration, channels)
    task_logs = _run_all(migration, capfd, caplog, [("causes_deces", "2022")])

    hits = outputs.search(canaries, task_logs)
    assert not hits, f"{len(hits)} hit(s):\n" + "\n".join(hits)
    assert migration.ledger.get("causes_deces", "KI_CCI_R", "2022").state == "quarantined"


# ---------------------------------------------------------------------------------------------
# the store's own files


def _s3_data_dir() -> Path:
    """The running SeaweedFS's data directory: HDH_S3_DATA_DIR (scripts/env.sh sets its default)."""
    path = Path(os.environ.get("HDH_S3_DATA_DIR", "HDH_S3_DATA_DIR is not set: source scripts/env.sh"))
    assert path.is_dir(), f"{path} is not a directory: set HDH_S3_DATA_DIR to the running SeaweedFS's -dir"
    return path


def _grep_tree(root: Path, needles: list[bytes]) -> dict[bytes, int]:
    """How many times each byte string occurs in the files under ``root`` (volumes, indexes, filer store)."""
    counts = dict.fromkeys(needles, 0)
    overlap = max(len(n) for n in needles) - 1
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            handle = open(path, "rb")  # noqa: SIM115 - a file may vanish while the server compacts
        except FileNotFoundError:
            continue
        with handle:
            tail = b""
            while chunk := handle.read(16 << 20):
                window = tail + chunk
                for needle in needles:
                    # Count only matches that end in the new chunk: the overlap was searched already.
                    counts[needle] += sum(1 for m in re.finditer(re.escape(needle), window) if m.end() > len(tail))
                tail = window[-overlap:] if overlap else b""
    return counts


def test_a_failing_object_never_reaches_the_store_disks(migration):
    """Staging holds only what passed: a NIR's bytes are on none of SeaweedFS's files after a quarantine,
    while a passing object's bytes, staged and then deleted with the quarantine, still are."""
    data_dir = _s3_data_dir()
    migration.seed(domains=["beneficiaires"], rows_per_partition=200, files_per_partition=2)
    raw, corsican = _nir(), _spaced(_nir("2A"))
    control = _fresh_token("ZQXCONTROL")
    failing, passing = _object_names(migration, "beneficiaires", "IR_BEN_R", "2024-06-30")
    source = migration.read_source("beneficiaires", "IR_BEN_R", failing)
    _write_parquet_source(migration, failing, set_values(source, "BEN_RES_COM", {1: raw, 2: corsican}))
    source = migration.read_source("beneficiaires", "IR_BEN_R", passing)
    _write_parquet_source(migration, passing, set_values(source, "BEN_DCD_AME", {1: control, 3: control}))
    # Uncompressed and plain: had the failing object been sent, its NIRs would be greppable as such.
    assert raw.encode() in migration.source_bytes(failing) and corsican.encode() in migration.source_bytes(failing)
    assert control.encode() in migration.source_bytes(passing)

    run = migration.run("beneficiaires", "2024-06-30")

    assert str(run.state) == "failed"
    record = migration.ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30")
    assert record.state == "quarantined" and record.last_error.startswith("PRIVACY INCIDENT")
    assert migration.target_keys("_staging/") == [] and migration.target_keys("beneficiaires/") == []
    counts = _grep_tree(data_dir, [raw.encode(), corsican.encode(), raw[:13].encode(), control.encode()])
    assert counts[control.encode()] >= 1, (
        f"the passing object, staged then deleted, is not found under {data_dir}: is it the data directory "
        "of the SeaweedFS that answers on HDH_S3_PORT? (set HDH_S3_DATA_DIR)"
    )
    assert counts[raw.encode()] == counts[corsican.encode()] == counts[raw[:13].encode()] == 0, counts
