"""The partition manifest: the commit point, and what every reader trusts about a committed partition.

``_manifests/<domain>/<TABLE>/<PARTCOL>=<value>.json`` names the committed set of objects (each with
its key, size, sha256 and rows), the source objects and ETags it came from, the rows, the bytes, the
content fingerprint and its algorithm, the validation verdict and the waivers. ``Manifest`` wraps
the JSON body: it is built once, by the commit, and read, compared and checked through its methods.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from hdh_migration.catalogue import Table
from hdh_migration.layout import manifest_key

# 2: records content_fingerprint_algorithm and names per-run final keys (1: the numpy NH hash, unrecorded).
MANIFEST_VERSION = 2


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    body: dict

    @classmethod
    def build(cls, table: Table, planned: dict, results: list[dict], verdict, waivers, run_id: str) -> Manifest:
        """The manifest of a run's checked objects (``results``: transfer_object's, one per object)."""
        from hdh_migration.integrity import Fingerprint, fingerprint_algorithm

        fingerprint = Fingerprint()
        for result in results:
            fingerprint.merge(Fingerprint.parse(result["source_fingerprint"]))
        return cls(
            {
                "manifest_version": MANIFEST_VERSION,
                "domain": table.domain,
                "table": table.name,
                "partition_column": table.partition_column,
                "partition": planned["partition"],
                "files": [
                    {
                        "key": r["target"]["key"],
                        "size": r["target"]["size"],
                        "sha256": r["target"]["sha256"],
                        "rows": r["rows"],
                        "source": r["source"]["name"],  # the source object it was copied from
                    }
                    for r in results
                ],
                "rows": sum(r["rows"] for r in results),
                "bytes": sum(r["target"]["size"] for r in results),
                "content_fingerprint": fingerprint.hexdigest(),
                "content_fingerprint_algorithm": fingerprint_algorithm(),
                "source_objects": [r["source"] for r in sorted(results, key=lambda r: r["source"]["name"])],
                "validation": verdict,
                "waivers": waivers,
                "run_id": run_id,
                "started_at": planned["started_at"],
                "committed_at": utcnow(),
            }
        )

    @classmethod
    def load(cls, target, table: Table, partition: str) -> Manifest | None:
        body = target.get_json(cls.key_for(table, partition))
        return cls(body) if body is not None else None

    @classmethod
    def read(cls, target, key: str) -> tuple[Manifest, str] | None:
        """The manifest stored at ``key`` and the sha256 of its bytes as stored (what the ledger and the
        cutover record pin); None if there is none."""
        from hdh_migration.integrity import sha256_stream

        data = target.read(key)
        if data is None:
            return None
        digest = sha256_stream()
        digest.update(data)
        return cls(json.loads(data)), digest.hexdigest()

    @staticmethod
    def key_for(table: Table, partition: str) -> str:
        return manifest_key(table.domain, table.name, table.partition_column, partition)

    @property
    def entries(self) -> list[dict]:
        """The committed set's entries: key, size, sha256, rows, and (version 2) the source object's name."""
        return self.body["files"]

    @property
    def files(self) -> dict[str, str]:
        """The committed set: each object's key and sha256."""
        return {f["key"]: f["sha256"] for f in self.entries}

    @property
    def source_objects(self) -> list[dict]:
        """The source objects it was copied from: name, size, ETag, sha256."""
        return self.body["source_objects"]

    @property
    def source_etags(self) -> dict[str, str]:
        return {o["name"]: o["etag"] for o in self.source_objects}

    @property
    def table(self) -> str:
        return self.body["table"]

    @property
    def partition(self) -> str:
        return self.body["partition"]

    @property
    def rows(self) -> int:
        return self.body["rows"]

    @property
    def bytes(self) -> int:
        return self.body["bytes"]

    @property
    def run_id(self) -> str:
        return self.body["run_id"]

    def source_changes(self, live: dict[str, str]) -> dict[str, list[str]]:
        """The source objects ``added``, ``removed`` and ``changed`` (another ETag) in the ``live`` listing
        (name -> ETag) since the commit."""
        recorded = self.source_etags
        return {
            "added": sorted(set(live) - set(recorded)),
            "removed": sorted(set(recorded) - set(live)),
            "changed": sorted(n for n in live if n in recorded and recorded[n] != live[n]),
        }

    def source_identities(self) -> dict[str, dict | None]:
        """Each landed file's source object (name, ETag, sha256): the one its entry names (``source``); for
        a manifest of version 1 (entries without it, keys without a run token), the source object of the
        same part name (``layout.target_key``)."""
        by_name = {o["name"]: o for o in self.body.get("source_objects", [])}
        by_stem = {PurePosixPath(name).stem: o for name, o in by_name.items()}
        identities = {}
        for f in self.entries:
            obj = by_name.get(f["source"]) if "source" in f else by_stem.get(PurePosixPath(f["key"]).stem)
            identities[f["key"]] = {k: obj.get(k) for k in ("name", "etag", "sha256")} if obj else None
        return identities

    def committed_fields(self, manifest_sha256: str) -> dict:
        """The committed partition's ledger fields, all from the manifest: the commit and ``reindex`` write
        the same. Only ``attempts`` (how many runs tried) and ``updated_at`` (when the row was written) are
        the ledger's own and cannot be rebuilt from the store."""
        duration = dt.datetime.fromisoformat(self.body["committed_at"]) - dt.datetime.fromisoformat(
            self.body["started_at"]
        )
        return {
            "run_id": self.run_id,
            "rows": self.rows,
            "bytes": self.bytes,
            "duration_s": duration.total_seconds(),
            "manifest_sha256": manifest_sha256,
            "source_etags": self.source_etags,
            "last_error": None,
        }

    def landed_problems(self, target) -> list[tuple[dict, str]]:
        """Each entry whose object in the store does not match it, with ``missing`` or ``differs``."""
        return [(entry, problem) for entry in self.entries if (problem := landed_problem(target, entry))]

    def problems(self, target, source, table: Table) -> list[str]:
        """What differs between the manifest, the live source listing and the landed objects."""
        listed = source.list_objects(table.source_dir(self.partition), table.source_extension)
        problems = []
        if any(self.source_changes({o.name: o.etag for o in listed}).values()):
            problems.append("the Azure source changed since the commit; the next run re-transfers it")
        for entry, problem in self.landed_problems(target):
            problems.append(
                f"{entry['key']} is missing"
                if problem == "missing"
                else f"{entry['key']} differs from its manifest entry"
            )
        if sum(f["rows"] for f in self.entries) != self.rows:
            problems.append("file row counts do not add up to the partition's")
        return problems


def landed_problem(target, entry: dict) -> str | None:
    """Whether the object stored at ``entry["key"]`` matches the entry (its size and the sha256 recorded at
    upload): None, ``missing`` or ``differs``. A manifest entry and a cutover record's file entry alike."""
    from hdh_migration.target import SHA256_METADATA

    head = target.head(entry["key"])
    if head is None:
        return "missing"
    if head["ContentLength"] != entry["size"] or head["Metadata"].get(SHA256_METADATA) != entry["sha256"]:
        return "differs"
    return None
