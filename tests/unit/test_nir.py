"""The raw-NIR detector: the shared vectors are caught in every form, look-alikes never are."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from hdh_migration.nir import find_raw_nir, raw_nir_mask

# From /work/shared/reference/nir.md (python-stdnum and betagouv nir_validate test suites).
VALID = ["295109912611193", "253072B07300470", "253072A07300443", "255081416802538"]
SPACED = ["2 95 10 99 126 111 93", "2 53 07 2B 073 004 70", "2  53 07 2A 073 004 43", "2\u00a055\u00a008 14 168 025 38"]
EMBEDDED = [
    "patient 295109912611193 vu",
    "NIR: 253072B07300470.",
    "(253072A07300443)",
    "id_255081416802538;",
    "ligne 1\n2 95 10 99 126 111 93\nligne 3",
    "253072a07300443",
]
KEYLESS = ["2951099126111", "253072B073004", "1 85 05 78 006 084", "né le 1/5/85, 1850578006084 vu", "1852075006084"]
NEAR_MISSES = [
    "295109912611194",  # wrong key
    "253072B07300471",  # wrong key, Corsica
    "2 95 10 99 126 111 94",  # wrong key, spaced: not read as a keyless NIR followed by noise
    "29510991261119",  # 14 digits
    "2951099126111933",  # 16 digits
    "12951099126111930",  # 17 digits around a valid NIR
    "295139912611193",  # month 13
    "2951399126111",  # month 13, keyless
    "2950099126111",  # month 00, keyless
    "395109912611193",  # sex 3
    "2951099126111 9",  # keyless followed by a partial key
    "29510A912611193",  # letter in the département's second place
    "2951099126A1193",  # letter in the commune
    "25307C207300470",  # a C where the département goes
    "NIR295109912611193",  # glued to a word: part of a longer token
    "2 95 109 912 611 193",  # spaced in thousands, not in NIR groups
]
PSEUDONYMS_AND_PLACEHOLDERS = [
    "A3F9C2E81B7D4F0A2",
    "29510991261119300",
    "00295109912611193",
    "xxxxxxxxxxxxxxxxx",
    "XXXXXXXXXXXXXXXXD",
]
CIP13 = ["3400930000000", "3400935955838", "3400921626012", "3400892510101", "3401560167245"]
OTHER_VALUES = ["010008407", "2024-01-15", "15/01/2024", "20240115", "1234.56", "0612345678", "-", ""]


@pytest.mark.parametrize("text", VALID + SPACED + EMBEDDED + KEYLESS)
def test_raw_nir_is_found(text):
    assert find_raw_nir(text)
    assert raw_nir_mask([text]).tolist() == [True]


@pytest.mark.parametrize("text", NEAR_MISSES + PSEUDONYMS_AND_PLACEHOLDERS + CIP13 + OTHER_VALUES)
def test_look_alike_is_not_flagged(text):
    assert not find_raw_nir(text)
    assert raw_nir_mask([text]).tolist() == [False]


def test_mask_accepts_series_arrow_and_numbers_with_nulls_false():
    texts = ["295109912611193", None, "A3F9C2E81B7D4F0A2", "2 95 10 99 126 111 93"]
    expected = [True, False, False, True]
    assert raw_nir_mask(pd.Series(texts)).tolist() == expected
    chunked = pa.chunked_array([texts[:2], texts[2:]])
    assert raw_nir_mask(chunked).tolist() == expected
    assert raw_nir_mask(pa.array([295109912611193, None, 3400930000000, 255081416802538])).tolist() == expected
    # An integer column with nulls reaches pandas, hence GX, as floats.
    assert raw_nir_mask(pd.Series([295109912611193, None, 1.5, 255081416802538])).tolist() == expected
    assert raw_nir_mask(pa.array([], pa.string())).tolist() == []


def test_random_pseudonyms_are_never_flagged():
    rng = np.random.default_rng(17)
    hex_digits = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    pseudonyms = [row.tobytes().decode() for row in hex_digits[rng.integers(0, 16, size=(10_000, 17))]]
    assert not raw_nir_mask(pseudonyms).any()


def test_mask_on_a_million_values_is_fast_and_right():
    rng = np.random.default_rng(42)
    hex_digits = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    values = [row.tobytes().decode() for row in hex_digits[rng.integers(0, 16, size=(1_000_000, 17))]]
    nir_rows = np.arange(0, len(values), 997)
    for row in nir_rows:
        values[row] = f"patient {VALID[row % len(VALID)]} vu"
    array = pa.array(values)
    started = time.perf_counter()
    mask = raw_nir_mask(array)
    print(f"raw_nir_mask: {len(values):,} values in {time.perf_counter() - started:.2f} s")
    assert np.array_equal(np.flatnonzero(mask), nir_rows)


@pytest.mark.parametrize("arrow_type", [pa.int64(), pa.int32(), pa.uint64(), pa.float64()])
def test_integer_columns_are_read_as_their_text_would_be(arrow_type):
    """Integer columns go by arithmetic, not by text: the answer must be the text rule's, value for value,
    on random numbers of 12 to 16 digits, on keyed and keyless NIRs, wrong keys, signs and the extremes."""
    rng = np.random.default_rng(13)
    values = [int(v) for n in (12, 13, 14, 15, 16) for v in rng.integers(10 ** (n - 1), 10**n, 4000)]
    for body in rng.integers(10**12, 3 * 10**12, 4000):
        key = 97 - int(body) % 97
        values += [int(body) * 100 + key, int(body) * 100 + (key + 1) % 100, int(body), -int(body)]
    values += [295109912611193, 2951099126111, -295109912611193, 0, 10**12, 3 * 10**12 - 1, 10**15 - 1, 10**14]
    values += [-(2**63), 2**63 - 1, 2**64 - 2951099126111]
    info = np.iinfo(arrow_type.to_pandas_dtype()) if pa.types.is_integer(arrow_type) else None
    if info is not None:
        values = [v for v in values if info.min <= v <= info.max]
    else:
        values = [float(v) for v in values if abs(v) < 2**53]
    array = pa.array([*values, None], arrow_type)
    expected = [v is not None and find_raw_nir(str(int(v))) for v in array.to_pylist()]
    assert raw_nir_mask(array).tolist() == expected
    if arrow_type == pa.int64():
        assert sum(expected) > 4000  # the keyed and keyless NIRs above are caught
