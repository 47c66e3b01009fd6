"""The sovereign S3 target: provider profiles, the sovereignty guard, streamed multipart upload.

The amazon provider's S3Hook (boto3) is used only as an S3 protocol client: every endpoint must be
a French sovereign host (or loopback for local runs), and the guard refuses anything else before
a single byte moves.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hdh_migration.errors import IntegrityError, MigrationError, SovereigntyError
from hdh_migration.layout import CUTOVER_PREFIX, MANIFEST_PREFIX

log = logging.getLogger(__name__)

SHA256_METADATA = "hdh-sha256"
MiB = 1 << 20
OBJECT_LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
# The proofs that Object Lock retains, where the target's connection turns it on.
LOCKED_PREFIXES = (f"{MANIFEST_PREFIX}/", f"{CUTOVER_PREFIX}/")


@dataclass(frozen=True)
class ProviderProfile:
    """Known quirks of one sovereign S3 provider (see shared/reference/sovereign-s3.md)."""

    name: str
    hosts: tuple[str, ...]
    max_parts: int = 10_000
    addressing_style: str = "path"
    signature_version: str = "s3v4"
    checksum_when_required: bool = True
    refreshable_credentials: bool = False
    allow_http: bool = False


PROFILES = {
    p.name: p
    for p in (
        ProviderProfile("scaleway", ("s3.fr-par.scw.cloud", "*.s3.fr-par.scw.cloud", "s3.*.scw.cloud"), max_parts=1000),
        ProviderProfile("ovhcloud", ("s3.*.io.cloud.ovh.net", "*.s3.*.io.cloud.ovh.net")),
        ProviderProfile("cloud_temple", ("*.s3.fr1.cloud-temple.com",), signature_version="s3"),
        ProviderProfile("outscale_secnumcloud", ("oos.cloudgouv-eu-west-1.outscale.com",)),
        ProviderProfile("numspot", ("objectstorage.*.numspot.com",), refreshable_credentials=True),
        ProviderProfile("generic", ()),
        # The SeaweedFS stand-in of docker-compose's "standins" profile, reached by its service name.
        ProviderProfile("standin", ("seaweedfs",), allow_http=True),
    )
}

NON_SOVEREIGN_HOSTS = (
    "*.amazonaws.com",
    "amazonaws.com",
    "*.blob.core.windows.net",
    "*.dfs.core.windows.net",
    "*.windows.net",
    "*.googleapis.com",
    "*.r2.cloudflarestorage.com",
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_sovereign_endpoint(endpoint_url: str | None, profile_name: str) -> ProviderProfile:
    """Refuse a target that is not provably a sovereign host; return its profile otherwise."""
    if profile_name not in PROFILES:
        raise SovereigntyError(
            f"target profile {profile_name!r} is unknown; set 'provider_profile' in the target connection's "
            f"extra to one of {', '.join(sorted(PROFILES))}"
        )
    profile = PROFILES[profile_name]
    if not endpoint_url:
        raise SovereigntyError(
            "the target connection has no 'endpoint_url': boto3 would default to AWS (a US provider). "
            "Set endpoint_url to the sovereign provider's S3 endpoint"
        )
    parsed = urlparse(endpoint_url)
    host = (parsed.hostname or "").lower()
    for pattern in NON_SOVEREIGN_HOSTS:
        if fnmatch.fnmatch(host, pattern):
            raise SovereigntyError(
                f"target host {host} matches the non-sovereign pattern {pattern}: data may not leave the "
                "French sovereign store (US CLOUD Act). Point the target connection at a SecNumCloud/HDS host"
            )
    loopback = _is_loopback(host)
    standin = profile.allow_http and host in profile.hosts
    if parsed.scheme != "https" and not (loopback or standin):
        raise SovereigntyError(
            f"target endpoint {endpoint_url} uses {parsed.scheme or 'no scheme'}: only https is allowed "
            "outside loopback. Use the provider's https endpoint"
        )
    if loopback or standin:
        return profile
    allowed = [pattern for p in PROFILES.values() for pattern in p.hosts]
    if not any(fnmatch.fnmatch(host, pattern) for pattern in allowed):
        raise SovereigntyError(
            f"target host {host} is not on the sovereign allow-list ({', '.join(allowed)}). "
            "Add a provider profile for it after checking its SecNumCloud qualification and HDS certification"
        )
    if profile.hosts and not any(fnmatch.fnmatch(host, pattern) for pattern in profile.hosts):
        raise SovereigntyError(
            f"target host {host} does not belong to profile {profile.name!r} ({', '.join(profile.hosts)}); "
            "fix 'provider_profile' in the target connection's extra"
        )
    return profile


@dataclass(frozen=True)
class TransferSettings:
    part_size: int = 16 * MiB
    concurrency: int = 4
    read_chunk: int = 8 * MiB
    # S3 Object Lock on the proofs (manifests and cutover records): the retention in days (0: off) and its
    # mode. COMPLIANCE: no one, the bucket's owner included, deletes or shortens a retained version.
    object_lock_days: float = 0.0
    object_lock_mode: str = "COMPLIANCE"

    @classmethod
    def from_extra(cls, extra: dict) -> TransferSettings:
        mode = str(extra.get("object_lock_mode", "COMPLIANCE")).upper()
        days = float(extra.get("object_lock_retention_days", 0))
        if mode not in OBJECT_LOCK_MODES or days < 0:
            raise MigrationError(
                f"target connection: object_lock_mode {mode!r} / object_lock_retention_days {days} is not valid; "
                f"use one of {', '.join(OBJECT_LOCK_MODES)} and a number of days >= 0 (0 turns the lock off)"
            )
        return cls(
            part_size=int(extra.get("part_size_mb", 16)) * MiB,
            concurrency=int(extra.get("upload_concurrency", 4)),
            read_chunk=int(extra.get("read_chunk_mb", 8)) * MiB,
            object_lock_days=days,
            object_lock_mode=mode,
        )


class SovereignTarget:
    """One bucket of the sovereign store, reached through the amazon provider's S3Hook."""

    def __init__(self, conn_id: str, bucket: str):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk import BaseHook
        from botocore.config import Config

        connection = BaseHook.get_connection(conn_id)
        extra = connection.extra_dejson
        self.profile = check_sovereign_endpoint(extra.get("endpoint_url"), extra.get("provider_profile", "generic"))
        self.settings = TransferSettings.from_extra(extra)
        config_kwargs = {
            "s3": {"addressing_style": self.profile.addressing_style},
            "signature_version": self.profile.signature_version,
            "retries": {"max_attempts": 5, "mode": "adaptive"},
            "max_pool_connections": max(10, self.settings.concurrency * 2),
            "connect_timeout": 10,
            "read_timeout": 120,
        }
        if self.profile.checksum_when_required:
            config_kwargs["request_checksum_calculation"] = "when_required"
            config_kwargs["response_checksum_validation"] = "when_required"
        self.hook = S3Hook(aws_conn_id=conn_id, config=Config(**config_kwargs))
        self.client = self.hook.get_conn()
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            # Object Lock can only be turned on when the bucket is created (it turns versioning on too).
            self.client.create_bucket(
                Bucket=self.bucket, **({"ObjectLockEnabledForBucket": True} if self.locks else {})
            )

    @property
    def locks(self) -> bool:
        return self.settings.object_lock_days > 0

    def _lock(self, key: str, body: bytes) -> dict:
        """The PutObject arguments that retain a proof under Object Lock, or none."""
        import base64
        import datetime as dt
        import hashlib

        if not (self.locks and key.startswith(LOCKED_PREFIXES)):
            return {}
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.settings.object_lock_days)
        return {
            "ObjectLockMode": self.settings.object_lock_mode,
            "ObjectLockRetainUntilDate": until,
            # S3 requires an integrity header on a PutObject with a retention; Content-MD5 is the one every
            # S3-compatible store accepts.
            "ContentMD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
        }

    def part_size_for(self, size: int, throttle=None) -> int:
        """The configured part size, enlarged so the object fits in the provider's maximum part count.

        A throttled upload uses parts of about half a second's worth of bytes (5 MiB at least), so
        the pace holds part by part.
        """
        minimum = math.ceil(size / self.profile.max_parts) if size else 0
        preferred = self.settings.part_size if throttle is None else throttle.chunk_size(self.settings.part_size)
        return max(preferred, math.ceil(minimum / MiB) * MiB, 5 * MiB)

    def upload_file(
        self, path: Path, key: str, sha256: str, metadata: dict[str, str], state=None, progress=None, throttle=None
    ):
        """Upload a local spool file; multipart above one part, resumable through ``state``.

        ``state`` is Airflow's task_state_store (or None): the upload id is kept there, and a retried
        task asks the store which parts it already holds, then sends only the others. ``throttle``
        (a ``throttle.TokenBucket``) is paid before each part is read from the spool file.
        """
        size = path.stat().st_size
        full_metadata = {**metadata, SHA256_METADATA: sha256}
        part_size = self.part_size_for(size, throttle)
        if size <= part_size:
            if throttle is not None:
                throttle.acquire(size)
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=full_metadata)
            if progress:
                progress(size)
            return
        upload_id, done = self._resume_or_create(key, sha256, part_size, full_metadata, state)
        part_count = math.ceil(size / part_size)
        todo = [n for n in range(1, part_count + 1) if n not in done]
        if done:
            log.info("Resuming multipart upload of %s: %d of %d parts already uploaded", key, len(done), part_count)
            if progress:
                progress(sum(min(part_size, size - (n - 1) * part_size) for n in done))

        def upload_part(number: int) -> tuple[int, str]:
            from s3transfer.utils import ReadFileChunk

            offset = (number - 1) * part_size
            length = min(part_size, size - offset)
            if throttle is not None:
                throttle.acquire(length)
            # A window on the spool file, streamed: a part is never held whole in memory.
            with ReadFileChunk.from_filename(str(path), offset, length, enable_callbacks=False) as body:
                response = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
            return number, response["ETag"], length

        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency)
        try:
            for future in [pool.submit(upload_part, number) for number in todo]:
                number, etag, nbytes = future.result()
                done[number] = etag
                if progress:
                    progress(nbytes)
        finally:
            # On failure, stop sending parts: the retry resumes from what the store holds.
            pool.shutdown(wait=True, cancel_futures=True)
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": done[n]} for n in sorted(done)]},
        )
        if state is not None:
            state.delete(f"upload:{key}")

    def _resume_or_create(self, key, sha256, part_size, metadata, state) -> tuple[str, dict[int, str]]:
        from botocore.exceptions import ClientError

        if state is not None:
            saved = state.get(f"upload:{key}")
            if saved and saved.get("sha256") == sha256 and saved.get("part_size") == part_size:
                try:
                    parts = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=saved["upload_id"])
                    done = {p["PartNumber"]: p["ETag"] for p in parts.get("Parts", [])}
                    return saved["upload_id"], done
                except ClientError:
                    log.info("Saved multipart upload of %s is gone; starting a new one", key)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata)["UploadId"]
        if state is not None:
            state.set(f"upload:{key}", {"upload_id": upload_id, "sha256": sha256, "part_size": part_size})
        return upload_id, {}

    def verify_object(self, key: str, sha256: str, size: int) -> None:
        """Read the landed object back and prove its size and sha256 equal the source's."""
        from hdh_migration.integrity import sha256_stream

        head = self.client.head_object(Bucket=self.bucket, Key=key)
        if head["ContentLength"] != size or head.get("Metadata", {}).get(SHA256_METADATA) != sha256:
            raise IntegrityError(
                f"object {key}: size or {SHA256_METADATA} metadata differs from the source after upload"
            )
        digest = sha256_stream()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(self.settings.read_chunk):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"object {key}: sha256 read back from the store differs from the source")

    def head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def copy(self, source_key: str, key: str) -> None:
        """Server-side copy, metadata included (multipart copy for large objects)."""
        from boto3.s3.transfer import TransferConfig

        self.client.copy(
            {"Bucket": self.bucket, "Key": source_key},
            self.bucket,
            key,
            Config=TransferConfig(
                multipart_threshold=self.settings.part_size, multipart_chunksize=self.settings.part_size
            ),
        )

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )

    def abort_uploads(self, prefix: str) -> int:
        """Abort unfinished multipart uploads under a prefix (left by crashed runs)."""
        response = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        uploads = response.get("Uploads", [])
        for upload in uploads:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)

    def put_json(self, key: str, document: dict) -> str:
        """Write a small JSON document (manifest, report); returns its sha256."""
        import json

        return self.put_bytes(key, json.dumps(document, indent=2, sort_keys=True).encode("utf-8"), "application/json")

    def put_bytes(self, key: str, body: bytes, content_type: str) -> str:
        """Write a small document in one request, with its sha256 as metadata; returns the sha256."""
        from botocore.exceptions import ClientError

        from hdh_migration.integrity import sha256_stream

        digest = sha256_stream()
        digest.update(body)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata={SHA256_METADATA: digest.hexdigest()},
                **self._lock(key, body),
            )
        except ClientError as err:
            if not (self._lock(key, body) and err.response.get("Error", {}).get("Code") == "InvalidRequest"):
                raise
            raise MigrationError(
                f"object={key}: bucket {self.bucket} refused the Object Lock retention "
                f"({err.response['Error'].get('Message', 'InvalidRequest')}): the target connection asks for "
                "object_lock_retention_days, but Object Lock is off on this bucket. It can only be turned on at "
                "creation: create the bucket with Object Lock enabled, or set object_lock_retention_days to 0",
                obj=key,
            ) from None
        return digest.hexdigest()

    def get_json(self, key: str) -> dict | None:
        import json

        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return json.loads(body)


class Progress:
    """Logs bytes done and total, MB/s and ETA every few seconds; never data values."""

    def __init__(self, label: str, total: int, every_s: float = 5.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = max(now - self.started, 1e-6)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "%s: %.1f/%.1f MB, %.1f MB/s, ETA %.0f s",
                self.label,
                self.done / 1e6,
                self.total / 1e6,
                rate / 1e6,
                eta,
            )
