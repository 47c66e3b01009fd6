"""Shared fixtures: an isolated migration (own container, bucket, ledger) against the real servers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The tests' own catalogue (a copy of the demo's, with its own schemas and suites): a user's catalogue in
# dags/domains.yaml, with more domains or other tables, never changes what the tests find. Only tests of
# the demo itself read DEMO_CATALOGUE.
CATALOGUE = ROOT / "tests" / "data" / "catalogue" / "domains.yaml"
DEMO_CATALOGUE = ROOT / "dags" / "domains.yaml"
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
pytest_plugins = ("faults.fixtures", "prod.profile")


def _isolate_xdist_worker() -> None:
    """Under pytest-xdist (``make test`` runs two workers), give each worker what two workers must not share.

    Runs when this module is imported, before any test module imports Airflow: each worker gets its own
    copy of the migrated SQLite metadata database (two ``dag.test()`` writers on one SQLite file lock
    each other out) and its own api-server port (``HDH_API_PORT`` moved by ten per worker). A run
    without xdist, or against another metadata database, is left as it is.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or os.environ.get("HDH_XDIST_ISOLATED") == worker:
        return  # not under xdist, or done already (this module imported a second time)
    os.environ["HDH_XDIST_ISOLATED"] = worker
    index = int(worker.removeprefix("gw"))
    home = Path(os.environ["AIRFLOW_HOME"])
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == f"sqlite:///{home / 'airflow.db'}":
        own = home / f"airflow-{worker}.db"
        shutil.copyfile(home / "airflow.db", own)
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{own}"
    port = int(os.environ.get("HDH_API_PORT", "8080")) + 10 * index
    os.environ["HDH_API_PORT"] = str(port)
    if "AIRFLOW_CONN_HDH_AIRFLOW_API" in os.environ:
        api = json.loads(os.environ["AIRFLOW_CONN_HDH_AIRFLOW_API"])
        os.environ["AIRFLOW_CONN_HDH_AIRFLOW_API"] = json.dumps({**api, "port": port})


_isolate_xdist_worker()


def pytest_configure(config):
    missing = [v for v in ("AIRFLOW_CONN_HDH_AZURE_SOURCE", "AIRFLOW_CONN_HDH_SOVEREIGN_TARGET") if v not in os.environ]
    if missing:
        raise pytest.UsageError(f"{missing} are not set: run the tests with `make test` (it sources scripts/env.sh)")
    # Whatever loads "the" catalogue (the DAG files, the CLI, a subprocess) loads the tests' own.
    os.environ["HDH_CATALOGUE"] = str(CATALOGUE)


def write_catalogue(path: Path, name: str, mutate=None) -> Path:
    """A copy of the tests' catalogue with its own container and bucket, and absolute file paths."""
    raw = yaml.safe_load(CATALOGUE.read_text())
    raw["source_container"] = name
    raw["target_bucket"] = name
    for domain in raw["domains"].values():
        for table in domain["tables"].values():
            table["schema"] = str((CATALOGUE.parent / table["schema"]).resolve())
            table["suite"] = str((CATALOGUE.parent / table["suite"]).resolve())
    if mutate:
        mutate(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


NEW_TABLES = ROOT / "tests" / "data" / "catalogue" / "new_tables.yaml"


def add_new_tables(raw: dict) -> None:
    """A ``write_catalogue`` mutation: the real SNDS tables of tests/data/schema-snds, added by configuration
    alone (new_tables.yaml: ER_UCD_F into dcir, and the domains dcirs, pmsi_had and pmsi_ssr)."""
    fragment = yaml.safe_load(NEW_TABLES.read_text())
    for name, domain in fragment["domains"].items():
        for table in domain["tables"].values():
            for key in ("schema", "suite"):
                table[key] = str((NEW_TABLES.parent / table[key]).resolve())
        if name in raw["domains"]:
            raw["domains"][name]["tables"].update(domain["tables"])
        else:
            raw["domains"][name] = domain


def read_table_bytes(data: bytes, table):
    """An object's bytes as an Arrow table: parquet as is, a French CSV export with its dialect and types."""
    import io

    import pyarrow.parquet as pq
    from pyarrow import csv

    from hdh_migration.schema import load_table_schema

    if table.format == "parquet":
        return pq.read_table(io.BytesIO(data))
    dialect = table.csv
    schema = load_table_schema(table.schema_path).arrow_schema()
    return csv.read_csv(
        io.BytesIO(data),
        read_options=csv.ReadOptions(encoding=dialect.encoding, column_names=None if dialect.header else schema.names),
        parse_options=csv.ParseOptions(delimiter=dialect.delimiter),
        convert_options=csv.ConvertOptions(
            column_types=schema,
            decimal_point=dialect.decimal_point,
            strings_can_be_null=True,
        ),
    )


def rewrite_source(migration, domain: str, table_name: str, partition: str, mutate) -> str:
    """Plant values: replace the first source object of a partition by ``mutate`` of its rows, in its format."""
    import io

    from hdh_migration.layout import partition_dir
    from hdh_synthetic import write_file

    table = migration.catalogue.domain(domain).table(table_name)
    prefix = partition_dir(domain, table_name, table.partition_column, partition)
    name = migration.source.list_objects(prefix, table.source_extension)[0].name
    arrow = mutate(migration.read_source(domain, table_name, name))
    sink = io.BytesIO()
    write_file(table, arrow, sink)
    migration.source.container_client.upload_blob(name, sink.getvalue(), overwrite=True)
    return name


def set_values(arrow, column: str, rows: dict[int, object]):
    """The Arrow table with the column's values at the given row indexes replaced, in the column's type."""
    import pyarrow as pa

    values = arrow.column(column).to_pylist()
    for row, value in rows.items():
        values[row] = value
    index = arrow.schema.get_field_index(column)
    return arrow.set_column(index, column, pa.array(values, arrow.schema.field(column).type))


def reach_state(ledger, domain: str, table: str, partition: str, state: str, run_id: str | None = None, **fields):
    """Put a partition in ``state`` the way the pipeline does: through the states on the shortest allowed way
    from where it is (``PARTITION_TRANSITIONS``), ``fields`` given to the last step only (set again if it is
    there already)."""
    from hdh_migration.states import PARTITION_TRANSITIONS, PartitionState

    record = ledger.get(domain, table, partition)
    way = _way(PARTITION_TRANSITIONS, record.state if record else PartitionState.PLANNED, state) or [state]
    for step in way[:-1]:
        ledger.set_state(domain, table, partition, step, run_id=run_id)
    ledger.set_state(domain, table, partition, state, run_id=run_id, **fields)


def reach_domain_state(ledger, domain: str, state: str) -> None:
    """Put a domain in ``state`` through the states on the shortest allowed way from where it is."""
    from hdh_migration.states import DOMAIN_TRANSITIONS

    for step in _way(DOMAIN_TRANSITIONS, ledger.domain_state(domain), state):
        ledger.set_domain_state(domain, step)


def _way(transitions: dict, start: str, goal: str) -> list:
    """The states after ``start`` on a shortest allowed way to ``goal`` (none if ``goal`` is ``start``)."""
    if goal == start:
        return []
    frontier, seen = {start: []}, {start}
    while frontier:
        reached = {}
        for state, way in frontier.items():
            for after in sorted(transitions[state]):
                if after == goal:
                    return [*way, after]
                if after not in seen:
                    seen.add(after)
                    reached[after] = [*way, after]
        frontier = reached
    raise ValueError(f"{goal} cannot be reached from {start}")


@dataclass
class Migration:
    name: str
    catalogue_path: Path
    tmp_path: Path

    @property
    def catalogue(self):
        from hdh_migration.catalogue import load_catalogue

        return load_catalogue(self.catalogue_path)

    @property
    def target(self):
        from hdh_migration.resources import open_target as _target

        return _target()

    @property
    def source(self):
        from hdh_migration.resources import open_source as _source

        return _source()

    @property
    def ledger(self):
        from hdh_migration.resources import open_ledger as _ledger

        return _ledger()

    def seed(self, rows_per_partition: int = 300, domains=None, seed: int = 7, files_per_partition: int = 2):
        from hdh_synthetic import seed_azure

        return seed_azure(
            self.catalogue,
            seed=seed,
            rows_per_partition=rows_per_partition,
            files_per_partition=files_per_partition,
            domains=domains,
        )

    def dag(self, domain: str):
        """The domain's transfer DAG, for dag.test()."""
        from hdh_migration.dag_factory import build_transfer_dag

        return build_transfer_dag(self.catalogue.domain(domain), with_deadline=False)  # for dag.test()

    def run(self, domain: str, partition: str, force: bool = False, **kwargs):
        """One transfer DAG run through Airflow's dag.test(); returns the DagRun."""
        import datetime as dt

        from hdh_migration.catalogue import partition_start

        dom = self.catalogue.domain(domain)
        day = partition_start(dom.grain, partition)
        return self.dag(domain).test(
            logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
            run_conf={"partition": partition, "force": force},
            **kwargs,
        )

    def target_keys(self, prefix: str = "") -> list[str]:
        return sorted(self.target.list_keys(prefix))

    def target_bytes(self, key: str) -> bytes:
        target = self.target
        return target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()

    def source_bytes(self, name: str) -> bytes:
        return self.source.container_client.download_blob(name).readall()

    def read_source(self, domain: str, table_name: str, name: str):
        """A source object as an Arrow table, read the way a data user would (not with our code)."""
        return read_table_bytes(self.source_bytes(name), self.catalogue.domain(domain).table(table_name))


def _drop_servers_state() -> None:
    """Best-effort removal of a test's container and bucket."""
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target

    with contextlib.suppress(Exception):
        _source().container_client.delete_container()
    with contextlib.suppress(Exception):
        target = _target()
        target.delete_keys(target.list_keys(""))
        target.abort_uploads("")
        target.client.delete_bucket(Bucket=target.bucket)


@pytest.fixture(params=["sqlite"])
def ledger_backend(request):
    return request.param


@pytest.fixture
def migration(tmp_path, monkeypatch, ledger_backend) -> Migration:
    from hdh_migration.catalogue import cached_catalogue

    name = f"t{uuid.uuid4().hex[:12]}"
    path = write_catalogue(tmp_path / "domains.yaml", name)
    monkeypatch.setenv("HDH_CATALOGUE", str(path))
    monkeypatch.setenv("HDH_SPOOL_DIR", str(tmp_path / "spool"))
    database = None
    if ledger_backend == "postgres":
        import sqlalchemy as sa

        database = f"hdh_ledger_{name}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        ledger_conn = {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "login": "postgres",
            "schema": database,
        }
    else:
        ledger_conn = {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")}
    monkeypatch.setenv("AIRFLOW_CONN_HDH_LEDGER", json.dumps(ledger_conn))
    cached_catalogue.cache_clear()
    original_target = os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"]
    yield Migration(name=name, catalogue_path=path, tmp_path=tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", original_target)  # a test may have pointed it away
    _drop_servers_state()
    cached_catalogue.cache_clear()
    if database:
        import sqlalchemy as sa

        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
