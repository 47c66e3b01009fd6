"""The production-shaped profile (scripts/prod.sh) migrates through its scheduler and its three Celery workers.

One module-scoped profile: its own state folder, Airflow database, ledger database (PostgreSQL),
Azure container and bucket; the stand-ins and the profile's ports are those of the environment.
causes_deces (a CSV table, two yearly partitions) is backfilled and cut over through the REST API by
the CLI, as an operator runs it (``migrate``, ``cutover``, then ``verify`` and its refusals); the ledger in PostgreSQL is checked against the
manifests, the rows against the source and the written files, and the tasks against the worker
that ran them.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import read_table_bytes

# Starting the profile and some thirty task processes: minutes on a loaded machine.
pytestmark = [pytest.mark.prod, pytest.mark.integration, pytest.mark.timeout(1800)]

DOMAINS = ("causes_deces",)


def cli(profile, *argv: str) -> subprocess.CompletedProcess:
    """``python -m hdh_migration`` as an operator runs it against the deployment, with its JSON output."""
    api = ["--api-url", profile.api_url, "--password-file", str(profile.dir / "passwords.json")]
    return subprocess.run(
        [sys.executable, "-m", "hdh_migration", *argv, *api, "--json"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def test_the_users_have_their_roles_through_the_fab_auth_manager(profile):
    """The users `users sync` made at start (HDH_AIRFLOW_USERS, FAB roles), each logged in with its own
    password: on-call (Viewer) reads a DAG but may not trigger it nor create a backfill, the data
    engineer (User) triggers a run (and deletes it: the DAG is paused, nothing runs), the gap scan's
    user creates backfills (a dry run, as preflight asks), and a wrong password gets no token."""
    from hdh_migration.airflow_api import AirflowApi, AirflowApiError
    from hdh_migration.resources import current_catalogue as _catalogue

    passwords_file = profile.dir / "passwords.json"
    passwords = json.loads(passwords_file.read_text())
    assert set(passwords) == {"admin", "oncall", "engineer", "hdh_gap_scan"}
    assert oct(passwords_file.stat().st_mode & 0o777) == "0o600"
    oncall, engineer, gap_scan = (
        AirflowApi.from_password_file(profile.api_url, passwords_file, name)
        for name in ("oncall", "engineer", "hdh_gap_scan")
    )
    (name,) = DOMAINS
    dag_id = f"hdh_transfer__{name}"
    partitions = _catalogue().domain(name).partitions()
    oncall.wait_for_dag(dag_id, timeout=300)
    assert oncall.dag(dag_id)["is_paused"] is True
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        oncall.trigger(dag_id, {"partition": partitions[0]})
    backfill = {"dag_id": dag_id, "from_date": "2000-01-01T00:00:00Z", "to_date": "2000-01-02T00:00:00Z"}
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        oncall.call("POST", "/backfills/dry_run", json=backfill)

    run = engineer.trigger(dag_id, {"partition": partitions[0]})
    assert engineer.dag_run(dag_id, run["dag_run_id"])["state"] == "queued"
    engineer.call("DELETE", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
    assert oncall.dag_runs(dag_id) == []

    assert "backfills" in gap_scan.call("POST", "/backfills/dry_run", json=backfill)
    with pytest.raises(AirflowApiError, match="HTTP 401"):
        AirflowApi(profile.api_url, "oncall", passwords["engineer"])


@pytest.fixture(scope="module")
def migrated(profile):
    """Seed the domain, then backfill and cut it over through the deployment, with the CLI."""
    from hdh_migration.resources import current_catalogue as _catalogue

    catalogue = _catalogue()
    seeded = profile.migration.seed(seed=11, rows_per_partition=300, files_per_partition=1, domains=DOMAINS)
    started = time.monotonic()
    migrate = cli(profile, "migrate", *(f"--domain={d}" for d in DOMAINS))
    cutover = cli(profile, "cutover", *(f"--domain={d}" for d in DOMAINS), "--by", "ops@hdh")
    print(f"prod profile: started in {profile.start_s:.1f} s, migrated in {time.monotonic() - started:.1f} s")
    assert (migrate.returncode, cutover.returncode) == (0, 0), migrate.stderr[-3000:] + cutover.stderr[-3000:]
    return {
        "api": profile.api,
        "catalogue": catalogue,
        "runs": json.loads(migrate.stdout)["runs"],
        "cutover": {o["domain"]: o for o in json.loads(cutover.stdout)},
        "seeded": seeded,
    }


def test_every_run_succeeds_and_each_domain_is_cut_over(migrated):
    from hdh_migration.resources import open_ledger as _ledger

    for name in DOMAINS:
        expected_runs = len(migrated["catalogue"].domain(name).partitions())
        states = [r["state"] for r in migrated["runs"] if r["domain"] == name]
        assert states == ["success"] * expected_runs, name
        outcome = migrated["cutover"][name]
        assert (outcome["state"], outcome["outcome"], outcome["by"]) == ("success", "cut over", "ops@hdh")
        assert outcome["record"] == f"_cutover/{name}.json" and len(outcome["root_sha256"]) == 64
        assert _ledger().domain_state(name) == "cut_over", name


def test_the_cli_drives_verify_cutover_and_rollback_through_the_deployment(migrated, profile):
    (name,) = DOMAINS
    verify = cli(profile, "verify", "--domain", name, "--quick")
    assert verify.returncode == 0, verify.stderr[-3000:]
    (report,) = json.loads(verify.stdout)
    assert report["verify"] == "ok" and report["problems"] == 0 and report["objects"] > 0
    assert f"hdh_verify__{name}: success" in verify.stderr  # the progress, on stderr

    again = cli(profile, "cutover", "--domain", name)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)[0]["outcome"] == "already cut over; nothing to do"

    for argv, expected in (
        (("rollback", "--domain", name, "--reason", "too short"), "a rollback needs a reason of at least 10"),
        (("verify", "--domain", "nosuch"), "no domain nosuch in the catalogue"),
    ):
        refused = cli(profile, *argv)
        assert refused.returncode == 2 and refused.stdout == "", argv
        assert "Traceback" not in refused.stderr and expected in refused.stderr.splitlines()[-1]


def test_ledger_in_postgres_equals_the_manifests(migrated):
    from hdh_migration.layout import manifest_key
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_target as _target

    ledger, target = _ledger(), _target()
    assert ledger.engine.url.get_backend_name() == "postgresql"
    for name in DOMAINS:
        domain = migrated["catalogue"].domain(name)
        expected = {(t.name, p) for t in domain.tables for p in domain.partitions()}
        assert {(r.table_name, r.partition) for r in ledger.partitions(name)} == expected
        manifests = {k for k in target.list_keys(f"_manifests/{name}/") if k.endswith(".json")}
        assert manifests == {manifest_key(name, t, domain.table(t).partition_column, p) for t, p in expected}
        for table_name, partition in expected:
            record = ledger.get(name, table_name, partition)
            manifest = target.get_json(
                manifest_key(name, table_name, domain.table(table_name).partition_column, partition)
            )
            assert record.state == "committed"
            assert (record.rows, record.bytes, record.run_id) == (
                manifest["rows"],
                manifest["bytes"],
                manifest["run_id"],
            )
            assert record.source_etags == {o["name"]: o["etag"] for o in manifest["source_objects"]}


def test_rows_reconcile_source_manifest_and_written_files(migrated):
    import pyarrow.parquet as pq

    from hdh_migration.layout import manifest_key, partition_dir
    from hdh_migration.resources import open_source as _source
    from hdh_migration.resources import open_target as _target

    source, target = _source(), _target()
    total = 0
    for name in DOMAINS:
        domain = migrated["catalogue"].domain(name)
        for table in domain.tables:
            for partition in domain.partitions():
                manifest = target.get_json(manifest_key(name, table.name, table.partition_column, partition))
                listed = source.list_objects(
                    partition_dir(name, table.name, table.partition_column, partition), table.source_extension
                )
                source_rows = sum(
                    read_table_bytes(source.container_client.download_blob(o.name).readall(), table).num_rows
                    for o in listed
                )
                written = sum(
                    pq.read_metadata(
                        io.BytesIO(target.client.get_object(Bucket=target.bucket, Key=f["key"])["Body"].read())
                    ).num_rows
                    for f in manifest["files"]
                )
                assert source_rows == manifest["rows"] == written, (name, table.name, partition)
                total += written
    assert total == sum(migrated["seeded"][name]["rows"] for name in DOMAINS)


WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='(?P<task>[^']+)', dag_id='(?P<dag>[^']+)'")


def test_transfers_ran_on_the_transfer_worker_the_cutover_on_the_cutover_worker_the_rest_on_default(migrated, profile):
    api = migrated["api"]
    by_queue = {}
    for run in migrated["runs"]:
        for ti in api.task_instances(f"hdh_transfer__{run['domain']}", run["run_id"]):
            if ti["state"] == "success":
                by_queue.setdefault(ti["queue"], set()).add(ti["task_id"])
    assert by_queue["transfer"] == {"transfer_object"}
    assert by_queue["default"] >= {"plan_partition", "validate_partition", "commit_partition", "reconcile_partition"}
    assert set(by_queue) == {"default", "transfer"}

    executed = {}
    for worker in ("worker-default", "worker-transfer", "worker-cutover"):
        log = (profile.dir / "logs" / f"{worker}.log").read_text()
        executed[worker] = {m["task"] for m in WORKLOAD.finditer(log) if m["dag"].split("__")[-1] in DOMAINS}
    assert executed["worker-transfer"] == {"transfer_object"}
    assert "transfer_object" not in executed["worker-default"]
    assert executed["worker-default"] >= by_queue["default"]
    cutover_tasks = {
        "check_completeness",
        "reconcile_source",
        "freeze_domain",
        "write_cutover_record",
        "announce_cutover",
    }
    assert executed["worker-cutover"] == cutover_tasks
    assert not cutover_tasks & executed["worker-default"]


def test_only_the_cutover_worker_process_holds_the_signing_key_and_verify_checks_its_signature(migrated, profile):
    """Read from each running service's own environment (/proc/<pid>/environ), the key's only way in."""
    import psutil

    from hdh_migration.cutover import verify

    holders, read = set(), set()
    services = (
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker-default",
        "worker-transfer",
        "worker-cutover",
    )
    for service in services:
        root = psutil.Process(profile.pid(service))
        for process in [root, *root.children(recursive=True)]:
            try:
                environment = process.environ()
            except psutil.NoSuchProcess:
                continue  # a task process that has just finished
            if not environment:
                continue  # a process on its way out (a zombie) shows no environment
            read.add(service)
            if "AIRFLOW_CONN_HDH_CUTOVER_SIGNING" in environment:
                holders.add(service)
            assert environment.get("HDH_CUTOVER_PUBLIC_KEY") == os.environ["HDH_CUTOVER_PUBLIC_KEY"], service
            assert environment.get("HDH_FINGERPRINT_KEY") == os.environ["HDH_FINGERPRINT_KEY"], service
    assert read == set(services)
    assert holders == {"worker-cutover"}
    for name in DOMAINS:
        assert verify(name, deep=True)["problems"] == 0
