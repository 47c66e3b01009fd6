"""The cutover record's hash chain, history and signatures: any later edit is detectable (no servers)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from hdh_migration.cutover import _signing, _totals, chain_entries, check_record, check_signatures, seal_history
from hdh_migration.signing import Signer, fingerprint, pinned_public_keys

SIGNER = Signer(hashlib.sha256(b"the cutover signer of these tests").digest())
ATTACKER = Signer(hashlib.sha256(b"a key of the attacker's own").digest())
PINNED = pinned_public_keys(SIGNER.public_key)


def _entry(table: str, partition: str, seed: str) -> dict:
    key = f"_manifests/dcir/{table}/FLX_DIS_DTD={partition}.json"
    return {
        "table": table,
        "partition_column": "FLX_DIS_DTD",
        "partition": partition,
        "manifest_key": key,
        "manifest_sha256": hashlib.sha256(seed.encode()).hexdigest(),
        "rows": 300,
        "bytes": 4096,
        "files": [
            {
                "key": f"dcir/{table}/FLX_DIS_DTD={partition}/part-00000.parquet",
                "size": 4096,
                "sha256": hashlib.sha256(f"{seed}-file".encode()).hexdigest(),
                "rows": 300,
            }
        ],
    }


ENTRIES = [
    _entry("ER_PRS_F", "2024-02-01", "b"),
    _entry("ER_PHA_F", "2024-01-01", "c"),
    _entry("ER_PRS_F", "2024-01-01", "a"),
]


def _record(signer: Signer = SIGNER) -> dict:
    linked, root = chain_entries("dcir", ENTRIES)
    history = seal_history(
        "dcir",
        [],
        {"action": "cutover", "at": "2025-01-01T00:00:00+00:00", "by": "alice", "root_sha256": root},
        signer,
    )
    return {
        "domain": "dcir",
        "state": "cut_over",
        **_totals(linked),
        "root_sha256": root,
        "signing": _signing("dcir", root, signer),
        "entries": linked,
        "history": history,
    }


def _history(record: dict, signer: Signer = SIGNER) -> list[dict]:
    """The record's history with a rollback and a second cutover appended."""
    root = record["root_sha256"]
    history = seal_history(
        "dcir",
        record["history"],
        {"action": "rollback", "by": "bob", "reason": "late rows", "root_sha256": root},
        signer,
    )
    return seal_history("dcir", history, {"action": "cutover", "by": "carol", "root_sha256": root}, signer)


def test_the_chain_is_in_key_order_and_its_root_does_not_depend_on_input_order():
    linked, root = chain_entries("dcir", ENTRIES)
    assert [e["manifest_key"] for e in linked] == sorted(e["manifest_key"] for e in ENTRIES)
    assert chain_entries("dcir", list(reversed(ENTRIES)))[1] == root
    assert linked[-1]["link_sha256"] == root
    assert chain_entries("pmsi_mco", ENTRIES)[1] != root, "the domain is part of the chain"


def test_the_chain_follows_its_documented_definition():
    linked, root = chain_entries("dcir", ENTRIES)
    link = hashlib.sha256(b"hdh-migration cutover chain v1\ndcir").hexdigest()
    for entry in linked:
        body = {k: v for k, v in entry.items() if k != "link_sha256"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        link = hashlib.sha256(link.encode() + b"\n" + canonical).hexdigest()
        assert entry["link_sha256"] == link
    assert link == root


def test_an_intact_record_has_no_problem():
    assert check_record(_record()) == []
    assert check_signatures(_record(), PINNED) == []


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda r: r["entries"][1].update(manifest_sha256="0" * 64), id="manifest hash replaced"),
        pytest.param(lambda r: r["entries"][0]["files"][0].update(size=1), id="file size edited"),
        pytest.param(lambda r: r["entries"][2]["files"].pop(), id="file dropped"),
        pytest.param(lambda r: r["entries"].pop(1), id="partition dropped"),
        pytest.param(lambda r: r["entries"].reverse(), id="entries reordered"),
        pytest.param(lambda r: r.update(root_sha256="f" * 64), id="root replaced"),
    ],
)
def test_any_edit_of_the_entries_or_root_is_detected(tamper):
    record = _record()
    tamper(record)
    assert check_record(record), "the edit went unnoticed"


def test_an_entry_rechained_by_an_attacker_still_changes_the_root_sealed_in_the_history():
    record = _record()
    edited = copy.deepcopy(record["entries"])
    edited[0]["rows"] += 1
    record["entries"], record["root_sha256"] = chain_entries("dcir", edited)
    record.update(_totals(record["entries"]))
    problems = check_record(record)
    assert problems == [
        "domain=dcir object=_cutover/dcir.json: the last cutover in the history does not seal the record's root hash"
    ]


def test_the_history_is_a_chain_each_entry_sealing_the_previous_one():
    record = _record()
    history = _history(record)
    assert [h["previous_sha256"] for h in history] == [None, history[0]["entry_sha256"], history[1]["entry_sha256"]]
    assert history[:1] == record["history"], "appending leaves earlier entries untouched"
    assert check_record({**record, "history": history}) == []
    assert check_signatures({**record, "history": history}, PINNED) == []
    assert {h["signed_by"] for h in history} == {fingerprint(SIGNER.public_key)}


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: h.pop(1), id="rollback erased"),
        pytest.param(lambda h: h[1].update(reason="nothing to see"), id="reason rewritten"),
        pytest.param(lambda h: h[0].update(by="mallory"), id="decider rewritten"),
        pytest.param(lambda h: h.insert(0, h.pop()), id="entries reordered"),
    ],
)
def test_any_edit_of_the_history_is_detected(tamper):
    record = _record()
    history = _history(record)
    tamper(history)
    problems = check_record({**record, "history": history})
    assert any("append-only history" in p for p in problems), problems


def _rewritten(record: dict, signer: Signer | None) -> dict:
    """The attacker's record: an entry edited, the chain, root, totals and the whole history recomputed,
    and, with ``signer``, every signature made anew with that key."""
    forged = copy.deepcopy(record)
    edited = forged["entries"]
    edited[0]["rows"] += 1
    forged["entries"], forged["root_sha256"] = chain_entries("dcir", edited)
    forged.update(_totals(forged["entries"]))
    history = []
    for entry in record["history"]:
        body = {
            k: v for k, v in entry.items() if k not in ("previous_sha256", "signed_by", "entry_sha256", "signature")
        }
        body["root_sha256"] = forged["root_sha256"]
        history = seal_history("dcir", history, body, signer or ATTACKER)
        if signer is None:  # no key at all: the old signatures are kept
            history[-1]["signature"] = entry["signature"]
            history[-1]["signed_by"] = entry["signed_by"]
    forged["history"] = history
    if signer is not None:
        forged["signing"] = _signing("dcir", forged["root_sha256"], signer)
    return forged


def test_a_record_rewritten_without_the_key_passes_the_chain_but_not_the_signatures():
    forged = _rewritten(_record(), signer=None)
    problems = check_signatures(forged, PINNED)
    assert f"the root hash {forged['root_sha256']} is not signed by a pinned key" in problems[0]
    assert "history entry 0 (cutover at 2025-01-01T00:00:00+00:00) is not signed by a pinned key" in problems[-1]


def test_a_record_re_signed_with_another_key_is_refused_against_the_pinned_key():
    forged = _rewritten(_record(), signer=ATTACKER)
    assert check_signatures(forged, pinned_public_keys(ATTACKER.public_key)) == [], "self-consistent for its own key"
    problems = check_signatures(forged, PINNED)
    assert f"names the signing key {fingerprint(ATTACKER.public_key)}, which is not pinned" in problems[0]
    assert len(problems) == 3, problems  # the key, the root, the one history entry


def test_each_history_entry_signature_is_checked_one_old_entry_tampered():
    def reseal(entry: dict) -> None:
        body = {k: v for k, v in entry.items() if k not in ("entry_sha256", "signature")}
        entry["entry_sha256"] = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()

    record = _record()
    history = _history(record)
    history[1]["reason"] = "rewritten"
    reseal(history[1])
    history[2]["previous_sha256"] = history[1]["entry_sha256"]  # the chain mended after it
    reseal(history[2])
    assert check_record({**record, "history": history}) == [], "the hash chain alone is satisfied"
    problems = check_signatures({**record, "history": history}, PINNED)
    assert len(problems) == 2, problems
    assert "history entry 1 (rollback at None) is not signed by a pinned key" in problems[0]
    assert "history entry 2 (cutover at None) is not signed by a pinned key" in problems[1]


def test_an_unsigned_record_and_a_missing_pinned_key_are_refused(monkeypatch):
    from hdh_migration.signing import SigningKeyError

    monkeypatch.delenv("HDH_CUTOVER_PUBLIC_KEY", raising=False)
    unsigned = {k: v for k, v in _record().items() if k != "signing"}
    (problem,) = check_signatures(unsigned, PINNED)
    assert "the record carries no signature" in problem
    with pytest.raises(SigningKeyError, match="no pinned cutover public key: set HDH_CUTOVER_PUBLIC_KEY"):
        pinned_public_keys("")
    with pytest.raises(SigningKeyError, match="not the base64 of 32 bytes"):
        pinned_public_keys("not-a-key")


def test_a_rotated_key_verifies_its_own_entries_when_both_keys_are_pinned():
    record = _record()
    history = _history(record, signer=ATTACKER)  # stands in for the next key
    rotated = {**record, "history": history, "signing": _signing("dcir", record["root_sha256"], ATTACKER)}
    assert len(check_signatures(rotated, PINNED)) == 4
    assert check_signatures(rotated, pinned_public_keys(f"{SIGNER.public_key},{ATTACKER.public_key}")) == []


def test_the_signer_never_shows_its_seed():
    import base64

    assert base64.b64encode(SIGNER._seed).decode() not in repr(SIGNER) + str(SIGNER)
