"""An S3-compatible store as a domain's source, against the real SeaweedFS: paginated listings, conditional
ranged reads, and the sovereignty guard on the source connection."""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from conftest import write_catalogue

from hdh_migration.catalogue import load_catalogue
from hdh_migration.errors import SovereigntyError
from hdh_migration.source import S3Source, open_source
from hdh_migration.target import SovereignTarget

CONN_ID = "hdh_interim_source"
CONN_ENV = "AIRFLOW_CONN_HDH_INTERIM_SOURCE"
PARTITION = "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/"
OBJECTS = 1_205  # more than one page of a listing (1,000 keys)


@pytest.fixture
def bucket(monkeypatch):
    """A fresh bucket on SeaweedFS, and connection hdh_interim_source pointing at the store."""
    monkeypatch.setenv(CONN_ENV, os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    name = f"s{uuid.uuid4().hex[:12]}"
    store = SovereignTarget(CONN_ID, name)
    store.ensure_bucket()
    yield store
    store.delete_keys(store.list_keys(""))
    store.client.delete_bucket(Bucket=name)


def _s3_catalogue(tmp_path, bucket: str, prefix: str = "", conn: str = CONN_ID):
    def mutate(raw):
        raw["domains"]["dcir"]["source"] = {"kind": "s3", "conn_id": conn, "bucket": bucket, "prefix": prefix}

    return load_catalogue(write_catalogue(tmp_path / "domains.yaml", bucket, mutate))


def test_listing_of_more_than_one_page_under_one_prefix_is_complete_and_only_the_partitions_files(bucket, tmp_path):
    prefix = "hop1/"
    names = [f"{prefix}{PARTITION}part-{i:05d}.parquet" for i in range(OBJECTS)]
    noise = [
        f"{prefix}{PARTITION}part-00000.csv",
        f"{prefix}{PARTITION}nested/part-00001.parquet",
        f"{PARTITION}x.parquet",
    ]
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda key: bucket.client.put_object(Bucket=bucket.bucket, Key=key, Body=key.encode()), names + noise
            )
        )

    source = open_source(_s3_catalogue(tmp_path, bucket.bucket, prefix), "dcir")
    assert isinstance(source, S3Source)
    listed = source.list_objects(PARTITION, "parquet")
    assert len(listed) == OBJECTS
    assert [o.name for o in listed] == names  # sorted, every page, nothing outside the partition or its extension
    assert all(o.size == len(o.name) and o.etag and '"' not in o.etag for o in listed)
    assert source.list_folders("dcir/ER_PRS_F/") == ["dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/"]


def test_ranged_reads_are_conditional_on_the_listed_etag(bucket, tmp_path):
    from hdh_migration.integrity import sha256_stream

    key = f"{PARTITION}part-00000.parquet"
    body = os.urandom(3 * 1024 * 1024 + 17)
    bucket.client.put_object(Bucket=bucket.bucket, Key=key, Body=body)
    source = open_source(_s3_catalogue(tmp_path, bucket.bucket), "dcir")
    (obj,) = source.list_objects(PARTITION, "parquet")
    digest = sha256_stream()
    source.download_to(obj, tmp_path / "spool", 1024 * 1024, digest)
    assert (tmp_path / "spool").read_bytes() == body
    assert digest.hexdigest() == source.sha256(obj)
    assert source.read_range(obj, len(body) - 8, 8) == body[-8:]

    bucket.client.put_object(Bucket=bucket.bucket, Key=key, Body=body[::-1])  # changed after the listing
    with pytest.raises(ClientError) as refused:
        source.read_range(obj, 0, 8)
    assert refused.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    assert source.current(key).etag != obj.etag


@pytest.mark.parametrize(
    ("extra", "local", "rule"),
    [
        ({"endpoint_url": "https://s3.eu-west-3.amazonaws.com", "region_name": "eu-west-3"}, "1", "amazonaws.com"),
        (
            {
                "endpoint_url": "https://s3.fr-par.scw.cloud",
                "region_name": "fr-par",
                "provider_profile": "scaleway",
                "profile_name": "x",
            },
            "1",
            "profile_name",
        ),
        ({"endpoint_url": "http://127.0.0.1:8333", "region_name": "fr-par"}, "0", "HDH_ALLOW_LOCAL_STANDINS"),
    ],
)
def test_the_sovereignty_guard_checks_an_s3_source_connection(tmp_path, monkeypatch, extra, local, rule):
    monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", local)
    monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "aws", "login": "k", "password": "s3cr3t", "extra": extra}))
    catalogue = _s3_catalogue(tmp_path, "interim")
    with pytest.raises(SovereigntyError) as refused:
        open_source(catalogue, "dcir")
    assert rule in str(refused.value)
    assert "s3cr3t" not in str(refused.value)
