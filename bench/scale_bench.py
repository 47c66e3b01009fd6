"""Scale sanity: the DAG parse time of a full-size catalogue, a 240-partition backfill through a real
scheduler, and a mapped fan-out of 1,000 objects.

Three parts, each printing its figures (``--parts`` picks some):

``parse``     The ~220-table catalogue of ``scale_catalogue.py`` against the demo catalogue, side by
              side: each DAG file parsed by Airflow's ``DagBag`` in a fresh interpreter, as the DAG
              processor parses each file in a process of its own (wall and CPU seconds, DAG count,
              import errors); ``airflow dags report``; the catalogue's YAML load with PyYAML's pure
              Python loader against libyaml's.
``backfill``  A fresh PostgreSQL metadata database, then an api-server, a dag-processor and a
              scheduler (LocalExecutor) on the scale catalogue with every table optional and an empty
              source container: each run plans, finds nothing and commits nothing, so this measures
              the orchestration of 240 monthly runs of ``hdh_transfer__dcir`` (the DAG processor's
              own parse durations, the time ``airflow backfill create`` takes, the time the
              scheduler takes to run them all, task-instance states and failures).
``fanout``    One DCIR partition of one table (``ER_PHA_F``) seeded as 1,000 small objects, moved by
              ``dag.test()`` on the same PostgreSQL metadata database: ``transfer_object`` expands to
              1,000 mapped task instances. Prints the wall time, task states, XCom rows and bytes per
              task, the ledger's rows and the objects landed.

Run inside the project environment (``source scripts/env.sh``, stand-ins started), or ``make bench-scale``:

    python bench/scale_bench.py                       # all three parts
    python bench/scale_bench.py --parts parse         # the parse figures alone (~1 min)
    python bench/scale_bench.py --partitions 24 --objects 100   # a quick smoke run

Ports: the api-server listens on ``HDH_SCALE_API_PORT`` (default 8080), the log servers on the three
ports after it. PostgreSQL at 127.0.0.1:5432 (trust auth); the databases are named from
``--db-prefix`` and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(Path(__file__).resolve().parent)]

from polling import wait_until  # noqa: E402
from scale_catalogue import write_scale_catalogue  # noqa: E402

PYTHON = sys.executable
AIRFLOW = str(Path(PYTHON).with_name("airflow"))
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/{}"
BACKFILL_DOMAIN = "dcir"

PARSE_PROBE = """
import json, sys, time
import airflow.sdk  # Airflow's own import cost is not the DAG folder's
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
cpu, wall = time.process_time(), time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
parse_cpu, parse_wall = time.process_time() - cpu, time.perf_counter() - wall
serialized = [DagSerialization.to_dict(dag) for dag in bag.dags.values()]
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "parse_cpu_s": parse_cpu, "parse_wall_s": parse_wall,
                  "serialize_cpu_s": cpu - parse_cpu, "dags": len(bag.dags),
                  "tasks": sum(len(d.tasks) for d in bag.dags.values()),
                  "serialized_bytes": len(json.dumps(serialized, default=str)),
                  "errors": {k: v[-300:] for k, v in bag.import_errors.items()}}))
"""


def _print(title: str, rows: list[tuple]) -> None:
    print(f"\n== {title}")
    width = max(len(str(r[0])) for r in rows)
    for label, *values in rows:
        print(f"  {str(label):<{width}}  " + "  ".join(str(v) for v in values))


# ---------------------------------------------------------------------------------------------
# parse


def parse_figures(catalogue: Path) -> dict:
    """Each DAG file parsed by DagBag and its DAGs serialized, in a fresh interpreter per file, as the DAG
    processor does (one process per file); summed over the files."""
    env = {**os.environ, "HDH_CATALOGUE": str(catalogue)}
    per_file = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        out = subprocess.run(
            [PYTHON, "-c", PARSE_PROBE, str(path)], env=env, capture_output=True, text=True, check=True
        )
        per_file[path.name] = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "files": per_file,
        "cpu_s": sum(f["cpu_s"] for f in per_file.values()),
        "wall_s": sum(f["wall_s"] for f in per_file.values()),
        "dags": sum(f["dags"] for f in per_file.values()),
        "parse_cpu_s": sum(f["parse_cpu_s"] for f in per_file.values()),
        "serialize_cpu_s": sum(f["serialize_cpu_s"] for f in per_file.values()),
        "errors": sum(len(f["errors"]) for f in per_file.values()),
    }


def dags_report(catalogue: Path) -> dict:
    env = {**os.environ, "HDH_CATALOGUE": str(catalogue)}
    started = time.perf_counter()
    out = subprocess.run(
        [AIRFLOW, "dags", "report", "-o", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    wall = time.perf_counter() - started
    rows = json.loads(out[out.index("[{") :])
    return {
        "cli_wall_s": wall,
        "files": {Path(r["file"]).name: float(r["duration"].split(":")[-1]) for r in rows},
        "dags": sum(int(r["dag_num"]) for r in rows),
    }


def yaml_loaders(catalogue: Path) -> dict:
    import yaml

    text = catalogue.read_text(encoding="utf-8")
    figures = {}
    for name, loader in (("pure_python_safe_loader", yaml.SafeLoader), ("libyaml_csafe_loader", yaml.CSafeLoader)):
        started = time.process_time()
        for _ in range(3):
            yaml.load(text, Loader=loader)
        figures[name] = (time.process_time() - started) / 3
    return figures


def run_parse(args, workdir: Path) -> dict:
    scale = write_scale_catalogue(workdir / "parse", args.tables)
    demo = ROOT / "dags" / "domains.yaml"
    from hdh_migration.catalogue import load_catalogue

    tables = sum(len(d.tables) for d in load_catalogue(scale).domains)
    figures = {"tables": tables, "demo": parse_figures(demo), "scale": parse_figures(scale)}
    figures["dags_report"] = dags_report(scale)
    figures["yaml"] = yaml_loaders(scale)
    d, s = figures["demo"], figures["scale"]
    rows = [("", "demo", f"scale ({tables} tables)", "scale/demo")]
    rows.append(("DAGs", d["dags"], s["dags"], f"{s['dags'] / d['dags']:.1f}x"))
    for name in s["files"]:
        rows.append(
            (
                f"{name} CPU s",
                f"{d['files'][name]['cpu_s']:.3f}",
                f"{s['files'][name]['cpu_s']:.3f}",
                f"{s['files'][name]['cpu_s'] / d['files'][name]['cpu_s']:.1f}x",
            )
        )
    for key, label in (("parse_cpu_s", "  of which DagBag"), ("serialize_cpu_s", "  of which serialization")):
        rows.append((f"{label} CPU s", f"{d[key]:.3f}", f"{s[key]:.3f}", f"{s[key] / d[key]:.1f}x"))
    rows.append(("all files CPU s", f"{d['cpu_s']:.3f}", f"{s['cpu_s']:.3f}", f"{s['cpu_s'] / d['cpu_s']:.1f}x"))
    rows.append(("all files wall s", f"{d['wall_s']:.3f}", f"{s['wall_s']:.3f}", f"{s['wall_s'] / d['wall_s']:.1f}x"))
    rows.append(("import errors", d["errors"], s["errors"], ""))
    report = figures["dags_report"]
    rows.append(("`airflow dags report` s", "", " + ".join(f"{v:.3f}" for v in report["files"].values()), ""))
    y = figures["yaml"]
    rows.append(
        (
            "YAML load CPU s",
            "",
            f"pure Python {y['pure_python_safe_loader']:.3f} / libyaml {y['libyaml_csafe_loader']:.3f}",
            f"{y['pure_python_safe_loader'] / y['libyaml_csafe_loader']:.0f}x",
        )
    )
    rows.append(("budget: all files < 2 s CPU", "", "PASS" if s["cpu_s"] < 2.0 else "FAIL", ""))
    rows.append(("budget: all files < 2 s wall", "", "PASS" if s["wall_s"] < 2.0 else "FAIL (see the load)", ""))
    rows.append(("load average (1 min) at the end", "", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", ""))
    _print("parse: each DAG file parsed and serialized in a fresh interpreter (the DAG processor's unit of work)", rows)
    return figures


# ---------------------------------------------------------------------------------------------
# the Airflow stack on a PostgreSQL metadata database


def _admin(sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG.format("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def stack_env(args, catalogue: Path, database: str, ledger_database: str, home: Path) -> dict:
    port = args.api_port
    return {
        **os.environ,
        "HDH_CATALOGUE": str(catalogue),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": PG.format(database),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(port + 2),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 3),
        "AIRFLOW_CONN_HDH_LEDGER": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": ledger_database}
        ),
        "HDH_SPOOL_DIR": str(home / "spool"),
    }


class Stack:
    """A fresh metadata and ledger database, and the Airflow servers started on them (stopped on exit)."""

    def __init__(self, args, catalogue: Path, workdir: Path, label: str):
        self.database = f"{args.db_prefix}{label}_{uuid.uuid4().hex[:6]}"
        self.ledger_database = f"{self.database}_ledger"
        self.home = workdir / f"airflow-{label}"
        self.home.mkdir(parents=True)
        self.env = stack_env(args, catalogue, self.database, self.ledger_database, self.home)
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Stack:
        for name in (self.database, self.ledger_database):
            _admin(f'CREATE DATABASE "{name}"')
        started = time.perf_counter()
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, check=True)
        self.migrate_s = time.perf_counter() - started
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("AIRFLOW", "HDH_"))})
        return self

    def start(self, *commands: str) -> None:
        for command in commands:
            log = open(self.home / f"{command}.log", "wb")  # noqa: SIM115 - closed with the process
            self.processes.append(
                subprocess.Popen(
                    [AIRFLOW, command], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        from airflow import settings

        if settings.engine is not None:
            settings.engine.dispose()
        for name in (self.database, self.ledger_database):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _session():
    from airflow.utils.session import create_session

    return create_session()


# ---------------------------------------------------------------------------------------------
# backfill


def _serialized(dag_ids: list[str]) -> bool:
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import func, select

    with _session() as session:
        count = session.scalar(
            select(func.count(func.distinct(SerializedDagModel.dag_id))).where(SerializedDagModel.dag_id.in_(dag_ids))
        )
    return count == len(dag_ids)


def _processor_parse_durations() -> dict[str, float]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    with _session() as session:
        rows = session.execute(select(DagModel.relative_fileloc, DagModel.last_parse_duration)).all()
    return {fileloc: duration for fileloc, duration in rows}


def _backfill_progress(dag_id: str) -> dict:
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, select

    with _session() as session:
        backfill = session.scalar(select(Backfill).where(Backfill.dag_id == dag_id))
        states = dict(
            session.execute(
                select(DagRun.state, func.count())
                .where(DagRun.dag_id == dag_id, DagRun.backfill_id == backfill.id)
                .group_by(DagRun.state)
            ).all()
        )
        return {"completed_at": backfill.completed_at, "states": {str(k): v for k, v in states.items()}}


def _backfill_summary(dag_id: str) -> dict:
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    with _session() as session:
        backfill = session.scalar(select(Backfill).where(Backfill.dag_id == dag_id))
        runs = session.scalars(select(DagRun).where(DagRun.backfill_id == backfill.id)).all()
        run_ids = [r.run_id for r in runs]
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(run_ids))
        ).all()
        per_task: dict[str, dict] = {}
        for ti in tis:
            entry = per_task.setdefault(ti.task_id, {"states": {}, "durations": [], "queued_wait": []})
            entry["states"][str(ti.state)] = entry["states"].get(str(ti.state), 0) + 1
            if ti.duration is not None:
                entry["durations"].append(ti.duration)
            if ti.queued_dttm and ti.start_date:
                entry["queued_wait"].append((ti.start_date - ti.queued_dttm).total_seconds())
        created = [r.created_at for r in runs if r.created_at]
        ended = [r.end_date for r in runs if r.end_date]
        started = [r.start_date for r in runs if r.start_date]
        return {
            "runs": len(runs),
            "run_states": {s: sum(1 for r in runs if str(r.state) == s) for s in {str(r.state) for r in runs}},
            "created_span_s": (max(created) - min(created)).total_seconds() if created else None,
            "first_start_to_last_end_s": (max(ended) - min(started)).total_seconds() if ended and started else None,
            "run_duration_median_s": statistics.median(
                (r.end_date - r.start_date).total_seconds() for r in runs if r.end_date and r.start_date
            )
            if ended
            else None,
            "task_instances": len(tis),
            "tasks": {
                task: {
                    "states": e["states"],
                    "duration_median_s": statistics.median(e["durations"]) if e["durations"] else None,
                    "queued_wait_median_s": statistics.median(e["queued_wait"]) if e["queued_wait"] else None,
                }
                for task, e in sorted(per_task.items())
            },
            "completed_at_set": backfill.completed_at is not None,
        }


def run_backfill(args, workdir: Path) -> dict:
    from hdh_migration.catalogue import load_catalogue

    catalogue_path = write_scale_catalogue(workdir / "backfill", args.tables, optional=True)
    catalogue = load_catalogue(catalogue_path)
    domain = catalogue.domain(BACKFILL_DOMAIN)
    partitions = domain.partitions()[-args.partitions :]
    dag_id = f"hdh_transfer__{BACKFILL_DOMAIN}"
    figures: dict = {"partitions": len(partitions), "tables": len(domain.tables)}
    with Stack(args, catalogue_path, workdir, "backfill") as stack:
        from hdh_synthetic import _container

        _container("hdh_azure_source", catalogue.source_container)  # an empty source: every table is optional
        figures["db_migrate_s"] = stack.migrate_s
        started = time.perf_counter()
        stack.start("api-server", "dag-processor", "scheduler")
        dag_ids = [
            f"hdh_{kind}__{d.name}" for d in catalogue.domains for kind in ("transfer", "cutover", "rollback", "verify")
        ]
        wait_until(lambda: _serialized(dag_ids), args.timeout, "the DAG processor serializes every DAG")
        figures["first_parse_s"] = time.perf_counter() - started
        figures["processor_parse_s"] = _processor_parse_durations()
        subprocess.run([AIRFLOW, "dags", "unpause", dag_id], env=stack.env, capture_output=True, check=True)
        started = time.perf_counter()
        subprocess.run(
            [
                AIRFLOW,
                "backfill",
                "create",
                "--dag-id",
                dag_id,
                "--from-date",
                partitions[0],
                "--to-date",
                partitions[-1],
                "--max-active-runs",
                str(args.max_active_runs),
            ],
            env=stack.env,
            capture_output=True,
            check=True,
        )
        figures["backfill_create_cli_s"] = time.perf_counter() - started
        last_print = 0.0
        progress = {}

        def done() -> bool:
            nonlocal last_print, progress
            progress = _backfill_progress(dag_id)
            if time.perf_counter() - last_print > 60:
                last_print = time.perf_counter()
                print(f"  backfill after {last_print - started:.0f} s: {progress['states']}", flush=True)
            return progress["completed_at"] is not None

        try:
            wait_until(done, args.timeout, f"the backfill of {len(partitions)} partitions completes", every=5)
        except TimeoutError as timeout:
            print(f"  {timeout}: the figures below are for the runs finished so far", flush=True)
            figures["timed_out"] = True
        figures["create_to_complete_s"] = time.perf_counter() - started
        figures.update(_backfill_summary(dag_id))
        figures["range"] = [partitions[0], partitions[-1]]
        figures["processor_parse_s_after"] = _processor_parse_durations()
        figures["ledger_partitions"] = _ledger_rows()

    failures = sum(n for s, n in figures["run_states"].items() if s == "failed")
    finished = sum(n for s, n in figures["run_states"].items() if s in ("success", "failed"))
    rows = [
        ("partitions (monthly runs)", f"{figures['partitions']} ({figures['range'][0]} .. {figures['range'][1]})"),
        ("tables per run (optional, no source)", figures["tables"]),
        ("airflow db migrate (PostgreSQL)", f"{figures['db_migrate_s']:.1f} s"),
        ("DAG processor: every DAG serialized", f"{figures['first_parse_s']:.1f} s after start"),
        (
            "DAG processor: last_parse_duration per file",
            ", ".join(f"{k} {v:.3f} s" for k, v in sorted(set(figures["processor_parse_s"].items())) if v),
        ),
        ("`airflow backfill create` (CLI wall)", f"{figures['backfill_create_cli_s']:.1f} s"),
        ("runs created (first to last created_at)", f"{figures['created_span_s']:.2f} s"),
        (
            "create -> backfill completed",
            f"not completed: stopped after {figures['create_to_complete_s']:.0f} s (--timeout)"
            if figures.get("timed_out")
            else f"{figures['create_to_complete_s']:.0f} s",
        ),
        ("runs finished", f"{finished} of {figures['runs']}"),
        ("first run start -> last run end", f"{figures['first_start_to_last_end_s'] or 0:.0f} s"),
        ("finished runs per minute", f"{finished / max(figures['first_start_to_last_end_s'] or 1, 1) * 60:.2f}"),
        ("run duration (median)", f"{figures['run_duration_median_s'] or 0:.1f} s"),
        ("run states", figures["run_states"]),
        ("task instances", figures["task_instances"]),
    ]
    for task, entry in figures["tasks"].items():
        rows.append(
            (
                f"  {task}",
                f"{entry['states']} median {entry['duration_median_s'] or 0:.2f} s, "
                f"queued->start median {entry['queued_wait_median_s'] or 0:.1f} s",
            )
        )
    rows.append(("failed runs (must be 0)", failures))
    rows.append(("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"))
    rows.append(("ledger partition rows", figures["ledger_partitions"]))
    _print(
        f"backfill: {dag_id} through the scheduler (LocalExecutor, PostgreSQL, parallelism {args.parallelism})", rows
    )
    figures["failures"] = failures
    return figures


def _ledger_rows() -> int:
    from hdh_migration.ledger import Ledger

    return len(Ledger.from_connection("hdh_ledger").partitions())


# ---------------------------------------------------------------------------------------------
# fan-out


def _fanout_catalogue(workdir: Path, name: str) -> Path:
    import yaml

    demo = ROOT / "dags" / "domains.yaml"
    raw = yaml.safe_load(demo.read_text(encoding="utf-8"))
    dcir = raw["domains"]["dcir"]
    table = dcir["tables"]["ER_PHA_F"]
    for field in ("schema", "suite"):
        table[field] = str((demo.parent / table[field]).resolve())
    dcir.update({"tables": {"ER_PHA_F": table}, "first_partition": "2024-01-01", "cutover_partition": "2024-01-01"})
    raw.update({"source_container": name, "target_bucket": name, "domains": {"dcir": dcir}})
    path = workdir / "fanout" / "domains.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _xcom_sizes(dag_id: str, run_id: str) -> dict:
    from airflow import settings
    from sqlalchemy import text

    with settings.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_id, key, count(*), sum(octet_length(value::text)), max(octet_length(value::text)) "
                "FROM xcom WHERE dag_id = :dag AND run_id = :run GROUP BY task_id, key ORDER BY task_id, key"
            ),
            {"dag": dag_id, "run": run_id},
        ).all()
    return {
        f"{task}/{key}": {"rows": n, "bytes": int(total), "max_bytes": int(largest)}
        for task, key, n, total, largest in rows
    }


def run_fanout(args, workdir: Path) -> dict:
    import datetime as dt

    name = f"scale-fanout-{uuid.uuid4().hex[:8]}"
    catalogue_path = _fanout_catalogue(workdir, name)
    figures: dict = {"objects": args.objects}
    with Stack(args, catalogue_path, workdir, "fanout") as stack:
        from airflow.models.taskinstance import TaskInstance
        from sqlalchemy import func, select

        from hdh_migration.catalogue import load_catalogue
        from hdh_migration.dag_factory import build_transfer_dag
        from hdh_migration.ledger import Ledger
        from hdh_migration.resources import open_source as _source
        from hdh_migration.resources import open_target as _target
        from hdh_synthetic import seed_azure

        catalogue = load_catalogue(catalogue_path)
        started = time.perf_counter()
        seeded = seed_azure(
            catalogue, seed=11, rows_per_partition=args.objects * 5, files_per_partition=args.objects, domains=["dcir"]
        )
        figures["seed_s"] = time.perf_counter() - started
        figures["seeded"] = seeded["dcir"]
        domain = catalogue.domain("dcir")
        dag = build_transfer_dag(domain, with_deadline=False)  # for dag.test(); see the factory
        started = time.perf_counter()
        run = dag.test(logical_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), run_conf={"partition": "2024-01-01"})
        figures["dag_test_s"] = time.perf_counter() - started
        figures["run_state"] = str(run.state)
        with _session() as session:
            figures["ti_states"] = {
                f"{task}/{state}": n
                for task, state, n in session.execute(
                    select(TaskInstance.task_id, TaskInstance.state, func.count())
                    .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id)
                    .group_by(TaskInstance.task_id, TaskInstance.state)
                ).all()
            }
            figures["ti_duration_s"] = {
                task: {"median": statistics.median(d), "max": max(d), "sum": sum(d)}
                for task, d in _durations(session, dag.dag_id, run.run_id).items()
            }
        figures["xcom"] = _xcom_sizes(dag.dag_id, run.run_id)
        ledger = Ledger.from_connection("hdh_ledger")
        figures["ledger"] = {
            "partitions": [(r.table_name, r.partition, r.state, r.rows) for r in ledger.partitions()],
        }
        figures["ledger_db_bytes"] = _database_bytes(stack.ledger_database)
        figures["metadata_db_bytes"] = _database_bytes(stack.database)
        target = _target()
        landed = [k for k in target.list_keys("dcir/") if k.endswith(".parquet")]
        figures["landed_objects"] = len(landed)
        figures["staging_left"] = len(target.list_keys("_staging/"))
        target.delete_keys(target.list_keys(""))
        target.client.delete_bucket(Bucket=target.bucket)
        _source().container_client.delete_container()

    ok = figures["run_state"] == "success" and figures["landed_objects"] == args.objects
    mapped = {k: v for k, v in figures["ti_states"].items() if k.startswith("transfer_object/")}
    rows = [
        (
            "source objects (rows, bytes)",
            f"{args.objects} ({figures['seeded']['rows']} rows, {figures['seeded']['bytes'] / 1e6:.1f} MB)",
        ),
        ("seeding Azurite", f"{figures['seed_s']:.0f} s"),
        ("dag.test() wall", f"{figures['dag_test_s']:.0f} s"),
        ("run state", figures["run_state"]),
        ("transfer_object mapped TIs", mapped),
        ("other TIs", {k: v for k, v in figures["ti_states"].items() if k not in mapped}),
    ]
    for task, d in figures["ti_duration_s"].items():
        rows.append((f"  {task} duration", f"median {d['median']:.2f} s, max {d['max']:.2f} s, sum {d['sum']:.0f} s"))
    for key, x in figures["xcom"].items():
        rows.append(
            (f"  XCom {key}", f"{x['rows']} row(s), {x['bytes'] / 1e3:.0f} kB, largest {x['max_bytes'] / 1e3:.1f} kB")
        )
    rows.append(("objects landed / staging left", f"{figures['landed_objects']} / {figures['staging_left']}"))
    rows.append(("ledger partitions", figures["ledger"]["partitions"]))
    rows.append(
        (
            "ledger DB / metadata DB size",
            f"{figures['ledger_db_bytes'] / 1e6:.1f} MB / {figures['metadata_db_bytes'] / 1e6:.1f} MB",
        )
    )
    rows.append(("fan-out without errors", "PASS" if ok else "FAIL"))
    _print(f"fan-out: one partition of {args.objects} objects through dag.test() (PostgreSQL metadata DB)", rows)
    return figures


def _durations(session, dag_id: str, run_id: str) -> dict[str, list[float]]:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    durations: dict[str, list[float]] = {}
    for task, duration in session.execute(
        select(TaskInstance.task_id, TaskInstance.duration).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.duration.is_not(None)
        )
    ).all():
        durations.setdefault(task, []).append(duration)
    return durations


def _database_bytes(name: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(PG.format("postgres"))
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_database_size(:name)"), {"name": name}).scalar()
    engine.dispose()
    return int(size)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--parts", nargs="+", choices=("parse", "backfill", "fanout"), default=["parse", "backfill", "fanout"]
    )
    parser.add_argument("--tables", type=int, default=220, help="tables in the generated catalogue")
    parser.add_argument("--partitions", type=int, default=240, help="monthly partitions in the backfill")
    parser.add_argument("--max-active-runs", type=int, default=8, help="the backfill's max active runs")
    parser.add_argument("--parallelism", type=int, default=8, help="LocalExecutor task slots")
    parser.add_argument("--objects", type=int, default=1000, help="source objects in the fan-out partition")
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("HDH_SCALE_API_PORT", "8080")))
    parser.add_argument("--db-prefix", default="hdh_scale_bench_", help="prefix of the PostgreSQL databases created")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for each part")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (catalogues, server logs)")
    parser.add_argument("--results-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A bench stopped while it waits still stops its servers and drops its databases (the context managers
    # run); during dag.test() Airflow's task runner holds SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args)}
    if len(args.parts) > 1:
        # One process per part: each part points Airflow at a metadata database of its own.
        for part in args.parts:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                argv = [a for a in sys.argv[1:] if a not in args.parts and a != "--parts"]
                subprocess.run([PYTHON, __file__, *argv, "--parts", part, "--results-file", out.name], check=True)
                results[part] = json.loads(Path(out.name).read_text())[part]
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hdh-scale-"))
        part = args.parts[0]
        try:
            results[part] = {"parse": run_parse, "backfill": run_backfill, "fanout": run_fanout}[part](args, workdir)
        finally:
            if args.keep:
                print(f"\nwork folder kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        if args.results_file:
            args.results_file.write_text(json.dumps(results, default=str))
            return 0
    print("\nBENCH_JSON " + json.dumps(results, default=str))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"scale-{results['started_at'].replace(':', '')}.json").write_text(
        json.dumps(results, indent=1, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
