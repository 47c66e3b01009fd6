"""The SAS form of the source connection, against Azurite (docs/go-live.md, "Azure access").

A service SAS scoped to one container, with read and list rights only, as the go-live guide tells the
data owner to issue: the project's source wrapper (``AzureSource``, WasbHook underneath) lists a
partition and streams its object through a ``wasb`` connection that holds the account URL and the
token, never the account key; preflight's source check passes with it. Azurite verifies SAS
signatures and rights as Azure does: a token without read, or for another container, or expired is
refused, so the test would fail if the token were not what authorises the calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = [pytest.mark.integration]

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret), the one scripts/env.sh uses.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONN_ID = "hdh_azure_source_sas"


def account_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('HDH_AZURITE_PORT', '10000')}/{ACCOUNT}"


@pytest.fixture
def container():
    """A container of its own in Azurite with one partition's object (the key only seeds it)."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        account_url=account_url(), credential={"account_name": ACCOUNT, "account_key": AZURITE_KEY}
    )
    name = f"sas-{uuid.uuid4().hex[:12]}"
    client = service.create_container(name)
    payload = os.urandom(300_000)
    client.upload_blob("dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-0.parquet", payload)
    client.upload_blob("dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/_SUCCESS", b"")
    yield name, payload
    client.delete_container()


def sas(container: str, *, read: bool = True, list_: bool = True, expiry_hours: float = 8) -> str:
    """A service SAS for one container, as `az storage container generate-sas` issues it."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    now = datetime.now(UTC)
    return generate_container_sas(
        account_name=ACCOUNT,
        container_name=container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=read, list=list_),
        start=now - timedelta(hours=2),
        expiry=now + timedelta(hours=expiry_hours),
    )


def use_sas_connection(monkeypatch, token: str, conn_id: str = CONN_ID) -> dict:
    """The go-live guide's SAS form: host = the account's blob endpoint, extra.sas_token = the token."""
    connection = {"conn_type": "wasb", "host": account_url(), "extra": {"sas_token": token}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return connection


def test_the_source_wrapper_lists_and_streams_through_a_container_sas(container, monkeypatch, tmp_path):
    from hdh_migration.source import AzureSource

    name, payload = container
    connection = use_sas_connection(monkeypatch, sas(name))
    assert "AccountKey" not in json.dumps(connection) and AZURITE_KEY not in json.dumps(connection)

    source = AzureSource(CONN_ID, name)
    objects = source.list_objects("dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/", "parquet")
    assert [(o.name, o.size) for o in objects] == [
        ("dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-0.parquet", len(payload))
    ]
    digest = hashlib.sha256()
    spool = tmp_path / "part-0.parquet"
    source.download_to(objects[0], spool, chunk_size=64 * 1024, digest=digest)
    assert spool.read_bytes() == payload
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert source.read_range(objects[0], len(payload) - 8, 8) == payload[-8:]


def test_preflight_source_check_passes_with_the_sas_and_names_a_missing_right(container, monkeypatch):
    from hdh_migration.preflight import BLOCKER, OK, check_source
    from hdh_migration.resources import SOURCE_CONN_ID

    name, _ = container
    use_sas_connection(monkeypatch, sas(name), SOURCE_CONN_ID)
    assert check_source(name).verdict == OK

    use_sas_connection(monkeypatch, sas(name, read=False), SOURCE_CONN_ID)
    refused = check_source(name)
    assert refused.verdict == BLOCKER
    assert refused.detail.startswith("ranged read:") and "AuthorizationPermissionMismatch" in refused.detail

    use_sas_connection(monkeypatch, sas(name, list_=False), SOURCE_CONN_ID)
    refused = check_source(name)
    assert refused.verdict == BLOCKER and refused.detail.startswith("list:")


def test_a_sas_for_another_container_or_expired_is_refused(container, monkeypatch):
    from azure.core.exceptions import HttpResponseError

    from hdh_migration.source import AzureSource

    name, _ = container
    for token in (sas("another-container"), sas(name, expiry_hours=-1)):
        use_sas_connection(monkeypatch, token)
        with pytest.raises(HttpResponseError) as refused:
            AzureSource(CONN_ID, name).list_objects("dcir/", "parquet")
        assert refused.value.status_code == 403, refused.value.error_code
