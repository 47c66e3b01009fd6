"""Staging keys carry their run: a run's folder holds its objects and key-hash files, and is parsed back."""

from __future__ import annotations

import pytest

from hdh_migration.layout import parse_staging_key, run_staging_prefix, staging_key, staging_prefix, target_key


def test_a_runs_staging_folder_holds_its_objects_and_parses_back():
    final = target_key(
        "dcir/ER_PRS_F/FLX_DIS_DTD=2024-01-01/part-00003.parquet", "dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01"
    )
    staged = staging_key(final, "0123456789abcdef")
    folder = run_staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01", "0123456789abcdef")
    other = run_staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01", "fedcba9876543210")
    assert staged == f"{folder}part-00003.parquet"
    assert folder.startswith(staging_prefix("dcir", "ER_PRS_F", "FLX_DIS_DTD", "2024-01-01"))
    assert not staged.startswith(other)
    expected = ("dcir", "ER_PRS_F", "2024-01-01", "0123456789abcdef")
    assert parse_staging_key(staged) == expected
    assert parse_staging_key(f"{staged}.keys/00001") == expected


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
