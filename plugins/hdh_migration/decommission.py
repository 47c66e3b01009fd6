"""The decommission: delete the old copy (the source) of a cut-over domain, object by object, with a signed receipt.

``hdh_decommission__<domain>`` (and ``python -m hdh_migration decommission``) runs ``decommission``:

1. **Preconditions** (``check_decommission``), each a refusal naming what to do: the domain is cut over
   (not already decommissioned: a second run is refused); the catalogue sets its ``retention_days``
   and that many days have passed since the cutover; the last verify since that cutover passed, deep
   (every byte read back), against the record's root; the record's signatures hold.
2. **Every source object still matches the record**: for each object the committed manifests name
   (the Azure blobs, or the interim bucket's keys on a second move), the live object has the same
   ETag, or else the same sha256 (streamed). One that changed or vanished refuses the whole
   decommission, listed by name (never a data value); nothing is deleted.
3. **Delete**: object by object, each conditional on the ETag just checked (Azure checks it
   atomically; on S3 it is checked just before the delete). A receipt marked ``in_progress`` is
   written first, so a crashed run is finished by the next one (an object it already deleted is
   known to the receipt, not "changed").
4. **The signed receipt** ``_cutover/<domain>.decommission.json``, next to the cutover record: every
   object with its size, ETag and sha256; when, by whom, which DAG run; the cutover root and the
   verify it relied on. Its canonical JSON's sha256 is signed with the cutover signer's Ed25519 key
   (``"hdh-migration decommission receipt v1\\n<domain>\\n<sha256>"``). The domain becomes
   ``decommissioned``: transfers and rollbacks are refused from then on.

A dry run checks the same preconditions and lists what would be deleted; it writes and deletes nothing.
The manifests, the cutover record and the receipt stay: they hold names, counts and hashes, no data value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from hdh_migration.cutover import MAX_LISTED_PROBLEMS, CutoverError, check_signatures, record_key
from hdh_migration.errors import Where
from hdh_migration.layout import receipt_key
from hdh_migration.manifest import Manifest
from hdh_migration.resources import current_catalogue as _catalogue
from hdh_migration.resources import open_ledger as _ledger
from hdh_migration.resources import open_source as _source
from hdh_migration.resources import open_target as _target
from hdh_migration.signing import canonical_json
from hdh_migration.source import SourceObject
from hdh_migration.states import DomainState

log = logging.getLogger(__name__)

RECEIPT_VERSION = 1
DELETE_THREADS = 8


class DecommissionRefused(CutoverError):
    """A decommission precondition does not hold; the message says which, and names objects only by name."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _refuse(domain: str, rule: str, what: str, next_step: str, names: list[str] | None = None) -> None:
    listed = ""
    if names:
        shown = names[:MAX_LISTED_PROBLEMS]
        listed = ": " + ", ".join(shown) + (f" and {len(names) - len(shown)} more" if len(names) > len(shown) else "")
    ref = Where(domain)
    message = f"{ref}: decommission refused: {what}{listed} (rule: {rule}). {next_step}"
    _ledger().record_event(domain, "decommission_refused", message[:4000])
    raise DecommissionRefused(message, ref=ref)


def _last_cutover(ledger, domain: str) -> dict | None:
    cutovers = [h for h in ledger.cutover_history(domain) if h["action"] == "cutover"]
    return cutovers[-1] if cutovers else None


def _deep_verify_since(ledger, domain: str, cutover: dict, root: str) -> dict | None:
    """The last verify event, if it passed, deep, on this root, after this cutover."""
    event = ledger.last_event(domain, ("verify_passed", "verify_failed"))
    if event is None or event["kind"] != "verify_passed":
        return None
    detail = json.loads(event["detail"])
    at = event["at"].replace(tzinfo=dt.UTC) if event["at"].tzinfo is None else event["at"]
    since = cutover["at"].replace(tzinfo=dt.UTC) if cutover["at"].tzinfo is None else cutover["at"]
    if not detail.get("deep") or detail.get("root_sha256") != root or at < since:
        return None
    return {"at": at.isoformat(timespec="seconds"), "objects": detail.get("objects"), "deep": True}


def _recorded_objects(target, record: dict) -> list[dict]:
    """The source objects every committed manifest of the record names (name, size, ETag, sha256)."""
    objects = []
    for entry in record["entries"]:
        stored = Manifest.read(target, entry["manifest_key"])
        if stored is None or stored[1] != entry["manifest_sha256"]:
            _refuse(
                record["domain"],
                "manifests unchanged since the cutover",
                f"the manifest {entry['manifest_key']} differs from the cutover record",
                f"Run python -m hdh_migration verify --domain {record['domain']} and treat it as an incident",
            )
        for obj in stored[0].source_objects:
            objects.append({k: obj[k] for k in ("name", "size", "etag", "sha256")})
    return sorted(objects, key=lambda o: o["name"])


def _matches(source, recorded: dict, resumable: set[str]) -> tuple[str, SourceObject | None]:
    """``same``, ``gone`` (deleted by an earlier run of this decommission) or ``changed``; and the live object."""
    live = source.current(recorded["name"])
    if live is None:
        return ("gone" if recorded["name"] in resumable else "changed"), None
    if live.size != recorded["size"]:
        return "changed", live
    if live.etag == recorded["etag"] or source.sha256(live) == recorded["sha256"]:
        return "same", live
    return "changed", live


def check_decommission(domain_name: str, now: dt.datetime | None = None) -> dict:
    """Every precondition, then every object against the record; returns the plan (no write, no delete)."""
    from hdh_migration.signing import pinned_public_keys

    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    ledger, target = _ledger(), _target()
    name = domain.name
    state = ledger.domain_state(name)
    receipt = target.get_json(receipt_key(name))
    if state == DomainState.DECOMMISSIONED or (receipt and receipt.get("state") == "done"):
        done = receipt or {}
        _refuse(
            name,
            "one decommission per domain",
            f"already decommissioned on {done.get('finished_at', '?')} by {done.get('by', '?')} (receipt "
            f"{receipt_key(name)}); a second run is refused",
            "Nothing to do",
        )
    if state != DomainState.CUT_OVER:
        _refuse(
            name,
            "only a cut-over domain's old copy is deleted",
            f"not cut over (state {state})",
            f"Cut it over (python -m hdh_migration cutover --domain {name}) and verify it deep first",
        )
    if domain.retention_days is None:
        _refuse(
            name,
            "a retention period set in the catalogue",
            "the catalogue sets no retention_days for the domain",
            "Set retention_days (days the old copy is kept after the cutover) in the catalogue, reviewed with the plan",
        )
    record = target.get_json(record_key(name))
    cutover = _last_cutover(ledger, name)
    signature_problems = check_signatures(record, pinned_public_keys()) if record else ["no cutover record"]
    if record is None or cutover is None or signature_problems or record.get("root_sha256") != cutover["root_sha256"]:
        _refuse(
            name,
            "a signed cutover record anchored in the ledger",
            "the cutover record is missing, unsigned or differs from the ledger's cutover",
            f"Run python -m hdh_migration verify --domain {name} and treat it as an incident",
        )
    verified = _deep_verify_since(ledger, name, cutover, record["root_sha256"])
    if verified is None:
        _refuse(
            name,
            "a deep verify passed since the cutover",
            "verify is not ok: no deep verify has passed against this cutover's root since it",
            f"Run python -m hdh_migration verify --domain {name} (deep, the default) and decommission again once it passes",
        )
    cut_over_at = cutover["at"].replace(tzinfo=dt.UTC) if cutover["at"].tzinfo is None else cutover["at"]
    until = cut_over_at + dt.timedelta(days=domain.retention_days)
    if (now or _utcnow()) < until:
        _refuse(
            name,
            f"retention of {domain.retention_days} day(s) after the cutover",
            f"the old copy is kept until {until.isoformat(timespec='seconds')}",
            "Decommission after that date",
        )
    resumable = set()
    if receipt and receipt.get("state") == "in_progress" and receipt.get("root_sha256") == record["root_sha256"]:
        resumable = {o["name"] for o in receipt["objects"]}
    objects = _recorded_objects(target, record)
    source = _source(name)
    with ThreadPoolExecutor(DELETE_THREADS) as pool:
        verdicts = list(pool.map(lambda o: _matches(source, o, resumable), objects))
    changed = [o["name"] for o, (verdict, _) in zip(objects, verdicts, strict=True) if verdict == "changed"]
    if changed:
        _refuse(
            name,
            "delete only what still matches the cutover record (same ETag or sha256)",
            f"{len(changed)} object(s) changed or vanished in the source since the cutover",
            "Nothing was deleted. Find out why they changed; if the change must move, roll back with a reason, "
            "re-transfer, cut over and verify again",
            changed,
        )
    plan = []
    for obj, (verdict, live) in zip(objects, verdicts, strict=True):
        plan.append({**obj, "status": verdict, "live_etag": live.etag if live else None})
    return {
        "domain": name,
        "source": domain.source.describe(),
        "source_kind": domain.source.kind,
        "record_key": record_key(name),
        "root_sha256": record["root_sha256"],
        "cut_over_at": cut_over_at.isoformat(timespec="seconds"),
        "retention_days": domain.retention_days,
        "verify": verified,
        "objects": plan,
        "bytes": sum(o["size"] for o in plan),
    }


def _delete(source, item: dict) -> None:
    if item["status"] == "gone":
        return
    source.delete(SourceObject(item["name"], item["size"], item["live_etag"], ""))


def receipt_body(plan: dict, state: str, by: str, dag_id: str, run_id: str, started_at: str, signer) -> dict:
    from hdh_migration.signing import ALGORITHM, fingerprint

    return {
        "receipt_version": RECEIPT_VERSION,
        "domain": plan["domain"],
        "state": state,
        "source": plan["source"],
        "source_kind": plan["source_kind"],
        "record_key": plan["record_key"],
        "root_sha256": plan["root_sha256"],
        "cut_over_at": plan["cut_over_at"],
        "retention_days": plan["retention_days"],
        "verify": plan["verify"],
        "objects": [{k: o[k] for k in ("name", "size", "etag", "sha256")} for o in plan["objects"]],
        "totals": {"objects": len(plan["objects"]), "bytes": plan["bytes"]},
        "by": by,
        "dag_id": dag_id,
        "run_id": run_id,
        "started_at": started_at,
        "signing": {
            "algorithm": ALGORITHM,
            "public_key": signer.public_key,
            "public_key_fingerprint": fingerprint(signer.public_key),
        },
    }


def _seal(body: dict, signer) -> dict:
    from hdh_migration.signing import receipt_message

    receipt_sha256 = hashlib.sha256(canonical_json(body)).hexdigest()
    return {
        **body,
        "receipt_sha256": receipt_sha256,
        "signature": signer.sign(receipt_message(body["domain"], receipt_sha256)),
    }


def decommission(domain_name: str, by: str, dag_id: str, run_id: str, dry_run: bool = False) -> dict:
    """Check, then delete the old copy object by object and write the signed receipt; returns a summary."""
    from hdh_migration.signing import Signer

    plan = check_decommission(domain_name)
    name = plan["domain"]
    summary = {
        "domain": name,
        "source": plan["source"],
        "objects": len(plan["objects"]),
        "bytes": plan["bytes"],
        "root_sha256": plan["root_sha256"],
    }
    if dry_run:
        log.info(
            "%s: dry run: %d object(s) would be deleted from %s", Where(name), len(plan["objects"]), plan["source"]
        )
        return {
            **summary,
            "dry_run": True,
            "would_delete": [{k: o[k] for k in ("name", "size")} for o in plan["objects"]],
        }
    signer = Signer.from_connection()  # before any delete: a decommission that cannot sign deletes nothing
    target, ledger = _target(), _ledger()
    started_at = _utcnow().isoformat(timespec="seconds")
    target.put_json(receipt_key(name), receipt_body(plan, "in_progress", by, dag_id, run_id, started_at, signer))
    source = _source(name)
    from hdh_migration.source import ChangedSourceObject

    try:
        with ThreadPoolExecutor(DELETE_THREADS) as pool:
            list(pool.map(lambda item: _delete(source, item), plan["objects"]))
    except ChangedSourceObject as changed:
        _refuse(
            name,
            "delete only what still matches the cutover record",
            "an object changed while the decommission ran",
            "Objects already deleted stay listed in the in-progress receipt; find out why it changed, then run again",
            [str(changed)],
        )
    except Exception as error:
        if type(error).__name__ != "ResourceModifiedError":  # Azure's answer to a conditional delete that lost
            raise
        _refuse(
            name,
            "delete only what still matches the cutover record",
            "an object changed while the decommission ran",
            "Objects already deleted stay listed in the in-progress receipt; find out why it changed, then run again",
        )
    body = receipt_body(plan, "done", by, dag_id, run_id, started_at, signer)
    body["finished_at"] = _utcnow().isoformat(timespec="seconds")
    receipt = _seal(body, signer)
    receipt_sha256 = target.put_json(receipt_key(name), receipt)
    ledger.set_domain_state(
        name,
        DomainState.DECOMMISSIONED,
        {"run_id": run_id, "by": by, "objects": len(plan["objects"]), "receipt_sha256": receipt["receipt_sha256"]},
    )
    log.info(
        "%s: decommissioned: %d object(s), %.1f MB deleted from %s; receipt %s",
        Where(name),
        len(plan["objects"]),
        plan["bytes"] / 1e6,
        plan["source"],
        receipt_key(name),
    )
    return {
        **summary,
        "dry_run": False,
        "receipt_key": receipt_key(name),
        "receipt_sha256": receipt["receipt_sha256"],
        "stored_sha256": receipt_sha256,
        "finished_at": body["finished_at"],
        "by": by,
        "run_id": run_id,
    }
