"""The manifest is read through one type: its files and sources, what changed since, whether what landed matches."""

from __future__ import annotations

import hashlib
import json

from hdh_migration.manifest import Manifest, landed_problem
from hdh_migration.target import SHA256_METADATA

SHA_A, SHA_B = "a" * 64, "b" * 64


def _v1() -> dict:
    """A manifest of version 1: entries name no source object, keys carry no run token, no algorithm."""
    return {
        "domain": "dcir",
        "table": "ER_PRS_F",
        "partition_column": "FLX_DIS_DTD",
        "partition": "2024-01-01",
        "files": [
            {"key": "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-0.parquet", "size": 10, "sha256": SHA_A, "rows": 3},
            {"key": "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-1.parquet", "size": 20, "sha256": SHA_B, "rows": 4},
        ],
        "rows": 7,
        "bytes": 30,
        "content_fingerprint": "f",
        "source_objects": [
            {"name": "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-0.parquet", "size": 10, "etag": "e0", "sha256": SHA_A},
            {"name": "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-1.parquet", "size": 20, "etag": "e1", "sha256": SHA_B},
        ],
        "validation": None,
        "waivers": [],
        "run_id": "manual__1",
        "started_at": "2024-02-01T00:00:00+00:00",
        "committed_at": "2024-02-01T00:01:30+00:00",
    }


def test_a_version_1_manifest_still_loads_and_names_its_sources_by_part_name():
    manifest = Manifest(_v1())
    assert manifest.files == {f["key"]: f["sha256"] for f in _v1()["files"]}
    assert manifest.source_etags == {o["name"]: o["etag"] for o in _v1()["source_objects"]}
    identities = manifest.source_identities()
    assert [i["etag"] for i in identities.values()] == ["e0", "e1"]
    fields = manifest.committed_fields("m" * 64)
    assert (fields["rows"], fields["bytes"], fields["duration_s"], fields["run_id"]) == (7, 30, 90.0, "manual__1")
    assert fields["source_etags"] == manifest.source_etags and fields["last_error"] is None


def test_source_changes_since_the_commit():
    manifest = Manifest(_v1())
    names = sorted(manifest.source_etags)
    live = {names[0]: "e0-new", "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-9.parquet": "e9"}
    assert manifest.source_changes(live) == {
        "added": ["dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-9.parquet"],
        "removed": [names[1]],
        "changed": [names[0]],
    }
    assert not any(manifest.source_changes(manifest.source_etags).values())


class _Store:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def head(self, key):
        if key not in self.objects:
            return None
        data = self.objects[key]
        return {"ContentLength": len(data), "Metadata": {SHA256_METADATA: hashlib.sha256(data).hexdigest()}}

    def read(self, key):
        return self.objects.get(key)


def test_an_object_matches_its_entry_by_size_and_recorded_sha256():
    data = b"0123456789"
    entry = {"key": "k", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert landed_problem(_Store({"k": data}), entry) is None
    assert landed_problem(_Store({}), entry) == "missing"
    assert landed_problem(_Store({"k": b"9876543210"}), entry) == "differs"
    manifest = Manifest({**_v1(), "files": [{**entry, "rows": 1}, {**entry, "key": "gone", "rows": 1}]})
    assert [(e["key"], p) for e, p in manifest.landed_problems(_Store({"k": data}))] == [("gone", "missing")]


def test_read_gives_the_manifest_and_the_sha256_of_its_stored_bytes():
    stored = json.dumps(_v1()).encode()
    manifest, sha256 = Manifest.read(_Store({"m.json": stored}), "m.json")
    assert manifest.body == _v1() and sha256 == hashlib.sha256(stored).hexdigest()
    assert Manifest.read(_Store({}), "m.json") is None
