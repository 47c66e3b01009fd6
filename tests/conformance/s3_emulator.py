"""A loopback S3 endpoint that behaves as a French provider is documented to, in front of SeaweedFS.

Each provider's documented behaviour is a set of rules (``EMULATIONS``). A request that breaks one is
refused the way the provider refuses it, and recorded in ``refusals``. A request that passes has its
signature verified against the emulated provider's keys, then is re-signed (SigV4) with SeaweedFS's own
keys and relayed: the client under test never holds SeaweedFS's keys, so the emulator can rotate and
expire them, and a wrong signature (stale secret, wrong signing scope) is caught here, not hidden.

Rules, from the providers' public documentation (see the README's provider tables):

- ``refuse_flexible_checksums``: boto3 >= 1.36's integrity headers (``x-amz-checksum-*``,
  ``x-amz-sdk-checksum-algorithm``) and trailer bodies (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``,
  ``aws-chunked``) are refused with 400 (OVHcloud, Outscale and NumSpot, which runs on Outscale);
- ``max_parts``: a part number above it is refused (Scaleway: 1,000);
- a ``Content-MD5`` that does not match the body is refused (every S3 store);
- ``path_style_only``: a request whose Host is not the endpoint's own (virtual-hosted style) is refused;
- ``sigv2_object_data``: object PUT, GET and DELETE must be signed with SigV2 (the provider's SigV4 checks
  fail them with ``XAmzContentSHA256Mismatch``); every other call with SigV4 (Cloud Temple);
- keys expire: ``rotate()`` issues a new key, and the old one is refused after ``old_valid_requests``
  more requests signed with it.

Bodies are held in memory: the tests send parts of a few MiB.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})"
)
SIGV2 = re.compile(r"AWS ([^:]+):(.+)")
FLEXIBLE_CHECKSUM = re.compile(r"^x-amz-(checksum-.+|sdk-checksum-algorithm|trailer)$")
HOP_BY_HOP = {
    "authorization",
    "host",
    "date",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "content-length",
    "connection",
    "expect",
    "transfer-encoding",
    "keep-alive",
    "user-agent",
}


@dataclass(frozen=True)
class Emulation:
    refuse_flexible_checksums: bool = False
    max_parts: int = 10_000
    path_style_only: bool = False
    sigv2_object_data: bool = False


EMULATIONS = {
    "scaleway": Emulation(max_parts=1000),
    "ovhcloud": Emulation(refuse_flexible_checksums=True),
    "cloud_temple": Emulation(path_style_only=True, sigv2_object_data=True),
    "outscale_secnumcloud": Emulation(refuse_flexible_checksums=True, path_style_only=True),
    "numspot": Emulation(refuse_flexible_checksums=True, path_style_only=True),
}


@dataclass(frozen=True)
class Seen:
    """One request as the provider saw it (never its body)."""

    method: str
    path: str
    query: tuple[str, ...]
    signature: str  # "v2", "v4" or "none"
    access_key: str | None
    headers: frozenset[str]  # lower-case header names
    at: float  # time.monotonic() of its arrival


@dataclass
class Refusal:
    method: str
    path: str
    rule: str


@dataclass
class _Key:
    secret: str
    uses_left: int | None = None  # None: until rotated out


@dataclass
class S3ProviderEmulator:
    """``with S3ProviderEmulator("ovhcloud", upstream_port=8333, upstream_keys=(ak, sk)) as provider: ...``"""

    profile: str
    upstream_port: int
    upstream_keys: tuple[str, str]
    emulation: Emulation | None = None
    extra: dict = field(default_factory=dict)  # the target connection's extra, beside the endpoint
    on_request: object = None  # called as on_request(emulator, seen) before a request is checked
    seen: list[Seen] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    keys: dict[str, _Key] = field(default_factory=dict)

    def __post_init__(self):
        self.emulation = self.emulation or EMULATIONS[self.profile]
        self._lock = threading.Lock()
        self.access_key, self.secret_key = self.issue_key()
        self._server = None

    # -- the provider's side ----------------------------------------------------------------

    def issue_key(self) -> tuple[str, str]:
        access, secret = f"EMU{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
        with self._lock:
            self.keys[access] = _Key(secret)
        return access, secret

    def rotate(self, old_valid_requests: int) -> tuple[str, str]:
        """A new key; the current one is accepted for ``old_valid_requests`` more requests, then refused."""
        old = self.access_key
        self.access_key, self.secret_key = self.issue_key()
        with self._lock:
            self.keys[old].uses_left = old_valid_requests
        return self.access_key, self.secret_key

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def connection(self) -> str:
        """The target connection (AIRFLOW_CONN_* JSON) that reaches this provider with ``self.profile``,
        its current key and ``self.extra``."""
        import json

        extra = {"endpoint_url": self.endpoint_url, "region_name": "fr-par", "provider_profile": self.profile}
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {**extra, **self.extra},
            }
        )

    def start(self) -> S3ProviderEmulator:
        emulator = self

        class Handler(_Handler):
            provider = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"s3-{self.profile}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3ProviderEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def operations(self, signature: str | None = None) -> list[Seen]:
        return [s for s in self.seen if signature is None or s.signature == signature]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _refuse(self, method: str, path: str, rule: str) -> None:
        with self._lock:
            self.refusals.append(Refusal(method, path, rule))

    def _secret_for(self, access: str) -> tuple[str | None, str]:
        with self._lock:
            key = self.keys.get(access)
            if key is None:
                return None, "unknown access key"
            if key.uses_left is not None:
                if key.uses_left <= 0:
                    return None, "expired access key"
                key.uses_left -= 1
            return key.secret, ""


def operation(seen: Seen) -> str:
    """The S3 operation a request is, told from its method, path and query as a provider tells it."""
    query, names_object = set(seen.query), seen.path.strip("/").count("/") >= 1
    copy = "x-amz-copy-source" in seen.headers
    if seen.method == "POST":
        return (
            "DeleteObjects"
            if "delete" in query
            else "CreateMultipartUpload"
            if "uploads" in query
            else "CompleteMultipartUpload"
        )
    if seen.method == "PUT":
        if not names_object:
            return "CreateBucket"
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if seen.method == "GET":
        if not names_object:
            return "ListMultipartUploads" if "uploads" in query else "ListObjectsV2"
        return "ListParts" if "uploadId" in query else "GetObject"
    if seen.method == "HEAD":
        return "HeadObject" if names_object else "HeadBucket"
    if not names_object:
        return "DeleteBucket"
    return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"


def is_object_data(method: str, path: str, query: dict, headers) -> bool:
    """Object PUT (an object or a part, not a copy), GET and DELETE of an object (not of an upload)."""
    names_object = path.strip("/").count("/") >= 1
    if not names_object:
        return False
    if method == "PUT":
        return "x-amz-copy-source" not in headers
    if method in ("GET", "DELETE"):
        return "uploadId" not in query
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    provider: S3ProviderEmulator

    def log_message(self, *args) -> None:  # quiet: the tests assert on ``seen`` and ``refusals``
        pass

    def do_GET(self):
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        provider, rules = self.provider, self.provider.emulation
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        authorization = headers.get("authorization", "")
        v4, v2 = SIGV4.fullmatch(authorization), SIGV2.fullmatch(authorization)
        seen = Seen(
            self.command,
            split.path,
            tuple(sorted(query)),
            "v4" if v4 else "v2" if v2 else "none",
            (v4 or v2).group(1) if (v4 or v2) else None,
            frozenset(headers),
            time.monotonic(),
        )
        provider._record(seen)
        if callable(provider.on_request):
            provider.on_request(provider, seen)

        chunked = "chunked" in headers.get("transfer-encoding", "") or "aws-chunked" in headers.get(
            "content-encoding", ""
        )
        if chunked or headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
            self.close_connection = True  # the connection carries no other request after this one
            if "chunked" in headers.get("transfer-encoding", ""):
                self._drain_chunked()  # the client's last chunk is read first: no broken pipe on its side
            rule = "trailer body" if rules.refuse_flexible_checksums else "chunked body (not emulated)"
            return self._error(400, "BadRequest", "trailing checksum is not supported", rule)
        body = self.rfile.read(int(headers.get("content-length", 0) or 0))

        if rules.path_style_only and headers.get("host") != f"127.0.0.1:{provider.port}":
            return self._error(400, "InvalidRequest", "virtual-hosted-style requests are not supported", "path style")
        if rules.refuse_flexible_checksums and any(FLEXIBLE_CHECKSUM.match(h) for h in headers):
            return self._error(400, "InvalidArgument", "x-amz-checksum headers are not supported", "flexible checksum")
        if "content-md5" in headers and headers["content-md5"] != _md5(body):
            return self._error(400, "BadDigest", "the Content-MD5 you specified did not match", "content-md5")
        if not (v4 or v2):
            return self._error(403, "AccessDenied", "anonymous requests are refused", "unsigned")
        secret, why = provider._secret_for(seen.access_key)
        if secret is None:
            return self._error(403, "InvalidAccessKeyId", f"{why}", why)
        if rules.sigv2_object_data:
            object_data = is_object_data(self.command, split.path, query, headers)
            if object_data and v4:
                return self._error(
                    400, "XAmzContentSHA256Mismatch", "SigV4 object write check failed", "SigV2 for object data"
                )
            if not object_data and v2:
                return self._error(
                    400, "InvalidRequest", "this call requires Signature Version 4", "SigV4 for the rest"
                )
        if not (self._sigv4_valid(v4, secret, body) if v4 else self._sigv2_valid(v2, secret)):
            return self._error(403, "SignatureDoesNotMatch", "the signature does not match", "signature")
        part = query.get("partNumber", ["0"])[0]
        if int(part) > rules.max_parts:
            return self._error(
                400, "InvalidArgument", f"part number must be between 1 and {rules.max_parts}", "part limit"
            )
        self._relay(body)

    # -- checks ---------------------------------------------------------------------------------

    def _sigv4_valid(self, match, secret: str, body: bytes) -> bool:
        access, _, region, signed, signature = match.groups()
        request = AWSRequest(method=self.command, url=f"http://{self.headers['host']}{self.path}")
        for name in signed.split(";"):
            request.headers[name] = self.headers[name] or ""
        request.context["timestamp"] = self.headers["x-amz-date"]
        payload = self.headers.get("x-amz-content-sha256", "")
        if payload not in ("UNSIGNED-PAYLOAD",) and payload != hashlib.sha256(body).hexdigest():
            return False
        auth = S3SigV4Auth(Credentials(access, secret), "s3", region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
        return hmac.compare_digest(expected, signature)

    def _sigv2_valid(self, match, secret: str) -> bool:
        access, signature = match.groups()
        received = HTTPHeaders()
        for name, value in self.headers.items():
            received[name] = value
        auth = _ReceivedHmacV1(Credentials(access, secret), self.headers.get("date", ""))
        return hmac.compare_digest(auth.get_signature(self.command, urlsplit(self.path), received), signature)

    # -- answers --------------------------------------------------------------------------------

    def _drain_chunked(self, limit: int = 1 << 20) -> None:
        """Read a chunked body up to its last chunk and trailers (at most ``limit`` bytes), and drop it."""
        read = 0
        while read < limit:
            size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # the trailers, up to the blank line
                    pass
                return
            read += len(self.rfile.read(size + 2))

    def _error(self, status: int, code: str, message: str, rule: str) -> None:
        self.provider._refuse(self.command, urlsplit(self.path).path, rule)
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        data = body.encode() if self.command != "HEAD" else b""
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(data)

    def _relay(self, body: bytes) -> None:
        """Re-sign with SeaweedFS's keys (SigV4, payload hashed) and relay the answer as received."""
        access, secret = self.provider.upstream_keys
        upstream_url = f"http://127.0.0.1:{self.provider.upstream_port}{self.path}"
        request = AWSRequest(method=self.command, url=upstream_url, data=body)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP:
                request.headers[name] = value
        S3SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(request)
        prepared = request.prepare()
        connection = http.client.HTTPConnection("127.0.0.1", self.provider.upstream_port, timeout=120)
        try:
            connection.request(self.command, self.path, body=body, headers=dict(prepared.headers.items()))
            response = connection.getresponse()
            length = response.getheader("content-length")
            content = None
            if length is None and self.command != "HEAD" and response.status not in (204, 304):
                content = response.read()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)) if content is not None else length or "0")
            self.end_headers()
            if content is not None:
                self.wfile.write(content)
            elif self.command != "HEAD":
                while chunk := response.read(1 << 16):
                    self.wfile.write(chunk)
        finally:
            connection.close()


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


class _ReceivedHmacV1(HmacV1Auth):
    """botocore's SigV2 signer, with the request's own Date (it stamps the current time otherwise)."""

    def __init__(self, credentials, date: str):
        super().__init__(credentials)
        self._date = date

    def _get_date(self) -> str:
        return self._date
