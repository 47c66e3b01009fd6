"""The catalogue loads cheaply, and every error names the file, domain, table and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CATALOGUE, DEMO_CATALOGUE

from hdh_migration.catalogue import CatalogueError, load_catalogue

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(CATALOGUE.read_text())
    for domain in raw["domains"].values():
        for table in domain["tables"].values():
            table["schema"] = str((CATALOGUE.parent / table["schema"]).resolve())
            table["suite"] = str((CATALOGUE.parent / table["suite"]).resolve())
    mutate(raw)
    path = tmp_path / "domains.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_deployed_catalogue_loads_and_names_existing_schemas_and_suites():
    """dags/domains.yaml, whatever domains the user gave it: it loads, and every file it names exists."""
    catalogue = load_catalogue(DEMO_CATALOGUE)
    assert catalogue.domains
    for domain in catalogue.domains:
        assert domain.partitions()
        for table in domain.tables:
            assert table.schema_path.is_file() and table.suite_path.is_file(), f"{domain.name}.{table.name}"


def test_the_tests_catalogue_loads_with_expected_domains():
    catalogue = load_catalogue(CATALOGUE)
    assert [d.name for d in catalogue.domains] == ["beneficiaires", "causes_deces", "dcir", "pmsi_mco"]
    dcir = catalogue.domain("dcir")
    assert dcir.partitions() == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert dcir.table("ER_PRS_F").primary_key[0] == "DCT_ORD_NUM"
    assert catalogue.domain("causes_deces").table("KI_CCI_R").csv.encoding == "latin-1"
    assert catalogue.domain("pmsi_mco").partitions() == ["2022", "2023"]
    assert dcir.expected_duration_minutes == 240, "set in the catalogue"
    assert catalogue.domain("pmsi_mco").expected_duration_minutes == 120, "the default"


def test_the_tests_waves_are_always_open_and_the_caps_shared_by_pool_and_domain():
    import datetime as dt

    catalogue = load_catalogue(CATALOGUE)
    assert sorted(w.number for w in catalogue.waves) == [1, 2]
    dcir = catalogue.domain("dcir")
    window = catalogue.wave(dcir).window
    assert window.timezone == "Europe/Paris" and window.always_open
    assert window.is_open(dt.datetime.now(dt.UTC))
    # 4000 MB/s over 16 pool slots = 250; dcir's 2400 MB/s over its 8 transfers = 300: the global share binds.
    assert catalogue.bandwidth(dcir).bytes_per_s == 250e6
    assert catalogue.bandwidth(catalogue.domain("pmsi_mco")).bytes_per_s == 250e6


def test_a_production_wave_window_and_caps(tmp_path):
    import datetime as dt

    def night_wave(raw):
        raw["bandwidth_mb_s"] = 200
        raw["transfer_slots"] = 8
        raw["waves"][2] = {
            "start": "2027-01-04",
            "window": {"timezone": "Europe/Paris", "weekdays": "20:00-06:00", "weekends": "all"},
            "bandwidth_mb_s": 120,
        }
        raw["domains"]["dcir"].update(bandwidth_mb_s=40, max_transfers=4)

    catalogue = load_catalogue(_write(tmp_path, night_wave))
    dcir = catalogue.domain("dcir")
    window = catalogue.wave(dcir).window
    assert window.next_open(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)) == dt.datetime(2027, 1, 3, 23, tzinfo=dt.UTC)
    assert window.next_open(dt.datetime(2027, 1, 4, 12, tzinfo=dt.UTC)) == dt.datetime(2027, 1, 4, 19, tzinfo=dt.UTC)
    # global 200/8 = 25, wave 120/min(8, 4 + 8) = 15, domain 40/4 = 10 MB/s per task.
    assert catalogue.bandwidth(dcir).bytes_per_s == 10e6
    assert catalogue.bandwidth(catalogue.domain("pmsi_mco")).bytes_per_s == 15e6


def test_loading_imports_nothing_heavy():
    code = (
        "import sys; from hdh_migration.catalogue import load_catalogue; load_catalogue();"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow','pyarrow','pandas','great_expectations','boto3','azure','sqlalchemy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["domains"]["dcir"].pop("owner"), "domain 'dcir': missing field 'owner'"),
        (lambda raw: raw["domains"]["dcir"].update(grain="weekly"), "domain 'dcir': field 'grain' must be one of"),
        (
            lambda raw: raw["domains"]["dcir"].update(first_partition="2024-01-15"),
            "field 'first_partition': monthly partition '2024-01-15' must be the first day",
        ),
        (
            lambda raw: raw["domains"]["dcir"]["tables"]["ER_PRS_F"].update(format="xlsx"),
            "table 'ER_PRS_F': field 'format' must be one of parquet, csv",
        ),
        (
            lambda raw: raw["domains"]["dcir"]["tables"]["ER_PRS_F"].update(schema="/nowhere/X.json"),
            "table 'ER_PRS_F': field 'schema' names /nowhere/X.json, which does not exist",
        ),
        (
            lambda raw: raw["domains"]["dcir"]["tables"]["ER_PRS_F"].update(primary_key="DCT_ORD_NUM"),
            "table 'ER_PRS_F': field 'primary_key' must be a list",
        ),
        (lambda raw: raw["domains"]["dcir"].update(colour="blue"), "domain 'dcir': unknown field(s) colour"),
        (
            lambda raw: raw["domains"]["dcir"].update(cutover_partition="2023-01-01"),
            "field 'cutover_partition' 2023-01-01 comes before 'first_partition'",
        ),
        (
            lambda raw: raw["domains"]["dcir"].update(wave=7),
            "domain 'dcir': field 'wave' is 7, which is not declared under 'waves' (declared: 1, 2)",
        ),
        (lambda raw: raw.pop("waves"), "missing field 'waves'"),
        (lambda raw: raw["waves"][2].update(start="soon"), "wave 2: field 'start' must be a date"),
        (
            lambda raw: raw["waves"][2]["window"].update(timezone="Paris"),
            "wave 2, field 'window': field 'timezone' 'Paris' is not an IANA timezone",
        ),
        (
            lambda raw: raw["waves"][2]["window"].update(weekdays="20h-6h"),
            "wave 2, field 'window': field 'weekdays': '20h-6h' is not a range such as '20:00-06:00'",
        ),
        (
            lambda raw: raw["waves"][1]["window"].update(weekdays="none", weekends="none"),
            "wave 1, field 'window': the window is never open",
        ),
        (lambda raw: raw["waves"][1]["window"].pop("weekends"), "wave 1, field 'window': missing field 'weekends'"),
        (
            lambda raw: raw["domains"]["dcir"].update(bandwidth_mb_s=-5),
            "domain 'dcir': field 'bandwidth_mb_s' must be a positive number of MB/s, got -5",
        ),
        (
            lambda raw: raw.update(transfer_slots=0),
            "field 'transfer_slots' must be a whole number of at least 1, got 0",
        ),
        (lambda raw: raw["waves"][1].update(colour="blue"), "wave 1: unknown field(s) colour"),
        (
            lambda raw: raw["domains"]["dcir"].update(expected_duration_minutes="2h"),
            "domain 'dcir': field 'expected_duration_minutes' must be a whole number of minutes",
        ),
        (
            lambda raw: raw["domains"]["dcir"].update(expected_duration_minutes=0),
            "domain 'dcir': field 'expected_duration_minutes' must be a whole number of minutes from 1",
        ),
        (
            lambda raw: raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"].update(encoding="latin-15"),
            "table 'KI_CCI_R', field 'csv': field 'encoding' is 'latin-15', which is not a known encoding; write a "
            "Python codec name such as latin-1",
        ),
        (
            lambda raw: raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"].update(header="no"),
            "table 'KI_CCI_R', field 'csv': field 'header' must be true (the first line names the columns) or false",
        ),
        (
            lambda raw: raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"].update(delimiter=";;"),
            "table 'KI_CCI_R', field 'csv': field 'delimiter' must be one character",
        ),
        (
            lambda raw: raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"].update(decimal_point=";"),
            "table 'KI_CCI_R', field 'csv': fields 'delimiter' and 'decimal_point' must differ",
        ),
        (
            lambda raw: raw["domains"]["dcir"]["tables"]["ER_PRS_F"].update(source_name="ER_PRS_{aa}"),
            "table 'ER_PRS_F': field 'source_name' names one table per year: only a yearly domain has one",
        ),
        (
            lambda raw: raw["domains"]["pmsi_mco"]["tables"]["T_MCOaaB"].update(source_name="T_MCOaaB"),
            "table 'T_MCOaaB': field 'source_name' must hold the year once, as {aa} or {aaaa}",
        ),
        (
            lambda raw: raw["domains"]["pmsi_mco"]["tables"]["T_MCOaaB"].update(source_name="T-MCO{aa}B"),
            "table 'T_MCOaaB': field 'source_name' 'T-MCO{aa}B' is not an SNDS table name",
        ),
        (
            lambda raw: (
                raw["domains"]["pmsi_mco"].update(first_partition="1999"),
                raw["domains"]["pmsi_mco"]["tables"]["T_MCOaaB"].update(source_name="T_MCO{aa}B"),
            ),
            "table 'T_MCOaaB': field 'source_name' writes the year on 2 digits ({aa}), which names 2000 to 2099 only",
        ),
    ],
)
def test_invalid_catalogue_errors_name_file_domain_and_field(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(CatalogueError) as excinfo:
        load_catalogue(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_a_new_table_is_a_catalogue_entry_and_a_schema_file(tmp_path):
    schema = tmp_path / "ER_UCD_F.json"
    schema.write_text(
        '{"name": "ER_UCD_F", "fields": [{"name": "FLX_DIS_DTD", "type": "date"}, {"name": "UCD_COD", "type": "string", "length": "13"}]}'
    )

    def add(raw):
        raw["domains"]["dcir"]["tables"]["ER_UCD_F"] = {
            "format": "parquet",
            "partition_column": "FLX_DIS_DTD",
            "primary_key": None,
            "schema": str(schema),
            "suite": str(tmp_path / "ER_UCD_F.suite.json"),
        }

    catalogue = load_catalogue(_write(tmp_path, add))
    assert [t.name for t in catalogue.domain("dcir").tables] == ["ER_PHA_F", "ER_PRS_F", "ER_UCD_F"]


def test_a_catalogue_error_is_a_configuration_error_the_dags_do_not_retry(tmp_path):
    from airflow.sdk import RetryAction

    from hdh_migration.dag_factory import RETRY_POLICY
    from hdh_migration.errors import ConfigurationError

    path = _write(
        tmp_path, lambda raw: raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["csv"].update(encoding="x")
    )
    with pytest.raises(ConfigurationError) as excinfo:
        load_catalogue(path)
    assert RETRY_POLICY.evaluate(excinfo.value, try_number=1, max_tries=5).action == RetryAction.FAIL
    assert RETRY_POLICY.evaluate(ConnectionResetError(), try_number=1, max_tries=5).action == RetryAction.DEFAULT


def test_a_yearly_family_maps_one_source_table_per_year_to_partitions_of_one_table(tmp_path):
    """T_MCO22B, T_MCO23B... in the source; T_MCOaaB/SOR_ANN=2022/... in the target."""

    def family(raw):
        raw["domains"]["pmsi_mco"]["tables"]["T_MCOaaB"]["source_name"] = "T_MCO{aa}B"
        raw["domains"]["pmsi_mco"]["tables"]["T_MCOaaC"]["source_name"] = "T_MCO{aaaa}C"

    domain = load_catalogue(_write(tmp_path, family)).domain("pmsi_mco")
    stays, linkage = domain.table("T_MCOaaB"), domain.table("T_MCOaaC")
    assert [stays.source_dir(p) for p in domain.partitions()] == ["pmsi_mco/T_MCO22B/", "pmsi_mco/T_MCO23B/"]
    assert linkage.source_dir("2023") == "pmsi_mco/T_MCO2023C/"
    assert stays.source_listing_prefix() == "pmsi_mco/"
    assert stays.source_partition("pmsi_mco/T_MCO23B/") == "2023"
    assert linkage.source_partition("pmsi_mco/T_MCO2021C/") == "2021"
    for other in ("pmsi_mco/T_MCO23C/", "pmsi_mco/T_MCOaaB/", "pmsi_mco/T_MCO23B/x/", "pmsi_mco/T_MCO2023B/"):
        assert stays.source_partition(other) is None, other
    # the column form, unchanged: the partition folders under the table
    plain = load_catalogue(CATALOGUE).domain("pmsi_mco").table("T_MCOaaB")
    assert plain.source_dir("2023") == "pmsi_mco/T_MCOaaB/SOR_ANN=2023/"
    assert plain.source_partition("pmsi_mco/T_MCOaaB/SOR_ANN=2023/") == "2023"


def test_a_domain_source_is_azure_by_default_or_an_s3_store_with_its_retention(tmp_path):
    from hdh_migration.catalogue import SourceSpec

    catalogue = load_catalogue(CATALOGUE)
    assert catalogue.domain("dcir").source == SourceSpec(kind="azure", conn_id="hdh_azure_source", container="snds")
    assert catalogue.domain("dcir").retention_days is None

    def second_move(raw):
        raw["domains"]["dcir"]["source"] = {"kind": "s3", "conn_id": "hdh_interim_source", "bucket": "interim"}
        raw["domains"]["dcir"]["retention_days"] = 90

    dcir = load_catalogue(_write(tmp_path, second_move)).domain("dcir")
    assert dcir.source == SourceSpec(kind="s3", conn_id="hdh_interim_source", bucket="interim", chained=True)
    assert dcir.source.describe("dcir/ER_PRS_F/") == "s3://interim/dcir/ER_PRS_F/"
    assert dcir.retention_days == 90


@pytest.mark.parametrize(
    ("source", "retention", "message"),
    [
        ({"kind": "gcs"}, None, "field 'kind' must be one of azure, s3"),
        ({"kind": "s3", "conn_id": "x"}, None, "missing field 'bucket'"),
        ({"kind": "s3", "bucket": "b", "prefix": "hop1"}, None, "field 'prefix' must be empty or a key prefix ending"),
        ({"kind": "azure", "bucket": "b"}, None, "unknown field(s) bucket"),
        ({"kind": "s3", "bucket": "b", "chained": "yes"}, None, "field 'chained' must be true or false"),
        (None, -1, "field 'retention_days' must be a whole number of days"),
    ],
)
def test_a_bad_source_or_retention_is_named(tmp_path, source, retention, message):
    def mutate(raw):
        if source is not None:
            raw["domains"]["dcir"]["source"] = source
        if retention is not None:
            raw["domains"]["dcir"]["retention_days"] = retention

    with pytest.raises(CatalogueError) as error:
        load_catalogue(_write(tmp_path, mutate))
    assert "domain 'dcir'" in str(error.value) and message in str(error.value)
