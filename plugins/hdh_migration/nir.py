"""Detect a raw NIR (French social security number) in text, one value or millions at a time.

A value is flagged when it holds, as a whole token, either

- the 15-character NIR (sex, year, month, département, commune, order, key) whose key is right:
  key = 97 - (the 13 first characters as a number, ``2A``/``2B`` read as 19/18) mod 97;
- the 13-character NIR without its key, when nothing that could be a key follows it.

The groups may be separated by any number of spaces (``2 95 10 99 126 111 93``). Sex is 1 or 2,
the month 01-12, 20-42 or 50-99, the département two digits, ``2A`` or ``2B``.

"Whole token" means no ASCII letter or digit right before or after: a NIR inside a longer run of
digits or letters is not flagged. That is what keeps the 17-character SNDS pseudonyms
(``BEN_NIR_PSA``, ``NIR_ANO_17``), longer identifiers and hex digests from ever matching, at the
price of missing a NIR glued to a word (``NIR295109912611193``). The 13-character form has no key
to check, so only its structure guards it: CIP13 drug codes start with 34 and never match, but any
other 13-digit number with that structure (a millisecond timestamp, a US GTIN) does.

``raw_nir_mask`` runs the structural pattern through Arrow's vectorised regex engine, then checks
keys in Python on the few candidates only; a column whose values are all shorter than 13 bytes
skips the regex.
"""

from __future__ import annotations

import re

_SPACE = "[ \u00a0\u202f]*"  # French typography also groups digits with (narrow) no-break spaces
_TOKEN_EDGE = "[0-9A-Za-z]"
_BODY = _SPACE.join(
    (
        "(?P<sex>[12])",
        "(?P<year>[0-9]{2})",
        "(?P<month>0[1-9]|1[0-2]|[23][0-9]|4[0-2]|[5-9][0-9])",
        "(?P<department>[0-9]{2}|2[ABab])",
        "(?P<commune>[0-9]{3})",
        "(?P<order>[0-9]{3})",
    )
)
_KEY = f"{_SPACE}(?P<key>[0-9]{{2}})"

# Exact rule, in Python's engine: a keyed NIR, or a keyless one not followed by something key-like.
_NIR = re.compile(f"(?<!{_TOKEN_EDGE}){_BODY}(?:{_KEY}(?!{_TOKEN_EDGE})|(?![A-Za-z]|{_SPACE}[0-9]))")
# The same without lookarounds, which RE2 lacks: it matches every value the exact rule matches.
_CANDIDATE = f"(?:^|[^0-9A-Za-z]){_BODY}(?:{_KEY})?(?:$|[^0-9A-Za-z])"

_CORSICA = {"2A": "19", "2B": "18"}
_SHORTEST = 13  # the keyless NIR, unspaced: no shorter value can hold one
_SMALLEST_NUMBER = 10 ** (_SHORTEST - 1)  # a number below it has fewer digits than any NIR


def _is_raw_nir(match: re.Match) -> bool:
    key = match["key"]
    if key is None:
        return True
    department = _CORSICA.get(match["department"].upper(), match["department"])
    number = int(match["sex"] + match["year"] + match["month"] + department + match["commune"] + match["order"])
    return int(key) == 97 - number % 97


def find_raw_nir(text: str) -> bool:
    """True when ``text`` holds a raw NIR, with or without its key, possibly spaced or embedded."""
    return any(_is_raw_nir(match) for match in _NIR.finditer(text))


def can_hold_nir(arrow_type) -> bool:
    """Whether values of this Arrow type can hold a raw NIR: text, and numbers of 13 digits or more.

    The guard covers every such column, whatever its declared length (the data need not respect it).
    """
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return True
    if pa.types.is_integer(arrow_type):
        return arrow_type.bit_width == 64  # 32 bits hold 10 digits at most
    if pa.types.is_decimal(arrow_type):
        return arrow_type.precision - arrow_type.scale >= _SHORTEST
    return pa.types.is_float64(arrow_type)  # a float32 keeps 7 significant digits: a NIR would not survive


def raw_nir_mask(values):
    """A numpy bool array, True where the value holds a raw NIR; nulls are False.

    ``values``: a pandas Series, a pyarrow Array or ChunkedArray, or a sequence; non-string values
    are cast to strings first, so a numeric column holding NIRs is caught too.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, from_pandas=True)
    if len(array) == 0 or numbers_too_short_for_nir(array):
        return np.zeros(len(array), dtype=bool)
    if pa.types.is_floating(array.type):
        # pandas turns an integer column with nulls into floats: read whole numbers back as integers.
        whole = pc.and_(pc.equal(array, pc.floor(array)), pc.less(pc.abs(array), 1e15))
        array = pc.if_else(whole, array, pa.scalar(None, array.type)).cast(pa.int64())
    kind = array.type
    if (
        isinstance(array, pa.Array)
        and pa.types.is_integer(kind)
        and (pa.types.is_signed_integer(kind) or kind.bit_width < 64)
    ):
        return _integer_nir_mask(array)  # a uint64 above int64's range would wrap: it goes the text way
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    if (pc.max(pc.binary_length(array)).as_py() or 0) < _SHORTEST:
        return np.zeros(len(array), dtype=bool)  # no value is long enough to hold a NIR: skip the regex
    candidates = pc.match_substring_regex(array, _CANDIDATE).fill_null(False)
    mask = np.asarray(candidates.to_numpy(zero_copy_only=False), dtype=bool)
    positions = np.flatnonzero(mask)
    mask[positions] = [find_raw_nir(text) for text in array.take(positions).to_pylist()]
    return mask


def _integer_nir_mask(array):
    """``raw_nir_mask`` of an integer array, by arithmetic: the same answer as its text through the rule.

    A number's text is its digits (and a sign, which is no token edge), so it holds a NIR only as a whole:
    13 digits with the NIR's structure (the keyless form, nothing after it), or 15 digits whose first 13
    have that structure and whose last 2 are their key. The département is then two digits.
    """
    import numpy as np

    values = np.abs(array.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    with np.errstate(over="ignore"):  # abs of the smallest int64 stays negative: never a NIR
        keyed = (values >= 10**14) & (values < 10**15)
        body = np.where(keyed, values // 100, values)
    structured = (body >= 10**12) & (body < 3 * 10**12)  # 13 digits, the first (sex) 1 or 2
    month = (body // 10**8) % 100
    structured &= ((month >= 1) & (month <= 12)) | ((month >= 20) & (month <= 42)) | (month >= 50)
    return structured & (~keyed | (values % 100 == 97 - body % 97))


def numbers_too_short_for_nir(array) -> bool:
    """Whether ``array`` is numeric with every value under 13 integer digits (then no NIR can be in it),
    read from its minimum and maximum: most numeric columns are answered without a string cast."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if (
        len(array)
        and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
        and not isinstance(array, pa.ChunkedArray)
    ):
        # The value buffer as it is, null slots included: whatever they hold only makes the answer
        # more cautious (False: the values are then checked one by one), and a NaN answers False.
        values = np.frombuffer(array.buffers()[1], dtype=kind.to_pandas_dtype())[
            array.offset : array.offset + len(array)
        ]
        return values.min().item() > -_SMALLEST_NUMBER and values.max().item() < _SMALLEST_NUMBER
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        return False
    if pa.types.is_floating(kind) and pc.any(pc.is_nan(array)).as_py():
        return False  # NaN defeats min/max; the slow path drops it anyway
    extremes = pc.min_max(array)
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    return low is None or (low > -_SMALLEST_NUMBER and high < _SMALLEST_NUMBER)


def too_short_for_nir(array) -> bool:
    """Whether no value of ``array`` can hold a NIR: numbers under 13 digits (``numbers_too_short_for_nir``),
    or texts all under 13 bytes, read from the offsets alone (a character is at least a byte)."""
    import numpy as np
    import pyarrow as pa

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if len(array) == 0:
            return True
        width = np.int64 if pa.types.is_large_string(kind) else np.int32
        offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
        return int(np.diff(offsets).max()) < _SHORTEST
    return numbers_too_short_for_nir(array)
