"""Staging keys carry their run: a run's folder holds its objects and key-hash files, and is parsed back."""

from __future__ import annotations

import pytest

from hdh_migration.layout import (
    is_run_key,
    key_hashes_prefix,
    parse_staging_key,
    run_staging_prefix,
    staging_prefix,
    target_key,
)

TOKEN, OTHER = "0123456789abcdef", "fedcba9876543210"


def test_a_runs_final_keys_carry_its_token_and_its_staging_folder_parses_back():
    final = target_key(
        "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00003.parquet",
        "dcir",
        "ER_PRS_F",
        "FLX_DIS_DTD",
        "2024-01-01",
        TOKEN,
    )
    assert final == f"dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00003-{TOKEN}.parquet"
    assert is_run_key(final, TOKEN) and not is_run_key(final, OTHER)
    keys = key_hashes_prefix(final, TOKEN)
    folder = run_staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01", TOKEN)
    other = run_staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01", OTHER)
    assert keys.startswith(folder) and not keys.startswith(other)
    assert folder.startswith(staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01"))
    assert parse_staging_key(f"{keys}00001") == ("dcir", "ER_PRS_F", "2024-01-01", TOKEN)


@pytest.mark.parametrize(
    "key",
    [
        "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00000.parquet",
        "_staging/dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00000.parquet",
        "_staging/dcir/ER_PRS_F/2024-01-01/token/part-00000.parquet",
        "_staging/dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01//part-00000.parquet",
        "_manifests/dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01.json",
    ],
)
def test_other_keys_are_not_staging(key):
    assert parse_staging_key(key) is None
