"""The partition write lease of the ledger, on SQLite and PostgreSQL: one holder, renewal, expiry, takeover."""

from __future__ import annotations

import datetime as dt
import time

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


def _wait_past(ledger, domain: str, partition: str, moment: dt.datetime) -> None:
    while ledger.partition_lease(domain, partition).database_now <= moment:
        time.sleep(0.1)


@pytest.mark.parametrize("ledger_backend", ["sqlite", "postgres"], indirect=True)
def test_lease_expiry_is_judged_by_the_database_clock_not_the_workers(migration, monkeypatch):
    import hdh_migration.ledger as ledger_module

    ledger, ttl = migration.ledger, dt.timedelta(seconds=4)
    assert ledger.claim_partition("dcir", "2024-01-01", "run-a", ttl) is None
    lease = ledger.partition_lease("dcir", "2024-01-01")
    assert dt.timedelta(seconds=1) < lease.expires_at - lease.database_now <= ttl

    # A worker whose clock runs two hours ahead would see run-a's lease as long expired: it is not.
    skewed = dt.datetime.now(dt.UTC) + 2 * HOUR
    monkeypatch.setattr(ledger_module, "_now", lambda: skewed)
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR) == "run-a"
    # And a renewal counts from the database's time, not the worker's.
    assert ledger.renew_partition("dcir", "2024-01-01", "run-a", ttl)
    renewed = ledger.partition_lease("dcir", "2024-01-01")
    assert renewed.expires_at - renewed.database_now <= ttl

    _wait_past(ledger, "dcir", "2024-01-01", renewed.expires_at)
    assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR) is None, "expired by the database's clock"
    assert not ledger.renew_partition("dcir", "2024-01-01", "run-a", ttl), "a lease taken over is not renewed back"
    assert ledger.partition_lease("dcir", "2024-01-01").run_id == "run-b"


@pytest.mark.parametrize("ledger_backend", ["sqlite", "postgres"], indirect=True)
def test_a_renewer_keeps_its_lease_and_never_takes_back_a_released_one(migration):
    from hdh_migration.ledger import LeaseRenewer

    # The ttl leaves a renewal beat stalled by a loaded machine (CI saw more than a second) well inside it.
    ledger, ttl = migration.ledger, dt.timedelta(seconds=3)
    assert ledger.claim_partition("dcir", "2024-01-01", "run-a", ttl) is None
    first = ledger.partition_lease("dcir", "2024-01-01")
    with LeaseRenewer(ledger, "dcir", "2024-01-01", "run-a", ttl, every=0.2) as renewer:
        _wait_past(ledger, "dcir", "2024-01-01", first.expires_at + ttl)
        assert ledger.claim_partition("dcir", "2024-01-01", "run-b", HOUR) == "run-a", "renewed past two ttls"
        assert ledger.partition_lease("dcir", "2024-01-01").expires_at > first.expires_at + ttl
        ledger.release_partition("dcir", "2024-01-01", "run-a")
        time.sleep(0.6)
        assert ledger.partition_lease("dcir", "2024-01-01") is None, "the renewer took a released lease back"
        assert renewer.lost
    assert renewer.renewals >= 3
