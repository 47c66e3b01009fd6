"""Proofs that what landed equals what left: checksums, content fingerprints, key hashes.

- ``sha256`` of bytes as they stream (the one checksum helper of the project);
- an order-independent content fingerprint of record batches: two 64-bit sums of per-row hashes,
  plus the row count. It is equal for the same rows in any order and any file split, so a CSV
  source converted to parquet reconciles value for value with its source;
- primary-key hashes, spilled to disk in buckets so uniqueness across all files of a partition is
  checked in bounded memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

# Two independent hash keys give 128-bit row hashes: collisions stay negligible at SNDS scale.
_HASH_KEYS = ("hdh-migration-k1", "hdh-migration-k2")
_U64 = 1 << 64


def sha256_stream():
    return hashlib.sha256()


def sha256_file(path: str | Path, chunk_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _row_hashes(batch, columns: list[str] | None = None):
    """Two uint64 hashes per row of an Arrow record batch, over the given columns (all by default)."""
    import pandas as pd

    if columns is not None:
        batch = batch.select(columns)
    frame = batch.to_pandas(date_as_object=False, timestamp_as_object=False, types_mapper=_nullable_types)
    frame.columns = range(len(frame.columns))  # names are part of the schema check, not of the content
    return tuple(pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy() for key in _HASH_KEYS)


def _nullable_types(arrow_type):
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype()
    return None


@dataclass
class Fingerprint:
    rows: int = 0
    sum1: int = 0
    sum2: int = 0

    def update(self, batch) -> None:
        import numpy as np

        if batch.num_rows == 0:
            return
        first, second = _row_hashes(batch)
        self.rows += batch.num_rows
        self.sum1 = (self.sum1 + int(np.add.reduce(first, dtype=np.uint64))) % _U64
        self.sum2 = (self.sum2 + int(np.add.reduce(second, dtype=np.uint64))) % _U64

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

    def update(self, batch) -> None:
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
        first, second = _row_hashes(keys)
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
    view = pairs.view([("a", np.uint64), ("b", np.uint64)]).ravel()
    view.sort()
    return int(np.count_nonzero(view[1:] == view[:-1]))
