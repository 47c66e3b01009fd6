"""``python -m hdh_migration preflight``: is this deployment ready for wave 1, against the real accounts?

Each check is a small function returning ``Check`` rows: ``ok``, ``BLOCKER`` (wave 1 must not start)
or ``warning`` (it may, but read why), with a detail that says what to fix. Checks write only
under ``_staging/_preflight/<random>/`` and remove what they wrote, on failure too. Their output holds
names, counts and error codes: never a data value, a secret or a library's error message (which can
carry either).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hdh_migration.catalogue import TRANSFER_POOL, Catalogue
from hdh_migration.layout import CUTOVER_PREFIX, MANIFEST_PREFIX, STAGING_PREFIX

OK, BLOCKER, WARNING = "ok", "BLOCKER", "warning"
PREFLIGHT_PREFIX = f"{STAGING_PREFIX}/_preflight"
# SigV4 refuses requests more than 15 min off the store's clock; stay well inside it.
MAX_CLOCK_SKEW_S = 300.0
WARN_CLOCK_SKEW_S = 60.0
MIN_FINGERPRINT_KEY_CHARS = 32
# What the probes write: a constant, never data.
PROBE_BYTES = b"hdh-migration preflight probe\n"
# The lifecycle rule the store should hold (README, "Before wave 1: preflight").
LIFECYCLE_RULE = {
    "ID": "hdh-staging",
    "Filter": {"Prefix": f"{STAGING_PREFIX}/"},
    "Status": "Enabled",
    "Expiration": {"Days": 7},
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
}


@dataclass(frozen=True)
class Check:
    check: str
    verdict: str
    detail: str


def _client_error(error) -> str:
    """A botocore ClientError as its operation, code and HTTP status: its message may echo a key or value."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return f"{error.operation_name} answered {error.response.get('Error', {}).get('Code', '?')} (HTTP {status})"


def _azure_error(error) -> str:
    code = getattr(error, "error_code", None) or getattr(error, "status_code", None)
    code = getattr(code, "value", code)  # the storage SDK gives an enum
    return f"{type(error).__name__}" + (f" {code}" if code else "")


# -- connections ----------------------------------------------------------------------------------


def project_connections() -> tuple[tuple[str, str, bool], ...]:
    """(conn id, what it is for, required) of every connection the project uses."""
    from hdh_migration.airflow_api import API_CONN_ID
    from hdh_migration.alerts import SMTP_CONN_ID, WEBHOOK_CONN_ID
    from hdh_migration.resources import LEDGER_CONN_ID, SOURCE_CONN_ID, TARGET_CONN_ID
    from hdh_migration.signing import SIGNING_CONN_ID

    return (
        (SOURCE_CONN_ID, "the Azure source (wasb)", True),
        (TARGET_CONN_ID, "the sovereign S3 target (aws)", True),
        (LEDGER_CONN_ID, "the ledger database", True),
        (API_CONN_ID, "Airflow's REST API for the gap scan's backfills (http)", True),
        (SIGNING_CONN_ID, "the cutover signer's private key (generic; the cutover worker only)", True),
        (WEBHOOK_CONN_ID, "the webhook alert channel (http)", False),
        (SMTP_CONN_ID, "the e-mail alert channel (smtp)", False),
    )


def check_connections() -> list[Check]:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    rows = []
    for conn_id, purpose, required in project_connections():
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            if required:
                rows.append(
                    Check(
                        f"connection {conn_id}",
                        BLOCKER,
                        f"missing: define {purpose} in Airflow's secrets backend (or AIRFLOW_CONN_{conn_id.upper()})",
                    )
                )
            else:
                rows.append(Check(f"connection {conn_id}", WARNING, f"missing: {purpose} is off"))
            continue
        rows.append(Check(f"connection {conn_id}", OK, f"present ({purpose})"))
    return rows


# -- source ---------------------------------------------------------------------------------------


def check_source(container: str) -> Check:
    """List the container, then read one byte range of one object (nothing kept)."""
    from airflow.sdk.exceptions import AirflowNotFoundException
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    from hdh_migration.resources import SOURCE_CONN_ID
    from hdh_migration.source import AzureSource

    name = f"source container {container}"
    fix = f"check the container name (source_container) and the rights of connection {SOURCE_CONN_ID}"
    step = "connect"
    try:
        source = AzureSource(SOURCE_CONN_ID, container)
        step = "list"
        listed = source.first_objects()
        objects = [obj for obj in listed if obj.size]
        if not objects:
            return Check(name, WARNING, "listed, but holds no object to read: seed or check the container")
        step = "ranged read"
        length = min(objects[0].size, 1024)
        read = len(source.read_range(objects[0], 0, length))
    except AirflowNotFoundException:
        return Check(name, BLOCKER, f"connection {SOURCE_CONN_ID} is missing")
    except ResourceNotFoundError as error:
        return Check(name, BLOCKER, f"{step}: {_azure_error(error)}: the container does not exist; {fix}")
    except AzureError as error:
        return Check(name, BLOCKER, f"{step}: {_azure_error(error)}: {fix} (account key, SAS or role)")
    except ValueError as error:  # the hook refusing a malformed connection
        return Check(name, BLOCKER, f"{step}: {type(error).__name__}: {fix}")
    return Check(name, OK, f"listed {len(listed)} object(s) of the first page; read {read} byte(s) of one in a range")


# -- target ---------------------------------------------------------------------------------------


def check_guard(catalogue: Catalogue):
    """The sovereignty guard's verdict on the target connection; returns (row, target or None)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hdh_migration.errors import SovereigntyError
    from hdh_migration.resources import TARGET_CONN_ID
    from hdh_migration.target import SovereignTarget

    name = "sovereignty guard"
    try:
        target = SovereignTarget(
            TARGET_CONN_ID, catalogue.target_bucket, catalogue.target_eea_regions, catalogue.target_ca_bundle
        )
    except SovereigntyError as refused:
        return Check(name, BLOCKER, f"{refused} (the target's checks were not run)"), None
    except AirflowNotFoundException:
        return Check(name, BLOCKER, f"connection {TARGET_CONN_ID} is missing (the target's checks were not run)"), None
    return Check(
        name, OK, f"endpoint {target.client.meta.endpoint_url} allowed (profile {target.profile.name})"
    ), target


def _target_fix(code: str, bucket: str) -> str:
    from hdh_migration.resources import TARGET_CONN_ID

    if code in ("404", "NoSuchBucket", "NotFound"):
        return f"bucket {bucket} does not exist: create it (versioned, with object lock) or fix target_bucket"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied", "InvalidToken"):
        return (
            f"check the access key (login) and secret key (password) of connection {TARGET_CONN_ID}, and that "
            f"its policy allows this operation on {bucket}"
        )
    return "see the provider's documentation of this code"


def check_target_writes(target) -> Check:
    """Put, multipart (create, upload a part, list parts, abort) and delete under a fresh preflight prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    from hdh_migration.errors import SovereigntyError

    name = f"target bucket {target.bucket}"
    prefix = f"{PREFLIGHT_PREFIX}/{secrets.token_hex(8)}"
    put_key, multipart_key = f"{prefix}/put", f"{prefix}/multipart"
    client, bucket = target.client, target.bucket
    written = upload_id = None
    step = "HeadBucket"
    try:
        client.head_bucket(Bucket=bucket)
        step = "PutObject"
        client.put_object(Bucket=bucket, Key=put_key, Body=PROBE_BYTES)
        written = put_key
        step = "CreateMultipartUpload"
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=multipart_key)["UploadId"]
        step = "UploadPart"
        client.upload_part(Bucket=bucket, Key=multipart_key, UploadId=upload_id, PartNumber=1, Body=PROBE_BYTES)
        step = "ListParts"
        parts = client.list_parts(Bucket=bucket, Key=multipart_key, UploadId=upload_id).get("Parts", [])
        if [p["PartNumber"] for p in parts] != [1]:
            return Check(name, BLOCKER, f"ListParts listed {len(parts)} part(s) after one was uploaded")
        step = "AbortMultipartUpload"
        client.abort_multipart_upload(Bucket=bucket, Key=multipart_key, UploadId=upload_id)
        upload_id = None
        step = "DeleteObject"
        client.delete_object(Bucket=bucket, Key=put_key)
        written = None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        return Check(name, BLOCKER, f"{_client_error(error)}: {_target_fix(code, bucket)}")
    except SovereigntyError as refused:
        return Check(name, BLOCKER, f"{step}: {refused}")
    except BotoCoreError as error:
        return Check(name, BLOCKER, f"{step}: {type(error).__name__}: cannot reach the store; check the endpoint")
    finally:
        # Leave nothing behind, whatever failed (an abort or delete that fails too is the row above).
        if upload_id:
            with contextlib.suppress(ClientError, BotoCoreError, SovereigntyError):
                client.abort_multipart_upload(Bucket=bucket, Key=multipart_key, UploadId=upload_id)
        if written:
            with contextlib.suppress(ClientError, BotoCoreError, SovereigntyError):
                client.delete_object(Bucket=bucket, Key=written)
    return Check(name, OK, f"put, multipart create, upload part, list parts, abort and delete under {prefix}/")


def _bucket_setting(target, operation: str, absent_codes: tuple[str, ...]):
    """The bucket's answer to ``operation``, or None when it has no such setting (or the store lacks it)."""
    from botocore.exceptions import ClientError

    try:
        return getattr(target.client, operation)(Bucket=target.bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in (*absent_codes, "NotImplemented"):
            return None
        raise


def check_store_settings(target) -> list[Check]:
    """Versioning and object lock (what protects the proofs), and the lifecycle rule of ``_staging/``."""
    from botocore.exceptions import BotoCoreError, ClientError

    proofs = f"the proofs under {CUTOVER_PREFIX}/ and {MANIFEST_PREFIX}/"
    rows = []
    try:
        versioning = _bucket_setting(target, "get_bucket_versioning", ()) or {}
        status = versioning.get("Status", "never enabled")
        rows.append(
            Check("bucket versioning", OK, f"{status}: {proofs} keep their past versions")
            if status == "Enabled"
            else Check(
                "bucket versioning",
                WARNING,
                f"{status}: an overwrite or delete of {proofs} would be final; enable versioning on the bucket",
            )
        )
        lock = _bucket_setting(target, "get_object_lock_configuration", ("ObjectLockConfigurationNotFoundError",))
        config = (lock or {}).get("ObjectLockConfiguration", {})
        retention = config.get("Rule", {}).get("DefaultRetention")
        if config.get("ObjectLockEnabled") == "Enabled":
            rows.append(
                Check(
                    "bucket object lock",
                    OK,
                    f"enabled, default retention {retention}" if retention else "enabled, no default retention",
                )
            )
        else:
            rows.append(
                Check(
                    "bucket object lock",
                    WARNING,
                    f"none: {proofs} can be deleted by anyone holding the key; create the bucket with object lock "
                    "(it cannot be added later on most stores) and lock those prefixes in compliance mode",
                )
            )
        lifecycle = _bucket_setting(target, "get_bucket_lifecycle_configuration", ("NoSuchLifecycleConfiguration",))
        rows.append(_lifecycle_row((lifecycle or {}).get("Rules", [])))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        rows.append(Check("bucket settings", BLOCKER, f"{_client_error(error)}: {_target_fix(code, target.bucket)}"))
    except BotoCoreError as error:
        rows.append(Check("bucket settings", BLOCKER, f"{type(error).__name__}: cannot reach the store"))
    return rows


def _rule_prefix(rule: dict) -> str:
    scope = rule.get("Filter", {})
    return scope.get("Prefix", scope.get("And", {}).get("Prefix", rule.get("Prefix", "")))


def _lifecycle_row(rules: list[dict]) -> Check:
    enabled = [r for r in rules if r.get("Status") == "Enabled"]
    staging = f"{STAGING_PREFIX}/"
    expiring = [r for r in enabled if "Expiration" in r]
    # An expiry beyond _staging/ would delete committed data and its proofs.
    beyond = [r.get("ID", "(no ID)") for r in expiring if not _rule_prefix(r).startswith(staging)]
    if beyond:
        return Check(
            "bucket lifecycle",
            BLOCKER,
            f"rule(s) {', '.join(beyond)} expire objects outside {staging} (committed data, {CUTOVER_PREFIX}/, "
            f"{MANIFEST_PREFIX}/): limit their filter to the prefix {staging}",
        )
    aborts = any("AbortIncompleteMultipartUpload" in r for r in enabled)
    if aborts and expiring:
        return Check("bucket lifecycle", OK, f"aborts stale multipart uploads and expires {staging}")
    missing = [
        what for what, has in (("abort stale multipart uploads", aborts), ("expire _staging/", expiring)) if not has
    ]
    return Check(
        "bucket lifecycle",
        WARNING,
        f"no rule to {' or '.join(missing)}: add (PutBucketLifecycleConfiguration) {json.dumps(LIFECYCLE_RULE)}",
    )


def check_clock_skew(
    target, max_skew_s: float = MAX_CLOCK_SKEW_S, warn_skew_s: float = WARN_CLOCK_SKEW_S, now: Callable = time.time
) -> Check:
    """This machine's clock against the ``Date`` header of the store's answer (an error answer has one too)."""
    from botocore.exceptions import BotoCoreError

    name = "clock skew"
    before = now()
    try:
        headers = target.bucket_headers()
    except BotoCoreError as error:
        return Check(name, BLOCKER, f"{type(error).__name__}: the store did not answer")
    local = (before + now()) / 2
    try:
        store = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return Check(name, WARNING, "the store's answer has no readable Date header; check NTP on every host")
    skew = local - store
    detail = f"this machine is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the store's clock"
    if abs(skew) > max_skew_s:
        return Check(
            name,
            BLOCKER,
            f"{detail} (more than {max_skew_s:.0f} s; signed requests fail at 900 s): synchronise the clocks (NTP)",
        )
    if abs(skew) > warn_skew_s:
        return Check(name, WARNING, f"{detail} (more than {warn_skew_s:.0f} s): check NTP on every host")
    return Check(name, OK, detail)


# -- Airflow --------------------------------------------------------------------------------------


def check_pool(catalogue: Catalogue) -> Check:
    """The pool every transfer_object runs in must have the catalogue's transfer_slots (bandwidth shares)."""
    from sqlalchemy.exc import SQLAlchemyError

    from hdh_migration.pools import SYNC_COMMAND, transfer_pool_slots

    name = f"pool {TRANSFER_POOL}"
    fix = f"run `{SYNC_COMMAND}` (sizes it from the catalogue)"
    try:
        slots = transfer_pool_slots()
    except SQLAlchemyError as error:
        return Check(name, BLOCKER, f"cannot read Airflow's metadata database ({type(error).__name__}): run here")
    if slots is None:
        return Check(name, BLOCKER, f"missing: no transfer_object task can run; {fix}")
    if slots != catalogue.transfer_slots:
        effect = "under-uses" if slots < catalogue.transfer_slots else "exceeds"
        return Check(
            name,
            BLOCKER,
            f"{slots} slot(s), the catalogue's transfer_slots is {catalogue.transfer_slots}: the transfers "
            f"{effect} the bandwidth caps; {fix}",
        )
    return Check(name, OK, f"{slots} slot(s) = transfer_slots")


def check_fingerprint_key() -> Check:
    """The content fingerprints' key: set, long enough, and not the local profiles' public one."""
    from hdh_migration.integrity import FINGERPRINT_KEY_SETTING, LOCAL_FINGERPRINT_KEY

    name = "fingerprint key"
    key = os.environ.get(FINGERPRINT_KEY_SETTING, "")
    fix = (
        f"set {FINGERPRINT_KEY_SETTING} to one random secret (e.g. `openssl rand -hex 32`), the same on every "
        "worker, from the secrets backend"
    )
    if not key:
        return Check(name, BLOCKER, f"{FINGERPRINT_KEY_SETTING} is not set: no transfer can fingerprint; {fix}")
    if key == LOCAL_FINGERPRINT_KEY:
        return Check(
            name, BLOCKER, f"{FINGERPRINT_KEY_SETTING} is the local profiles' public key (scripts/env.sh); {fix}"
        )
    if len(key) < MIN_FINGERPRINT_KEY_CHARS:
        return Check(name, WARNING, f"{FINGERPRINT_KEY_SETTING} has fewer than {MIN_FINGERPRINT_KEY_CHARS} characters")
    return Check(name, OK, f"{FINGERPRINT_KEY_SETTING} is set and is not the local one (the same on every worker?)")


def check_backfill_right(catalogue: Catalogue) -> Check:
    """Whether the API user of ``hdh_airflow_api`` may create backfills: a dry run per transfer DAG.

    The api-server authorises a backfill's dry run as it authorises its creation, before it looks the
    DAG up: 403 is a missing right, 404 a right over a DAG not deployed yet. A dry run creates nothing.
    The simple and FAB auth managers give triggering (a snapshot domain's run) with the same right.
    """
    import requests
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hdh_migration.airflow_api import API_CONN_ID, AirflowApi, AirflowApiError
    from hdh_migration.naming import transfer_dag_id

    name = "API user may backfill"
    try:
        api = AirflowApi.from_connection(timeout=30)
    except AirflowNotFoundException:
        return Check(name, BLOCKER, f"connection {API_CONN_ID} is missing")
    except AirflowApiError as refused:
        return Check(name, BLOCKER, str(refused))
    except requests.exceptions.RequestException as error:
        return Check(
            name,
            BLOCKER,
            f"no api-server answers ({type(error).__name__}): start the deployment's api-server, or fix the host and "
            f"port of connection {API_CONN_ID}",
        )
    statuses = {}
    # A snapshot domain has no schedule: it is triggered, not backfilled (same right, no dry run).
    for domain in (d for d in catalogue.domains if d.grain != "snapshot"):
        first = domain.logical_date(domain.partitions()[0]).isoformat()
        body = {
            "dag_id": transfer_dag_id(domain.name),
            "from_date": first,
            "to_date": first,
            "reprocess_behavior": "none",
            "max_active_runs": 1,
        }
        try:
            response = api.session.post(f"{api.url}/api/v2/backfills/dry_run", json=body, timeout=api.timeout)
        except requests.exceptions.RequestException as error:
            return Check(name, BLOCKER, f"the api-server stopped answering ({type(error).__name__})")
        statuses[body["dag_id"]] = response.status_code
    denied = sorted(d for d, s in statuses.items() if s in (401, 403))
    other = sorted(f"{d} (HTTP {s})" for d, s in statuses.items() if s not in (200, 401, 403, 404))
    missing = sorted(d for d, s in statuses.items() if s == 404)
    if denied:
        return Check(
            name,
            BLOCKER,
            f"the user of connection {API_CONN_ID} may not create backfills of {', '.join(denied)}: give it a role "
            "that may trigger DAG runs (simple auth manager: user; FAB: a role with DAG run create)",
        )
    if other:
        return Check(name, BLOCKER, f"unexpected answers to a backfill dry run: {', '.join(other)}")
    if missing:
        return Check(
            name,
            WARNING,
            f"may create backfills, but {len(missing)} transfer DAG(s) are not in the deployment yet "
            f"({', '.join(missing)}): deploy dags/ and check the dag-processor",
        )
    return Check(name, OK, f"may create backfills of the {len(statuses)} transfer DAG(s) (dry runs)")


# -- all ------------------------------------------------------------------------------------------


def run_preflight(catalogue: Catalogue, max_skew_s: float = MAX_CLOCK_SKEW_S) -> list[Check]:
    """Every check, in the table's order; a check that breaks unexpectedly is a blocker, never a traceback."""

    def safely(name: str, check: Callable, *args) -> list[Check]:
        try:
            result = check(*args)
        except Exception as error:  # noqa: BLE001 - a preflight reports; the type only (a message can hold values)
            return [Check(name, BLOCKER, f"the check itself failed ({type(error).__name__}); run it again, then ask")]
        return list(result) if isinstance(result, list | tuple) else [result]

    rows = safely("connections", check_connections)
    rows += safely(f"source container {catalogue.source_container}", check_source, catalogue.source_container)
    guard = safely("sovereignty guard", check_guard, catalogue)
    rows.append(guard[0])
    target = guard[1] if len(guard) > 1 else None
    if target is not None:
        rows += safely(f"target bucket {catalogue.target_bucket}", check_target_writes, target)
        rows += safely("bucket settings", check_store_settings, target)
        rows += safely("clock skew", check_clock_skew, target, max_skew_s)
    rows += safely(f"pool {TRANSFER_POOL}", check_pool, catalogue)
    rows += safely("fingerprint key", check_fingerprint_key)
    rows += safely("API user may backfill", check_backfill_right, catalogue)
    return rows


def as_json(rows: list[Check]) -> dict:
    return {
        "ready": not any(r.verdict == BLOCKER for r in rows),
        "blockers": sum(r.verdict == BLOCKER for r in rows),
        "warnings": sum(r.verdict == WARNING for r in rows),
        "checks": [asdict(r) for r in rows],
    }
