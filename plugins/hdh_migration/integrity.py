"""Proofs that what landed equals what left: checksums, content fingerprints, key hashes.

- ``sha256`` of bytes as they stream (the one checksum helper of the project);
- an order-independent content fingerprint of record batches: two 64-bit sums of keyed per-row
  hashes (see ``_RowHasher``), plus the row count. It is equal for the same rows in any order and any file split, so a CSV
  source converted to parquet reconciles value for value with its source;
- primary-key hashes, spilled to disk in buckets so uniqueness across all files of a partition is
  checked in bounded memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

_U64 = 1 << 64


def sha256_stream():
    return hashlib.sha256()


def sha256_file(path: str | Path, chunk_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# Strings up to this many UTF-8 bytes are hashed in numpy; longer ones (rare: free text) by BLAKE2b.
_SHORT_STRING_BYTES = 256
_MASK32 = 0xFFFFFFFF
FINGERPRINT_KEY_SETTING = "HDH_FINGERPRINT_KEY"
# The local profiles' key (scripts/env.sh): public, so never a deployment's (preflight refuses it).
LOCAL_FINGERPRINT_KEY = "hdh-local-content-fingerprint-key"
_MIN_KEY_CHARS = 16


class _RowHasher:
    """Two keyed 64-bit hashes per row of Arrow record batches, vectorised in numpy.

    Every column is encoded as little-endian 64-bit words (the value's bits for fixed-width types,
    the UTF-8 bytes zero-padded plus the length for strings), and each pair of 32-bit halves is
    hashed by NH, the universal hash of UMAC: ``((lo + k1) mod 2^32) * ((hi + k2) mod 2^32)``, summed
    mod 2^64 over the row, with secret keys per column and word position. Nulls take a secret value
    of their column. Two independent key sets give two lanes (collision chance about 2^-64), and a
    keyed mixer finishes each row hash, so the sum over rows is not a linear function of the values.
    Every column type is keyed the same way, numbers as much as strings.

    The key comes from ``HDH_FINGERPRINT_KEY``, a deployment secret, the same on every worker: a
    public key would let whoever knows it craft rows that collide. There is no built-in default:
    scripts/env.sh sets a local one, scripts/prod.sh generates one into its secrets, and
    docker-compose.yml requires it in ``.env``.
    """

    def __init__(self, key: bytes):
        self._master = key
        self._keys: dict[tuple, object] = {}
        final = hashlib.shake_256(key + b"/final").digest(16)
        self._final = (int.from_bytes(final[:8], "little"), int.from_bytes(final[8:], "little"))

    def keys(self, column: int, kind: str, words: int):
        """uint32 keys (words, 2 halves, 2 lanes) for a column's word positions."""
        import numpy as np

        cached = self._keys.get((column, kind))
        if cached is None or cached.shape[0] < words:
            size = max(words, 4 if cached is None else 2 * cached.shape[0])
            material = hashlib.shake_256(self._master + f"/{column}/{kind}".encode()).digest(16 * size)
            cached = np.frombuffer(material, dtype="<u4").reshape(size, 2, 2)
            self._keys[(column, kind)] = cached
        return cached[:words]

    def row_hashes(self, batch):
        """(2, rows) uint64: the two lanes of every row's hash."""
        import numpy as np

        total = np.zeros((2, batch.num_rows), dtype=np.uint64)
        for index, array in enumerate(batch.columns):
            self._column(index, array, total)
        return self._finish(total)

    def _column(self, index: int, array, total) -> None:
        import numpy as np
        import pyarrow as pa

        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if isinstance(array, pa.DictionaryArray):
            array = array.dictionary_decode()
        kind = array.type
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
        ):
            terms = self._strings(index, array)
        else:
            words = _fixed_words(array)
            terms = _nh(words, self.keys(index, "value", words.shape[1]))
        if array.null_count:
            null = self.keys(index, "null", 1)[0]
            null_term = (null[0].astype(np.uint64) << np.uint64(32)) | null[1]  # a secret 64-bit value per lane
            nulls = ~np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            terms[:, nulls] = null_term[:, None]
        total += terms

    def _strings(self, index: int, array):
        import numpy as np
        import pyarrow as pa

        rows = len(array)
        large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if large else np.int32)[
            array.offset : array.offset + rows + 1
        ]
        data = array.buffers()[2]
        data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        starts = offsets[:-1].astype(np.int64)
        lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
        if array.null_count:
            lengths[~np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
        long_rows = np.flatnonzero(lengths > _SHORT_STRING_BYTES)
        short_lengths = np.where(lengths > _SHORT_STRING_BYTES, 0, lengths)
        width = int(short_lengths.max(initial=0) + 7) // 8 * 8
        terms = np.zeros((2, rows), dtype=np.uint64)
        if width and not len(long_rows) and (short_lengths == width).all():
            # Every value of the same length, a multiple of 8 (codes): the data buffer is the word matrix.
            words = data[starts[0] : starts[0] + rows * width].view("<u8").reshape(rows, width // 8)
            terms += _nh(words, self.keys(index, "value", width // 8))
        elif width:
            positions = np.arange(width, dtype=np.int64)
            inside = positions[None, :] < short_lengths[:, None]
            gathered = data[np.where(inside, starts[:, None] + positions[None, :], 0)]  # a fresh (rows, width)
            gathered[~inside] = 0
            words = gathered.view("<u8")
            used = (np.arange(width // 8)[None, :] * 8) < short_lengths[:, None]
            terms += _nh(words, self.keys(index, "value", width // 8), used)
        if len(long_rows):
            digest_key = hashlib.shake_256(self._master + f"/{index}/long".encode()).digest(32)
            words = np.zeros((rows, 2), dtype=np.uint64)
            for row in long_rows:
                chunk = data[starts[row] : starts[row] + lengths[row]].tobytes()
                words[row] = np.frombuffer(hashlib.blake2b(chunk, key=digest_key, digest_size=16).digest(), "<u8")
            long_terms = _nh(words, self.keys(index, "long", 2))
            terms[:, long_rows] = long_terms[:, long_rows]
        # The length word: tells "ab" from "ab\x00", and the long path from the short one.
        length_words = (lengths.astype(np.uint64) << np.uint64(1)) | (lengths > _SHORT_STRING_BYTES)
        terms += _nh(length_words[:, None], self.keys(index, "length", 1))
        return terms

    def _finish(self, total):
        import numpy as np

        with np.errstate(over="ignore"):
            h = total ^ np.array(self._final, dtype=np.uint64)[:, None]
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
        return h


def _nh(words, keys, used=None):
    """NH of (rows, n) uint64 words with (n, 2, 2) uint32 keys: (2, rows), one row of sums per lane.

    ``used`` (rows, n) masks out padding words. One word position at a time over whole columns, so
    every numpy call runs over ``rows`` contiguous values.
    """
    import numpy as np

    out = np.zeros((2, len(words)), dtype=np.uint64)
    for position in range(words.shape[1]):
        word = words[:, position]
        low = word.astype(np.uint32)  # the low half (the cast keeps the value mod 2^32)
        high = (word >> np.uint64(32)).astype(np.uint32)
        mask = None if used is None else used[:, position]
        for lane in (0, 1):
            # uint32 additions wrap mod 2^32, as NH wants; both factors are below 2^32, so the product is exact.
            product = (low + keys[position, 0, lane]).astype(np.uint64)
            product *= (high + keys[position, 1, lane]).astype(np.uint64)
            if mask is not None:
                product *= mask
            out[lane] += product
    return out


def _fixed_words(array):
    """(rows, n) uint64 words holding each value's bits; nulls may hold anything (they are replaced)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    rows = len(array)
    if pa.types.is_boolean(kind):
        values = pc.fill_null(array, False).cast(pa.uint8()).to_numpy(zero_copy_only=False)
        return values.astype(np.uint64)[:, None]
    if pa.types.is_null(kind):
        return np.zeros((rows, 1), dtype=np.uint64)
    try:
        width = kind.bit_width
    except ValueError:
        width = 0
    if width < 8 or width % 8 or width > 256:
        raise TypeError(f"content fingerprint: column type {kind} is not supported")
    raw = np.frombuffer(array.buffers()[1], dtype=np.uint8)[
        array.offset * width // 8 : (array.offset + rows) * width // 8
    ]
    if pa.types.is_floating(kind):
        values = raw.view(f"<f{width // 8}").astype(np.float64)
        values[np.isnan(values)] = np.nan  # one NaN, whatever its payload
        return values.view(np.uint64)[:, None]
    if width <= 64:
        signed = pa.types.is_signed_integer(kind) or pa.types.is_temporal(kind)
        values = raw.view(f"<{'i' if signed else 'u'}{width // 8}").astype(np.int64 if signed else np.uint64)
        return values.view(np.uint64)[:, None]
    return raw.view("<u8").reshape(rows, width // 64)


_HASHER: _RowHasher | None = None


def _row_hashes(batch, columns: list[str] | None = None):
    """Two keyed uint64 hashes per row of an Arrow record batch, over the given columns (all by default)."""
    import os

    global _HASHER
    if _HASHER is None:
        secret = os.environ.get(FINGERPRINT_KEY_SETTING, "")
        if len(secret) < _MIN_KEY_CHARS:
            from hdh_migration.errors import ConfigurationError

            raise ConfigurationError(
                f"{FINGERPRINT_KEY_SETTING} is {'too short' if secret else 'not set'}: the content fingerprints "
                f"need a secret key of at least {_MIN_KEY_CHARS} characters, the same on every worker. Set it "
                "in .env for docker-compose (see .env.example); scripts/prod.sh generates one into its secrets "
                "and scripts/env.sh sets a local one"
            )
        _HASHER = _RowHasher(secret.encode())
    if columns is not None:
        batch = batch.select(columns)
    hashes = _HASHER.row_hashes(batch)
    return hashes[0], hashes[1]


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
