"""Ed25519 signatures of the cutover record: the signer's key, the pinned public keys, key generation.

The private key lives in one Airflow connection, ``hdh_cutover_signing`` (its password: the base64
of the 32-byte Ed25519 seed), given only to the component that runs the cutover and rollback tasks
(queue ``cutover``). The transfer workers never receive it, so a worker that holds the bucket and
the ledger credentials still cannot produce a record that verifies.

Verify checks signatures against public keys pinned outside the bucket: ``HDH_CUTOVER_PUBLIC_KEY``
(base64 of the 32-byte public key; several, comma-separated, when a key was rotated) or the CLI's
``--public-key``. The key written in the record is only a label: an attacker re-signing with a key
of their own changes it too.

``python -m hdh_migration.signing DIR`` creates ``DIR/private.key`` and ``DIR/public.key`` once
(the private key readable by its owner only) and prints the public key's fingerprint;
``--env`` prints the two variables of ``.env`` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hdh_migration.errors import ConfigurationError, Where
from hdh_migration.layout import receipt_key

SIGNING_CONN_ID = "hdh_cutover_signing"
PUBLIC_KEY_SETTING = "HDH_CUTOVER_PUBLIC_KEY"
ALGORITHM = "ed25519"
ROOT_CONTEXT = "hdh-migration cutover root v1"
HISTORY_CONTEXT = "hdh-migration cutover history v1"
RECEIPT_CONTEXT = "hdh-migration decommission receipt v1"


class SigningKeyError(ConfigurationError):
    """The signing key or the pinned public key is missing or malformed; the message says which setting."""


def fingerprint(public_key: str) -> str:
    """``SHA256:<hex>`` of the raw 32-byte public key: what the README and the record show."""
    return "SHA256:" + hashlib.sha256(_decode(public_key, "public key")).hexdigest()


def root_message(domain: str, root_sha256: str) -> bytes:
    return f"{ROOT_CONTEXT}\n{domain}\n{root_sha256}".encode("ascii")


def history_message(domain: str, entry_sha256: str) -> bytes:
    return f"{HISTORY_CONTEXT}\n{domain}\n{entry_sha256}".encode("ascii")


def receipt_message(domain: str, receipt_sha256: str) -> bytes:
    return f"{RECEIPT_CONTEXT}\n{domain}\n{receipt_sha256}".encode("ascii")


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SigningKeyError(f"the cutover {what} is not the base64 of 32 bytes (an Ed25519 key)")
    return raw


@dataclass(frozen=True)
class Signer:
    """The cutover signer: signs the record's root and each history entry."""

    _seed: bytes

    @classmethod
    def from_connection(cls, conn_id: str = SIGNING_CONN_ID) -> Signer:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        hint = (
            f"The cutover and rollback tasks sign the record with connection {conn_id!r}, which only the cutover "
            "worker (queue cutover) holds: run them there, or locally source scripts/env.sh"
        )
        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise SigningKeyError(f"connection {conn_id!r} is not defined. {hint}") from None
        if not connection.password:
            raise SigningKeyError(f"connection {conn_id!r} has no password (the private key). {hint}")
        return cls(_decode(connection.password, f"signing key (password of connection {conn_id!r})"))

    def _key(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self._seed)

    @property
    def public_key(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return base64.b64encode(self._key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key().sign(message)).decode()

    def __repr__(self) -> str:  # never the seed, whatever prints the signer
        return f"Signer({fingerprint(self.public_key)})"


def pinned_public_keys(explicit: str | None = None) -> dict[str, str]:
    """The trusted public keys by fingerprint: ``explicit`` (the CLI's --public-key), else the setting."""
    text = explicit or os.environ.get(PUBLIC_KEY_SETTING, "")
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise SigningKeyError(
            f"no pinned cutover public key: set {PUBLIC_KEY_SETTING} (or pass --public-key) to the key published "
            "in the README's verify instructions. The key inside the record cannot be trusted on its own: "
            "whoever rewrites the record can re-sign it with a key of their own"
        )
    return {fingerprint(k): k for k in keys}


def signature_valid(public_key: str, message: bytes, signature: str | None) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(signature or "", validate=True)
        Ed25519PublicKey.from_public_bytes(_decode(public_key, "public key")).verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def create_key_files(directory: Path) -> str:
    """``private.key`` (mode 600) and ``public.key`` in ``directory``, unless a private key is there; returns
    the public key. Safe when several processes call it at once: the first private key written wins."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    directory.mkdir(parents=True, exist_ok=True)
    private = directory / "private.key"
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    try:
        handle = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(handle, "w") as file:
            file.write(base64.b64encode(seed).decode() + "\n")
    public_key = Signer(_decode(private.read_text(), f"signing key in {private}")).public_key
    staged = directory / f".public.key.{os.getpid()}"
    staged.write_text(public_key + "\n")
    staged.replace(directory / "public.key")
    return public_key


def main(argv: list[str]) -> int:
    if argv == ["--env"]:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        signer = Signer(seed)
        print(f"HDH_CUTOVER_SIGNING_KEY={base64.b64encode(seed).decode()}")
        print(f"{PUBLIC_KEY_SETTING}={signer.public_key}")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m hdh_migration.signing DIR | --env", file=sys.stderr)
        return 2
    public_key = create_key_files(Path(argv[0]))
    print(f"{argv[0]}: cutover public key {public_key} ({fingerprint(public_key)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def canonical_json(document) -> bytes:
    """The bytes a signed document is hashed and signed as: sorted keys, no spaces, ASCII."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def check_receipt(domain: str, receipt: dict | None, record: dict, pinned: dict[str, str]) -> tuple[dict, list[str]]:
    """The receipt against the pinned keys and the cutover record: signed, whole, of this cutover."""
    label = Where(domain, obj=receipt_key(domain))
    if receipt is None:
        return {}, [f"{label}: the domain is decommissioned but its receipt is missing (rule: a signed receipt)"]
    body = {k: v for k, v in receipt.items() if k not in ("receipt_sha256", "signature")}
    problems = []
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    if digest != receipt.get("receipt_sha256"):
        problems.append(f"{label}: the receipt differs from its own sha256 (rule: receipt unchanged since signed)")
    if not any(signature_valid(k, receipt_message(domain, digest), receipt.get("signature")) for k in pinned.values()):
        problems.append(f"{label}: the receipt is not signed by a pinned key ({', '.join(sorted(pinned))})")
    if receipt.get("state") != "done":
        problems.append(f"{label}: the receipt says {receipt.get('state')}, not done (a decommission did not finish)")
    if receipt.get("root_sha256") != record.get("root_sha256"):
        problems.append(f"{label}: the receipt is for another cutover root than the record's")
    objects = receipt.get("objects", [])
    if receipt.get("totals") != {"objects": len(objects), "bytes": sum(o["size"] for o in objects)}:
        problems.append(f"{label}: the receipt's totals differ from its objects")
    report = {
        "state": receipt.get("state"),
        "objects": len(objects),
        "bytes": sum(o["size"] for o in objects),
        "finished_at": receipt.get("finished_at"),
        "by": receipt.get("by"),
        "signed_by": (receipt.get("signing") or {}).get("public_key_fingerprint"),
    }
    return report, problems
