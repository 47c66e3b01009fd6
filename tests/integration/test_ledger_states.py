"""The ledger moves a partition or a domain only as its transition table allows, on SQLite and PostgreSQL.

Every allowed change is taken; every other one is refused with a message naming where, from and to,
and leaves the row, its events and the cutover history as they were, even when another writer moved
the row while the refused one waited for it.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from conftest import reach_domain_state, reach_state

from hdh_migration.errors import MigrationError, StateTransitionError
from hdh_migration.ledger import cutover_history_table, domains_table, events_table, partitions_table
from hdh_migration.states import (
    DOMAIN_TRANSITIONS,
    FROZEN_STATES,
    PARTITION_TRANSITIONS,
    DomainState,
    PartitionState,
)

BOTH = pytest.mark.parametrize("ledger_backend", ["sqlite", "postgres"], indirect=True)


def _rows(ledger, table: sa.Table) -> list[dict]:
    with ledger.engine.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]


def test_the_tables_name_every_state_and_keep_the_stored_text():
    assert set(PARTITION_TRANSITIONS) == set(PartitionState)
    assert set(DOMAIN_TRANSITIONS) == set(DomainState)
    for transitions in (PARTITION_TRANSITIONS, DOMAIN_TRANSITIONS):
        assert all(after <= set(transitions) for after in transitions.values())
    assert FROZEN_STATES == ("cut_over", "decommissioned")
    assert f"{DomainState.CUT_OVER}" == str(DomainState.CUT_OVER) == "cut_over"
    assert issubclass(StateTransitionError, MigrationError), "never retried by the DAGs' retry policy"


@BOTH
def test_every_allowed_partition_change_is_taken(migration):
    ledger = migration.ledger
    for i, (before, after) in enumerate((b, a) for b, nexts in PARTITION_TRANSITIONS.items() for a in sorted(nexts)):
        partition = f"p{i:02d}"
        if before != PartitionState.PLANNED:
            reach_state(ledger, "dcir", "ER_PRS_F", partition, before, run_id="r1")
        ledger.set_state("dcir", "ER_PRS_F", partition, after, run_id="r2", rows=i)
        record = ledger.get("dcir", "ER_PRS_F", partition)
        assert (record.state, record.run_id, record.rows) == (after, "r2", i), f"{before} -> {after}"


@BOTH
def test_every_allowed_domain_change_is_taken(migration):
    ledger = migration.ledger
    for i, (before, after) in enumerate((b, a) for b, nexts in DOMAIN_TRANSITIONS.items() for a in sorted(nexts)):
        domain = f"d{i:02d}"
        reach_domain_state(ledger, domain, before)
        ledger.set_domain_state(domain, after, {"step": "test"})
        assert ledger.domain_state(domain) == after, f"{before} -> {after}"


@BOTH
def test_a_forbidden_partition_change_is_refused_and_changes_nothing(migration):
    ledger = migration.ledger
    forbidden = [(b, a) for b, nexts in PARTITION_TRANSITIONS.items() for a in sorted(set(PartitionState) - nexts)]
    assert (PartitionState.TRANSFERRING, PartitionState.COMMITTED) in forbidden, "a commit never skips validation"
    assert (PartitionState.QUARANTINED, PartitionState.COMMITTED) in forbidden
    for i, (before, after) in enumerate(forbidden):
        partition = f"p{i:02d}"
        if before != PartitionState.PLANNED:
            reach_state(ledger, "dcir", "ER_PRS_F", partition, before, run_id="r1", rows=7)
        rows, events = _rows(ledger, partitions_table), _rows(ledger, events_table)
        with pytest.raises(StateTransitionError) as refused:
            ledger.set_state("dcir", "ER_PRS_F", partition, after, run_id="r2", rows=9, new_attempt=True)
        message = str(refused.value)
        assert message.startswith(f"domain=dcir table=ER_PRS_F partition={partition}: "), message
        assert f"from {before}" in message and f"to {after} " in message, message
        assert "nothing was written" in message and "re-run" in message, message
        assert refused.value.location() == {"domain": "dcir", "table": "ER_PRS_F", "partition": partition}
        assert _rows(ledger, partitions_table) == rows, f"{before} -> {after} changed the row"
        assert _rows(ledger, events_table) == events, f"{before} -> {after} recorded an event"
    assert ledger.get("dcir", "ER_PRS_F", "p00") is None, "a refused first write inserts no row"


@BOTH
def test_a_forbidden_domain_change_is_refused_and_changes_nothing(migration):
    ledger = migration.ledger
    forbidden = [(b, a) for b, nexts in DOMAIN_TRANSITIONS.items() for a in sorted(set(DomainState) - nexts)]
    assert (DomainState.DECOMMISSIONED, DomainState.TRANSFERRING) in forbidden, "no rollback after a decommission"
    assert (DomainState.TRANSFERRING, DomainState.CUT_OVER) in forbidden, "no freeze without a reconciliation"
    for i, (before, after) in enumerate(forbidden):
        domain = f"d{i:02d}"
        reach_domain_state(ledger, domain, before)
        domains, events = _rows(ledger, domains_table), _rows(ledger, events_table)
        with pytest.raises(StateTransitionError, match=f"^domain={domain}: .* from {before}.* to {after} "):
            ledger.set_domain_state(domain, after)
        assert _rows(ledger, domains_table) == domains and _rows(ledger, events_table) == events


@BOTH
def test_a_refused_cutover_entry_is_not_anchored(migration):
    ledger = migration.ledger
    reach_domain_state(ledger, "dcir", DomainState.TRANSFERRING)
    entry = {"action": "cutover", "at": "2026-11-30T12:00:00+00:00", "by": "someone", "entry_sha256": "ab" * 32}
    with pytest.raises(StateTransitionError, match="from transferring to cut_over"):
        ledger.append_cutover_history("dcir", entry, DomainState.CUT_OVER)
    assert ledger.cutover_history("dcir") == [] and _rows(ledger, cutover_history_table) == []
    assert ledger.domain_state("dcir") == DomainState.TRANSFERRING


@BOTH
def test_a_rebuild_from_the_store_replaces_any_state(migration):
    ledger = migration.ledger
    reach_state(ledger, "dcir", "ER_PRS_F", "2024-01-01", PartitionState.QUARANTINED, run_id="r1")
    ledger.set_state("dcir", "ER_PRS_F", "2024-01-01", PartitionState.COMMITTED, rebuild=True, run_id="r0")
    assert ledger.get("dcir", "ER_PRS_F", "2024-01-01").state == PartitionState.COMMITTED
    ledger.set_state("dcir", "ER_PRS_F", "2024-02-01", PartitionState.COMMITTED, rebuild=True, run_id="r0")
    assert ledger.get("dcir", "ER_PRS_F", "2024-02-01").attempts == 0
    entry = {"action": "cutover", "at": "2026-11-30T12:00:00+00:00", "by": "someone", "entry_sha256": "cd" * 32}
    assert ledger.append_cutover_history("dcir", entry, DomainState.CUT_OVER, rebuild=True)
    assert ledger.domain_state("dcir") == DomainState.CUT_OVER


@BOTH
def test_a_change_waiting_on_another_writer_is_judged_by_what_that_writer_left(migration):
    """Another transaction commits the partition while this change (transferring -> validated) waits for the
    row: the change is then judged from committed, and refused, not slipped in over the commit."""
    ledger = migration.ledger
    reach_state(ledger, "dcir", "ER_PRS_F", "2024-01-01", PartitionState.TRANSFERRING, run_id="r1")
    outcome = {}

    def validate() -> None:
        try:
            ledger.set_state("dcir", "ER_PRS_F", "2024-01-01", PartitionState.VALIDATED, run_id="r1")
            outcome["error"] = None
        except StateTransitionError as error:
            outcome["error"] = error

    with ledger.engine.connect() as conn:
        transaction = conn.begin()
        p = partitions_table.c
        conn.execute(
            sa.update(partitions_table)
            .where(p.domain == "dcir", p.table_name == "ER_PRS_F", p.partition == "2024-01-01")
            .values(state=PartitionState.COMMITTED, updated_at=dt.datetime.now(dt.UTC))
        )
        waiting = threading.Thread(target=validate)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), "the change waits for the other writer's row"
        transaction.commit()
    waiting.join(30)
    assert isinstance(outcome["error"], StateTransitionError), outcome
    assert "from committed to validated" in str(outcome["error"])
    assert ledger.get("dcir", "ER_PRS_F", "2024-01-01").state == PartitionState.COMMITTED
