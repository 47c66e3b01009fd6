"""Each kind of bad input quarantines its partition with an error naming where and which rule; nothing lands."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import rewrite_source, set_values
from haystacks import assert_nowhere, outputs, tries

from hdh_migration.cli import main
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
def test_bad_input_is_quarantined_with_a_clear_error(migration, capsys, domain, table_name, partition, corrupt, rule):
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
    for other in migration.catalogue.domain(domain).tables:  # the partition's other tables wait, and say on which
        if other.name != table_name:
            waiting = migration.ledger.get(domain, other.name, partition)
            assert waiting.state == "validated" and waiting.last_error == (
                f"waits for {table_name} (quarantined in the same partition)"
            ), other.name
            capsys.readouterr()
            assert main(["status", "--json"]) == 0
            status = {row["domain"]: row for row in json.loads(capsys.readouterr().out)}[domain]
            assert status["waiting"] == [
                {"table": other.name, "partition": partition, "waits_for": waiting.last_error}
            ], "status says which table waits on which"


def test_the_tables_that_waited_commit_with_the_fixed_one_and_wait_no_more(migration, capsys):
    """A partition commits all its tables together: once the quarantined one is fixed, both commit."""
    migration.seed(domains=["dcir"])
    name = _first_object(migration, "dcir", "ER_PHA_F", "2024-01-01")
    original = migration.source_bytes(name)
    negative_amount(migration, name)
    assert str(migration.run("dcir", "2024-01-01").state) == "failed"
    waiting = migration.ledger.get("dcir", "ER_PRS_F", "2024-01-01")
    assert waiting.state == "validated" and waiting.last_error.startswith("waits for ER_PHA_F")

    _put(migration, name, original)  # the producer fixed the source
    assert str(migration.run("dcir", "2024-01-01").state) == "success"
    assert {t: migration.ledger.get("dcir", t, "2024-01-01").state for t in ("ER_PHA_F", "ER_PRS_F")} == {
        "ER_PHA_F": "committed",
        "ER_PRS_F": "committed",
    }
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert {row["domain"]: row for row in json.loads(capsys.readouterr().out)}["dcir"]["waiting"] == []


# ---------------------------------------------------------------------------------------------
# No data value on any error path: each case plants values and searches every output for them.

RAW_NIR = "295109912611193"  # a valid NIR from the shared vectors
CANARY = "ZQXCANARY"
SENTINELS = ("1600-01-01", "2999-12-31")
# How Arrow and numpy would quote them: days and milliseconds since 1970.
SENTINEL_NUMBERS = ("-135140", "376199", "-11676096000", "32503593600")  # a prefix of the ms and us counts too


def _recatalogue(migration, mutate) -> None:
    """The test's catalogue rewritten by ``mutate`` (its file paths already absolute)."""
    from conftest import write_catalogue

    from hdh_migration.catalogue import cached_catalogue

    write_catalogue(migration.catalogue_path, migration.name, mutate)
    cached_catalogue.cache_clear()


def _table_field(domain: str, table: str, field: str, value):
    def mutate(raw):
        raw["domains"][domain]["tables"][table][field] = value

    return mutate


def _run_capturing(migration, capfd, domain: str, partition: str):
    capfd.readouterr()
    run = migration.run(domain, partition)
    return run, "".join(capfd.readouterr())


def _quarantined_at_once(migration, capfd, domain: str, table: str, partition: str):
    """Run the partition: it fails, its objects are tried once and its validation is not retried; the
    table is quarantined. Returns the run's logs and the table's ledger record."""
    run, logs = _run_capturing(migration, capfd, domain, partition)
    assert str(run.state) == "failed"
    tasks = tries(run)
    assert tasks["transfer_object"][1] == 1 and tasks["validate_partition"] == ({"failed"}, 1)
    record = migration.ledger.get(domain, table, partition)
    assert record.state == "quarantined"
    return logs, record


def test_sentinel_dates_are_checked_in_their_unit_and_quarantine_at_once_without_the_value(migration, capfd, caplog):
    migration.seed(domains=["dcir"])
    name = _first_object(migration, "dcir", "ER_PHA_F", "2024-01-01")
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    arrow = set_values(arrow, "FLX_DIS_DTD", {1: dt.date(1600, 1, 1)})  # bounded by the partition: fails
    arrow = set_values(arrow, "FLX_TRT_DTD", {2: dt.date(2999, 12, 31)})  # no bound: passes
    _put(migration, name, _parquet(arrow))

    run, logs = _run_capturing(migration, capfd, "dcir", "2024-01-01")
    logs += caplog.text  # the alert's record, wherever Airflow's handlers sent it (see test_alerts)
    assert str(run.state) == "failed"
    tasks = tries(run)
    assert tasks["transfer_object"] == ({"success"}, 1), "the dates are checked, not crashed on"
    assert tasks["validate_partition"] == ({"failed"}, 1), "a quarantine is never retried"
    record = migration.ledger.get("dcir", "ER_PHA_F", "2024-01-01")
    assert record.state == "quarantined", record.last_error
    assert "expect_column_values_to_be_between(FLX_DIS_DTD) in object(s) " + name in record.last_error
    assert "FLX_TRT_DTD" not in record.last_error
    report = migration.target.get_json(next(k for k in migration.target_keys("_quarantine/") if k.endswith(".json")))
    failing = {r["kwargs"].get("column"): r for r in report["validation"]["results"] if not r["success"]}
    assert failing["FLX_DIS_DTD"]["result"]["unexpected_count"] == 1
    assert "HDH ALERT" in logs and "ArrowInvalid" not in logs
    assert_nowhere(outputs(migration, "hdh_transfer__dcir", logs), SENTINELS + SENTINEL_NUMBERS)


def _lzo(data: bytes) -> bytes:
    """The parquet file with every column chunk marked LZO, which the format names and pyarrow cannot read.

    Written with brotli (codec 4); the footer's thrift field ``codec`` (field 4, i32: 0x15, zigzag 8) is
    rewritten to LZO (3, zigzag 6). The test checks pyarrow now reads LZO from the footer.
    """
    import struct

    buffer = bytearray(data)
    footer_length = struct.unpack("<i", buffer[-8:-4])[0]
    start = len(buffer) - 8 - footer_length
    buffer[start:-8] = bytes(buffer[start:-8]).replace(b"\x15\x08", b"\x15\x06")
    return bytes(buffer)


def test_an_unsupported_codec_quarantines_at_once_and_says_how_to_re_export(migration, capfd):
    migration.seed(domains=["beneficiaires"])
    name = _first_object(migration, "beneficiaires", "IR_BEN_R", "2024-06-30")
    arrow = pq.read_table(io.BytesIO(migration.source_bytes(name)))
    sink = io.BytesIO()
    pq.write_table(set_values(arrow, "BEN_RES_COM", {0: CANARY}), sink, compression="brotli")
    data = _lzo(sink.getvalue())
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)} == {"LZO"}
    _put(migration, name, data)

    logs, record = _quarantined_at_once(migration, capfd, "beneficiaires", "IR_BEN_R", "2024-06-30")
    assert f"expect_file_to_be_valid_parquet() in object(s) {name}" in record.last_error
    assert "compressed with LZO, which pyarrow cannot read" in record.last_error
    assert "Re-export it with zstd, snappy or gzip" in record.last_error
    assert migration.target_keys("beneficiaires/") == [] and migration.target_keys("_staging/") == []
    assert_nowhere(outputs(migration, "hdh_transfer__beneficiaires", logs), [CANARY])


def test_a_headerless_csv_declared_so_is_read_with_the_schemas_columns(migration, capfd):
    import pyarrow.compute as pc

    _recatalogue(migration, _table_field("causes_deces", "KI_CCI_R", "csv", {"header": False}))
    migration.seed(domains=["causes_deces"])
    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    name = rewrite_source(
        migration,
        "causes_deces",
        "KI_CCI_R",
        "2022",
        lambda t: set_values(t, "BEN_DCD_DTE", {0: dt.date(1600, 1, 1), 1: dt.date(2999, 12, 31)}),
    )
    head = migration.source_bytes(name).split(b"\n", 1)[0].decode("latin-1")
    assert not set(head.split(";")) & set(table_schema_names(table)), "the first line is a row, not a header"

    run, logs = _run_capturing(migration, capfd, "causes_deces", "2022")
    assert str(run.state) == "success", migration.ledger.get("causes_deces", "KI_CCI_R", "2022").last_error
    manifest = migration.target.get_json(f"_manifests/causes_deces/KI_CCI_R/{table.partition_column}=2022.json")
    landed = [pq.read_table(io.BytesIO(migration.target_bytes(f["key"]))) for f in manifest["files"]]
    sources = [migration.read_source("causes_deces", "KI_CCI_R", o["name"]) for o in manifest["source_objects"]]
    assert manifest["rows"] == sum(t.num_rows for t in sources), "the first line is a row, not a header"
    dates = pa.concat_tables(landed).column("BEN_DCD_DTE")
    assert pc.sum(pc.is_in(dates, pa.array([dt.date(1600, 1, 1), dt.date(2999, 12, 31)]))).as_py() == 2
    assert_nowhere(outputs(migration, "hdh_transfer__causes_deces", logs, "_"), SENTINELS + SENTINEL_NUMBERS)


def test_a_csv_without_its_header_line_is_refused_by_counts_and_positions_never_its_tokens(migration, capfd):
    import dataclasses

    from hdh_synthetic import write_file

    migration.seed(domains=["causes_deces"])
    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    name = _first_object(migration, "causes_deces", "KI_CCI_R", "2022")
    arrow = set_values(
        migration.read_source("causes_deces", "KI_CCI_R", name), "DCD_LIE_LIB", {0: f"{RAW_NIR} {CANARY}"}
    )
    sink = io.BytesIO()
    write_file(dataclasses.replace(table, csv=dataclasses.replace(table.csv, header=False)), arrow, sink)
    assert sink.getvalue().split(b"\n", 1)[0].count(RAW_NIR.encode()) == 1, "the NIR is in the first line"
    _put(migration, name, sink.getvalue())

    logs, record = _quarantined_at_once(migration, capfd, "causes_deces", "KI_CCI_R", "2022")
    error = record.last_error
    assert error.startswith("domain=causes_deces table=KI_CCI_R partition=2022: quarantined")
    assert (
        f"expect_table_columns_to_match_ordered_list({','.join(table_schema_names(table))}) in object(s) {name}"
        in error
    )
    columns = len(table_schema_names(table))
    assert f"object={name}: columns differ from the schema KI_CCI_R.json" in error
    assert f"the file has {columns} columns, the schema {columns}" in error
    assert "set 'header: false' in the catalogue if the file has no header line" in error
    assert_nowhere(outputs(migration, "hdh_transfer__causes_deces", logs), [RAW_NIR, CANARY])


def table_schema_names(table) -> list[str]:
    from hdh_migration.schema import load_table_schema

    return load_table_schema(table.schema_path).column_names


def _broken_schema(migration, tmp_path):
    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    path = tmp_path / "KI_CCI_R.schema.json"
    path.write_text(table.schema_path.read_text().replace('"type": "string"', '"type": "text"', 1))
    return "schema", path, f"schema file {path}: column ", "Fix its 'type' in the file"


def _unknown_expectation(migration, tmp_path):
    import json

    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    suite = json.loads(table.suite_path.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_nul", "kwargs": {"column": "DCD_LIE_LIB"}})
    path = tmp_path / "KI_CCI_R.suite.json"
    path.write_text(json.dumps(suite))
    return "suite", path, f"suite file {path}: unknown expectation type(s) expect_column_values_to_be_nul", "Correct"


@pytest.mark.parametrize("broken", [_broken_schema, _unknown_expectation], ids=lambda f: f.__name__.strip("_"))
def test_a_configuration_error_fails_at_once_naming_the_file_and_the_setting(migration, capfd, tmp_path, broken):
    from hdh_migration.schema import load_table_schema

    migration.seed(domains=["causes_deces"])
    field, path, message, fix = broken(migration, tmp_path)
    _recatalogue(migration, _table_field("causes_deces", "KI_CCI_R", field, str(path)))
    load_table_schema.cache_clear()

    run, logs = _run_capturing(migration, capfd, "causes_deces", "2022")
    assert str(run.state) == "failed"
    tasks = tries(run)
    assert tasks["transfer_object"] == ({"failed"}, 1), "a configuration error is not retried"
    record = migration.ledger.get("causes_deces", "KI_CCI_R", "2022")
    assert record.state == "failed"
    assert message in record.last_error and fix in record.last_error
    assert "ConfigurationError" in logs and message in logs
    assert migration.target_keys("causes_deces/") == [] and migration.target_keys("_staging/") == []
