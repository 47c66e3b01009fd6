"""The sovereignty guard, tried as an attacker would: no hostile target connection opens a socket.

A loopback listener stands in for the attacker's host. Hostile endpoints point at it where they can
(loopback forms, service_config, proxies); for the others (amazonaws.com, OVH Singapore, ...) the
process's resolver sends every host name to it, so that any connection the client opened, to
whatever host, would be counted. Each hostile connection is refused with a SovereigntyError that
says why, and the listener records 0 connections and 0 name lookups. The control tests prove that
the listener does see what an unguarded client, or an allowed one, sends.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field

import pytest

from hdh_migration.errors import SovereigntyError
from hdh_migration.target import FRANCE, NAMESPACE, PROFILES, SovereignTarget, TransferSettings

CONN_ID = "hdh_guard_target"
CONN_ENV = "AIRFLOW_CONN_HDH_GUARD_TARGET"
SECRET = "s3cr3t-guard"  # the connection's password: no refusal may echo it
FRENCH = "https://s3.fr-par.scw.cloud"


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts, then closes them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.lookups: list[str] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stopped:
                conn.close()
                return
            self.connections += 1
            conn.close()

    def stop(self):
        self.stopped = True
        with socket.create_connection(("127.0.0.1", self.port)):  # wakes accept(); not counted
            pass
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def attacker(monkeypatch):
    """The attacker's host: every name the process resolves leads to this listener."""
    listener = Listener()
    resolve = socket.getaddrinfo

    def to_the_attacker(host, port, *args, **kwargs):
        listener.lookups.append(str(host))
        return resolve("127.0.0.1", listener.port, socket.AF_INET, socket.SOCK_STREAM)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", to_the_attacker)
        yield listener
    listener.stop()


def set_target(monkeypatch, extra: dict, *, local: bool = False, login="hdh", password=SECRET, env=None):
    connection = {"conn_type": "aws", "extra": extra}
    if login is not None:
        connection |= {"login": login, "password": password}
    monkeypatch.setenv(CONN_ENV, json.dumps(connection))
    monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", "1" if local else "0")
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)


@dataclass(frozen=True)
class Hostile:
    id: str
    extra: dict
    reason: str
    local: bool = False  # HDH_ALLOW_LOCAL_STANDINS=1: refused even on a machine that allows stand-ins
    env: dict = field(default_factory=dict)
    login: str | None = "hdh"
    eea_regions: tuple[str, ...] = ()


def scw(**extra) -> dict:
    return {"endpoint_url": FRENCH, "region_name": "fr-par", "provider_profile": "scaleway", **extra}


def at(endpoint: str, profile: str = "generic", **extra) -> dict:
    return {"endpoint_url": endpoint, "region_name": "fr-par", "provider_profile": profile, **extra}


ATTACKER = "127.0.0.1:{port}"  # the listener; {port} is filled in by the test
OUTSIDE_EEA = "outside the EEA"
NOT_FRANCE = "in the EEA but outside France"
LOCAL_OFF = "allowed only where HDH_ALLOW_LOCAL_STANDINS=1"
NOT_DECIMAL = "not written as four decimal numbers"

CORPUS = [
    # The connection wrapper's own ways around the checked endpoint_url.
    Hostile("service_config-s3-aws", scw(service_config={"s3": {"endpoint_url": "https://s3.eu-west-3.amazonaws.com"}}), "'service_config'"),
    Hostile("service_config-s3-attacker", scw(service_config={"s3": {"endpoint_url": f"http://{ATTACKER}"}}), "'service_config'", local=True),
    Hostile("service_config-sts", scw(service_config={"sts": {"endpoint_url": f"http://{ATTACKER}"}}), "'service_config'"),
    Hostile("role_arn", scw(role_arn="arn:aws:iam::123456789012:role/hdh"), "STS"),
    Hostile("role_arn-sts-to-attacker", scw(role_arn="arn:aws:iam::1:role/x", service_config={"sts": {"endpoint_url": f"http://{ATTACKER}"}}), "STS", local=True),
    Hostile("web-identity", scw(role_arn="arn:aws:iam::1:role/x", assume_role_method="assume_role_with_web_identity"), "STS"),
    Hostile("assume_role_kwargs", scw(assume_role_kwargs={"RoleSessionName": "x"}), "STS"),
    Hostile("verify-false", scw(verify=False), "verify: false"),
    Hostile("verify-false-string", scw(verify="False"), "verify: false"),
    Hostile("custom-ca-undeclared", scw(verify="/tmp/attacker-ca.pem"), "does not declare"),
    Hostile("config_kwargs-proxies", scw(config_kwargs={"proxies": {"https": f"http://{ATTACKER}"}}), "'config_kwargs'"),
    Hostile("config_kwargs-accelerate", scw(config_kwargs={"s3": {"use_accelerate_endpoint": True}}), "'config_kwargs'"),
    Hostile("profile_name", scw(profile_name="attacker"), "outside the connection"),
    Hostile("s3_config_file", scw(s3_config_file="/tmp/attacker.ini"), "outside the connection"),
    Hostile("no-credentials", scw(), "no login and password", login=None),
    Hostile("env-https-proxy", scw(), "through a proxy", env={"HTTPS_PROXY": f"http://{ATTACKER}"}),
    Hostile("env-aws-ca-bundle", scw(), "CA bundle", env={"AWS_CA_BUNDLE": "/tmp/attacker-ca.pem"}),
    # Parser confusion: what urlparse and urllib3 read differently.
    Hostile("backslash-before-at", at(f"https://s3.fr-par.scw.cloud\\@{ATTACKER}", "scaleway"), "backslash", local=True),
    Hostile("backslash-attacker-first", at(f"http://{ATTACKER}\\@s3.fr-par.scw.cloud", "scaleway"), "backslash", local=True),
    Hostile("userinfo", at(f"https://hdh:{SECRET}@s3.fr-par.scw.cloud", "scaleway"), "userinfo"),
    Hostile("userinfo-to-attacker", at(f"http://s3.fr-par.scw.cloud@{ATTACKER}", "scaleway"), "userinfo", local=True),
    Hostile("query", at("https://s3.fr-par.scw.cloud?host=s3.eu-west-3.amazonaws.com", "scaleway"), "query"),
    Hostile("fragment", at("https://s3.fr-par.scw.cloud#.amazonaws.com", "scaleway"), "fragment"),
    Hostile("percent-host", at("https://s3.fr-par.scw%2Ecloud", "scaleway"), "percent-encoding"),
    Hostile("tab", at("https://s3.fr-par.scw.cloud\t.evil", "scaleway"), "whitespace"),
    Hostile("newline", at("https://s3.fr-par.scw.cloud\n", "scaleway"), "whitespace"),
    Hostile("nul", at("https://s3.fr-par.scw.cloud\x00.amazonaws.com", "scaleway"), "control character"),
    Hostile("idn-lookalike", at("https://s3.fr-p\u0430r.scw.cloud", "scaleway"), "non-ASCII"),
    Hostile("punycode", at("https://s3.xn--fr-pr-3ve.scw.cloud", "scaleway"), "punycode"),
    Hostile("trailing-dot", at("https://s3.fr-par.scw.cloud.", "scaleway"), "ending with a dot"),
    Hostile("path", at("https://s3.fr-par.scw.cloud/../evil", "scaleway"), "has a path"),
    Hostile("suffix-lookalike", at("https://s3.fr-par.scw.cloud.attacker.example", "scaleway"), "not on the sovereign allow-list"),
    Hostile("prefix-lookalike", at("https://evil-s3.fr-par.scw.cloud", "scaleway"), "not on the sovereign allow-list"),
    Hostile("port", at("https://s3.fr-par.scw.cloud:8443", "scaleway"), "has port 8443"),
    Hostile("plain-http", at("http://s3.fr-par.scw.cloud", "scaleway"), "only https"),
    # Whole providers were allowed: regions outside France, outside the EEA.
    Hostile("ovh-sgp", at("https://s3.sgp.io.cloud.ovh.net", "ovhcloud"), OUTSIDE_EEA),
    Hostile("ovh-syd", at("https://s3.syd.io.cloud.ovh.net", "ovhcloud"), OUTSIDE_EEA),
    Hostile("ovh-bhs", at("https://s3.bhs.io.cloud.ovh.net", "ovhcloud"), OUTSIDE_EEA),
    Hostile("ovh-uk-old-form", at("https://s3.uk.cloud.ovh.net", "ovhcloud"), OUTSIDE_EEA),
    Hostile("ovh-ca-named-anyway", at("https://s3.ca-east-tor.io.cloud.ovh.net", "ovhcloud"), OUTSIDE_EEA, eea_regions=("de",)),
    Hostile("outscale-us", at("https://oos.us-east-2.outscale.com", "outscale_secnumcloud"), OUTSIDE_EEA),
    Hostile("scaleway-nl-ams", at("https://s3.nl-ams.scw.cloud", "scaleway"), NOT_FRANCE),
    Hostile("scaleway-pl-waw", at("https://s3.pl-waw.scw.cloud", "scaleway"), NOT_FRANCE),
    Hostile("scaleway-pl-waw-other-named", at("https://s3.pl-waw.scw.cloud", "scaleway"), NOT_FRANCE, eea_regions=("nl-ams",)),
    Hostile("ovh-de", at("https://s3.de.io.cloud.ovh.net", "ovhcloud"), NOT_FRANCE),
    Hostile("aws", at("https://s3.eu-west-3.amazonaws.com", "generic"), "non-sovereign pattern"),
    Hostile("azure", at("https://hdh.blob.core.windows.net", "generic"), "non-sovereign pattern"),
    Hostile("wrong-profile", at(FRENCH, "ovhcloud"), "does not belong to profile"),
    Hostile("unknown-profile", at(FRENCH, "aws"), "is unknown"),
    Hostile("no-endpoint", {"provider_profile": "scaleway"}, "no 'endpoint_url'"),
    # Local stand-ins without the local setting, and loopback forms that dodge a loopback check.
    Hostile("loopback", at(f"http://{ATTACKER}"), LOCAL_OFF),
    Hostile("localhost", at("http://localhost:{port}"), LOCAL_OFF),
    Hostile("loopback-127-0-0-2", at("http://127.0.0.2:{port}"), LOCAL_OFF),
    Hostile("loopback-ipv6", at("http://[::1]:{port}"), LOCAL_OFF),
    Hostile("loopback-scaleway-profile", at(f"http://{ATTACKER}", "scaleway"), LOCAL_OFF),
    Hostile("standin", at("http://seaweedfs:8333", "standin"), LOCAL_OFF),
    Hostile("decimal-ip", at("http://2130706433:{port}"), NOT_DECIMAL, local=True),
    Hostile("hex-ip", at("http://0x7f000001:{port}"), NOT_DECIMAL, local=True),
    Hostile("octal-ip", at("http://0177.0.0.1:{port}"), NOT_DECIMAL, local=True),
    Hostile("short-ip", at("http://127.1:{port}"), NOT_DECIMAL, local=True),
    Hostile("ipv4-mapped-ipv6", at("http://[::ffff:127.0.0.1]:{port}"), "non-canonical form", local=True),
    Hostile("long-ipv6", at("http://[0:0:0:0:0:0:0:1]:{port}"), "non-canonical form", local=True),
    Hostile("any-address", at("http://0.0.0.0:{port}"), "only https", local=True),
    Hostile("standin-host-generic-profile", at("http://seaweedfs:8333", "generic"), "compose stand-in of profile 'standin'", local=True),
]  # fmt: skip


def fill(value, port: int):
    """``value`` with the listener's port in every string (JSON round trip)."""
    return json.loads(json.dumps(value).replace("{port}", str(port)))


def test_the_corpus_is_large_and_covers_the_issue():
    assert len(CORPUS) >= 60  # the README says: over 60
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_hostile_target_is_refused_before_any_socket_opens(case, attacker, monkeypatch):
    port = attacker.port
    set_target(monkeypatch, fill(case.extra, port), local=case.local, login=case.login, env=fill(case.env, port))
    with pytest.raises(SovereigntyError) as excinfo:
        target = SovereignTarget(CONN_ID, "hdh-guard", case.eea_regions)
        target.ensure_bucket()  # reached only if the guard let the client be built
    message = str(excinfo.value)
    assert case.reason in message
    assert SECRET not in message
    assert (attacker.connections, attacker.lookups) == (0, [])


# --- the controls: the listener sees what gets through --------------------------------------------


def test_control_an_unguarded_client_reaches_the_attacker(attacker):
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="https://s3.sgp.io.cloud.ovh.net",
        aws_access_key_id="hdh",
        aws_secret_access_key=SECRET,
        region_name="sgp",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )
    with pytest.raises(Exception):  # noqa: B017 (the listener closes the connection: any transport error)
        client.head_bucket(Bucket="hdh-guard")
    assert attacker.connections >= 1
    assert "s3.sgp.io.cloud.ovh.net" in attacker.lookups


@pytest.fixture
def french_target(attacker, monkeypatch):
    """A guarded target on Scaleway Paris, whose requests (if let through) reach the listener."""
    set_target(monkeypatch, scw(part_size_mb=5))
    return SovereignTarget(CONN_ID, "hdh-guard")


def test_control_an_allowed_request_goes_through_the_guard(french_target, attacker):
    with pytest.raises(Exception) as excinfo:  # noqa: B017 (the listener is no S3 server)
        french_target.client.head_bucket(Bucket="hdh-guard")
    assert not isinstance(excinfo.value, SovereigntyError)
    assert attacker.connections >= 1
    assert set(attacker.lookups) == {"s3.fr-par.scw.cloud"}


# --- the request hook: a request re-routed after the client was built ----------------------------


def reroute(target, url: str):
    """A handler that rewrites each request's URL before it is signed (as a later option could)."""

    def handler(request, **_):
        request.url = url + request.url.split(FRENCH, 1)[1]

    target.client.meta.events.register("before-sign.s3", handler)


def test_hook_refuses_a_request_rerouted_to_another_host(french_target, attacker):
    reroute(french_target, "https://s3.eu-west-3.amazonaws.com")
    with pytest.raises(SovereigntyError, match=r"refused a request to https://s3\.eu-west-3\.amazonaws\.com:443"):
        french_target.client.head_bucket(Bucket="hdh-guard")
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_hook_refuses_a_request_rerouted_by_parser_confusion(french_target, attacker):
    """urlparse reads s3.fr-par.scw.cloud here; urllib3, which connects, reads the attacker's address."""
    reroute(french_target, f"http://127.0.0.1:{attacker.port}\\@s3.fr-par.scw.cloud")
    with pytest.raises(SovereigntyError, match=f"refused a request to http://127.0.0.1:{attacker.port}"):
        french_target.client.put_object(Bucket="hdh-guard", Key="k", Body=b"x")
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_hook_refuses_a_request_after_the_client_endpoint_changed(french_target, attacker):
    from botocore.regions import EndpointResolverBuiltins

    resolver = french_target.client._ruleset_resolver
    resolver._builtins[EndpointResolverBuiltins.SDK_ENDPOINT] = f"http://127.0.0.1:{attacker.port}"
    with pytest.raises(SovereigntyError, match=f"refused a request to http://127.0.0.1:{attacker.port}"):
        french_target.client.list_objects_v2(Bucket="hdh-guard")
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_hook_refuses_a_bucket_that_routes_elsewhere(french_target, attacker):
    """An access-point ARN as bucket name makes botocore compute an AWS host."""
    with pytest.raises(SovereigntyError, match="refused a request to"):
        french_target.client.head_bucket(Bucket="arn:aws:s3:us-east-1:123456789012:accesspoint/hdh")
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_hook_refuses_a_proxy_or_an_unchecked_certificate_added_after_construction(french_target, attacker):
    transport = french_target.client._endpoint.http_session
    transport._proxy_config._proxies = {"https": f"http://127.0.0.1:{attacker.port}"}
    with pytest.raises(SovereigntyError, match="through a proxy"):
        french_target.client.head_bucket(Bucket="hdh-guard")
    transport._proxy_config._proxies = {}
    transport._verify = False
    with pytest.raises(SovereigntyError, match="certificate check is off"):
        french_target.client.head_bucket(Bucket="hdh-guard")
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_hook_guards_the_multipart_upload_threads(french_target, attacker, tmp_path):
    """s3transfer's worker threads send through the same client: a rerouted part is refused too."""
    path = tmp_path / "object.bin"
    path.write_bytes(b"\0" * (12 << 20))
    reroute(french_target, "https://s3.eu-west-3.amazonaws.com")
    with pytest.raises(SovereigntyError):
        french_target.client.upload_file(str(path), "hdh-guard", "k")
    assert (attacker.connections, attacker.lookups) == (0, [])


# --- what is allowed ------------------------------------------------------------------------------


FRENCH_ENDPOINTS = [
    (profile.name, "https://" + host.replace(NAMESPACE, "hdh-snds"))
    for profile in PROFILES.values()
    for region in profile.regions
    if region.area == FRANCE
    for host in region.hosts
]


@pytest.mark.parametrize(("profile", "endpoint"), FRENCH_ENDPOINTS, ids=[e for _, e in FRENCH_ENDPOINTS])
def test_every_french_endpoint_builds_a_guarded_client_without_connecting(profile, endpoint, attacker, monkeypatch):
    set_target(monkeypatch, at(endpoint, profile))
    target = SovereignTarget(CONN_ID, "hdh-guard")
    assert target.client.meta.endpoint_url == endpoint
    assert target.profile.name == profile
    assert (attacker.connections, attacker.lookups) == (0, [])


def test_a_named_eea_region_reaches_the_target_through_the_catalogue(migration, monkeypatch):
    from hdh_migration.catalogue import cached_catalogue
    from hdh_migration.resources import TARGET_CONN_ID
    from hdh_migration.resources import open_target as _target

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{TARGET_CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "hdh",
                "password": SECRET,
                "extra": at("https://s3.nl-ams.scw.cloud", "scaleway"),
            }
        ),
    )
    with pytest.raises(SovereigntyError, match=NOT_FRANCE):
        _target()
    raw = migration.catalogue_path.read_text()
    migration.catalogue_path.write_text(raw + "target_eea_regions: [nl-ams]\n")
    cached_catalogue.cache_clear()
    assert _target().client.meta.endpoint_url == "https://s3.nl-ams.scw.cloud"


def test_the_local_standin_works_with_the_setting_and_every_request_is_guarded(migration, monkeypatch, tmp_path):
    """A real upload to SeaweedFS passes the hook; the same client refuses a request re-routed elsewhere."""
    import hashlib
    import os

    monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", "1")
    target = migration.target
    target.ensure_bucket()
    path = tmp_path / "object.bin"
    path.write_bytes(os.urandom(int(5.5 * (1 << 20))))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    target.settings = TransferSettings(part_size=5 << 20, concurrency=2, read_chunk=1 << 20)
    target.upload_file(path, "guard/object.bin", sha256, {})  # multipart: two parts, from worker threads
    target.verify_object("guard/object.bin", sha256, path.stat().st_size)
    assert migration.target_bytes("guard/object.bin") == path.read_bytes()

    listener = Listener()
    try:
        endpoint = target.client.meta.endpoint_url

        def elsewhere(request, **_):
            request.url = request.url.replace(endpoint, f"http://127.0.0.1:{listener.port}")

        target.client.meta.events.register("before-sign.s3", elsewhere)
        with pytest.raises(SovereigntyError, match=f"may only reach the guarded endpoint {endpoint}"):
            target.client.get_object(Bucket=target.bucket, Key="guard/object.bin")
        assert listener.connections == 0
    finally:
        listener.stop()

    monkeypatch.setenv("HDH_ALLOW_LOCAL_STANDINS", "0")
    with pytest.raises(SovereigntyError, match=LOCAL_OFF):
        migration.target  # noqa: B018 (the same connection, the setting off)
