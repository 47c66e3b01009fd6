"""``preflight`` against the local stack: Azurite, SeaweedFS, this worktree's Airflow DB (pool, connections)
and a real api-server (simple auth manager) on ``HDH_API_PORT``: ready when everything is in place, and
for each blocker provoked in turn, not ready, naming that blocker and only it.

What the local stack cannot pass, and why (warnings, not blockers): SeaweedFS buckets here have no
versioning, no object lock and no lifecycle rule (the store's settings, made by whoever creates the
real bucket), and the alert connections are not defined by scripts/env.sh. The fingerprint key is
unset by scripts/env.sh (a blocker there): the tests set one, and unset it to provoke its blocker.
No transfer DAG is serialized in this worktree's DB (no dag-processor runs), so the backfill right
shows as a warning: the api-server authorised the dry runs, then found no DAG.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import ROOT

from hdh_migration.catalogue import TRANSFER_POOL
from hdh_migration.cli import main

pytestmark = [pytest.mark.integration]

API_PORT = int(os.environ.get("HDH_API_PORT", "8183"))
BACKFILLER, VIEWER = "hdh_gap_scan", "viewer"


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """A real api-server on this worktree's Airflow DB: a user that may trigger runs, and a viewer."""
    tmp = tmp_path_factory.mktemp("api")
    passwords = {BACKFILLER: secrets.token_urlsafe(16), VIEWER: secrets.token_urlsafe(16)}
    (tmp / "passwords.json").write_text(json.dumps(passwords))
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{BACKFILLER}:user,{VIEWER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
    }
    log = tmp / "api-server.log"
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    with open(log, "w") as out:
        process = subprocess.Popen(
            [airflow_bin, "api-server", "--host", "127.0.0.1", "--port", str(API_PORT), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, f"api-server exited:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"http://127.0.0.1:{API_PORT}/api/v2/monitor/health", timeout=10).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"api-server did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield passwords
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _api_connection(login: str, password: str, port: int = API_PORT) -> str:
    return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "login": login, "password": password})


@pytest.fixture
def pool_slots():
    """This worktree's pool hdh_transfer, set by the test; removed afterwards."""
    from airflow.models.pool import Pool

    def set_slots(slots: int) -> None:
        Pool.create_or_update_pool(TRANSFER_POOL, slots, "hdh-migration preflight test", include_deferred=False)

    yield set_slots
    Pool.delete_pool(TRANSFER_POOL)


@pytest.fixture
def ready(migration, api_server, pool_slots, monkeypatch):
    """Everything in place: source seeded, bucket made, pool sized, key set, API user allowed."""
    migration.seed(domains=["causes_deces"], rows_per_partition=20, files_per_partition=1)
    migration.target.ensure_bucket()
    pool_slots(migration.catalogue.transfer_slots)
    monkeypatch.setenv("HDH_FINGERPRINT_KEY", secrets.token_hex(32))
    monkeypatch.setenv("AIRFLOW_CONN_HDH_AIRFLOW_API", _api_connection(BACKFILLER, api_server[BACKFILLER]))
    return migration


def _stdout(capsys) -> list[str]:
    """The command's stdout, without Airflow's log lines (timestamped) that pytest's capture mixes in."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return [line for line in out.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT", line)]


def _preflight(capsys, *flags: str) -> tuple[int, dict]:
    code = main(["preflight", "--json", *flags])
    return code, json.loads("\n".join(_stdout(capsys)))


def _verdicts(report: dict) -> dict[str, str]:
    return {row["check"]: row["verdict"] for row in report["checks"]}


def _blockers(report: dict) -> dict[str, str]:
    return {row["check"]: row["detail"] for row in report["checks"] if row["verdict"] == "BLOCKER"}


def test_preflight_is_ready_on_the_local_stack_and_leaves_nothing_behind(ready, capsys):
    code, report = _preflight(capsys)
    name = ready.name
    assert code == 0 and report["ready"] is True and report["blockers"] == 0, _blockers(report)
    verdicts = _verdicts(report)
    for check in (
        "connection hdh_azure_source",
        "connection hdh_sovereign_target",
        "connection hdh_ledger",
        "connection hdh_airflow_api",
        f"source container {name}",
        "sovereignty guard",
        f"target bucket {name}",
        "clock skew",
        f"pool {TRANSFER_POOL}",
        "fingerprint key",
    ):
        assert verdicts[check] == "ok", (check, report)
    # What the local stack legitimately lacks (see the module's docstring).
    for check in ("bucket versioning", "bucket object lock", "bucket lifecycle", "connection hdh_alert_webhook"):
        assert verdicts[check] == "warning", (check, report)
    lifecycle = next(r for r in report["checks"] if r["check"] == "bucket lifecycle")
    assert '"AbortIncompleteMultipartUpload"' in lifecycle["detail"] and '"_staging/"' in lifecycle["detail"]
    api = next(r for r in report["checks"] if r["check"] == "API user may backfill")
    assert api["verdict"] in ("ok", "warning") and "may create backfills" in api["detail"], api
    assert report["warnings"] == sum(v == "warning" for v in verdicts.values())

    # The probes cleaned up after themselves: no object, no unfinished upload.
    target = ready.target
    assert target.list_keys("_staging/") == []
    assert target.client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []

    # The table: one row per check, its verdict in the second column, the summary last.
    assert main(["preflight"]) == 0
    lines = _stdout(capsys)
    assert lines[0].split()[:3] == ["check", "verdict", "detail"]
    rows = {line[: lines[1].index(" ")].strip(): line.split()[-1] for line in lines[2:-2]}
    assert len(lines) - 4 == len(report["checks"]) and len(rows) == len(report["checks"])
    assert lines[-1].startswith("ready for wave 1: 0 blocker(s)")


def _old_date_store(seconds_behind: float):
    """A loopback 'store' whose every answer carries a Date ``seconds_behind`` the local clock."""

    class Handler(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp=None):
            return formatdate(time.time() - seconds_behind, usegmt=True)

        def _answer(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _target_connection(endpoint: str, password: str | None = None) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": os.environ["HDH_S3_ACCESS_KEY"],
            "password": password or os.environ["HDH_S3_SECRET_KEY"],
            "extra": {"endpoint_url": endpoint, "region_name": "fr-par", "provider_profile": "generic"},
        }
    )


def test_clock_skew_against_the_stores_date_header(ready, capsys, monkeypatch):
    server = _old_date_store(600)
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", _target_connection(f"http://127.0.0.1:{server.server_port}")
        )
        code, report = _preflight(capsys)
        skew = next(r for r in report["checks"] if r["check"] == "clock skew")
        assert skew["verdict"] == "BLOCKER" and "ahead of the store's clock" in skew["detail"], skew
        assert 595 <= int(skew["detail"].split()[3]) <= 605 and "NTP" in skew["detail"]
        assert code == 1 and report["ready"] is False
        # A skew under the blocker's threshold is a warning only.
        _, report = _preflight(capsys, "--max-clock-skew", "900")
        assert _verdicts(report)["clock skew"] == "warning"
    finally:
        server.shutdown()
        server.server_close()


def _wrong_azure_key(monkeypatch, migration, passwords):
    connection = json.loads(os.environ["AIRFLOW_CONN_HDH_AZURE_SOURCE"])
    parts = dict(p.split("=", 1) for p in connection["extra"]["connection_string"].rstrip(";").split(";"))
    parts["AccountKey"] = base64.b64encode(secrets.token_bytes(64)).decode()
    connection["extra"]["connection_string"] = ";".join(f"{k}={v}" for k, v in parts.items()) + ";"
    monkeypatch.setenv("AIRFLOW_CONN_HDH_AZURE_SOURCE", json.dumps(connection))


def _source_container_missing(monkeypatch, migration, passwords):
    migration.source.container_client.delete_container()


def _target_bucket_missing(monkeypatch, migration, passwords):
    target = migration.target
    target.delete_keys(target.list_keys(""))
    target.client.delete_bucket(Bucket=target.bucket)


def _wrong_target_secret(monkeypatch, migration, passwords):
    endpoint = f"http://127.0.0.1:{os.environ['HDH_S3_PORT']}"
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", _target_connection(endpoint, "not-the-secret"))


def _non_sovereign_endpoint(monkeypatch, migration, passwords):
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", _target_connection("https://s3.eu-west-3.amazonaws.com"))


def _pool_too_small(monkeypatch, migration, passwords):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(TRANSFER_POOL, 4, "too small", include_deferred=False)


def _fingerprint_key_unset(monkeypatch, migration, passwords):
    monkeypatch.delenv("HDH_FINGERPRINT_KEY")


def _fingerprint_key_local(monkeypatch, migration, passwords):
    from hdh_migration.integrity import LOCAL_FINGERPRINT_KEY

    assert (
        f'HDH_FINGERPRINT_KEY="${{HDH_FINGERPRINT_KEY:-{LOCAL_FINGERPRINT_KEY}}}"'
        in (ROOT / "scripts" / "env.sh").read_text()
    )
    monkeypatch.setenv("HDH_FINGERPRINT_KEY", LOCAL_FINGERPRINT_KEY)


def _ledger_connection_missing(monkeypatch, migration, passwords):
    monkeypatch.delenv("AIRFLOW_CONN_HDH_LEDGER")


def _api_unreachable(monkeypatch, migration, passwords):
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_HDH_AIRFLOW_API", _api_connection(BACKFILLER, "any", port))


def _api_user_is_a_viewer(monkeypatch, migration, passwords):
    monkeypatch.setenv("AIRFLOW_CONN_HDH_AIRFLOW_API", _api_connection(VIEWER, passwords[VIEWER]))


def _api_password_wrong(monkeypatch, migration, passwords):
    monkeypatch.setenv("AIRFLOW_CONN_HDH_AIRFLOW_API", _api_connection(BACKFILLER, "not-the-password"))


# (provocation, the one blocking row (with {name} for the test's container and bucket), words of its detail)
PROVOKED = [
    (_source_container_missing, "source container {name}", ["ContainerNotFound", "does not exist"]),
    (_wrong_azure_key, "source container {name}", ["AuthorizationFailure", "hdh_azure_source"]),
    (_target_bucket_missing, "target bucket {name}", ["HeadBucket answered", "does not exist", "create it"]),
    (_wrong_target_secret, "target bucket {name}", ["HTTP 403", "secret key (password)"]),
    (_non_sovereign_endpoint, "sovereignty guard", ["non-sovereign pattern *.amazonaws.com", "not run"]),
    (
        _pool_too_small,
        f"pool {TRANSFER_POOL}",
        ["4 slot(s)", "transfer_slots is 16", "python -m hdh_migration pools sync"],
    ),
    (_fingerprint_key_unset, "fingerprint key", ["is not set", "openssl rand"]),
    (_fingerprint_key_local, "fingerprint key", ["the local profiles' public key"]),
    (_ledger_connection_missing, "connection hdh_ledger", ["missing", "AIRFLOW_CONN_HDH_LEDGER"]),
    (_api_unreachable, "API user may backfill", ["no api-server answers", "hdh_airflow_api"]),
    (_api_user_is_a_viewer, "API user may backfill", ["may not create backfills", "hdh_transfer__causes_deces"]),
    (_api_password_wrong, "API user may backfill", ["refused a token (HTTP 401)"]),
]


@pytest.mark.parametrize(("provoke", "row", "words"), PROVOKED, ids=[p[0].__name__.strip("_") for p in PROVOKED])
def test_each_blocker_is_named_and_fails_the_preflight(ready, api_server, monkeypatch, capsys, provoke, row, words):
    provoke(monkeypatch, ready, api_server)
    code, report = _preflight(capsys)
    blockers = _blockers(report)
    row = row.format(name=ready.name)
    assert code == 1 and report["ready"] is False
    # Only the provoked row blocks (a broken guard or bucket also stops the checks that need the target).
    assert set(blockers) - {"bucket settings"} == {row}, blockers
    for word in words:
        assert word in blockers[row], (word, blockers[row])
    if provoke is _non_sovereign_endpoint:
        assert not any(r["check"].startswith(("target bucket", "bucket ")) for r in report["checks"])
    # Never a secret in the output: the passwords and keys the test set.
    rendered = json.dumps(report)
    assert (
        os.environ["HDH_S3_SECRET_KEY"] not in rendered and os.environ.get("HDH_FINGERPRINT_KEY", "?") not in rendered
    )
    assert all(password not in rendered for password in api_server.values())

    # The table names the same blocker, and says so last.
    assert main(["preflight"]) == 1
    lines = _stdout(capsys)
    assert any(line.startswith(row) and " BLOCKER " in line for line in lines)
    assert lines[-1].startswith(f"NOT ready: {report['blockers']} blocker(s)")


@pytest.fixture
def locked_bucket():
    """A SeaweedFS bucket made with object lock (so versioned); every version removed afterwards."""
    import uuid

    from hdh_migration.resources import TARGET_CONN_ID
    from hdh_migration.target import SovereignTarget

    target = SovereignTarget(TARGET_CONN_ID, f"t{uuid.uuid4().hex[:12]}")
    target.client.create_bucket(Bucket=target.bucket, ObjectLockEnabledForBucket=True)
    yield target
    versions = target.client.list_object_versions(Bucket=target.bucket)
    for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        target.client.delete_object(Bucket=target.bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    target.client.delete_bucket(Bucket=target.bucket)


def test_store_settings_are_read_from_the_bucket(locked_bucket):
    """What the bucket has, as the store answers it; an expiry beyond _staging/ is a blocker."""
    from hdh_migration.preflight import LIFECYCLE_RULE, check_store_settings, check_target_writes

    client, bucket = locked_bucket.client, locked_bucket.bucket
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [LIFECYCLE_RULE]})
    rows = {r.check: r for r in check_store_settings(locked_bucket)}
    assert rows["bucket versioning"].verdict == "ok" and rows["bucket versioning"].detail.startswith("Enabled")
    assert rows["bucket object lock"].verdict == "ok", rows["bucket object lock"]
    assert rows["bucket lifecycle"].verdict == "ok", rows["bucket lifecycle"]
    # The probes work on a versioned, locked bucket too (a delete there leaves a marker, not the bytes).
    assert check_target_writes(locked_bucket).verdict == "ok"

    aborts_only = {**LIFECYCLE_RULE, "ID": "aborts-only"}
    del aborts_only["Expiration"]
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [aborts_only]})
    row = {r.check: r for r in check_store_settings(locked_bucket)}["bucket lifecycle"]
    assert row.verdict == "warning" and "no rule to expire _staging/" in row.detail and '"Days": 7' in row.detail

    everything = {**LIFECYCLE_RULE, "ID": "expire-all", "Filter": {"Prefix": ""}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [everything]})
    row = {r.check: r for r in check_store_settings(locked_bucket)}["bucket lifecycle"]
    assert row.verdict == "BLOCKER" and "expire-all" in row.detail and "outside _staging/" in row.detail


def test_the_target_probe_cleans_up_when_a_step_fails(migration, monkeypatch):
    """ListParts answered 503 (every retry): a blocker naming it, and no probe object or upload left."""
    import socket

    from faults.proxy import FaultProxy

    from hdh_migration.preflight import PREFLIGHT_PREFIX, check_guard, check_target_writes

    migration.target.ensure_bucket()
    direct = os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]

    def strike_list_parts(proxy, method, target):
        proxy.mode = "http503" if method == "GET" and "uploadId=" in target else "pass"

    proxy = FaultProxy(port, int(os.environ["HDH_S3_PORT"]), http=True, on_request=strike_list_parts).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", _target_connection(f"http://127.0.0.1:{port}"))
        guard, target = check_guard(migration.catalogue)
        row = check_target_writes(target)
        assert row.verdict == "BLOCKER" and row.detail.startswith("ListParts answered"), row
        assert proxy.faulted >= 1 and any(m == "DELETE" and "uploadId=" in t for m, t in proxy.requests)
    finally:
        proxy.stop()
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", direct)
    target = migration.target
    assert target.list_keys(f"{PREFLIGHT_PREFIX}/") == []
    assert target.client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []
