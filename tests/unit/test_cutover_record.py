"""The cutover record's hash chain and history: any later edit is detectable (no servers)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from hdh_migration.cutover import chain_entries, check_record, seal_history


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


def _record() -> dict:
    linked, root = chain_entries("dcir", ENTRIES)
    history = seal_history(
        [], {"action": "cutover", "at": "2025-01-01T00:00:00+00:00", "by": "alice", "root_sha256": root}
    )
    return {"domain": "dcir", "state": "cut_over", "root_sha256": root, "entries": linked, "history": history}


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
    problems = check_record(record)
    assert problems == [
        "domain=dcir object=_cutover/dcir.json: the last cutover in the history does not seal the record's root hash"
    ]


def test_the_history_is_a_chain_each_entry_sealing_the_previous_one():
    record = _record()
    root = record["root_sha256"]
    history = seal_history(
        record["history"], {"action": "rollback", "by": "bob", "reason": "late rows", "root_sha256": root}
    )
    history = seal_history(history, {"action": "cutover", "by": "carol", "root_sha256": root})
    assert [h["previous_sha256"] for h in history] == [None, history[0]["entry_sha256"], history[1]["entry_sha256"]]
    assert history[:1] == record["history"], "appending leaves earlier entries untouched"
    assert check_record({**record, "history": history}) == []


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
    root = record["root_sha256"]
    history = seal_history(
        record["history"], {"action": "rollback", "by": "bob", "reason": "late rows", "root_sha256": root}
    )
    history = seal_history(history, {"action": "cutover", "by": "carol", "root_sha256": root})
    tamper(history)
    problems = check_record({**record, "history": history})
    assert any("append-only history" in p for p in problems), problems
