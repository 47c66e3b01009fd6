"""Proofs that what landed equals what left: checksums, content fingerprints, key hashes.

- ``sha256`` of bytes as they stream (the one checksum helper of the project);
- an order-independent content fingerprint of record batches: two 64-bit sums of keyed per-row
  hashes (see ``RowHasher``), plus the row count. It is equal for the same rows in any order and any
  file split, so a CSV source converted to parquet reconciles value for value with its source;
- primary-key hashes, spilled to disk in buckets so uniqueness across all files of a partition is
  checked in bounded memory.

The row hashes are polars' compiled ``DataFrame.hash_rows`` (about 5 CPU s per GB of parquet here,
for both lanes, against 40 to 70 for the numpy hash it replaced). Polars promises the same values
only within one of its versions, so the manifest records the algorithm, its version and the polars
version (``FINGERPRINT_ALGORITHM``), and tests/unit/test_integrity.py pins the values: a polars
upgrade that changes them fails that test before it reaches a deployment.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdh_migration.errors import Where

_U64 = 1 << 64
FINGERPRINT_KEY_SETTING = "HDH_FINGERPRINT_KEY"
# The local profiles' key (scripts/env.sh): public, so never a deployment's (preflight refuses it).
LOCAL_FINGERPRINT_KEY = "hdh-local-content-fingerprint-key"
_MIN_KEY_CHARS = 16
FINGERPRINT_NAME = "polars-hash-rows-2x64"
FINGERPRINT_VERSION = 2  # 1: the numpy NH hash of manifest_version 1 (no algorithm recorded)


def sha256_stream():
    return hashlib.sha256()


def sha256_file(path: str | Path, chunk_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_algorithm() -> dict:
    """The content fingerprint's algorithm as a manifest records it."""
    import polars

    return {"name": FINGERPRINT_NAME, "version": FINGERPRINT_VERSION, "polars": polars.__version__}


def check_fingerprint_algorithm(recorded: dict | None, ref: Where) -> None:
    """Refuse to compare a fingerprint computed now with one ``recorded`` by another algorithm.

    ``recorded`` is a manifest's ``content_fingerprint_algorithm`` (None: a manifest of version 1,
    fingerprinted with the numpy NH hash this version no longer computes). Verify never needs this:
    it proves bytes by sha256; only a recomputation of the rows' fingerprint does.
    """
    from hdh_migration.errors import ConfigurationError

    current = fingerprint_algorithm()
    if recorded == current:
        return
    what = "the numpy NH hash (manifest version 1)" if recorded is None else f"{recorded}"
    raise ConfigurationError(
        f"{ref}: the content fingerprint was recorded with {what}, and this version computes {current} "
        "(rule: fingerprints compare only under the same algorithm). Its objects still verify by sha256; "
        "to compare rows, re-transfer the partition with force, which fingerprints it anew",
        ref=ref,
    )


class RowHasher:
    """Two keyed 64-bit hashes per row of Arrow record batches: polars' ``hash_rows`` with two seeds.

    The seeds come from ``HDH_FINGERPRINT_KEY``, a deployment secret, the same on every worker: with
    a known seed, rows that collide could be crafted. Two seeds give two lanes (a collision of both
    about 2^-128 by chance). Dictionary columns are decoded first, so a dictionary-encoded source and
    its plain copy hash alike; string and large string, binary and large binary, hash alike too.
    """

    def __init__(self, key: bytes):
        material = hashlib.shake_256(key + b"/rows").digest(16)
        self.seeds = (int.from_bytes(material[:8], "little"), int.from_bytes(material[8:], "little"))

    @staticmethod
    def frame(batch):
        """The batch as a polars DataFrame (dictionaries decoded); made once, hashed as often as needed."""
        import polars as pl
        import pyarrow as pa

        if any(pa.types.is_dictionary(column.type) for column in batch.columns):
            batch = pa.record_batch(
                [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns],
                names=batch.schema.names,
            )
        return pl.from_arrow(batch, rechunk=False)

    def row_hashes(self, frame):
        """(first, second) uint64 numpy arrays: the two lanes of every row's hash of a polars frame."""
        return tuple(frame.hash_rows(seed=seed).to_numpy() for seed in self.seeds)


@functools.lru_cache(maxsize=4)
def _hasher(secret: str) -> RowHasher:
    return RowHasher(secret.encode())


def row_hasher() -> RowHasher:
    """The hasher keyed with this deployment's ``HDH_FINGERPRINT_KEY``."""
    secret = os.environ.get(FINGERPRINT_KEY_SETTING, "")
    if len(secret) < _MIN_KEY_CHARS:
        from hdh_migration.errors import ConfigurationError

        raise ConfigurationError(
            f"{FINGERPRINT_KEY_SETTING} is {'too short' if secret else 'not set'}: the content fingerprints "
            f"need a secret key of at least {_MIN_KEY_CHARS} characters, the same on every worker. Set it "
            "in .env for docker-compose (see .env.example); scripts/prod.sh generates one into its secrets "
            "and scripts/env.sh sets a local one"
        )
    return _hasher(secret)


def _sum(values) -> int:
    import numpy as np

    return int(np.add.reduce(values, dtype=np.uint64))


@dataclass
class Fingerprint:
    rows: int = 0
    sum1: int = 0
    sum2: int = 0

    def update(self, batch, frame=None) -> None:
        """Add a record batch's rows; ``frame``: the batch already made a polars frame (``RowHasher.frame``)."""
        if batch.num_rows == 0:
            return
        hasher = row_hasher()
        first, second = hasher.row_hashes(frame if frame is not None else hasher.frame(batch))
        self.rows += batch.num_rows
        self.sum1 = (self.sum1 + _sum(first)) % _U64
        self.sum2 = (self.sum2 + _sum(second)) % _U64

    def merge(self, other: Fingerprint) -> None:
        self.rows += other.rows
        self.sum1 = (self.sum1 + other.sum1) % _U64
        self.sum2 = (self.sum2 + other.sum2) % _U64

    def hexdigest(self) -> str:
        return f"{self.rows:x}-{self.sum1:016x}{self.sum2:016x}"

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        rows, sums = text.split("-")
        return cls(rows=int(rows, 16), sum1=int(sums[:16], 16), sum2=int(sums[16:], 16))


@dataclass
class KeyHashSpill:
    """Primary-key hashes of one object, bucketed by their top bits into local files.

    The partition check loads one bucket of every object at a time, so its memory is the partition's
    key count divided by the bucket count, which the plan sizes from the partition's bytes.
    """

    directory: Path
    columns: list[str]
    buckets: int
    _handles: dict = field(default_factory=dict)
    _null_rows: int = 0

    def update(self, batch, frame=None) -> None:
        """Spill a record batch's key hashes; ``frame``: the batch already made a polars frame."""
        import numpy as np

        if batch.num_rows == 0:
            return
        keys = batch.select(self.columns)
        null_mask = None
        for column in keys.columns:
            if column.null_count:
                mask = column.is_null().to_numpy(zero_copy_only=False)
                null_mask = mask if null_mask is None else (null_mask | mask)
        if null_mask is not None:
            self._null_rows += int(null_mask.sum())
        hasher = row_hasher()
        frame = hasher.frame(keys) if frame is None else frame.select(self.columns)
        first, second = hasher.row_hashes(frame)
        pairs = np.empty((len(first), 2), dtype=np.uint64)
        pairs[:, 0] = first
        pairs[:, 1] = second
        bucket_of = (first % np.uint64(self.buckets)).astype(np.int64)
        for bucket in np.unique(bucket_of):
            handle = self._handles.get(int(bucket))
            if handle is None:
                handle = open(self.bucket_path(int(bucket)), "wb")  # noqa: SIM115 - closed in close()
                self._handles[int(bucket)] = handle
            handle.write(pairs[bucket_of == bucket].tobytes())

    def bucket_path(self, bucket: int) -> Path:
        return self.directory / f"keys-{bucket:05d}.bin"

    def close(self) -> dict[int, Path]:
        for handle in self._handles.values():
            handle.close()
        return {bucket: self.bucket_path(bucket) for bucket in sorted(self._handles)}

    @property
    def null_rows(self) -> int:
        return self._null_rows


def count_duplicate_keys(chunks) -> int:
    """How many rows repeat a key already seen, over byte chunks of (uint64, uint64) pairs of one bucket."""
    import numpy as np

    arrays = [np.frombuffer(chunk, dtype=np.uint64).reshape(-1, 2) for chunk in chunks if chunk]
    if not arrays:
        return 0
    pairs = np.concatenate(arrays)
    # Sorting the first lane alone is ten times faster than sorting the pairs: only the rows whose
    # first lane repeats (duplicates, or a rare 64-bit collision) have their pairs compared.
    first = np.sort(pairs[:, 0])
    repeated = first[1:][first[1:] == first[:-1]]
    if not repeated.size:
        return 0
    candidates = pairs[np.isin(pairs[:, 0], repeated)]
    view = np.ascontiguousarray(candidates).view([("a", np.uint64), ("b", np.uint64)]).ravel()
    view.sort()
    return int(np.count_nonzero(view[1:] == view[:-1]))


def integrity_checks(target, table, buckets: int, results: list[dict], all_uploaded: bool) -> tuple[int, list[dict]]:
    """A table partition's whole-partition checks, from its objects' transfer results: the rows, and the
    checks as expectation results (row counts, fingerprint, at least one row, primary-key uniqueness)."""
    from hdh_migration.errors import Where

    for result in results:  # a result of an older worker (a retry across an upgrade)
        check_fingerprint_algorithm(
            result.get("fingerprint_algorithm"), Where(table.domain, table.name, result["partition"])
        )
    source_fp, target_fp = Fingerprint(), Fingerprint()
    for result in results:
        source_fp.merge(Fingerprint.parse(result["source_fingerprint"]))
        target_fp.merge(Fingerprint.parse(result["target_fingerprint"]))
    rows = sum(r["rows"] for r in results)
    checks = [
        {
            "type": "expect_table_row_count_to_equal_source",
            "kwargs": {},
            "success": rows == source_fp.rows == target_fp.rows,
            "result": {"element_count": rows, "source_rows": source_fp.rows, "target_rows": target_fp.rows},
        },
        {
            "type": "expect_partition_content_fingerprint_to_match_source",
            "kwargs": {},
            "success": source_fp.hexdigest() == target_fp.hexdigest(),
            "result": {"element_count": rows},
        },
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": 1},
            "success": rows > 0,
            "result": {"observed_value": rows},
        },
    ]
    if table.primary_key and all_uploaded:
        checks.append(_unique_key_check(target, table, buckets, results, rows))
    return rows, checks


def _unique_key_check(target, table, buckets: int, results: list[dict], rows: int) -> dict:
    """Primary-key uniqueness across every file of the partition, one hash bucket at a time."""
    from concurrent.futures import ThreadPoolExecutor

    duplicates = 0
    with ThreadPoolExecutor(max_workers=target.settings.concurrency) as pool:  # small files: fetched side by side
        for bucket in range(buckets):
            keys = [result["key_files"][str(bucket)] for result in results if str(bucket) in result["key_files"]]
            duplicates += count_duplicate_keys(pool.map(target.get_bytes, keys))
    null_rows = sum(r["key_null_rows"] for r in results)
    return {
        "type": "expect_compound_columns_to_be_unique_across_partition",
        "kwargs": {"column_list": list(table.primary_key)},
        "success": duplicates == 0 and null_rows == 0,
        "result": {"element_count": rows, "unexpected_count": duplicates, "missing_count": null_rows},
    }
