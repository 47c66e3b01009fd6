"""The sovereign S3 target: provider profiles, the sovereignty guard, streamed multipart upload.

The amazon provider's S3Hook (boto3) is used only as an S3 protocol client. The guard decides where
it may connect, in three steps, each refusing with a ``SovereigntyError`` before any socket opens:

1. the connection: only the extra keys listed in ``TARGET_EXTRA_KEYS`` (none that reroutes the
   client, weakens TLS or fetches credentials elsewhere), and a canonical endpoint (scheme, host,
   port) on the allow-list of its provider profile, in France unless the catalogue names an EEA
   region, never outside the EEA; local stand-ins only with ``HDH_ALLOW_LOCAL_STANDINS=1``;
2. the client the hook built: its endpoint, proxy and certificate checks are the guarded ones;
3. every request that client sends (botocore's ``before-send`` event): its scheme, host and port
   are the guarded endpoint's, whatever option or later change produced it.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import ipaddress
import logging
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hdh_migration.errors import IntegrityError, MigrationError, SovereigntyError, Where
from hdh_migration.layout import CUTOVER_PREFIX, MANIFEST_PREFIX

log = logging.getLogger(__name__)

SHA256_METADATA = "hdh-sha256"
MiB = 1 << 20
OBJECT_LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
# The proofs that Object Lock retains, where the target's connection turns it on.
LOCKED_PREFIXES = (f"{MANIFEST_PREFIX}/", f"{CUTOVER_PREFIX}/")

# Where a region lies. HDS requires the EEA; the migration's purpose is France.
FRANCE, EEA, OUTSIDE_EEA = "France", "EEA", "outside the EEA"
# Set to 1 only on a machine running local stand-ins (scripts/env.sh, the local profiles, .env.example).
LOCAL_STANDINS_ENV = "HDH_ALLOW_LOCAL_STANDINS"
# A customer's own DNS label inside a provider's host name (Cloud Temple's namespace).
NAMESPACE = "{namespace}"


@dataclass(frozen=True)
class Region:
    """One region of a provider: its S3 host names, and where it lies."""

    name: str
    area: str
    hosts: tuple[str, ...]


def _ovh_region(name: str, area: str) -> Region:
    return Region(name, area, (f"s3.{name}.io.cloud.ovh.net", f"s3.{name}.cloud.ovh.net"))


# The object data calls (PUT, GET and DELETE of an object, a part being a PUT of object data).
OBJECT_DATA_OPERATIONS = frozenset({"PutObject", "UploadPart", "GetObject", "DeleteObject"})


@dataclass(frozen=True)
class ProviderProfile:
    """Known quirks and regions of one sovereign S3 provider (see shared/reference/sovereign-s3.md and the README).

    ``max_parts``: the provider's multipart part limit, for every multipart upload.
    ``signature_version``: how requests are signed, except ``sigv2_operations``, signed with SigV2.
    ``checksum_when_required``: the store does not implement boto3 >= 1.36's flexible checksums: none
    is sent where optional, and Content-MD5 replaces the one botocore adds where S3 requires an
    integrity header (DeleteObjects).
    ``refreshable_credentials``: the access keys expire, so the client re-reads the Airflow connection
    (or its secrets backend) every ``credentials_refresh_s`` seconds of the connection's extra.
    """

    name: str
    regions: tuple[Region, ...] = ()
    source: str = ""
    max_parts: int = 10_000
    addressing_style: str = "path"
    signature_version: str = "s3v4"
    sigv2_operations: frozenset[str] = frozenset()
    checksum_when_required: bool = True
    refreshable_credentials: bool = False
    # The path an endpoint of this provider may carry (a regular expression); none by default.
    endpoint_path: str = ""
    # Compose service names of stand-ins, reached over plain http (local setting required).
    standin_hosts: tuple[str, ...] = ()


# The allow-list: every host a target may use, by provider and region, with its public source
# (shared/reference/sovereign-s3.md, "Regions"; re-check the provider's current list before a wave).
# A region outside the EEA is listed so that its refusal says why; it is never allowed.
PROFILES = {
    p.name: p
    for p in (
        ProviderProfile(
            "scaleway",
            (
                Region("fr-par", FRANCE, ("s3.fr-par.scw.cloud",)),
                Region("nl-ams", EEA, ("s3.nl-ams.scw.cloud",)),
                Region("pl-waw", EEA, ("s3.pl-waw.scw.cloud",)),
            ),
            source="https://www.scaleway.com/en/docs/object-storage/concepts/#region-and-availability-zone",
            max_parts=1000,
        ),
        ProviderProfile(
            "ovhcloud",
            (
                *(_ovh_region(name, FRANCE) for name in ("gra", "rbx", "sbg", "eu-west-par")),
                *(_ovh_region(name, EEA) for name in ("de", "waw", "eu-south-mil")),
                *(_ovh_region(name, OUTSIDE_EEA) for name in ("bhs", "ca-east-tor", "uk", "sgp", "syd")),
            ),
            source="https://help.ovhcloud.com/csm/en-public-cloud-storage-s3-location",
        ),
        ProviderProfile(
            "cloud_temple",
            (Region("fr1", FRANCE, (f"{NAMESPACE}.s3.fr1.cloud-temple.com",)),),
            source="https://docs.cloud-temple.com/storage/oss/quickstart",
            sigv2_operations=OBJECT_DATA_OPERATIONS,
        ),
        ProviderProfile(
            "outscale_secnumcloud",
            (
                Region("cloudgouv-eu-west-1", FRANCE, ("oos.cloudgouv-eu-west-1.outscale.com",)),
                *(
                    Region(name, OUTSIDE_EEA, (f"oos.{name}.outscale.com",))
                    for name in ("us-east-2", "us-west-1", "ap-northeast-1")
                ),
            ),
            source="https://docs.outscale.com/en/userguide/Reference-of-Regions-Endpoints-and-Availability-Zones.html",
        ),
        ProviderProfile(
            "numspot",
            (Region("eu-west-2", FRANCE, ("objectstorage.eu-west-2.numspot.com",)),),
            source="https://docs.numspot.com/docs/object-storage",
            refreshable_credentials=True,
            endpoint_path=r"/spaces/[A-Za-z0-9-]+",
        ),
        # Local stand-ins only (loopback; the compose service seaweedfs for standin).
        ProviderProfile("generic"),
        ProviderProfile("standin", standin_hosts=("seaweedfs",)),
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

# The target connection's extra may hold these keys and no other: any other option of the amazon
# provider (service_config, role_arn, config_kwargs, profile_name, ...) could route the client, or
# its credential lookups, around the guard.
TARGET_EXTRA_KEYS = frozenset(
    {
        "endpoint_url",
        "region_name",
        "provider_profile",
        "verify",
        "part_size_mb",
        "upload_concurrency",
        "read_chunk_mb",
        "credentials_refresh_s",
        "object_lock_retention_days",
        "object_lock_mode",
    }
)
# Why the known dangerous keys are refused, by key prefix (any other key is refused too).
_REFUSED_EXTRA_REASONS = (
    (("service_config",), "gives the S3 client (or STS, or any service) an endpoint other than endpoint_url"),
    (
        ("role_arn", "assume_role"),
        "makes the hook fetch credentials from STS, an AWS service (US CLOUD Act), or an identity provider",
    ),
    (("config_kwargs",), "can set proxies and endpoint options; the target's botocore settings come from its profile"),
    (("proxies", "proxy"), "would send the requests through a proxy"),
    (
        ("profile", "s3_config", "session_kwargs", "aws_"),
        "takes credentials or settings from outside the connection's login and password (AWS config files, "
        "credential processes, session tokens)",
    ),
)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_URL = re.compile(r"(?P<scheme>[^:/]*)://(?P<host>\[[^\]]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?P<path>/.*)?")


@dataclass(frozen=True)
class GuardedEndpoint:
    """The one place the target's client may connect to: scheme, host and port."""

    profile: ProviderProfile
    scheme: str
    host: str
    port: int
    region: str

    @property
    def netloc(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def local_standins_allowed() -> bool:
    return os.environ.get(LOCAL_STANDINS_ENV) == "1"


def eea_region_names() -> set[str]:
    """The regions outside France a catalogue may name in ``target_eea_regions``."""
    return {r.name for p in PROFILES.values() for r in p.regions if r.area == EEA}


def _refuse_syntax(what: str) -> SovereigntyError:
    # The URL itself is never echoed: it may hold a secret (userinfo, a signed query).
    return SovereigntyError(
        f"the target connection's endpoint_url {what}. Write it as https://<host> (a port only if the "
        "provider requires one), exactly as the provider publishes it"
    )


def _parse_canonical(endpoint_url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of a canonical endpoint; every other form is refused.

    Only plain forms pass, so that every URL parser (urllib, urllib3, botocore) reads the same host.
    """
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in endpoint_url):
        raise _refuse_syntax("contains whitespace or a control character")
    if not endpoint_url.isascii():
        raise _refuse_syntax("contains non-ASCII characters (an internationalised host can imitate an allowed one)")
    for char, what in (
        ("\\", "contains a backslash (URL parsers disagree on where its host ends)"),
        ("@", "contains '@': userinfo (a user or password before the host) is refused"),
        ("%", "contains percent-encoding"),
        ("?", "contains a query"),
        ("#", "contains a fragment"),
    ):
        if char in endpoint_url:
            raise _refuse_syntax(what)
    match = _URL.fullmatch(endpoint_url)
    if not match:
        raise _refuse_syntax("is not of the form scheme://host[:port]")
    scheme, host, port_text, path = match["scheme"], match["host"], match["port"], match["path"] or ""
    if scheme not in ("https", "http"):
        raise _refuse_syntax("has a scheme other than https (or http, for a local stand-in only)")
    port = None
    if port_text is not None:
        if not re.fullmatch(r"[1-9][0-9]{0,4}", port_text) or int(port_text) > 65535:
            raise _refuse_syntax("has a port that is not a plain number from 1 to 65535")
        port = int(port_text)
    return scheme, _canonical_host(host), port, path


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _refuse_syntax("has a malformed IPv6 address") from None
        if f"[{address.compressed}]" != host:
            raise _refuse_syntax(f"writes an IPv6 address in a non-canonical form (write [{address.compressed}])")
        return host
    if not host:
        raise _refuse_syntax("has no host")
    if host.endswith("."):
        raise _refuse_syntax("has a host ending with a dot")
    if re.fullmatch(r"0x[0-9a-f]*|[0-9]+", host.rsplit(".", 1)[-1], re.IGNORECASE):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _refuse_syntax(
                "has an IPv4 address not written as four decimal numbers (a.b.c.d); octal, hexadecimal, "
                "short or integer forms are refused"
            ) from None
    if host != host.lower():
        raise _refuse_syntax("has upper-case letters in its host (write it in lower case)")
    if not _DNS_NAME.fullmatch(host):
        raise _refuse_syntax("has a host that is not a DNS name of letters, digits and hyphens")
    if any(label.startswith("xn--") for label in host.split(".")):
        raise _refuse_syntax("has a punycode (internationalised) label, which can imitate an allowed host")
    return host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_matches(host: str, pattern: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(re.escape(NAMESPACE), _LABEL), host) is not None


def _region_of(profile: ProviderProfile, host: str) -> Region | None:
    return next((r for r in profile.regions if any(_host_matches(host, h) for h in r.hosts)), None)


def _local_refusal(what: str) -> SovereigntyError:
    return SovereigntyError(
        f"target endpoint {what} is a local stand-in, allowed only where {LOCAL_STANDINS_ENV}=1 "
        "(scripts/env.sh, the local production profile and .env.example's stand-ins set it; a production "
        "deployment never does). Point the target connection at the sovereign provider's https endpoint, "
        f"or set {LOCAL_STANDINS_ENV}=1 on a machine that runs the stand-ins"
    )


def check_sovereign_endpoint(
    endpoint_url: str | None,
    profile_name: str,
    eea_regions: tuple[str, ...] = (),
    allow_local: bool | None = None,
) -> GuardedEndpoint:
    """Refuse a target that is not provably a sovereign host; return the endpoint the client must use.

    ``eea_regions`` are the regions outside France the catalogue names (``target_eea_regions``);
    ``allow_local`` defaults to ``HDH_ALLOW_LOCAL_STANDINS``.
    """
    if not isinstance(profile_name, str) or profile_name not in PROFILES:
        raise SovereigntyError(
            f"target profile {profile_name!r} is unknown; set 'provider_profile' in the target connection's "
            f"extra to one of {', '.join(sorted(PROFILES))}"
        )
    profile = PROFILES[profile_name]
    allow_local = local_standins_allowed() if allow_local is None else allow_local
    if not endpoint_url:
        raise SovereigntyError(
            "the target connection has no 'endpoint_url': boto3 would default to AWS (a US provider). "
            "Set endpoint_url to the sovereign provider's S3 endpoint"
        )
    if not isinstance(endpoint_url, str):
        raise _refuse_syntax("is not a string")
    scheme, host, port, path = _parse_canonical(endpoint_url)
    for pattern in NON_SOVEREIGN_HOSTS:
        if fnmatch.fnmatch(host, pattern):
            raise SovereigntyError(
                f"target host {host} matches the non-sovereign pattern {pattern}: data may not leave the "
                "French sovereign store (US CLOUD Act). Point the target connection at a SecNumCloud/HDS host"
            )
    default_port = 443 if scheme == "https" else 80
    local = _is_loopback(host) or host in profile.standin_hosts
    if local:
        if not allow_local:
            raise _local_refusal(host)
        if path not in ("", "/"):
            raise _refuse_syntax("has a path")
        return GuardedEndpoint(profile, scheme, host, port or default_port, "local")
    standin_of = next((p.name for p in PROFILES.values() if host in p.standin_hosts), None)
    if standin_of:
        raise SovereigntyError(
            f"target host {host} is the compose stand-in of profile {standin_of!r}, not of {profile.name!r}: "
            f"set 'provider_profile' to {standin_of!r} (with {LOCAL_STANDINS_ENV}=1), or use a sovereign endpoint"
        )
    if scheme != "https":
        raise SovereigntyError(
            f"target endpoint {host} uses {scheme}: only https is allowed outside loopback. "
            "Use the provider's https endpoint"
        )
    if port not in (None, 443):
        raise _refuse_syntax(f"has port {port}: a provider's S3 endpoint is on 443")
    region = _region_of(profile, host)
    if region is None:
        owner = next((p.name for p in PROFILES.values() if p is not profile and _region_of(p, host)), None)
        if owner:
            raise SovereigntyError(
                f"target host {host} does not belong to profile {profile.name!r} but to {owner!r}; "
                "fix 'provider_profile' in the target connection's extra"
            )
        allowed = ", ".join(h for r in profile.regions if r.area != OUTSIDE_EEA for h in r.hosts) or "loopback only"
        raise SovereigntyError(
            f"target host {host} is not on the sovereign allow-list of profile {profile.name!r} ({allowed}). "
            "Add it to the profile (target.py PROFILES) only after checking its SecNumCloud qualification, "
            "HDS certification and region"
        )
    if region.area == OUTSIDE_EEA:
        raise SovereigntyError(
            f"target host {host} is region {region.name} of {profile.name}, outside the EEA: HDS hosting must "
            "stay in the EEA, whatever the configuration says. Use a French region of the provider"
        )
    if region.area == EEA and region.name not in eea_regions:
        raise SovereigntyError(
            f"target host {host} is region {region.name} of {profile.name}, in the EEA but outside France: "
            f"allowed only when the catalogue names it (target_eea_regions: [{region.name}]). Use a French "
            "region, or name this one in the reviewed catalogue"
        )
    if path not in ("", "/") and not (profile.endpoint_path and re.fullmatch(profile.endpoint_path, path)):
        raise _refuse_syntax("has a path" + (f" other than {profile.endpoint_path!r}" if profile.endpoint_path else ""))
    return GuardedEndpoint(profile, scheme, host, port or default_port, region.name)


def _trusted_certificates(verify, ca_bundle: str | None) -> bool:
    """Whether TLS checks the store against the public trust store or the catalogue's declared bundle.

    ``verify`` is botocore's: True (its default bundle), False, or a CA bundle path. The system's
    and certifi's public bundles are no custom CA (many hosts point AWS_CA_BUNDLE at the former).
    """
    if verify is True:
        return True
    if not isinstance(verify, str):
        return False
    import ssl

    from botocore.httpsession import where

    public = {ssl.get_default_verify_paths().openssl_cafile, where()}
    return verify == ca_bundle or os.path.realpath(verify) in {os.path.realpath(p) for p in public if p}


def check_target_connection(login: str | None, password: str | None, extra: dict, ca_bundle: str | None) -> None:
    """Refuse connection settings that would reroute the client, weaken TLS or fetch credentials elsewhere.

    ``ca_bundle`` is the CA bundle the catalogue declares (``target_ca_bundle``): the only path
    ``extra.verify`` may name.
    """
    refused = sorted(set(extra) - TARGET_EXTRA_KEYS)
    if refused:
        key = refused[0]
        why = next((reason for prefixes, reason in _REFUSED_EXTRA_REASONS if key.startswith(prefixes)), None)
        raise SovereigntyError(
            f"the target connection's extra has {key!r}, which "
            + (why or "the sovereignty guard does not know")
            + f". Remove it: the extra may hold only {', '.join(sorted(TARGET_EXTRA_KEYS))}"
        )
    verify = extra.get("verify", True)
    if verify is False or (isinstance(verify, str) and verify.strip().lower() in ("false", "0", "no", "off")):
        raise SovereigntyError(
            "the target connection's extra has verify: false, which turns off TLS certificate checks (anyone "
            "on the path could pose as the store). Remove it"
        )
    if not _trusted_certificates(verify, ca_bundle):
        raise SovereigntyError(
            "the target connection's extra.verify names a CA bundle that the catalogue does not declare. "
            "Declare it as target_ca_bundle in the catalogue (reviewed with the plan), or remove it"
        )
    if not (login and password):
        raise SovereigntyError(
            "the target connection has no login and password: botocore would then look for credentials in the "
            "environment, AWS config files and cloud metadata services, outside the guard. Set the store's "
            "access key as login and its secret key as password"
        )


def _transport(client):
    """The built client's HTTP session (botocore's URLLib3Session): what actually opens connections."""
    try:
        session = client._endpoint.http_session
        _ = session._proxy_config.proxy_url_for, session._verify  # what RequestGuard reads: fail closed without it
    except AttributeError:
        raise SovereigntyError(
            "cannot inspect the S3 client's transport (botocore changed its internals): the guard refuses "
            "rather than guess. Pin botocore to a version the guard supports"
        ) from None
    return session


def _netloc(url: str) -> tuple[str | None, str | None, int | None]:
    """(scheme, host, port) as urllib3, which opens the connection, reads ``url``."""
    from urllib3.util import parse_url

    parsed = parse_url(url)
    default_port = {"https": 443, "http": 80}.get(parsed.scheme or "")
    return parsed.scheme, parsed.host, parsed.port or default_port


class RequestGuard:
    """botocore ``before-send`` handler: refuses a request that would not go straight to the guarded endpoint."""

    def __init__(self, endpoint: GuardedEndpoint, transport, ca_bundle: str | None):
        self.endpoint, self.transport, self.ca_bundle = endpoint, transport, ca_bundle

    def check_url(self, url: str) -> None:
        scheme, host, port = _netloc(url)
        if (scheme, host, port) != self.endpoint.netloc:
            raise SovereigntyError(
                f"refused a request to {scheme}://{host}:{port}: the target client may only reach the guarded "
                f"endpoint {self.endpoint.scheme}://{self.endpoint.host}:{self.endpoint.port}. No byte was sent"
            )
        if self.transport._proxy_config.proxy_url_for(url):
            raise SovereigntyError(
                f"refused a request to {host}: it would go through a proxy (HTTPS_PROXY/HTTP_PROXY in the "
                "environment or the client's proxies). Add the store's host to NO_PROXY or remove the proxy"
            )
        if scheme == "https" and not _trusted_certificates(self.transport._verify, self.ca_bundle):
            raise SovereigntyError(
                f"refused a request to {host}: the client's certificate check is off or uses a CA bundle the "
                "catalogue does not declare (verify, AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE or an AWS config file's "
                "ca_bundle). Remove it, or declare it as target_ca_bundle"
            )

    def __call__(self, request, **_):
        self.check_url(request.url)


def guard_client(client, endpoint: GuardedEndpoint, ca_bundle: str | None = None):
    """Check the client the hook built against ``endpoint``, and hook every request it will send."""
    built = _netloc(client.meta.endpoint_url)
    if built != endpoint.netloc:
        raise SovereigntyError(
            f"the S3 client was built for {built[1]}, not for the guarded endpoint {endpoint.host}: a "
            "connection option overrode endpoint_url. Remove it from the target connection"
        )
    guard = RequestGuard(endpoint, _transport(client), ca_bundle)
    guard.check_url(client.meta.endpoint_url)
    client.meta.events.register_first("before-send.s3", guard)
    return client


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


FLEXIBLE_CHECKSUM_HEADER = re.compile(r"^x-amz-(checksum-.+|sdk-checksum-algorithm)$", re.IGNORECASE)


def apply_profile(client, profile: ProviderProfile, conn_id: str, extra: dict) -> None:
    """Make a built S3 client behave as the provider expects: the per-operation rules boto3's config
    cannot express (botocore event handlers) and expiring credentials."""
    events = client.meta.events
    if profile.checksum_when_required:
        events.register("before-sign.s3", _content_md5_instead_of_flexible_checksum)
    for operation in sorted(profile.sigv2_operations):
        # First, so that botocore's own choice (SigV4, from the endpoint rules) does not answer before it.
        events.register_first(f"choose-signer.s3.{operation}", _sign_with_sigv2)
    if profile.refreshable_credentials:
        refresh_s = float(extra.get("credentials_refresh_s", 300))
        # The signer holds the credentials it signs with; boto3 has no public way to swap in refreshable
        # ones for explicit keys, and the S3Hook builds its session from the connection's static keys.
        client._request_signer._credentials = connection_credentials(conn_id, refresh_s)


def _sign_with_sigv2(**_) -> str:
    return "s3"


def _content_md5_instead_of_flexible_checksum(request, **_) -> None:
    """botocore adds x-amz-checksum-crc32 (and x-amz-sdk-checksum-algorithm) to the calls S3 requires an
    integrity header on (DeleteObjects), even with request_checksum_calculation=when_required; stores
    without flexible checksums refuse them. Content-MD5 is the integrity header every S3 store accepts."""
    flexible = [name for name in request.headers if FLEXIBLE_CHECKSUM_HEADER.match(name)]
    if not flexible:
        return
    for name in flexible:
        del request.headers[name]
    if "Content-MD5" not in request.headers:
        request.headers["Content-MD5"] = _content_md5(request.body)


def _content_md5(body) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    if hasattr(body, "read"):
        start = body.tell()
        for chunk in iter(lambda: body.read(MiB), b""):
            digest.update(chunk)
        body.seek(start)
    else:
        digest.update(body or b"")
    return base64.b64encode(digest.digest()).decode("ascii")


def connection_credentials(conn_id: str, refresh_s: float):
    """Credentials re-read from the Airflow connection (so from its secrets backend too) every
    ``refresh_s`` seconds: a rotated key reaches a transfer that is already running."""
    from airflow.sdk import BaseHook
    from botocore.credentials import RefreshableCredentials

    def read() -> dict:
        connection = BaseHook.get_connection(conn_id)
        return {
            "access_key": connection.login,
            "secret_key": connection.password,
            "token": connection.extra_dejson.get("aws_session_token"),
            "expiry_time": (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=refresh_s)).isoformat(),
        }

    # No advisory window: every request after the interval waits for the re-read keys.
    return RefreshableCredentials.create_from_metadata(
        read(), refresh_using=read, method="airflow-connection", advisory_timeout=0, mandatory_timeout=0
    )


class SovereignTarget:
    """One bucket of the sovereign store, reached through the amazon provider's S3Hook."""

    def __init__(self, conn_id: str, bucket: str, eea_regions: tuple[str, ...] = (), ca_bundle: str | None = None):
        """``eea_regions`` and ``ca_bundle``: the catalogue's ``target_eea_regions`` and ``target_ca_bundle``."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk import BaseHook
        from botocore.config import Config

        connection = BaseHook.get_connection(conn_id)
        extra = connection.extra_dejson
        check_target_connection(connection.login, connection.password, extra, ca_bundle)
        endpoint = check_sovereign_endpoint(
            extra.get("endpoint_url"), extra.get("provider_profile", "generic"), eea_regions
        )
        self.profile = endpoint.profile
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
        self.client = guard_client(self.hook.get_conn(), endpoint, ca_bundle)
        apply_profile(self.client, self.profile, conn_id, extra)
        self.bucket = bucket

    def bucket_headers(self) -> dict:
        """The HTTP headers of the store's answer to a HEAD of the bucket (an error answer has them too)."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_bucket(Bucket=self.bucket)["ResponseMetadata"]["HTTPHeaders"]
        except ClientError as error:
            return error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})

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

    def _lock(self, key: str) -> dict:
        """The PutObject arguments that retain a proof under Object Lock, or none (S3 also requires an
        integrity header with a retention: ``put_bytes`` always sends Content-MD5)."""
        import datetime as dt

        if not (self.locks and key.startswith(LOCKED_PREFIXES)):
            return {}
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.settings.object_lock_days)
        return {"ObjectLockMode": self.settings.object_lock_mode, "ObjectLockRetainUntilDate": until}

    def part_size_for(self, size: int, throttle=None) -> int:
        """The configured part size, enlarged so the object fits in the provider's maximum part count.

        A throttled upload uses parts of about half a second's worth of bytes (5 MiB at least), so
        the pace holds part by part.
        """
        minimum = math.ceil(size / self.profile.max_parts) if size else 0
        preferred = self.settings.part_size if throttle is None else throttle.chunk_size(self.settings.part_size)
        return max(preferred, math.ceil(minimum / MiB) * MiB, 5 * MiB)

    def upload_file(
        self,
        path: Path,
        key: str,
        sha256: str,
        metadata: dict[str, str],
        state=None,
        progress=None,
        throttle=None,
        complete: bool = True,
    ) -> dict | None:
        """Upload a local spool file; multipart above one part, resumable through ``state``.

        ``state`` is Airflow's task_state_store (or None): the upload id is kept there, and a retried
        task asks the store which parts it already holds, then sends only the others. ``throttle``
        (a ``throttle.TokenBucket``) is paid before each part is read from the spool file.

        ``complete=False``: always multipart, and left unfinished: the object is invisible (no listing,
        no read) until ``complete_upload`` with the returned ``{"upload_id", "parts"}``, and
        ``abort_uploads`` drops it. The commit makes a run's objects visible this way, without a copy.
        """
        size = path.stat().st_size
        full_metadata = {**metadata, SHA256_METADATA: sha256}
        part_size = self.part_size_for(size, throttle)
        if size <= part_size and complete:
            if throttle is not None:
                throttle.acquire(size)
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=full_metadata)
            if progress:
                progress(size)
            return
        upload_id, done = self._resume_or_create(key, sha256, part_size, full_metadata, state)
        part_count = max(1, math.ceil(size / part_size))
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
        pending = {"upload_id": upload_id, "parts": [[n, done[n]] for n in sorted(done)]}
        if not complete:
            return pending  # the state keeps the upload id: a retried task resumes it
        self.complete_upload(key, pending)
        if state is not None:
            state.delete(f"upload:{key}")
        return None

    def complete_upload(self, key: str, pending: dict) -> None:
        """Finish an upload left unfinished by ``upload_file(complete=False)``: the object appears at once.

        Idempotent: an upload already completed (a retried commit) is gone from the store, and the
        object is there; the caller's read-back proves it is the right one.
        """
        from botocore.exceptions import ClientError

        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=pending["upload_id"],
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in pending["parts"]]},
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "NoSuchUpload" or self.head(key) is None:
                raise

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
        for chunk in body.iter_chunks(1 << 20):  # 1 MiB at a time: a commit reads several objects back at once
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

    def _transfer_config(self, size: int):
        """boto3's managed transfer in parts the provider accepts (it only knows AWS's 10,000)."""
        from boto3.s3.transfer import TransferConfig

        part_size = self.part_size_for(size)
        return TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=self.settings.concurrency
        )

    def get_bytes(self, key: str) -> bytes:
        """A small working object whole (a key-hash bucket file): never a data object, which streams."""
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put_file(self, path: Path, key: str) -> None:
        """Upload a local working file (no resume, no metadata): boto3's managed upload."""
        self.client.upload_file(str(path), self.bucket, key, Config=self._transfer_config(path.stat().st_size))

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

    def abort_uploads(self, prefix: str, keep: str | None = None, select=None) -> int:
        """Abort unfinished multipart uploads under a prefix (left by crashed runs), except under ``keep``;
        ``select(key)``: only the uploads whose key it accepts."""
        response = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        uploads = [
            u
            for u in response.get("Uploads", [])
            if (keep is None or not u["Key"].startswith(keep)) and (select is None or select(u["Key"]))
        ]
        for upload in uploads:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)

    def put_json(self, key: str, document: dict, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write a small JSON document (manifest, report); returns its sha256. See ``put_bytes`` for the conditions."""
        import json

        body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        return self.put_bytes(key, body, "application/json", if_match=if_match, if_absent=if_absent)

    def put_bytes(
        self, key: str, body: bytes, content_type: str, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        """Write a small document in one request, with its sha256 as metadata; returns the sha256.

        A conditional write (S3 ``If-Match`` / ``If-None-Match: *``; SeaweedFS honours both) replaces only
        the object of ETag ``if_match``, or only creates one ``if_absent``; otherwise the store answers
        ``PreconditionFailed`` (412), raised as botocore's ``ClientError``.
        An Object Lock retention (the connection's ``object_lock_retention_days``) applies under the proofs' prefixes.
        """
        from botocore.exceptions import ClientError

        from hdh_migration.integrity import sha256_stream

        digest = sha256_stream()
        digest.update(body)
        conditions = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                # Checked by every S3 store, whatever it makes of the signature's payload hash.
                ContentMD5=_content_md5(body),
                Metadata={SHA256_METADATA: digest.hexdigest()},
                **conditions,
                **self._lock(key),
            )
        except ClientError as err:
            if not (self._lock(key) and err.response.get("Error", {}).get("Code") == "InvalidRequest"):
                raise
            ref = Where(obj=key)
            raise MigrationError(
                f"{ref}: bucket {self.bucket} refused the Object Lock retention "
                f"({err.response['Error'].get('Message', 'InvalidRequest')}): the target connection asks for "
                "object_lock_retention_days, but Object Lock is off on this bucket. It can only be turned on at "
                "creation: create the bucket with Object Lock enabled, or set object_lock_retention_days to 0",
                ref=ref,
            ) from None
        return digest.hexdigest()

    def read(self, key: str) -> bytes | None:
        """A small document's bytes as stored (a manifest, a record), or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get_json(self, key: str) -> dict | None:
        import json

        body = self.read(key)
        return json.loads(body) if body is not None else None


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
