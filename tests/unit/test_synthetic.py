"""The synthetic SNDS follows its schemas, joins like the real one, and never looks like a raw NIR."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import CATALOGUE as CATALOGUE_PATH
from conftest import read_table_bytes

from hdh_migration.catalogue import load_catalogue
from hdh_migration.nir import raw_nir_mask
from hdh_migration.schema import load_table_schema
from hdh_synthetic import BATCH_ROWS, blob_name, generate_file, write_file

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = load_catalogue(CATALOGUE_PATH)
SEED, ROWS, FILES = 42, 240, 3
TABLES = [table for domain in CATALOGUE.domains for table in domain.tables]
ICD10 = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z]{0,3}$")
DCIR_KEYS = ["DCT_ORD_NUM", "FLX_DIS_DTD", "FLX_EMT_NUM", "FLX_EMT_ORD", "FLX_EMT_TYP", "FLX_TRT_DTD"]
DCIR_KEYS += ["ORG_CLE_NUM", "PRS_ORD_NUM", "REM_TYP_AFF"]


def _table(name: str):
    return next(t for t in TABLES if t.name == name)


def _generate(table, partition, file_index, *, seed=SEED, rows=ROWS, files=FILES, catalogue=CATALOGUE):
    return generate_file(
        catalogue, table, partition, file_index, seed=seed, rows_per_partition=rows, files_per_partition=files
    )


@pytest.fixture(scope="module")
def files() -> dict[tuple[str, str], list[pa.Table]]:
    """Every file of every partition of the tests' catalogue, by (table, partition)."""
    return {
        (table.name, partition): [_generate(table, partition, index) for index in range(FILES)]
        for domain in CATALOGUE.domains
        for partition in domain.partitions()
        for table in domain.tables
    }


def _partition(files, name: str, partition: str) -> pa.Table:
    return pa.concat_tables(files[(name, partition)])


def _keys(table: pa.Table, columns: list[str]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def _assert_follows_schema(arrow: pa.Table, schema, where: str) -> None:
    assert arrow.schema.equals(schema.arrow_schema()), where
    for column in schema.columns:
        values = arrow.column(column.name).drop_null()
        what = f"{where}.{column.name}"
        if not len(values):
            continue
        constraints = column.constraints
        if column.type == "string":
            lengths = pc.utf8_length(values)
            assert pc.max(lengths).as_py() <= (column.max_length or 10**6), what
            assert pc.min(lengths).as_py() >= constraints.get("minLength", 1), what
        if column.type == "integer" and column.length and column.length.isdigit():
            assert pc.max(pc.abs(values)).as_py() < 10 ** int(column.length), what
        if "minimum" in constraints:
            assert pc.min(values).as_py() >= constraints["minimum"], what
        if "maximum" in constraints:
            assert pc.max(values).as_py() <= constraints["maximum"], what
        if "enum" in constraints:
            assert set(values.unique().to_pylist()) <= set(constraints["enum"]) - {""}, what


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_file_has_the_schema_columns_types_and_constraints(files, table):
    schema = load_table_schema(table.schema_path)
    for partition in CATALOGUE.domain(table.domain).partitions():
        for index, arrow in enumerate(files[(table.name, partition)]):
            _assert_follows_schema(arrow, schema, f"{table.name}[{partition}][{index}]")


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_keys_and_unique_columns_are_unique_across_the_files_of_a_partition_and_never_null(files, table):
    schema = load_table_schema(table.schema_path)
    unique = [c.name for c in schema.columns if c.constraints.get("unique")]
    for partition in CATALOGUE.domain(table.domain).partitions():
        arrow = _partition(files, table.name, partition)
        assert arrow.num_rows == ROWS
        for column in [*table.primary_key, *unique]:
            assert arrow.column(column).null_count == 0, column
        if table.primary_key:
            assert len(set(_keys(arrow, list(table.primary_key)))) == ROWS
        for column in unique:
            assert len(set(arrow.column(column).to_pylist())) == ROWS, column


def test_pharmacy_lines_reference_claims_of_their_partition(files):
    for partition in CATALOGUE.domain("dcir").partitions():
        claims = set(_keys(_partition(files, "ER_PRS_F", partition), DCIR_KEYS))
        lines = _keys(_partition(files, "ER_PHA_F", partition), DCIR_KEYS)
        assert set(lines) <= claims
        assert len(set(lines)) > len(lines) // 2  # lines spread over many claims, not a few


def test_stays_and_their_patient_linkage_share_keys_and_exit_dates(files):
    for partition in CATALOGUE.domain("pmsi_mco").partitions():
        stays = _partition(files, "T_MCOaaB", partition)
        linkage = _partition(files, "T_MCOaaC", partition)
        assert _keys(stays, ["ETA_NUM", "RSA_NUM"]) == _keys(linkage, ["ETA_NUM", "RSA_NUM"])
        # same row number, same stay: the exit month of B is the month of C's exit date
        for exit_month, exit_date in zip(stays["SOR_MOI"].to_pylist(), linkage["SOR_DAT"].to_pylist(), strict=True):
            if exit_month and exit_date:
                assert exit_month.month == exit_date.month


def test_every_pseudonym_belongs_to_the_beneficiary_pool(files):
    (snapshot,) = CATALOGUE.domain("beneficiaires").partitions()
    pool = _partition(files, "IR_BEN_R", snapshot)
    assert pool.num_rows == ROWS
    beneficiaries = set(_keys(pool, ["BEN_NIR_PSA", "BEN_RNG_GEM"]))
    psa = set(pool["BEN_NIR_PSA"].to_pylist())
    nir_ano = set(pool["BEN_NIR_ANO"].drop_null().to_pylist())
    idt_ano = set(pool["BEN_IDT_ANO"].to_pylist())
    for partition in CATALOGUE.domain("dcir").partitions():
        assert set(_keys(_partition(files, "ER_PRS_F", partition), ["BEN_NIR_PSA", "BEN_RNG_GEM"])) <= beneficiaries
    for partition in CATALOGUE.domain("pmsi_mco").partitions():
        assert set(_partition(files, "T_MCOaaC", partition)["NIR_ANO_17"].to_pylist()) <= psa
    for partition in CATALOGUE.domain("causes_deces").partitions():
        deaths = _partition(files, "KI_CCI_R", partition)
        assert set(deaths["BEN_IDT_ANO"].to_pylist()) <= idt_ano
        assert set(deaths["BEN_NIR_ANO"].drop_null().to_pylist()) <= nir_ano
    for pseudonym in psa:
        assert re.fullmatch(r"[0-9A-Z]{17}", pseudonym) and not pseudonym.isdigit()
        assert pseudonym not in ("xxxxxxxxxxxxxxxxx", "XXXXXXXXXXXXXXXXD")


def test_a_beneficiary_keeps_sex_and_birth_year_wherever_referenced(files):
    (snapshot,) = CATALOGUE.domain("beneficiaires").partitions()
    pool = _partition(files, "IR_BEN_R", snapshot)
    by_psa = {row["BEN_NIR_PSA"]: row for row in pool.select(["BEN_NIR_PSA", "BEN_SEX_COD", "BEN_NAI_ANN"]).to_pylist()}
    claims = _partition(files, "ER_PRS_F", "2024-01-01")
    for row in claims.select(["BEN_NIR_PSA", "BEN_SEX_COD", "BEN_NAI_ANN"]).to_pylist():
        assert row == by_psa[row["BEN_NIR_PSA"]]


def test_dates_fall_inside_their_partition_and_care_precedes_the_flux(files):
    for partition in CATALOGUE.domain("dcir").partitions():
        flux = dt.date.fromisoformat(partition)
        for name in ("ER_PRS_F", "ER_PHA_F"):
            assert set(_partition(files, name, partition)["FLX_DIS_DTD"].to_pylist()) == {flux}
        claims = _partition(files, "ER_PRS_F", partition).to_pylist()
        for row in claims:
            assert row["FLX_TRT_DTD"] <= flux
            if row["EXE_SOI_DTD"]:
                assert flux - dt.timedelta(days=180) <= row["EXE_SOI_DTD"] <= row["FLX_TRT_DTD"]
            if row["EXE_SOI_DTD"] and row["EXE_SOI_DTF"]:
                assert row["EXE_SOI_DTD"] <= row["EXE_SOI_DTF"]
            if row["EXE_SOI_DTD"] and row["EXE_SOI_AMD"]:
                assert row["EXE_SOI_AMD"] == row["EXE_SOI_DTD"].strftime("%Y%m")
    for partition in CATALOGUE.domain("pmsi_mco").partitions():
        year = int(partition)
        for name in ("T_MCOaaB", "T_MCOaaC"):
            assert set(_partition(files, name, partition)["SOR_ANN"].to_pylist()) == {year}
        for row in _partition(files, "T_MCOaaC", partition).to_pylist():
            assert row["SOR_DAT"] is None or row["SOR_DAT"].year == year
            if row["EXE_SOI_DTD"] and row["EXE_SOI_DTF"]:
                assert row["EXE_SOI_DTD"] < row["EXE_SOI_DTF"]
    for partition in CATALOGUE.domain("causes_deces").partitions():
        deaths = _partition(files, "KI_CCI_R", partition)
        assert set(deaths["FLX_PER_ANN"].to_pylist()) == {int(partition)}
        assert {d.year for d in deaths["BEN_DCD_DTE"].drop_null().to_pylist()} == {int(partition)}


def test_yearmonths_are_yyyymm_texts(files):
    for (name, _), tables in files.items():
        schema = load_table_schema(_table(name).schema_path)
        for column in (c.name for c in schema.columns if c.type == "yearmonth"):
            for value in pa.concat_tables(tables)[column].drop_null().to_pylist():
                assert re.fullmatch(r"(19|20)[0-9]{2}(0[1-9]|1[0-2])", value), (name, column, value)


def test_codes_amounts_and_texts_are_plausible(files):
    stays = _partition(files, "T_MCOaaB", "2022")
    deaths = _partition(files, "KI_CCI_R", "2022")
    claims = _partition(files, "ER_PRS_F", "2024-01-01")
    for values in (stays["DGN_PAL"], stays["DGN_REL"], deaths["DCD_CIM_COD"]):
        assert all(ICD10.match(v) for v in values.drop_null().to_pylist())
    assert set(claims["BEN_SEX_COD"].drop_null().to_pylist()) == {1, 2}
    assert set(stays["COD_SEX"].drop_null().to_pylist()) == {"1", "2"}
    assert pc.min(stays["ETA_NUM"]).as_py() >= 100_000_000
    for name in ("ER_PRS_F", "ER_PHA_F"):
        schema = load_table_schema(_table(name).schema_path)
        arrow = _partition(files, name, "2024-01-01")
        for column in schema.columns:
            if column.type == "number" and column.constraints.get("minimum", 0) >= 0:
                assert pc.min(arrow[column.name]).as_py() >= 0, column.name
    texts = deaths["DCD_LIE_LIB"].drop_null().to_pylist() + deaths["MER_PFG_LIB"].drop_null().to_pylist()
    assert any(not t.isascii() for t in texts)
    assert all(t.encode("latin-1") for t in texts)


def test_departements_include_corsica_and_overseas():
    pool = _generate(_table("IR_BEN_R"), "2024-06-30", 0, rows=3000, files=1)
    departments = set(pool["BEN_RES_DPT"].drop_null().to_pylist())
    assert {"02A", "02B", "075", "971"} <= departments
    assert all(re.fullmatch(r"0[0-9][0-9AB]|97[1-6]", d) for d in departments)


def test_nothing_looks_like_a_raw_nir(files):
    for (name, partition), tables in files.items():
        arrow = pa.concat_tables(tables)
        for column in arrow.column_names:
            if pa.types.is_string(arrow[column].type) or pa.types.is_integer(arrow[column].type):
                assert not raw_nir_mask(arrow[column]).any(), (name, partition, column)


def test_same_seed_same_bytes_other_seed_other_bytes():
    def written(table, partition, seed):
        sink = io.BytesIO()
        write_file(table, _generate(table, partition, 1, seed=seed), sink)
        return sink.getvalue()

    for table, partition in ((_table("ER_PRS_F"), "2024-02-01"), (_table("KI_CCI_R"), "2023")):
        assert written(table, partition, 42) == written(table, partition, 42)
        assert written(table, partition, 42) != written(table, partition, 43)


def test_late_files_add_new_claims_with_their_lines_to_the_same_partition(files):
    partition = "2024-02-01"
    claims, lines = _table("ER_PRS_F"), _table("ER_PHA_F")
    late_claims = [_generate(claims, partition, FILES + n) for n in range(2)]
    late_lines = [_generate(lines, partition, FILES + n) for n in range(2)]
    assert [t.num_rows for t in late_claims] == [ROWS // FILES] * 2
    everything = pa.concat_tables([*files[("ER_PRS_F", partition)], *late_claims])
    assert len(set(_keys(everything, DCIR_KEYS))) == everything.num_rows
    assert set(everything["FLX_DIS_DTD"].to_pylist()) == {dt.date(2024, 2, 1)}
    for claims_file, lines_file in zip(late_claims, late_lines, strict=True):
        assert set(_keys(lines_file, DCIR_KEYS)) <= set(_keys(claims_file, DCIR_KEYS))


def test_french_csv_reads_back_to_the_same_arrow_values():
    table = _table("KI_CCI_R")
    arrow = _generate(table, "2022", 0, rows=600)
    sink = io.BytesIO()
    assert write_file(table, arrow, sink) == arrow.num_rows
    data = sink.getvalue()
    assert data.startswith(b"DCD_IDT_ENC;DCD_IDT_TOP;BEN_IDT_ANO;")
    assert "é".encode("latin-1") in data and "é".encode() not in data
    assert re.search(rb';"[^";]*;[^"]*";', data), "a text holding ';' is quoted"
    assert read_table_bytes(data, table).equals(arrow)


def test_parquet_is_zstd_in_row_groups_of_at_most_64k_rows():
    table = _table("ER_PHA_F")
    sink = io.BytesIO()
    write_file(table, _generate(table, "2024-01-01", 0, rows=BATCH_ROWS + 500, files=1), sink)
    metadata = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [BATCH_ROWS, 500]
    assert {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)} == {"ZSTD"}


def test_blob_names_follow_the_source_layout():
    assert blob_name(_table("ER_PRS_F"), "2024-01-01", 3) == "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00003.parquet"
    assert blob_name(_table("KI_CCI_R"), "2022", 0) == "causes_deces/KI_CCI_R/FLX_PER_ANN=2022/part-00000.csv"


NEW_TABLE_FIELDS = [
    {"name": "NEW_IDT_NUM", "type": "string", "length": "12", "constraints": {"minLength": 12}},
    {"name": "NEW_PER_DTD", "type": "date", "length": "8"},
    {"name": "NEW_ACT_NBR", "type": "integer", "length": "3", "constraints": {"minimum": 1, "maximum": 250}},
    {"name": "NEW_PAI_MNT", "type": "number", "length": "6,2"},
    {"name": "NEW_ALD_TOP", "type": "boolean", "length": "1"},
    {"name": "NEW_NAI_ANN", "type": "year", "length": "4"},
    {"name": "NEW_SOI_AMD", "type": "yearmonth", "length": "6"},
    {"name": "NEW_SOI_DTD", "type": "datetime"},
    {"name": "NEW_TYP_COD", "type": "string", "length": "1", "constraints": {"enum": ["A", "B", ""]}},
    {"name": "NEW_ETB_LIB", "type": "string", "length": "40"},
    {"name": "NIR_ANO_17", "type": "string", "length": "17", "constraints": {"minLength": 17}},
]


def _catalogue_with_new_table(tmp_path: Path, fields: list[dict], primary_key: list[str]):
    schema = {
        "name": "T_NEW",
        "fields": fields,
        "primaryKey": primary_key,
        "foreignKeys": [{"fields": "NIR_ANO_17", "reference": {"resource": "IR_BEN_R", "fields": "BEN_NIR_PSA"}}],
        "missingValues": [""],
    }
    (tmp_path / "T_NEW.json").write_text(json.dumps(schema))
    raw = yaml.safe_load(CATALOGUE_PATH.read_text())
    for domain in raw["domains"].values():
        for table in domain["tables"].values():
            table["schema"] = str((CATALOGUE_PATH.parent / table["schema"]).resolve())
    raw["domains"]["nouveau"] = {
        "owner": "team-test",
        "wave": 2,
        "grain": "monthly",
        "first_partition": "2024-01-01",
        "cutover_partition": "2024-02-01",
        "tables": {
            "T_NEW": {
                "format": "csv",
                "csv": {"delimiter": ";", "decimal_point": ",", "encoding": "latin-1"},
                "partition_column": "NEW_PER_DTD",
                "primary_key": primary_key,
                "schema": str(tmp_path / "T_NEW.json"),
                "suite": str(tmp_path / "T_NEW.suite.json"),
            }
        },
    }
    path = tmp_path / "domains.yaml"
    path.write_text(yaml.safe_dump(raw))
    catalogue = load_catalogue(path)
    return catalogue, catalogue.domain("nouveau").table("T_NEW")


def test_a_table_outside_the_demo_generates_from_its_schema_alone(tmp_path):
    catalogue, table = _catalogue_with_new_table(tmp_path, NEW_TABLE_FIELDS, ["NEW_IDT_NUM", "NEW_PER_DTD"])
    schema = load_table_schema(table.schema_path)
    arrow = pa.concat_tables([_generate(table, "2024-02-01", i, catalogue=catalogue) for i in range(FILES)])
    _assert_follows_schema(arrow, schema, "T_NEW")
    assert len(set(arrow["NEW_IDT_NUM"].to_pylist())) == ROWS
    assert set(arrow["NEW_PER_DTD"].to_pylist()) == {dt.date(2024, 2, 1)}
    pool = pa.concat_tables([_generate(_table("IR_BEN_R"), "2024-06-30", i) for i in range(FILES)])
    assert set(arrow["NIR_ANO_17"].to_pylist()) <= set(pool["BEN_NIR_PSA"].to_pylist())

    sink = io.BytesIO()
    write_file(table, arrow, sink)
    assert re.search(rb";[0-9]+,[0-9]{1,2};", sink.getvalue()), "amounts carry a decimal comma"
    assert read_table_bytes(sink.getvalue(), table).equals(arrow)


def test_a_key_too_narrow_for_the_rows_is_refused_with_the_column_named(tmp_path):
    fields = [{"name": "NEW_ORD_NUM", "type": "integer", "length": "1"}, *NEW_TABLE_FIELDS[1:]]
    catalogue, table = _catalogue_with_new_table(tmp_path, fields, ["NEW_ORD_NUM", "NEW_PER_DTD"])
    with pytest.raises(ValueError, match="nouveau/T_NEW, column NEW_ORD_NUM: 30 rows do not fit the 10 unique"):
        _generate(table, "2024-01-01", 0, rows=30, files=1, catalogue=catalogue)


@pytest.fixture(scope="module")
def real_tables(tmp_path_factory):
    """The real SNDS tables of tests/data/schema-snds, added to the tests' catalogue (new_tables.yaml)."""
    from conftest import add_new_tables, write_catalogue

    path = write_catalogue(tmp_path_factory.mktemp("real") / "domains.yaml", "real", add_new_tables)
    catalogue = load_catalogue(path)

    def generate(domain: str, name: str, partition: str) -> pa.Table:
        table = catalogue.domain(domain).table(name)
        return pa.concat_tables(
            [
                generate_file(catalogue, table, partition, i, seed=SEED, rows_per_partition=2000, files_per_partition=2)
                for i in range(2)
            ]
        )

    return generate


def test_the_catalogues_key_is_unique_where_the_schema_declares_none(real_tables):
    lines = real_tables("dcir", "ER_UCD_F", "2024-02-01")
    key = [*DCIR_KEYS, "UCD_ORD_NUM"]  # the catalogue's primary_key; the schema has no primaryKey
    assert len(set(_keys(lines, key))) == lines.num_rows == 2000


def test_nomenclatures_give_real_codes(real_tables):
    ssr = real_tables("pmsi_ssr", "T_SSRaaB", "2023")
    for column in ("FP_PEC", "MOR_PRP", "ETL_AFF"):  # nomenclature IR_CIM_V, names that do not say CIM or DGN
        assert all(ICD10.match(v) for v in ssr[column].drop_null().to_pylist()), column
    assert all(re.fullmatch(r"([0-9]{2}|2[AB])[0-9]{7}", v) for v in ssr["ETA_NUM"].to_pylist()), "FINESS"
    ucd = real_tables("dcir", "ER_UCD_F", "2024-02-01")["UCD_UCD_COD"].drop_null().to_pylist()
    assert ucd and all(re.fullmatch(r"34008[0-9]{8}", v) for v in ucd), "UCD13"
    pharmacy = _partition_of(_table("ER_PHA_F"), "2024-01-01")
    cip13 = pharmacy["PHA_PRS_C13"].drop_null().to_pylist()
    assert cip13 and all(str(v).startswith("34009") and len(str(v)) == 13 for v in cip13), "CIP13"


def test_values_stay_in_the_range_of_their_meaning(real_tables):
    had = real_tables("pmsi_had", "T_HADaaB", "2023")
    ssr = real_tables("pmsi_ssr", "T_SSRaaB", "2023")
    for ages in (had["AGE_ANN"], ssr["AGE_ANN"]):
        assert pc.min(ages).as_py() >= 0 and pc.max(ages).as_py() <= 105
    claims = _partition_of(_table("ER_PRS_F"), "2024-01-01")
    for rate in ("RGO_REM_TAU", "RGO_THE_TAU", "CPL_REM_TAU"):
        assert pc.max(claims[rate]).as_py() <= 100, rate
    for days in ("SEJ_NBJ", "SEQ_NBJ"):
        assert pc.max(had[days]).as_py() <= 365, days
    # a year that is not a birth year is the year of the row's events: the stay's
    for column in ("SOR_ANN_SSEQ", "FIN_ANN_SEQ"):
        assert set(had[column].drop_null().to_pylist()) == {2023}, column
    births = claims["BEN_NAI_ANN"].drop_null().to_pylist()
    assert min(births) < 2000 and max(births) <= 2024
    # a date whose format is %m carries a month only: the first of it
    for month in (had["SOR_MOI"], _partition_of(_table("T_MCOaaB"), "2023")["SOR_MOI"]):
        assert {d.day for d in month.drop_null().to_pylist()} == {1}


def _partition_of(table, partition: str) -> pa.Table:
    return pa.concat_tables([_generate(table, partition, i) for i in range(FILES)])
