"""docs/go-live.md, section 1: each WasbHook connection form the guide gives builds the credential it
names, with the account's endpoint, and none carries an account key. The forms are read from the
guide itself (the JSON block after each ``<!-- wasb:<form> -->`` marker), so the guide cannot drift
from what the hook reads. The SAS form is also run against Azurite (tests/integration/test_azure_sas.py);
the other two need Entra ID, which no stand-in here provides: building the client opens no socket.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "go-live.md"
ACCOUNT = "hdhsnds"
PLACEHOLDERS = {
    "<account>": ACCOUNT,
    "<tenant id>": "00000000-0000-4000-8000-000000000001",
    "<application id>": "00000000-0000-4000-8000-000000000002",
    "<identity client id>": "00000000-0000-4000-8000-000000000003",
    "<client secret>": "not-a-real-secret",
    "<signature>": "c2lnbmF0dXJl",
}


def guide_forms() -> dict[str, dict]:
    text = GUIDE.read_text()
    forms = {}
    for name, block in re.findall(r"<!-- wasb:([a-z_]+) -->\s*```json\n(.*?)```", text, re.DOTALL):
        for placeholder, value in PLACEHOLDERS.items():
            block = block.replace(placeholder, value)
        assert "<" not in block, f"{name}: a placeholder without a test value: {block}"
        forms[name] = json.loads(block)
    return forms


def client_for(form: dict, monkeypatch):
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    monkeypatch.setenv("AIRFLOW_CONN_HDH_GUIDE_FORM", json.dumps(form))
    return WasbHook(wasb_conn_id="hdh_guide_form").get_conn()


def test_the_guide_gives_the_three_forms():
    assert set(guide_forms()) == {"sas", "service_principal", "managed_identity"}


@pytest.mark.parametrize(
    ("form", "credential"),
    [
        ("sas", "AzureSasCredential"),
        ("service_principal", "ClientSecretCredential"),
        ("managed_identity", "DefaultAzureCredential"),
    ],
)
def test_each_form_builds_its_credential_for_the_account(form, credential, monkeypatch):
    connection = guide_forms()[form]
    assert connection["conn_type"] == "wasb"
    assert not {"connection_string", "shared_access_key", "account_key"} & set(connection.get("extra", {}))
    client = client_for(connection, monkeypatch)
    assert client.account_name == ACCOUNT
    assert client.url.startswith(f"https://{ACCOUNT}.blob.core.windows.net")
    assert type(client.credential).__name__ == credential
