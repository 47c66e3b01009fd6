"""The cutover: the moment the French copy becomes the data, made provable; its rollback and its verification.

``hdh_cutover__<domain>`` runs five steps, one task each:

1. ``check_completeness``: every expected partition of every table, from the domain's first to its
   planned cutover partition, is committed in the ledger and has its manifest in the sovereign
   store; none is failed or quarantined (a waived partition commits on its re-run, so a waiver
   counts once that run has committed it).
2. ``reconcile_source``: the live Azure listing is compared with every manifest. An object that
   arrived late in a committed partition, changed or vanished, or a newer snapshot than the planned
   one, refuses the cutover with the list and the re-transfer to run. Every landed object is present
   with its size and checksum; every manifest is the one committed. The domain becomes ``verified``.
3. ``freeze_domain``: the domain becomes ``cut_over``. From then on ``plan_partition`` refuses to
   write to it (``FrozenDomainError``), for scheduled runs, manual runs and backfills alike.
4. ``write_cutover_record``: ``_cutover/<domain>.json`` (see below), and its history entry in the ledger.
5. ``announce_cutover``: an Airflow Asset event for the domain (``dag_factory.sovereign_asset``);
   its extra names the bucket, prefix, record and root hash, so consumers switch on it.

**The cutover record** holds one entry per partition manifest: table, partition, manifest key, the
sha256 of the manifest's bytes as stored, and its files (key, size, sha256, rows). The entries are
sorted by manifest key and chained: ``link_0 = sha256("hdh-migration cutover chain v1\\n<domain>")``,
``link_i = sha256(link_{i-1} + "\\n" + canonical_json(entry_i))``; the last link is the root. The
record also holds who decided, when, which Airflow run, and the domain's append-only ``history`` of
cutovers and rollbacks, itself chained (each entry seals the previous entry's hash). Every history
entry's hash, which includes the root, is kept in the ledger too and travels in the Asset event.

**Signatures** (``signing``): the cutover signer's Ed25519 key signs the root
(``"hdh-migration cutover root v1\\n<domain>\\n<root>"``) and each history entry
(``"hdh-migration cutover history v1\\n<domain>\\n<entry_sha256>"``); the record names the public
key and its fingerprint. Only the cutover and rollback tasks hold the private key (connection
``hdh_cutover_signing``, queue ``cutover``), so whoever holds the bucket and the ledger credentials
(a transfer worker) can rewrite objects, manifests, record and ledger consistently, but cannot sign:
``verify`` checks every signature against the public keys pinned outside the bucket.

**Rollback** needs a reason, appends to the history and returns the domain to ``transferring``.
**Verify** re-checks a cut-over domain's sovereign copy against its record and reads nothing from
Azure: signatures against the pinned keys, record chain and root, history against the ledger, every
manifest's hash, every object's presence, size and checksum (``deep``: every byte read back), and
no object under the domain's prefix or its manifests' prefix outside the record.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor

from hdh_migration.catalogue import Domain
from hdh_migration.errors import IntegrityError, MigrationError, Where
from hdh_migration.layout import CUTOVER_PREFIX, MANIFEST_PREFIX, receipt_key
from hdh_migration.manifest import Manifest, landed_problem
from hdh_migration.resources import current_catalogue as _catalogue
from hdh_migration.resources import open_ledger as _ledger
from hdh_migration.resources import open_source as _source
from hdh_migration.resources import open_target as _target
from hdh_migration.signing import canonical_json, check_receipt
from hdh_migration.source import partitions_in
from hdh_migration.states import FROZEN_STATES, DomainState, PartitionState

log = logging.getLogger(__name__)

RECORD_VERSION = 1
CHAIN_SEED = "hdh-migration cutover chain v1"
MIN_REASON_CHARS = 10
# The record's state after each kind of history entry.
RECORD_STATES = {"cutover": "cut_over", "rollback": "rolled_back"}
MAX_LISTED_PROBLEMS = 50


class CutoverError(MigrationError):
    """A cutover or rollback precondition does not hold; the message lists what, and what to do next."""


class NothingToDoError(CutoverError):
    """The domain is already where it was asked to go (cut over, or not cut over): the task skips."""


def record_key(domain: str) -> str:
    """Where the domain's cutover record lives in the sovereign store."""
    return f"{CUTOVER_PREFIX}/{domain}.json"


# ---------------------------------------------------------------------------------------------
# the record: hash chain and history, pure functions


def _sha256(data: bytes) -> str:
    from hdh_migration.integrity import sha256_stream

    digest = sha256_stream()
    digest.update(data)
    return digest.hexdigest()


def _chain(domain: str, entries: list[dict]) -> list[str]:
    """The link after each entry, in the given order."""
    link = _sha256(f"{CHAIN_SEED}\n{domain}".encode())
    links = []
    for entry in entries:
        body = {k: v for k, v in entry.items() if k != "link_sha256"}
        link = _sha256(link.encode("ascii") + b"\n" + canonical_json(body))
        links.append(link)
    return links


def chain_entries(domain: str, entries: list[dict]) -> tuple[list[dict], str]:
    """Sort the manifest entries by key and chain them: returns the linked entries and the root hash."""
    ordered = sorted(({k: v for k, v in e.items() if k != "link_sha256"} for e in entries), key=_entry_order)
    links = _chain(domain, ordered)
    root = links[-1] if links else _sha256(f"{CHAIN_SEED}\n{domain}".encode())
    return [{**entry, "link_sha256": link} for entry, link in zip(ordered, links, strict=True)], root


def _entry_order(entry: dict) -> str:
    return entry["manifest_key"]


def seal_history(domain: str, history: list[dict], entry: dict, signer) -> list[dict]:
    """A new history with ``entry`` appended, sealed with the hash of the previous entry and signed."""
    from hdh_migration.signing import fingerprint, history_message

    previous = history[-1]["entry_sha256"] if history else None
    body = {
        **{k: v for k, v in entry.items() if v is not None},
        "previous_sha256": previous,
        "signed_by": fingerprint(signer.public_key),
    }
    entry_sha256 = _sha256(canonical_json(body))
    signature = signer.sign(history_message(domain, entry_sha256))
    return [*history, {**body, "entry_sha256": entry_sha256, "signature": signature}]


def _history_body(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in ("entry_sha256", "signature")}


def check_record(record: dict) -> list[str]:
    """Every way the record disagrees with itself: entry links, root, order, totals, history chain."""
    domain = record["domain"]
    label = Where(domain, obj=record_key(domain))
    problems = []
    entries = record.get("entries", [])
    if [e["manifest_key"] for e in entries] != sorted(e["manifest_key"] for e in entries):
        problems.append(f"{label}: entries are not in manifest-key order (rule: chained in key order)")
    for entry, link in zip(entries, _chain(domain, entries), strict=True):
        if entry.get("link_sha256") != link:
            problems.append(
                f"{Where(domain, entry.get('table'), entry.get('partition'), entry.get('manifest_key'))}: "
                "the entry does not match its link in the hash chain (rule: record unchanged since the cutover)"
            )
    if entries:
        _, root = chain_entries(domain, entries)
        if root != record.get("root_sha256"):
            problems.append(f"{label}: the root hash recomputed from the entries differs from the record's")
        if record.get("state") == "cut_over" and _totals(entries) != {k: record.get(k) for k in _totals(entries)}:
            problems.append(f"{label}: the totals differ from the sums of the entries (rule: totals of the entries)")
    previous = None
    for index, entry in enumerate(record.get("history", [])):
        if entry.get("previous_sha256") != previous or _sha256(canonical_json(_history_body(entry))) != entry.get(
            "entry_sha256"
        ):
            problems.append(
                f"{label}: history entry {index} ({entry.get('action')} at {entry.get('at')}) is broken out of "
                "its chain (rule: append-only history)"
            )
        previous = entry.get("entry_sha256")
    history = record.get("history", [])
    if history and RECORD_STATES.get(history[-1].get("action")) != record.get("state"):
        problems.append(
            f"{label}: the record says {record.get('state')} but its last history entry is a {history[-1].get('action')}"
        )
    cutovers = [h for h in record.get("history", []) if h.get("action") == "cutover"]
    if record.get("state") == "cut_over" and (not cutovers or cutovers[-1].get("root_sha256") != record["root_sha256"]):
        problems.append(f"{label}: the last cutover in the history does not seal the record's root hash")
    return problems


def check_signatures(record: dict, pinned: dict[str, str]) -> list[str]:
    """Every signature of the record that no pinned public key verifies: the root, each history entry."""
    from hdh_migration.signing import history_message, root_message, signature_valid

    domain = record["domain"]
    label = Where(domain, obj=record_key(domain))
    rule = f"rule: signed by the cutover signer, whose pinned key is {' or '.join(sorted(pinned))}"

    def signed(message: bytes, signature: str | None) -> bool:
        return any(signature_valid(key, message, signature) for key in pinned.values())

    signing = record.get("signing") or {}
    if not signing:
        return [
            f"{label}: the record carries no signature ({rule}). A record written before signing existed: roll the "
            "domain back with a reason and cut it over again"
        ]
    problems = []
    named = signing.get("public_key_fingerprint")
    if named not in pinned:
        problems.append(f"{label}: the record names the signing key {named}, which is not pinned ({rule})")
    root = record.get("root_sha256")
    if root is not None and not signed(root_message(domain, root), signing.get("root_signature")):
        problems.append(f"{label}: the root hash {root} is not signed by a pinned key ({rule})")
    for index, entry in enumerate(record.get("history", [])):
        if not signed(history_message(domain, entry.get("entry_sha256") or ""), entry.get("signature")):
            problems.append(
                f"{label}: history entry {index} ({entry.get('action')} at {entry.get('at')}) is not signed by a "
                f"pinned key ({rule})"
            )
    return problems


def _signing(domain: str, root: str | None, signer) -> dict:
    """The record's ``signing`` block: the signer's public key and fingerprint, and the root's signature."""
    from hdh_migration.signing import ALGORITHM, fingerprint, root_message

    block = {
        "algorithm": ALGORITHM,
        "public_key": signer.public_key,
        "public_key_fingerprint": fingerprint(signer.public_key),
    }
    if root is not None:
        block["root_signature"] = signer.sign(root_message(domain, root))
    return block


def _totals(entries: list[dict]) -> dict:
    return {
        "partitions": len(entries),
        "rows": sum(e["rows"] for e in entries),
        "bytes": sum(e["bytes"] for e in entries),
        "files": sum(len(e["files"]) for e in entries),
    }


# ---------------------------------------------------------------------------------------------
# the cutover's five steps


def decided_by(explicit: str | None, triggering_user: str | None, run_type: str) -> str:
    """Who decided: the person named in the run's parameters, else who triggered it, else the schedule."""
    return explicit or triggering_user or f"airflow ({run_type})"


def _retransfer(domain: str, partition: str, force: bool = False) -> str:
    conf = f'{{"partition": "{partition}", "force": true}}' if force else f'{{"partition": "{partition}"}}'
    command = f"python -m hdh_migration migrate --domain {domain}{' --force' if force else ''}"
    return f"Re-transfer the partition (trigger hdh_transfer__{domain} with {conf}, or {command}), then cut over again"


def _refuse(ledger, domain: Domain, step: str, problems: list[str], run_id: str | None, thaw: bool = False):
    """Record the refusal, move a verified domain (with ``thaw``, a frozen one) back to transferring, and raise."""
    ref = Where(domain.name)
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n- ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    message = (
        f"{ref}: cutover refused at {step}: {len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in shown) + more
    )
    if thaw or ledger.domain_state(domain.name) == DomainState.VERIFIED:
        ledger.set_domain_state(
            domain.name, DomainState.TRANSFERRING, {"reason": f"cutover refused at {step}", "run_id": run_id}
        )
    ledger.record_event(domain.name, "cutover_refused", message[:4000], run_id=run_id)
    raise CutoverError(message, ref=ref)


def check_completeness(domain_name: str, run_id: str | None = None) -> list[dict]:
    """Step 1: every expected partition committed with its manifest; returns them (table, partition, key)."""
    from hdh_migration.signing import Signer

    domain = _catalogue().domain(domain_name)
    ledger, target = _ledger(), _target()
    if ledger.domain_state(domain.name) in FROZEN_STATES:
        raise NothingToDoError(
            f"{Where(domain.name)}: already cut over (see {record_key(domain.name)}); nothing to do. "
            f"Roll it back with a reason first to cut it over again",
            ref=Where(domain.name),
        )
    Signer.from_connection()  # before the freeze: a domain frozen without its signed record would be stuck
    problems, committed = [], []
    previous = target.get_json(record_key(domain.name))
    if previous is not None:
        problems.extend(f"{p}. Investigate before cutting over again" for p in check_record(previous))
        if previous.get("state") == "cut_over":
            problems.append(
                f"{Where(domain.name, obj=record_key(domain.name))}: the record says cut over but the ledger does not "
                "(rule: the freeze survives a lost ledger). Run python -m hdh_migration reindex"
            )
    first, last = domain.first_partition, domain.cutover_partition
    for table in domain.tables:
        for partition in domain.partitions():
            label = Where(domain.name, table.name, partition)
            key = Manifest.key_for(table, partition)
            record = ledger.get(domain.name, table.name, partition)
            if record is not None and record.state in (PartitionState.FAILED, PartitionState.QUARANTINED):
                waived = ledger.waivers(domain.name, table.name, partition)
                hint = (
                    "A waiver is recorded: re-run the partition to commit it"
                    if waived
                    else "Fix the source in Azure and re-run the partition, or record a waiver "
                    f"(python -m hdh_migration waive --domain {domain.name} --table {table.name} "
                    f"--partition {partition} ...) and re-run it"
                )
                error = (record.last_error or "").splitlines()[0][:300] if record.last_error else "no error recorded"
                problems.append(
                    f"{label}: {record.state} (last error: {error}) (rule: no failed or quarantined partition). {hint}"
                )
            elif target.head(key) is None:
                if table.optional and record is None:
                    continue  # nothing delivered for an optional table: reconcile_source checks Azure agrees
                problems.append(
                    f"{label}: not committed, no manifest {key} (rule: every partition from {first} to {last} "
                    f"committed). Run hdh_transfer__{domain.name} for partition {partition}"
                )
            elif record is None or record.state != PartitionState.COMMITTED:
                problems.append(
                    f"{label}: the manifest exists but the ledger says {record.state if record else 'nothing'} "
                    "(rule: committed in the ledger). If the ledger was lost, run python -m hdh_migration "
                    "reindex; otherwise let the running transfer finish"
                )
            else:
                committed.append({"table": table.name, "partition": partition, "manifest_key": key})
    if problems:
        _refuse(ledger, domain, "check_completeness", problems, run_id)
    log.info("%s: complete: %d partition manifest(s) committed", Where(domain.name), len(committed))
    return committed


def reconcile_source(domain_name: str, committed: list[dict], run_id: str | None = None) -> dict[str, str]:
    """Step 2: the live Azure listing and the landed objects against every manifest; returns key → sha256."""
    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    ledger, target, source = _ledger(), _target(), _source(domain.name)
    problems, reconciled = [], {}
    for item in committed:
        table, partition = domain.table(item["table"]), item["partition"]
        ref = Where(domain.name, table.name, partition)
        stored = Manifest.read(target, item["manifest_key"])
        if stored is None:
            problems.append(
                f"{ref}: manifest {item['manifest_key']} vanished (rule: manifest present). {_retransfer(domain.name, partition)}"
            )
            continue
        manifest, manifest_sha256 = stored
        record = ledger.get(domain.name, table.name, partition)
        if record is not None and record.manifest_sha256 and record.manifest_sha256 != manifest_sha256:
            problems.append(
                f"{ref.with_object(item['manifest_key'])}: the manifest differs from "
                f"the one committed (rule: manifest unchanged since its commit). {_retransfer(domain.name, partition)}"
            )
        prefix = table.source_dir(partition)
        live = {o.name: o.etag for o in source.list_objects(prefix, table.source_extension)}
        changes = manifest.source_changes(live)
        for name in changes["added"]:
            problems.append(
                f"{ref.with_object(name)}: arrived in Azure after the partition was "
                f"committed (rule: no late-arriving source object). {_retransfer(domain.name, partition)}"
            )
        for name in changes["removed"]:
            problems.append(
                f"{ref.with_object(name)}: removed from Azure since its transfer "
                f"(rule: source unchanged since its transfer). Find out why; {_retransfer(domain.name, partition)}"
            )
        recorded = manifest.source_etags
        for name in changes["changed"]:
            problems.append(
                f"{ref.with_object(name)}: changed in Azure since its transfer (ETag "
                f"{recorded[name]} then, {live[name]} now; rule: same ETag). {_retransfer(domain.name, partition)}"
            )
        for entry, problem in manifest.landed_problems(target):
            if problem == "missing":
                problems.append(
                    f"{ref.with_object(entry['key'])}: missing from the sovereign store "
                    f"(rule: every manifested object present). {_retransfer(domain.name, partition, force=True)}"
                )
            else:
                problems.append(
                    f"{ref.with_object(entry['key'])}: size or checksum differs from the "
                    f"manifest (rule: landed object equal to its manifest). {_retransfer(domain.name, partition, force=True)}"
                )
        reconciled[item["manifest_key"]] = manifest_sha256
    if domain.source.kind == "s3" and domain.source.chained:
        problems.extend(_unchained(domain, reconciled, target, _upstream(domain, run_id)["record"]))
    problems.extend(_undelivered_optional_partitions(domain, committed, source))
    if domain.grain == "snapshot":
        problems.extend(_newer_snapshots(domain, source))
    if problems:
        _refuse(ledger, domain, "reconcile_source", problems, run_id)
    ledger.set_domain_state(domain.name, DomainState.VERIFIED, {"run_id": run_id, "manifests": len(reconciled)})
    log.info("%s: reconciled %d manifest(s) against the live Azure listing", Where(domain.name), len(reconciled))
    return reconciled


def _unchained(domain: Domain, reconciled: dict[str, str], target, upstream_record: dict) -> list[str]:
    """Source objects of the committed manifests that the interim record does not hold with the same sha256."""
    interim = {f["key"]: f["sha256"] for e in upstream_record.get("entries", []) for f in e["files"]}
    problems = []
    for key in reconciled:
        manifest = Manifest(target.get_json(key))
        for obj in manifest.source_objects:
            if interim.get(obj["name"]) != obj.get("sha256"):
                problems.append(
                    f"{Where(domain.name, manifest.table, manifest.partition, obj['name'])}: not in the interim "
                    "host's signed cutover record with this sha256 (rule: chain of custody). Re-transfer the "
                    f"partition from the cut-over interim copy: {_retransfer(domain.name, manifest.partition, force=True)}"
                )
    return problems


def _undelivered_optional_partitions(domain: Domain, committed: list[dict], source) -> list[str]:
    """Objects in Azure for an optional table's partition that has no manifest: delivered, not transferred."""
    done = {(c["table"], c["partition"]) for c in committed}
    problems = []
    for table in domain.tables:
        if not table.optional:
            continue
        for partition in domain.partitions():
            if (table.name, partition) in done:
                continue
            prefix = table.source_dir(partition)
            for obj in source.list_objects(prefix, table.source_extension):
                problems.append(
                    f"{Where(domain.name, table.name, partition, obj.name)}: in Azure but never transferred "
                    f"(rule: no late-arriving source object). {_retransfer(domain.name, partition)}"
                )
    return problems


def _newer_snapshots(domain: Domain, source) -> list[str]:
    """A snapshot table is fresh when the source holds no snapshot newer than the planned cutover one."""
    problems = []
    for table in domain.tables:
        root = f"{domain.name}/{table.name}/{table.partition_column}="
        for value in sorted(v for v in partitions_in(source, table) if v > domain.cutover_partition):
            problems.append(
                f"{Where(domain.name, table.name, value)}: a snapshot newer than the planned "
                f"{domain.cutover_partition} is in the source under {domain.source.describe(root)}{value}/ (rule: snapshot tables "
                "are fresh). Set cutover_partition to it in the catalogue, transfer it, then cut over"
            )
    return problems


def freeze_domain(domain_name: str, run_id: str | None = None) -> None:
    """Step 3: the domain becomes cut_over; plan_partition refuses to write to it from now on."""
    _ledger().set_domain_state(domain_name, DomainState.CUT_OVER, {"run_id": run_id, "step": "freeze_domain"})
    log.info("%s: frozen: transfers now refuse to write to this domain", Where(domain_name))


def _entry(manifest: Manifest, key: str, manifest_sha256: str, origins: dict | None = None) -> dict:
    """A record entry; each file carries its source's identity and, on a chained move, its ``origin``
    (the identity of the first hop's source, from the upstream record)."""
    sources = manifest.source_identities()
    if origins is not None:
        entry = _entry(manifest, key, manifest_sha256)
        for f in entry["files"]:
            f["origin"] = origins.get((f["source"] or {}).get("name"))
        return entry
    return {
        "table": manifest.table,
        "partition_column": manifest.body["partition_column"],
        "partition": manifest.partition,
        "manifest_key": key,
        "manifest_sha256": manifest_sha256,
        "rows": manifest.rows,
        "bytes": manifest.bytes,
        "content_fingerprint": manifest.body["content_fingerprint"],
        "transfer_run_id": manifest.run_id,
        "committed_at": manifest.body["committed_at"],
        "files": [
            {**{k: f[k] for k in ("key", "size", "sha256", "rows")}, "source": sources.get(f["key"])}
            for f in manifest.entries
        ],
    }


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_cutover_record(domain_name: str, reconciled: dict[str, str], by: str, dag_id: str, run_id: str) -> dict:
    """Step 4: write ``_cutover/<domain>.json``, signed, and its history entry in the ledger; returns the announcement."""
    from hdh_migration.signing import Signer

    signer = Signer.from_connection()
    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    ledger, target = _ledger(), _target()
    upstream = _upstream(domain) if domain.source.kind == "s3" and domain.source.chained else None
    origins = upstream_origins(upstream["record"]) if upstream else None
    entries, changed = [], []
    for key, expected_sha256 in sorted(reconciled.items()):
        stored = Manifest.read(target, key)
        if stored is None or stored[1] != expected_sha256:
            changed.append(
                f"{Where(domain.name, obj=key)}: changed between reconciliation and freeze (rule: the "
                "record holds the reconciled manifests). A transfer committed meanwhile: trigger the cutover again"
            )
            continue
        entries.append(_entry(stored[0], key, expected_sha256, origins))
    if changed:
        _refuse(ledger, domain, "write_cutover_record", changed, run_id, thaw=True)
    linked, root = chain_entries(domain.name, entries)
    previous = target.get_json(record_key(domain.name))
    history = previous["history"] if previous else []
    totals = _totals(linked)
    last = history[-1] if history else {}
    if not (last.get("action") == "cutover" and last.get("run_id") == run_id and last.get("root_sha256") == root):
        history = seal_history(
            domain.name,
            history,
            {
                "action": "cutover",
                "at": _utcnow(),
                "by": by,
                "dag_id": dag_id,
                "run_id": run_id,
                "root_sha256": root,
                "upstream_root_sha256": upstream["record"]["root_sha256"] if upstream else None,
                **totals,
            },
            signer,
        )
    cutover = history[-1]
    record = {
        "record_version": RECORD_VERSION,
        "domain": domain.name,
        "bucket": catalogue.target_bucket,
        "prefix": f"{domain.name}/",
        "state": "cut_over",
        "cut_over_at": cutover["at"],
        "cut_over_by": cutover["by"],
        "dag_id": dag_id,
        "run_id": run_id,
        "first_partition": domain.first_partition,
        "cutover_partition": domain.cutover_partition,
        **totals,
        "root_sha256": root,
        "signing": _signing(domain.name, root, signer),
        "entries": linked,
        "history": history,
        **({"upstream": upstream} if upstream else {}),
    }
    key = record_key(domain.name)
    record_sha256 = target.put_json(key, record)
    ledger.append_cutover_history(domain.name, cutover, DomainState.CUT_OVER)
    log.info(
        "%s: cut over: %d partition manifest(s), %d rows, %.1f MB; record %s, root %s",
        Where(domain.name),
        totals["partitions"],
        totals["rows"],
        totals["bytes"] / 1e6,
        key,
        root,
    )
    return announcement(record, record_sha256)


def announcement(record: dict, record_sha256: str) -> dict:
    """The Asset event's extra: where the domain's data now is, and how to check it."""
    last = record["history"][-1]
    return {
        "domain": record["domain"],
        "state": record["state"],
        "bucket": record["bucket"],
        "prefix": record["prefix"],
        "record_key": record_key(record["domain"]),
        "record_sha256": record_sha256,
        "root_sha256": record["root_sha256"],
        "history_entry_sha256": last["entry_sha256"],
        "public_key_fingerprint": record["signing"]["public_key_fingerprint"],
        "at": last["at"],
        "run_id": last["run_id"],
    }


# ---------------------------------------------------------------------------------------------
# chain of custody: a second move (interim host -> final host) embeds the interim host's signed record


def _upstream(domain: Domain, run_id: str | None = None) -> dict:
    """The source's own cutover record (an earlier hop), checked: signed by a pinned key, whole, cut over."""
    from hdh_migration.signing import pinned_public_keys

    source = _source(domain.name)
    key = f"{domain.source.prefix}{record_key(domain.name)}"
    where_ = Where(domain.name, obj=domain.source.describe(record_key(domain.name)))
    record = source.store.get_json(key)
    if record is None:
        problems = [
            f"{where_}: the source holds no cutover record (rule: a chained second move starts from a cut-over "
            "host). Cut the domain over on the interim host first, or set source.chained: false in the catalogue"
        ]
    else:
        problems = check_signatures(record, pinned_public_keys()) + check_record(record)
        if record.get("state") != "cut_over":
            problems.append(f"{where_}: the source's record says {record.get('state')}, not cut_over")
    if problems:
        _refuse(_ledger(), domain, "upstream_record", problems, run_id, thaw=True)
    return {"record_key": key, "location": domain.source.describe(record_key(domain.name)), "record": record}


def upstream_origins(upstream_record: dict) -> dict[str, dict | None]:
    """Each file of the upstream record by key: the identity of its own source (the first hop's object)."""
    return {f["key"]: f.get("source") for e in upstream_record.get("entries", []) for f in e["files"]}


def verify_chain(record: dict, pinned: dict[str, str]) -> tuple[dict, list[str]]:
    """Offline: every object of ``record`` descends, through its embedded upstream record, from an object of
    the first source. Reads nothing but ``record``. Returns a report and the problems."""
    domain = record["domain"]
    label = Where(domain, obj=record_key(domain))
    upstream = (record.get("upstream") or {}).get("record")
    if not upstream:
        return {}, [f"{label}: the record carries no upstream record (rule: a chained move embeds the interim record)"]
    problems = [f"upstream {p}" for p in check_signatures(upstream, pinned) + check_record(upstream)]
    if upstream.get("state") != "cut_over" or upstream.get("domain") != domain:
        problems.append(f"{label}: the upstream record is not the cutover of {domain}")
    cutovers = [h for h in record.get("history", []) if h.get("action") == "cutover"]
    if not cutovers or cutovers[-1].get("upstream_root_sha256") != upstream.get("root_sha256"):
        problems.append(
            f"{label}: the signed cutover entry does not seal the upstream root {upstream.get('root_sha256')} "
            "(rule: the final signer vouches for the interim record it embeds)"
        )
    interim = {f["key"]: f for e in upstream.get("entries", []) for f in e["files"]}
    descended = set()
    for entry in record.get("entries", []):
        for f in entry["files"]:
            name = Where(domain, entry["table"], entry["partition"], f["key"])
            source, origin = f.get("source") or {}, f.get("origin") or {}
            parent = interim.get(source.get("name"))
            if parent is None:
                problems.append(f"{name}: its source {source.get('name')} is not in the interim record")
                continue
            if not (f["sha256"] == source.get("sha256") == parent["sha256"]):
                problems.append(
                    f"{name}: its sha256 differs from the interim object {parent['key']} it was copied from"
                )
            descended.add(parent["key"])
            first = parent.get("source") or {}
            if not origin or origin != first or not first.get("etag") or not first.get("sha256"):
                problems.append(
                    f"{name}: its origin differs from the first source object the interim record names for "
                    f"{parent['key']} (rule: origin = the interim record's source identity, ETag and sha256)"
                )
    for key in sorted(set(interim) - descended):
        problems.append(f"{Where(domain, obj=key)}: an interim object with no descendant in the final record")
    report = {
        "upstream_root_sha256": upstream.get("root_sha256"),
        "upstream_signed_by": (upstream.get("signing") or {}).get("public_key_fingerprint"),
        "objects_chained": len(descended),
    }
    return report, problems


# ---------------------------------------------------------------------------------------------
# rollback


def check_rollback(domain_name: str, reason: str | None, run_id: str | None = None) -> tuple[str, dict | None]:
    """Refuse a rollback without a reason, or of a domain not cut over; returns the reason and the record."""
    domain = _catalogue().domain(domain_name)
    ref = Where(domain.name)
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON_CHARS:
        raise CutoverError(
            f"{ref}: a rollback needs a reason of at least {MIN_REASON_CHARS} characters (rule: "
            "mandatory reason). Say why the French copy stops being the data, e.g. 'late DCIR rows for 2024-03'",
            ref=ref,
        )
    record = _target().get_json(record_key(domain.name))
    last = record["history"][-1] if record and record["history"] else {}
    retried = run_id is not None and last.get("action") == "rollback" and last.get("run_id") == run_id
    state = _ledger().domain_state(domain.name)
    if state == DomainState.DECOMMISSIONED:
        raise CutoverError(
            f"{ref}: decommissioned: the old copy was deleted after the cutover (receipt "
            f"{receipt_key(domain.name)}), so there is nothing to roll back to (rule: no "
            "rollback after a decommission). The French copy is the only copy: restore from its backup if needed",
            ref=ref,
        )
    if state != DomainState.CUT_OVER and not retried:
        raise CutoverError(
            f"{ref}: not cut over (state {state}), so there is nothing to roll back (rule: only a "
            "cut-over domain rolls back). Check python -m hdh_migration status",
            ref=ref,
        )
    return reason, record


def rollback(domain_name: str, reason: str | None, by: str, dag_id: str, run_id: str) -> dict:
    """Return a cut-over domain to transferring, with a mandatory reason; returns the announcement."""
    from hdh_migration.signing import Signer

    catalogue = _catalogue()
    domain = catalogue.domain(domain_name)
    reason, record = check_rollback(domain.name, reason, run_id)
    signer = Signer.from_connection()
    history = record["history"] if record else []
    last = history[-1] if history else {}
    if not (last.get("action") == "rollback" and last.get("run_id") == run_id):
        history = seal_history(
            domain.name,
            history,
            {
                "action": "rollback",
                "at": _utcnow(),
                "by": by,
                "reason": reason,
                "dag_id": dag_id,
                "run_id": run_id,
                "root_sha256": record.get("root_sha256") if record else None,
            },
            signer,
        )
    base = record or {
        "record_version": RECORD_VERSION,
        "domain": domain.name,
        "bucket": catalogue.target_bucket,
        "prefix": f"{domain.name}/",
        "root_sha256": None,
        "entries": [],
    }
    rolled_back = {
        **base,
        "state": "rolled_back",
        "signing": _signing(domain.name, base["root_sha256"], signer),
        "history": history,
    }
    record_sha256 = _target().put_json(record_key(domain.name), rolled_back)
    _ledger().append_cutover_history(domain.name, history[-1], DomainState.TRANSFERRING)
    log.info("%s: rolled back by %s: %s; transfers may write again", Where(domain.name), by, reason)
    return announcement(rolled_back, record_sha256)


# ---------------------------------------------------------------------------------------------
# verify


def verify(domain_name: str, deep: bool = True, public_key: str | None = None, chain: bool = False) -> dict:
    """Re-check a cut-over domain's sovereign copy against its signed cutover record; reads nothing from Azure.

    ``public_key`` (base64, comma-separated for several) overrides the pinned ``HDH_CUTOVER_PUBLIC_KEY``.
    ``chain``: also prove, from the record alone, that every object descends from a first-source object
    through the embedded interim record (``verify_chain``). A decommission receipt, when there is one, is
    checked too (``signing.check_receipt``).
    """
    from hdh_migration.signing import pinned_public_keys

    pinned = pinned_public_keys(public_key)
    domain = _catalogue().domain(domain_name)
    ledger, target = _ledger(), _target()
    key = record_key(domain.name)
    state = ledger.domain_state(domain.name)
    record = target.get_json(key)
    if (record is None or record.get("state") != "cut_over") and state not in FROZEN_STATES:
        raise NothingToDoError(
            f"{Where(domain.name)}: not cut over (state {state}): nothing to verify", ref=Where(domain.name)
        )
    problems = []
    if record is None:
        problems.append(
            f"{Where(domain.name, obj=key)}: the cutover record is missing (rule: a cut-over domain has its record)"
        )
        record = {"domain": domain.name, "state": "cut_over", "entries": [], "history": [], "root_sha256": None}
    elif record.get("state") != "cut_over":
        problems.append(
            f"{Where(domain.name, obj=key)}: the ledger says cut over, the record says {record.get('state')}"
        )
    elif state not in FROZEN_STATES:
        problems.append(f"{Where(domain.name, obj=key)}: the record says cut over, the ledger says {state}")
    problems.extend(check_signatures(record, pinned))
    problems.extend(check_record(record))
    anchored = [h["entry_sha256"] for h in ledger.cutover_history(domain.name)]
    sealed = [h.get("entry_sha256") for h in record.get("history", [])]
    if anchored != sealed:
        problems.append(
            f"{Where(domain.name, obj=key)}: the history differs from the one anchored in the ledger ({len(sealed)} "
            f"entries in the record, {len(anchored)} in the ledger; rule: record unchanged since the cutover)"
        )
    entries = record.get("entries", [])
    for entry in entries:
        label = Where(domain.name, entry["table"], entry["partition"], entry["manifest_key"])
        manifest = target.read(entry["manifest_key"])
        if manifest is None:
            problems.append(f"{label}: the manifest is missing (rule: every manifest of the cutover record present)")
        elif _sha256(manifest) != entry["manifest_sha256"]:
            problems.append(
                f"{label}: the manifest differs from its hash in the cutover record (rule: manifests unchanged)"
            )
    files = [(entry, f) for entry in entries for f in entry["files"]]
    problems.extend(_strays(target, domain.name, entries))
    with ThreadPoolExecutor(max_workers=target.settings.concurrency) as pool:
        problems.extend(p for p in pool.map(lambda ef: _check_object(target, domain.name, *ef, deep), files) if p)
    report = {
        "domain": domain.name,
        "root_sha256": record.get("root_sha256"),
        "partitions": len(entries),
        "objects": len(files),
        "bytes": sum(f["size"] for _, f in files),
        "deep": deep,
    }
    if chain:
        chained, chain_problems = verify_chain(record, pinned)
        report["chain"] = chained
        problems.extend(chain_problems)
    receipt = target.get_json(receipt_key(domain.name))
    if receipt is not None or state == DomainState.DECOMMISSIONED:
        report["receipt"], receipt_problems = check_receipt(domain.name, receipt, record, pinned)
        problems.extend(receipt_problems)
    report["problems"] = len(problems)
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        ledger.record_event(domain.name, "verify_failed", {**report, "first_problems": shown[:10]})
        raise IntegrityError(
            f"{Where(domain.name)}: verify failed: {len(problems)} problem(s) against the cutover record {key}:\n"
            + "\n".join(f"- {p}" for p in shown)
            + "\nThe French copy is the data: treat this as an incident. Restore the named objects from the "
            "store's backup or versioning, or, while Azure still holds the source, roll the cutover back with a "
            "reason, re-transfer the partitions with force and cut over again; then verify again",
            ref=Where(domain.name),
        )
    ledger.record_event(domain.name, "verify_passed", report)
    log.info(
        "%s: verified %d object(s) of %d partition(s)%s against root %s",
        Where(domain.name),
        report["objects"],
        report["partitions"],
        ", every byte read back" if deep else "",
        report["root_sha256"],
    )
    return report


def _strays(target, domain: str, entries: list[dict]) -> list[str]:
    """Every object under the domain's prefix and its manifests' prefix that the record does not list:
    a new table, a new partition folder, an extra file or manifest all show up."""
    recorded = {f["key"] for entry in entries for f in entry["files"]} | {e["manifest_key"] for e in entries}
    problems = []
    for prefix in (f"{domain}/", f"{MANIFEST_PREFIX}/{domain}/"):
        for key in sorted(set(target.list_keys(prefix)) - recorded):
            table, _, rest = key.removeprefix(prefix).partition("/")
            partition = rest.split("/", 1)[0].split("=", 1)[-1].removesuffix(".json") if rest else None
            problems.append(
                f"{Where(domain, table or None, partition or None, key)}: not in the cutover record "
                "(rule: nothing written after the cutover)"
            )
    return problems


def _check_object(target, domain: str, entry: dict, file: dict, deep: bool) -> str | None:
    label = Where(domain, entry["table"], entry["partition"], file["key"])
    landed = landed_problem(target, file)
    if landed == "missing":
        return f"{label}: missing from the sovereign store (rule: every object of the cutover record present)"
    if landed == "differs":
        return f"{label}: size or checksum differs from the cutover record (rule: sizes and checksums equal)"
    if deep:
        try:
            target.verify_object(file["key"], file["sha256"], file["size"])
        except IntegrityError:
            return f"{label}: the bytes read back differ from the sha256 in the cutover record (rule: checksums equal)"
    return None


# ---------------------------------------------------------------------------------------------
# reindex


def restore_from_record(domain_name: str, public_key: str | None = None) -> str | None:
    """Rebuild the domain's cutover history and freeze in the ledger from its record; returns the record's state.

    Only a record whose chain holds and whose every signature a pinned key verifies is trusted: a
    record forged in the bucket is refused rather than anchored in the ledger.
    """
    from hdh_migration.signing import pinned_public_keys

    ledger, target = _ledger(), _target()
    record = target.get_json(record_key(domain_name))
    if record is None:
        return None
    ref = Where(domain_name)
    problems = check_signatures(record, pinned_public_keys(public_key)) + check_record(record)
    if problems:
        raise IntegrityError(
            f"{ref}: the cutover record {record_key(domain_name)} is not restored into the ledger: "
            + "; ".join(problems[:MAX_LISTED_PROBLEMS])
            + ". Treat it as an incident: restore the record from the store's versioning or backup, then reindex again",
            ref=ref,
        )
    for entry in record["history"]:
        state = DomainState.CUT_OVER if entry["action"] == "cutover" else DomainState.TRANSFERRING
        ledger.append_cutover_history(domain_name, entry, state, rebuild=True)
    state = DomainState.CUT_OVER if record["state"] == RECORD_STATES["cutover"] else DomainState.TRANSFERRING
    if (ledger.domain_state(domain_name) == DomainState.CUT_OVER) != (state == DomainState.CUT_OVER):
        ledger.set_domain_state(domain_name, state, {"restored_from": record_key(domain_name)}, rebuild=True)
    receipt = target.get_json(receipt_key(domain_name))
    if state == DomainState.CUT_OVER and receipt is not None and receipt.get("state") == "done":
        _, problems = check_receipt(domain_name, receipt, record, pinned_public_keys(public_key))
        if problems:
            raise IntegrityError(
                f"{ref}: the decommission receipt {receipt_key(domain_name)} is not restored into the "
                "ledger: " + "; ".join(problems) + ". Treat it as an incident",
                ref=ref,
            )
        if ledger.domain_state(domain_name) != DomainState.DECOMMISSIONED:
            ledger.set_domain_state(
                domain_name, DomainState.DECOMMISSIONED, {"restored_from": receipt_key(domain_name)}, rebuild=True
            )
        return DomainState.DECOMMISSIONED
    return record["state"]
