"""The partition write lease of the ledger, on SQLite and PostgreSQL: one holder, renewal, expiry, takeover."""

from __future__ import annotations

import datetime as dt

import pytest

HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize("ledger_backend", ["sqlite", "postgres"], indirect=True)
def test_one_run_holds_a_partition_until_it_releases_finishes_or_expires(migration):
    ledger = migration.ledger
    assert ledger.claim_partition("dcir", "2024-01-01", "run-a", HOUR) is None
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR) == "run-a"
    assert ledger.claim_partition("dcir", "2024-02-01", "run-b", HOUR) is None, "another partition is free"
    assert ledger.claim_partition("dcir", "2024-01-01", "run-a", HOUR) is None, "the holder renews its lease"

    ledger.release_partition("dcir", "2024-01-01", "run-b")  # not the holder: nothing happens
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR) == "run-a"
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR, stale_holder="run-z") == "run-a"
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR, stale_holder="run-a") is None
    assert ledger.claim_partition("dcir", "2024-01-01", "run-a", HOUR) == "run-b", "a finished run lost its lease"

    ledger.release_partition("dcir", "2024-01-01", "run-b")
    assert ledger.claim_partition("dcir", "2024-01-01", "run-c", -HOUR) is None  # taken, already expired
    assert ledger.claim_partition("dcir", "2024-01-01", "run-d", HOUR) is None, "an expired lease is free"
