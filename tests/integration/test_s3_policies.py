"""The S3 policy documents of docs/go-live.md (deploy/s3-policies/<profile>.json) and its lifecycle rule
(deploy/s3-lifecycle.json).

Held to the package: every S3 operation the package calls maps to an action the policies grant (a
new call fails this test until the policies are updated), and nothing more is granted. Against
SeaweedFS, which enforces a bucket policy's Deny statements (not its Allow list: the stand-in's key
is an admin): each policy is accepted as a bucket policy, the project's staging writes and deletes
pass under it, and a signed cutover record cannot be deleted; the lifecycle file is accepted and
preflight reads it back as the rule it wants.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import ROOT

from hdh_migration.preflight import LIFECYCLE_RULE, OK, check_store_settings
from hdh_migration.target import PROFILES

pytestmark = [pytest.mark.integration]

POLICIES = ROOT / "deploy" / "s3-policies"
BUCKET = "hdh-snds"
# Every S3 operation of boto3 the package calls, and the IAM action that authorises it. create_bucket
# is left out on purpose: the bucket is made by its owner (with Object Lock), never by the migration.
ACTIONS = {
    "head_bucket": "s3:ListBucket",
    "list_objects_v2": "s3:ListBucket",
    "list_multipart_uploads": "s3:ListBucketMultipartUploads",
    "get_bucket_versioning": "s3:GetBucketVersioning",
    "get_object_lock_configuration": "s3:GetBucketObjectLockConfiguration",
    "get_bucket_lifecycle_configuration": "s3:GetLifecycleConfiguration",
    "head_object": "s3:GetObject",
    "get_object": "s3:GetObject",
    "copy": "s3:GetObject",
    "put_object": "s3:PutObject",
    "upload_file": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "list_parts": "s3:ListMultipartUploadParts",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "delete_object": "s3:DeleteObject",
    "delete_objects": "s3:DeleteObject",
}
NOT_GRANTED = {"create_bucket"}
# Puts carry ObjectLockMode/RetainUntilDate when object_lock_retention_days is set (target.py).
LOCK_ACTION = "s3:PutObjectRetention"
# The Azure SDK's calls on the source share some of these names; they are not S3 calls.
AZURE_CALLS = {"get_blob_client", "list_blobs", "walk_blobs"}


def s3_operations() -> set[str]:
    """The S3 operations called anywhere in the package: ``client.<op>(``, paginators, preflight's getattr."""
    text = "\n".join(p.read_text() for p in (ROOT / "plugins" / "hdh_migration").glob("*.py"))
    found = set(re.findall(r"client\.([a-z_0-9]+)\(", text))
    found |= set(re.findall(r'get_paginator\("([a-z_0-9]+)"\)', text))
    found |= set(re.findall(r'_bucket_setting\(target, "([a-z_0-9]+)"', text))
    return found - AZURE_CALLS - {"get_paginator", "meta"}


def policy(profile: str) -> dict:
    return json.loads((POLICIES / f"{profile}.json").read_text())


def granted(document: dict) -> set[str]:
    return {
        action
        for statement in document["Statement"]
        if statement["Effect"] == "Allow" and statement["Sid"] != "BucketOwnerKeepsAccess"
        for action in statement["Action"]
    }


REAL_PROFILES = sorted(name for name, profile in PROFILES.items() if profile.regions)


def test_a_policy_for_each_provider_profile_and_no_other():
    assert REAL_PROFILES, "no provider profile with regions in target.py"
    assert sorted(p.stem for p in POLICIES.glob("*.json")) == REAL_PROFILES


def test_every_s3_call_of_the_package_is_mapped_to_an_action():
    unmapped = s3_operations() - ACTIONS.keys() - NOT_GRANTED
    assert not unmapped, f"S3 calls without an action in the policies (update deploy/s3-policies): {unmapped}"
    assert s3_operations() >= {"put_object", "get_object", "list_parts", "abort_multipart_upload"}


@pytest.mark.parametrize("profile", REAL_PROFILES)
def test_the_policy_grants_what_the_package_calls_and_nothing_more(profile):
    document = policy(profile)
    needed = {ACTIONS[op] for op in s3_operations() - NOT_GRANTED} | {LOCK_ACTION}
    assert granted(document) == needed
    deny = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert len(deny) == 1 and "s3:DeleteObject" in deny[0]["Action"]
    assert all(r.endswith(f"{BUCKET}/_cutover/*") for r in deny[0]["Resource"])
    if profile == "scaleway":
        # Scaleway's bucket policies: version 2023-04-17, SCW principals, bucket names as resources.
        assert document["Version"] == "2023-04-17"
        assert all("SCW" in s["Principal"] for s in document["Statement"])
        assert not any(r.startswith("arn:") for s in document["Statement"] for r in s["Resource"])
    else:
        assert document["Version"] == "2012-10-17"
        assert all(r.startswith(f"arn:aws:s3:::{BUCKET}") for s in document["Statement"] for r in s["Resource"])


def test_the_lifecycle_file_is_the_rule_preflight_wants():
    assert json.loads((ROOT / "deploy" / "s3-lifecycle.json").read_text()) == {"Rules": [LIFECYCLE_RULE]}


@pytest.fixture
def scratch_bucket():
    """A bucket of its own in SeaweedFS, through the target connection of scripts/env.sh; removed
    afterwards (its policy first: it forbids deleting the proofs)."""
    from hdh_migration.resources import TARGET_CONN_ID
    from hdh_migration.target import SovereignTarget

    name = f"golive-policy-{uuid.uuid4().hex[:10]}"
    target = SovereignTarget(TARGET_CONN_ID, name)
    client = target.client
    client.create_bucket(Bucket=name)
    yield client, name, target
    from botocore.exceptions import ClientError

    try:
        client.delete_bucket_policy(Bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchBucketPolicy":
            raise
    for item in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def as_bucket_policy(document: dict, bucket: str) -> str:
    """The document for ``bucket``, every principal the stand-in's key ("*"): a user policy becomes a
    bucket policy, the form SeaweedFS enforces."""
    text = json.dumps(document).replace(f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{bucket}")
    text = re.sub(rf'"{BUCKET}(/[^"]*)?"', lambda m: f'"arn:aws:s3:::{bucket}{m[1] or ""}"', text)
    converted = json.loads(text)
    converted["Version"] = "2012-10-17"
    converted["Statement"] = [
        {**s, "Principal": "*"} for s in converted["Statement"] if s["Sid"] != "BucketOwnerKeepsAccess"
    ]
    return json.dumps(converted)


@pytest.mark.parametrize("profile", REAL_PROFILES)
def test_the_store_enforces_the_policy_on_the_proofs_and_lets_staging_work(profile, scratch_bucket):
    from botocore.exceptions import ClientError

    client, bucket, _ = scratch_bucket
    client.put_bucket_policy(Bucket=bucket, Policy=as_bucket_policy(policy(profile), bucket))
    client.put_object(Bucket=bucket, Key="_cutover/dcir.json", Body=b"{}")
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key="_cutover/dcir.json")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    client.put_object(Bucket=bucket, Key="_staging/dcir/x/part-00000.parquet", Body=b"bytes")
    upload = client.create_multipart_upload(Bucket=bucket, Key="_staging/dcir/x/part-00001.parquet")
    client.upload_part(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"b")
    assert len(client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])["Parts"]) == 1
    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_object(Bucket=bucket, Key="_staging/dcir/x/part-00000.parquet")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["_cutover/dcir.json"]


def test_the_lifecycle_file_applies_and_preflight_reads_it_back(scratch_bucket):
    client, bucket, target = scratch_bucket
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration=json.loads((ROOT / "deploy" / "s3-lifecycle.json").read_text())
    )
    lifecycle = {row.check: row for row in check_store_settings(target)}["bucket lifecycle"]
    assert lifecycle.verdict == OK, lifecycle.detail


def test_the_guide_names_every_policy_file():
    guide = (ROOT / "docs" / "go-live.md").read_text()
    for profile in REAL_PROFILES:
        assert f"deploy/s3-policies/{profile}.json" in guide, profile
    assert "deploy/s3-lifecycle.json" in guide
