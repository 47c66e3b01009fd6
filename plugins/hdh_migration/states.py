"""The states of a partition and of a domain in the ledger, and the changes between them it allows.

StrEnums: a state is stored, logged and shown as its text, so the ledger's rows, the XComs, the board
and the CLI read exactly as before. The ledger refuses a change the tables below do not list
(``Ledger.set_state``, ``Ledger.set_domain_state``); only ``reindex``, which rebuilds the ledger from
the store's own manifests and records, writes a state whatever the ledger said before.
"""

from __future__ import annotations

import enum


class PartitionState(enum.StrEnum):
    PLANNED = "planned"
    TRANSFERRING = "transferring"
    VALIDATED = "validated"
    COMMITTED = "committed"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class DomainState(enum.StrEnum):
    PLANNED = "planned"
    TRANSFERRING = "transferring"
    VERIFIED = "verified"
    CUT_OVER = "cut_over"
    DECOMMISSIONED = "decommissioned"


# The states in which the sovereign copy is the data and no transfer may write: cut over, and cut over
# with the old copy deleted (decommissioned: no rollback either).
FROZEN_STATES = (DomainState.CUT_OVER, DomainState.DECOMMISSIONED)

# state -> the states it may change to; a row the ledger does not hold yet is ``planned``. Every step may
# run again (a retried or cleared task, a new run after a crash) and may fail. A run cleared from its
# failed tasks (README, "Re-running a partition") goes on from where it failed or was quarantined.
PARTITION_TRANSITIONS: dict[PartitionState, frozenset[PartitionState]] = {
    # plan_partition; or a source found missing before the first plan
    PartitionState.PLANNED: frozenset({PartitionState.TRANSFERRING, PartitionState.FAILED}),
    PartitionState.TRANSFERRING: frozenset({PartitionState.TRANSFERRING, PartitionState.VALIDATED,
                                            PartitionState.QUARANTINED, PartitionState.FAILED}),
    # committed; or, waiting for another table's quarantine, planned again by the partition's next run
    PartitionState.VALIDATED: frozenset({PartitionState.VALIDATED, PartitionState.COMMITTED,
                                         PartitionState.TRANSFERRING, PartitionState.FAILED}),
    # a commit retried past its commit point; a changed source or a forced re-run; a failed reconciliation
    PartitionState.COMMITTED: frozenset({PartitionState.COMMITTED, PartitionState.TRANSFERRING,
                                         PartitionState.FAILED}),
    # the failed task cleared: its step goes on (a commit whose read-back failed commits)
    PartitionState.FAILED: frozenset({PartitionState.FAILED, PartitionState.TRANSFERRING, PartitionState.VALIDATED,
                                      PartitionState.QUARANTINED, PartitionState.COMMITTED}),
    # validated: a waiver recorded, then the quarantining validation cleared
    PartitionState.QUARANTINED: frozenset({PartitionState.QUARANTINED, PartitionState.TRANSFERRING,
                                           PartitionState.VALIDATED, PartitionState.FAILED}),
}  # fmt: skip

DOMAIN_TRANSITIONS: dict[DomainState, frozenset[DomainState]] = {
    # the first plan; or a cutover's reconciliation of partitions rebuilt by reindex
    DomainState.PLANNED: frozenset({DomainState.TRANSFERRING, DomainState.VERIFIED}),
    DomainState.TRANSFERRING: frozenset({DomainState.TRANSFERRING, DomainState.VERIFIED}),
    # freeze_domain; or a cutover refused
    DomainState.VERIFIED: frozenset({DomainState.VERIFIED, DomainState.CUT_OVER, DomainState.TRANSFERRING}),
    # the cutover record written; a rollback or a cutover refused at its record; the old copy deleted
    DomainState.CUT_OVER: frozenset({DomainState.CUT_OVER, DomainState.TRANSFERRING, DomainState.DECOMMISSIONED}),
    DomainState.DECOMMISSIONED: frozenset(),  # no rollback, no second decommission
}


def sources(transitions: dict, state: str) -> tuple:
    """The states that may change to ``state``, in the table's order."""
    return tuple(before for before, after in transitions.items() if state in after)
