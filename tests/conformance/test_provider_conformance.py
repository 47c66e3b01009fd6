"""Every provider profile, every S3 call the project makes, through an emulation of that provider.

Each test puts a loopback ``S3ProviderEmulator`` (refusing what the provider is documented to refuse)
between the project and SeaweedFS, and asserts that the emulator refused nothing; the tests named
``..._refused`` turn one piece of the profile's handling off and assert that the emulator refuses,
so the good-path tests can fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import os
import uuid

import boto3
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from conformance.s3_emulator import EMULATIONS, Emulation, S3ProviderEmulator, operation

from hdh_migration import target as target_module
from hdh_migration.layout import STAGING_PREFIX, manifest_key, partition_dir
from hdh_migration.target import PROFILES, MiB, SovereignTarget
from hdh_migration.throttle import TokenBucket

PROVIDERS = sorted(EMULATIONS)
CONN_ID = "hdh_sovereign_target"
# One partition per source format: beneficiaires is parquet (with a primary key: its key files are
# uploaded too), causes_deces a French CSV export converted to parquet.
PARTITIONS = (("beneficiaires", "2024-06-30"), ("causes_deces", "2023"))


def _seaweedfs():
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{os.environ['HDH_S3_PORT']}",
        aws_access_key_id=os.environ["HDH_S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["HDH_S3_SECRET_KEY"],
        region_name="fr-par",
    )


@pytest.fixture
def provider(request, monkeypatch):
    """Start an emulated provider and point the target connection at it: ``provider(profile, **extra)``."""

    def start(profile: str, emulation: Emulation | None = None, **extra) -> S3ProviderEmulator:
        emulator = S3ProviderEmulator(
            profile,
            int(os.environ["HDH_S3_PORT"]),
            (os.environ["HDH_S3_ACCESS_KEY"], os.environ["HDH_S3_SECRET_KEY"]),
            emulation=emulation,
            extra=extra,
        ).start()
        request.addfinalizer(emulator.stop)
        monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", emulator.connection())
        return emulator

    return start


@pytest.fixture
def bucket():
    """A bucket of its own, emptied and removed afterwards straight on SeaweedFS."""
    name = f"c{uuid.uuid4().hex[:12]}"
    yield name
    client = _seaweedfs()
    try:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    except ClientError:
        pass  # the test failed before creating it


def _with_profile(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(PROFILES, name, dataclasses.replace(PROFILES[name], **changes))


def _spool(tmp_path, size: int) -> tuple:
    path = tmp_path / f"object-{size}"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The good path: nothing refused


@pytest.mark.integration
@pytest.mark.parametrize("profile", PROVIDERS)
def test_a_parquet_and_a_csv_partition_go_through_every_provider(migration, provider, profile):
    migration.seed(domains=[domain for domain, _ in PARTITIONS], rows_per_partition=200)
    emulator = provider(profile)
    for domain, partition in PARTITIONS:
        run = migration.run(domain, partition)
        assert run.state == "success", f"{profile}: {domain} {partition} ended {run.state}"
        for table in migration.catalogue.domain(domain).tables:
            manifest = migration.target.get_json(manifest_key(domain, table.name, table.partition_column, partition))
            assert manifest is not None, f"{profile}: {table.name} has no manifest"
            keys = migration.target_keys(partition_dir(domain, table.name, table.partition_column, partition))
            assert keys == sorted(f["key"] for f in manifest["files"]) and keys
            for entry in manifest["files"]:
                landed = migration.target_bytes(entry["key"])
                assert hashlib.sha256(landed).hexdigest() == entry["sha256"]
                assert pq.read_table(io.BytesIO(landed)).num_rows == entry["rows"]
            record = migration.ledger.get(domain, table.name, partition)
            assert record.state == "committed" and record.rows == manifest["rows"] > 0
    assert migration.target_keys(f"{STAGING_PREFIX}/") == []
    assert emulator.refusals == []
    used = {operation(seen) for seen in emulator.seen}
    assert {"PutObject", "CompleteMultipartUpload", "DeleteObjects", "ListObjectsV2", "HeadObject", "GetObject"} <= used
    if profile == "cloud_temple":
        # object data PUT and GET signed SigV2 (a run's final objects are multipart uploads: UploadPart too)
        assert (
            {"PutObject", "GetObject"}
            <= {operation(s) for s in emulator.operations("v2")}
            <= {
                "PutObject",
                "UploadPart",
                "GetObject",
                "DeleteObject",
            }
        )
        assert "PutObject" not in {operation(s) for s in emulator.operations("v4")}
    else:
        assert emulator.operations("v2") == []


@pytest.mark.integration
@pytest.mark.parametrize("profile", PROVIDERS)
def test_every_s3_operation_the_project_uses_passes_every_provider(provider, profile, bucket, tmp_path):
    emulator = provider(profile, part_size_mb=5)
    target = SovereignTarget(CONN_ID, bucket)
    target.ensure_bucket()
    path, sha256 = _spool(tmp_path, 11 * MiB)  # three parts of 5 MiB
    target.upload_file(path, "staging/big", sha256, {"hdh-source-sha256": sha256})
    target.verify_object("staging/big", sha256, 11 * MiB)
    # A run's final object: uploaded unfinished (three parts), invisible until the commit completes it.
    pending = target.upload_file(path, "final/big", sha256, {"hdh-source-sha256": sha256}, complete=False)
    assert target.head("final/big") is None
    target.complete_upload("final/big", pending)
    assert target.head("final/big")["Metadata"]["hdh-sha256"] == sha256
    target.put_file(path, "staging/big.keys")
    manifest_sha = target.put_json("final/_manifest.json", {"files": ["final/big"]})
    assert target.head("final/_manifest.json")["Metadata"]["hdh-sha256"] == manifest_sha
    target.client.create_multipart_upload(Bucket=bucket, Key="staging/crashed")
    assert target.abort_uploads("staging/") == 1
    target.delete_keys(target.list_keys("staging/"))
    assert target.list_keys("") == ["final/_manifest.json", "final/big"]
    assert _seaweedfs().get_object(Bucket=bucket, Key="final/big")["Body"].read() == path.read_bytes()

    assert emulator.refusals == []
    used = {operation(seen) for seen in emulator.seen}
    assert {
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObject",
        "DeleteObjects",
        "ListObjectsV2",
        "ListMultipartUploads",
        "AbortMultipartUpload",
        "HeadObject",
        "GetObject",
    } <= used
    if EMULATIONS[profile].refuse_flexible_checksums:
        deletes = [s for s in emulator.seen if operation(s) == "DeleteObjects"]
        assert deletes and all("content-md5" in s.headers for s in deletes)


@pytest.mark.integration
def test_an_object_larger_than_the_part_limit_times_the_part_size_is_uploaded(provider, monkeypatch, bucket, tmp_path):
    """Scaleway's 1,000-part limit, scaled down to 4 parts: 1,001 parts of 5 MiB would be a 5 GB
    object relayed through a Python emulator on a shared 2-core machine; the rule (parts = size /
    part size, at most the limit) is the same arithmetic at any scale."""
    _with_profile(monkeypatch, "scaleway", max_parts=4)
    emulator = provider("scaleway", Emulation(max_parts=4), part_size_mb=5)
    size = 4 * 5 * MiB + MiB  # over 4 parts of the configured 5 MiB
    path, sha256 = _spool(tmp_path, size)
    target = SovereignTarget(CONN_ID, bucket)
    target.ensure_bucket()
    target.upload_file(path, "staging/large", sha256, {})
    target.complete_upload("final/large", target.upload_file(path, "final/large", sha256, {}, complete=False))
    target.put_file(path, "staging/large.keys")
    target.verify_object("final/large", sha256, size)

    assert emulator.refusals == []
    parts = [s for s in emulator.seen if operation(s) == "UploadPart"]
    assert len(parts) == 3 * 4  # upload, unfinished upload and managed upload: 4 parts each, at most the limit


# ---------------------------------------------------------------------------------------------
# Each piece of handling turned off: the emulated provider refuses


@pytest.mark.integration
def test_parts_sized_without_the_provider_limit_are_refused(provider, monkeypatch, bucket, tmp_path):
    emulator = provider("scaleway", Emulation(max_parts=4), part_size_mb=5)
    size = 4 * 5 * MiB + MiB
    path, sha256 = _spool(tmp_path, size)
    _with_profile(monkeypatch, "scaleway", max_parts=4)
    aware = SovereignTarget(CONN_ID, bucket)
    aware.ensure_bucket()
    aware.upload_file(path, "staging/large", sha256, {})
    assert emulator.refusals == []
    _with_profile(monkeypatch, "scaleway", max_parts=10_000)
    unaware = SovereignTarget(CONN_ID, bucket)
    with pytest.raises(ClientError, match="part number must be between 1 and 4"):
        unaware.upload_file(path, "final/large", sha256, {}, complete=False)
    with pytest.raises(ClientError, match="part number must be between 1 and 4"):
        unaware.upload_file(path, "staging/other", sha256, {})
    assert {r.rule for r in emulator.refusals} == {"part limit"}


@pytest.mark.integration
@pytest.mark.parametrize("profile", [p for p in PROVIDERS if EMULATIONS[p].refuse_flexible_checksums])
def test_flexible_checksums_are_refused_where_the_provider_lacks_them(provider, monkeypatch, profile, bucket):
    emulator = provider(profile)
    profiled = SovereignTarget(CONN_ID, bucket)
    profiled.ensure_bucket()
    profiled.put_bytes("a", b"a", "text/plain")
    target = SovereignTarget(CONN_ID, bucket)
    # botocore's own DeleteObjects integrity header, without the profile's Content-MD5 in its place
    target.client.meta.events.unregister("before-sign.s3", target_module._content_md5_instead_of_flexible_checksum)
    with pytest.raises(ClientError, match="x-amz-checksum headers are not supported"):
        target.delete_keys(["a"])
    # boto3's default integrity checks (request_checksum_calculation=when_supported) on every upload
    _with_profile(monkeypatch, profile, checksum_when_required=False)
    with pytest.raises(ClientError, match="x-amz-checksum headers are not supported"):
        SovereignTarget(CONN_ID, bucket).put_bytes("b", b"b", "text/plain")
    assert [r.rule for r in emulator.refusals] == ["flexible checksum", "flexible checksum"]
    profiled.delete_keys(["a"])  # with the profile's handling: accepted
    assert profiled.list_keys("") == [] and len(emulator.refusals) == 2


@pytest.mark.integration
def test_cloud_temple_signature_rules_are_enforced(provider, monkeypatch, bucket):
    emulator = provider("cloud_temple")
    SovereignTarget(CONN_ID, bucket).ensure_bucket()
    _with_profile(monkeypatch, "cloud_temple", sigv2_operations=frozenset())
    with pytest.raises(ClientError, match="XAmzContentSHA256Mismatch"):
        SovereignTarget(CONN_ID, bucket).put_bytes("a", b"a", "text/plain")  # SigV4 on an object PUT
    _with_profile(monkeypatch, "cloud_temple", signature_version="s3")
    with pytest.raises(ClientError, match="requires Signature Version 4"):
        SovereignTarget(CONN_ID, bucket).list_keys("")  # SigV2 on a bucket call: the profile's old way
    assert [r.rule for r in emulator.refusals] == ["SigV2 for object data", "SigV4 for the rest"]


@pytest.mark.integration
def test_a_path_style_only_provider_refuses_virtual_hosted_requests(provider):
    emulator = provider("cloud_temple")
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    connection.request("GET", "/?list-type=2", headers={"Host": f"bucket.127.0.0.1:{emulator.port}"})
    response = connection.getresponse()
    assert response.status == 400 and b"virtual-hosted-style" in response.read()
    assert [r.rule for r in emulator.refusals] == ["path style"]


@pytest.mark.integration
def test_a_trailer_checksum_body_is_refused_where_the_provider_lacks_flexible_checksums(provider):
    """What boto3 >= 1.36 sends over https by default (botocore only sends trailers over TLS, so the
    loopback tests build the request by hand)."""
    emulator = provider("outscale_secnumcloud")
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=10)
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    connection.request("PUT", "/bucket/key", body=iter([b"data"]), headers=headers, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 400 and b"trailing checksum is not supported" in response.read()
    assert [r.rule for r in emulator.refusals] == ["trailer body"]


@pytest.mark.integration
def test_a_wrong_secret_is_refused(provider, monkeypatch, bucket):
    """The emulator verifies signatures: a client signing with a stale secret cannot pass unnoticed."""
    import json

    emulator = provider("ovhcloud")
    connection = json.loads(emulator.connection())
    connection["password"] = "not-the-secret"
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", json.dumps(connection))
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        SovereignTarget(CONN_ID, bucket).list_keys("")
    assert [r.rule for r in emulator.refusals] == ["signature"]


# ---------------------------------------------------------------------------------------------
# NumSpot: keys that expire during a transfer


def _rotate_on_first_part(monkeypatch, old_valid_requests: int):
    """At the first part of the upload, issue a new key and put it in the connection; the old key is
    refused after ``old_valid_requests`` more requests: what a rotation job does to a running transfer."""
    rotations = []

    def on_request(emulator, seen):
        if not rotations and operation(seen) == "UploadPart":
            access, _ = emulator.rotate(old_valid_requests)
            monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", emulator.connection())
            rotations.append((access, seen))

    return on_request, rotations


def _throttled_upload(target, tmp_path):
    """Four parts of 5 MiB at 8 MiB/s, one at a time: the parts leave about 0.6 s apart, longer than
    the 0.2 s between two reads of the connection."""
    path, sha256 = _spool(tmp_path, 20 * MiB)
    target.upload_file(path, "staging/rotated", sha256, {}, throttle=TokenBucket(8 * MiB))
    return path, sha256


@pytest.mark.integration
def test_numspot_keys_rotated_during_a_transfer_are_picked_up_and_it_completes(provider, monkeypatch, bucket, tmp_path):
    emulator = provider("numspot", credentials_refresh_s=0.2, upload_concurrency=1)
    emulator.on_request, rotations = _rotate_on_first_part(monkeypatch, old_valid_requests=2)
    target = SovereignTarget(CONN_ID, bucket)
    target.ensure_bucket()
    path, sha256 = _throttled_upload(target, tmp_path)
    target.verify_object("staging/rotated", sha256, path.stat().st_size)

    assert emulator.refusals == []
    [(new_key, rotated_at)] = rotations
    after = [s for s in emulator.seen if s.at > rotated_at.at]
    assert {s.access_key for s in after} == {new_key}
    assert [operation(s) for s in after].count("UploadPart") == 3  # the same upload, finished with the new key


@pytest.mark.integration
def test_numspot_keys_that_expire_during_a_transfer_are_refused_without_refresh(
    provider, monkeypatch, bucket, tmp_path
):
    _with_profile(monkeypatch, "numspot", refreshable_credentials=False)
    emulator = provider("numspot", credentials_refresh_s=0.2, upload_concurrency=1)
    emulator.on_request, _ = _rotate_on_first_part(monkeypatch, old_valid_requests=2)
    target = SovereignTarget(CONN_ID, bucket)
    target.ensure_bucket()
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        _throttled_upload(target, tmp_path)
    assert {r.rule for r in emulator.refusals} == {"expired access key"}
