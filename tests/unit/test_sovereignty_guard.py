"""The guard refuses any target that is not provably a French sovereign host, and says why.

These are the checks on the connection's settings, without a client; tests/integration/
test_sovereign_target_guard.py builds clients and proves that no socket opens.
"""

from __future__ import annotations

import re

import pytest
from conftest import CATALOGUE

from hdh_migration.catalogue import CatalogueError, load_catalogue
from hdh_migration.errors import SovereigntyError
from hdh_migration.target import (
    EEA,
    FRANCE,
    OUTSIDE_EEA,
    PROFILES,
    TARGET_EXTRA_KEYS,
    MiB,
    SovereignTarget,
    TransferSettings,
    check_sovereign_endpoint,
    check_target_connection,
)

FRENCH_ENDPOINTS = [
    (f"https://{host.replace('{namespace}', 'hdh')}", profile.name)
    for profile in PROFILES.values()
    for region in profile.regions
    if region.area == FRANCE
    for host in region.hosts
]


def test_every_profile_with_regions_names_its_public_source_and_a_french_region():
    for profile in PROFILES.values():
        if profile.regions:
            assert profile.source.startswith("https://"), profile.name
            assert any(r.area == FRANCE for r in profile.regions), profile.name
            assert {r.area for r in profile.regions} <= {FRANCE, EEA, OUTSIDE_EEA}


def test_the_allow_list_is_the_reference_table():
    """shared/reference/sovereign-s3.md, Regions: France by default, these EEA regions, never the others."""
    by_area = {
        area: {(p.name, r.name) for p in PROFILES.values() for r in p.regions if r.area == area}
        for area in (FRANCE, EEA, OUTSIDE_EEA)
    }
    assert by_area[FRANCE] == {
        ("scaleway", "fr-par"),
        ("ovhcloud", "gra"),
        ("ovhcloud", "rbx"),
        ("ovhcloud", "sbg"),
        ("ovhcloud", "eu-west-par"),
        ("outscale_secnumcloud", "cloudgouv-eu-west-1"),
        ("cloud_temple", "fr1"),
        ("numspot", "eu-west-2"),
    }
    assert by_area[EEA] == {
        ("scaleway", "nl-ams"),
        ("scaleway", "pl-waw"),
        ("ovhcloud", "de"),
        ("ovhcloud", "waw"),
        ("ovhcloud", "eu-south-mil"),
    }
    assert {name for _, name in by_area[OUTSIDE_EEA]} >= {"bhs", "ca-east-tor", "uk", "sgp", "syd", "us-east-2"}


@pytest.mark.parametrize(("endpoint", "profile"), FRENCH_ENDPOINTS)
def test_every_french_endpoint_is_allowed_without_any_setting(endpoint, profile):
    guarded = check_sovereign_endpoint(endpoint, profile, allow_local=False)
    assert (guarded.profile.name, guarded.scheme, guarded.port) == (profile, "https", 443)


@pytest.mark.parametrize(
    ("endpoint", "profile"),
    [
        ("https://s3.fr-par.scw.cloud/", "scaleway"),
        ("https://s3.fr-par.scw.cloud:443", "scaleway"),
        ("https://objectstorage.eu-west-2.numspot.com/spaces/a1b2-c3", "numspot"),
    ],
)
def test_canonical_variants_are_allowed(endpoint, profile):
    assert check_sovereign_endpoint(endpoint, profile, allow_local=False).profile.name == profile


@pytest.mark.parametrize(
    ("endpoint", "profile"),
    [
        ("http://127.0.0.1:8333", "generic"),
        ("http://localhost:8333", "generic"),
        ("http://[::1]:8333", "generic"),
        ("http://seaweedfs:8333", "standin"),
        ("http://127.0.0.1:8333", "cloud_temple"),  # a provider's quirks against a local stand-in
    ],
)
def test_local_standins_are_allowed_only_with_the_local_setting(endpoint, profile):
    assert check_sovereign_endpoint(endpoint, profile, allow_local=True).region == "local"
    with pytest.raises(SovereigntyError) as excinfo:
        check_sovereign_endpoint(endpoint, profile, allow_local=False)
    assert "allowed only where HDH_ALLOW_LOCAL_STANDINS=1" in str(excinfo.value)


def test_the_local_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", "1")
    assert check_sovereign_endpoint("http://127.0.0.1:8333", "generic").region == "local"
    for value in ("0", "", "true", "yes"):
        monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", value)
        with pytest.raises(SovereigntyError, match="HDH_ALLOW_LOCAL_STANDINS"):
            check_sovereign_endpoint("http://127.0.0.1:8333", "generic")


@pytest.mark.parametrize(("region", "host"), [("nl-ams", "s3.nl-ams.scw.cloud"), ("pl-waw", "s3.pl-waw.scw.cloud")])
def test_an_eea_region_is_allowed_only_when_the_catalogue_names_it(region, host):
    assert check_sovereign_endpoint(f"https://{host}", "scaleway", (region,), allow_local=False).region == region
    for named in ((), ("de",), ("pl-waw" if region == "nl-ams" else "nl-ams",)):
        with pytest.raises(SovereigntyError, match=f"target_eea_regions: \\[{region}\\]"):
            check_sovereign_endpoint(f"https://{host}", "scaleway", named, allow_local=False)


@pytest.mark.parametrize("region", ["sgp", "syd", "bhs", "ca-east-tor", "uk"])
def test_a_region_outside_the_eea_is_refused_whatever_the_catalogue_names(region):
    with pytest.raises(SovereigntyError, match="outside the EEA"):
        check_sovereign_endpoint(f"https://s3.{region}.io.cloud.ovh.net", "ovhcloud", (region,), allow_local=True)


@pytest.mark.parametrize(
    ("endpoint", "profile", "reason"),
    [
        ("https://s3.eu-west-3.amazonaws.com", "generic", "non-sovereign pattern *.amazonaws.com"),
        ("https://hdh.blob.core.windows.net", "generic", "non-sovereign pattern *.blob.core.windows.net"),
        ("https://storage.googleapis.com", "generic", "non-sovereign pattern *.googleapis.com"),
        ("https://acct.r2.cloudflarestorage.com", "generic", "non-sovereign pattern"),
        ("http://s3.fr-par.scw.cloud", "scaleway", "only https is allowed outside loopback"),
        ("https://minio.example.org", "generic", "is not on the sovereign allow-list"),
        ("https://s3.fr-par.scw.cloud", "ovhcloud", "does not belong to profile 'ovhcloud' but to 'scaleway'"),
        ("http://seaweedfs:8333", "generic", "compose stand-in of profile 'standin'"),
        (None, "generic", "no 'endpoint_url'"),
        ("https://s3.fr-par.scw.cloud", "aws", "profile 'aws' is unknown"),
        ("https://s3.fr-par.scw.cloud", ["scaleway"], "profile ['scaleway'] is unknown"),
        (["https://s3.fr-par.scw.cloud"], "scaleway", "is not a string"),
        ("https://s3.fr-par.scw.cloud:8443", "scaleway", "has port 8443"),
        ("https://s3.fr-par.scw.cloud/hdh", "scaleway", "has a path"),
        ("https://objectstorage.eu-west-2.numspot.com/other/x", "numspot", "has a path other than"),
        ("https://a.b.s3.fr1.cloud-temple.com", "cloud_temple", "not on the sovereign allow-list"),
        ("https://s3.fr-par.scw.cloud.evil.example", "scaleway", "not on the sovereign allow-list"),
        ("https://s3.eu-west-2.outscale.com", "outscale_secnumcloud", "not on the sovereign allow-list"),
        ("https://oos.us-east-2.outscale.com", "outscale_secnumcloud", "outside the EEA"),
        ("ftp://s3.fr-par.scw.cloud", "scaleway", "scheme other than https"),
        ("s3.fr-par.scw.cloud", "scaleway", "not of the form scheme://host[:port]"),
        ("HTTPS://s3.fr-par.scw.cloud", "scaleway", "scheme other than https"),
        ("https://S3.fr-par.scw.cloud", "scaleway", "upper-case"),
        ("https://s3.fr-par.scw.cloud:0443", "scaleway", "port that is not a plain number"),
        ("https://s3_fr-par.scw.cloud", "scaleway", "not a DNS name"),
        ("https://:443", "scaleway", "has no host"),
    ],
)
def test_refusals_say_why(endpoint, profile, reason):
    with pytest.raises(SovereigntyError) as excinfo:
        check_sovereign_endpoint(endpoint, profile, allow_local=True)
    assert reason in str(excinfo.value)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://s3.fr-par.scw.cloud\\@s3.eu-west-3.amazonaws.com",
        "https://hdh:s3cr3t@s3.fr-par.scw.cloud",
        "https://s3.fr-par.scw.cloud?X-Amz-Credential=s3cr3t",
        "https://s3.fr-par.scw.cloud#s3cr3t",
        "https://s3.fr-par.scw.cloud/s3cr3t%2F",
        "https://s3.fr-par.scw.cloud\ts3cr3t",
    ],
)
def test_a_refused_endpoint_is_never_echoed(endpoint):
    """The URL may carry a secret (userinfo, a signed query): the refusal names the rule, not the URL."""
    with pytest.raises(SovereigntyError) as excinfo:
        check_sovereign_endpoint(endpoint, "scaleway", allow_local=True)
    assert "s3cr3t" not in str(excinfo.value)
    assert "the target connection's endpoint_url" in str(excinfo.value)


def readme_guard_rows() -> dict[str, list[set[str]]]:
    """The README's allow-list table: for each profile, the words of its France, EEA and outside columns."""
    from conftest import ROOT

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("  | `") and len(cells) == 4:
            rows[cells[0].strip("`")] = [set(re.findall(r"[a-z0-9-]+", cell)) for cell in cells[1:]]
    return rows


def test_the_readme_lists_the_allow_list_exactly():
    rows = readme_guard_rows()
    for profile in PROFILES.values():
        for region in profile.regions:
            columns = rows[profile.name]
            where = [region.name in words for words in columns]
            assert where == [area == region.area for area in (FRANCE, EEA, OUTSIDE_EEA)], (profile.name, region.name)


def test_the_readme_lists_the_accepted_connection_extras():
    from conftest import ROOT

    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if "| `hdh_sovereign_target` |" in line)
    assert set(re.findall(r"`(?:extra\.)?([a-z_]+)`", row)) >= TARGET_EXTRA_KEYS


@pytest.mark.parametrize(
    ("extra", "ca_bundle", "reason"),
    [
        ({"service_config": {"s3": {"endpoint_url": "https://s3.eu-west-3.amazonaws.com"}}}, None, "'service_config'"),
        ({"verify": False}, None, "verify: false"),
        ({"verify": "false"}, None, "verify: false"),
        ({"verify": "/etc/ssl/evil-ca.pem"}, None, "does not declare"),
        ({"verify": "/etc/ssl/evil-ca.pem"}, "/etc/ssl/hdh-ca.pem", "does not declare"),
        ({"role_arn": "arn:aws:iam::123456789012:role/x"}, None, "STS"),
        ({"assume_role_method": "assume_role_with_web_identity"}, None, "STS"),
        ({"assume_role_with_web_identity_token_file": "/var/run/token"}, None, "STS"),
        ({"config_kwargs": {"proxies": {"https": "http://proxy.example:3128"}}}, None, "'config_kwargs'"),
        ({"proxies": {"https": "http://proxy.example:3128"}}, None, "through a proxy"),
        ({"profile_name": "default"}, None, "outside the connection"),
        ({"aws_session_token": "token"}, None, "outside the connection"),
        ({"host": "https://s3.eu-west-3.amazonaws.com"}, None, "does not know"),
    ],
)
def test_connection_extras_that_reroute_or_weaken_are_refused(extra, ca_bundle, reason):
    with pytest.raises(SovereigntyError) as excinfo:
        check_target_connection("key", "secret", {"endpoint_url": "https://s3.fr-par.scw.cloud", **extra}, ca_bundle)
    assert reason in str(excinfo.value)
    assert "Remove it" in str(excinfo.value) or "declare it" in str(excinfo.value).lower()


def test_a_declared_ca_bundle_and_plain_extras_pass():
    extra = {"endpoint_url": "https://s3.fr-par.scw.cloud", "region_name": "fr-par", "provider_profile": "scaleway"}
    check_target_connection("key", "secret", extra, None)
    check_target_connection("key", "secret", {**extra, "verify": True}, None)
    check_target_connection("key", "secret", {**extra, "verify": "/etc/ssl/hdh-ca.pem"}, "/etc/ssl/hdh-ca.pem")
    from botocore.httpsession import where  # botocore's own public bundle (certifi's) is no custom CA

    check_target_connection("key", "secret", {**extra, "verify": where()}, None)


def test_credentials_must_be_the_connection_login_and_password():
    with pytest.raises(SovereigntyError, match="no login and password"):
        check_target_connection(None, None, {"endpoint_url": "https://s3.fr-par.scw.cloud"}, None)


def _catalogue(tmp_path, **settings):
    from conftest import write_catalogue

    return write_catalogue(tmp_path / "domains.yaml", "hdh-guard", lambda raw: raw.update(settings))


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"target_eea_regions": ["sgp"]}, "not an EEA region"),
        ({"target_eea_regions": ["fr-par"]}, "France needs no entry"),
        ({"target_eea_regions": "nl-ams"}, "must be a list"),
        ({"target_ca_bundle": "ca.pem"}, "absolute path"),
    ],
)
def test_catalogue_guard_settings_are_checked_at_load(tmp_path, settings, reason):
    with pytest.raises(CatalogueError, match=reason):
        load_catalogue(_catalogue(tmp_path, **settings))


def test_catalogue_names_eea_regions_and_a_ca_bundle(tmp_path):
    path = _catalogue(tmp_path, target_eea_regions=["nl-ams", "de"], target_ca_bundle="/etc/ssl/hdh-ca.pem")
    catalogue = load_catalogue(path)
    assert catalogue.target_eea_regions == ("nl-ams", "de")
    assert catalogue.target_ca_bundle == "/etc/ssl/hdh-ca.pem"
    assert load_catalogue(CATALOGUE).target_eea_regions == ()  # the tests' plan: France only


def test_scaleway_part_size_grows_to_fit_1000_parts():
    target = SovereignTarget.__new__(SovereignTarget)  # part sizing needs no connection
    target.profile = PROFILES["scaleway"]
    target.settings = TransferSettings(part_size=16 * MiB)
    assert target.part_size_for(1 << 30) == 16 * MiB
    big = 100 << 30  # 100 GiB would need 6,400 parts of 16 MiB
    assert target.part_size_for(big) * 1000 >= big
    assert target.part_size_for(big) % MiB == 0
