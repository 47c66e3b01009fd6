"""The partition manifest: the commit point, and what every reader trusts about a committed partition.

``_manifests/<domain>/<TABLE>/<PARTCOL>=<value>.json`` names the committed set of objects (each with
its key, size, sha256 and rows), the source objects and ETags it came from, the rows, the bytes, the
content fingerprint and its algorithm, the validation verdict and the waivers. ``Manifest`` wraps
the JSON body: it is built once, by the commit, and read, compared and checked through its methods.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

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

    @staticmethod
    def key_for(table: Table, partition: str) -> str:
        return manifest_key(table.domain, table.name, table.partition_column, partition)

    @property
    def files(self) -> dict[str, str]:
        """The committed set: each object's key and sha256."""
        return {f["key"]: f["sha256"] for f in self.body["files"]}

    @property
    def source_etags(self) -> dict[str, str]:
        return {o["name"]: o["etag"] for o in self.body["source_objects"]}

    @property
    def rows(self) -> int:
        return self.body["rows"]

    @property
    def bytes(self) -> int:
        return self.body["bytes"]

    @property
    def run_id(self) -> str:
        return self.body["run_id"]

    def problems(self, target, source, table: Table) -> list[str]:
        """What differs between the manifest, the live source listing and the landed objects."""
        from hdh_migration.target import SHA256_METADATA

        partition = self.body["partition"]
        listed = source.list_objects(table.source_dir(partition), table.source_extension)
        problems = []
        if {o.name: o.etag for o in listed} != self.source_etags:
            problems.append("the Azure source changed since the commit; the next run re-transfers it")
        for entry in self.body["files"]:
            head = target.head(entry["key"])
            if head is None:
                problems.append(f"{entry['key']} is missing")
            elif head["ContentLength"] != entry["size"] or head["Metadata"].get(SHA256_METADATA) != entry["sha256"]:
                problems.append(f"{entry['key']} differs from its manifest entry")
        if sum(f["rows"] for f in self.body["files"]) != self.rows:
            problems.append("file row counts do not add up to the partition's")
        return problems
