"""The Airflow pool of the transfers, sized from the catalogue.

Every ``transfer_object`` task runs in pool ``TRANSFER_POOL``; the catalogue's ``transfer_slots``
divides the bandwidth caps among its slots, so the pool must have exactly that many. The deployment
creates or resizes it at start (``python -m hdh_migration pools sync``: scripts/prod.sh and
docker-compose.yml's airflow-init run it), and preflight checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdh_migration.catalogue import TRANSFER_POOL, Catalogue

POOL_DESCRIPTION = "hdh-migration: concurrent transfer_object tasks (transfer_slots of dags/domains.yaml)"
SYNC_COMMAND = "python -m hdh_migration pools sync"


@dataclass(frozen=True)
class PoolSync:
    pool: str
    slots: int
    previous: int | None  # None: the pool did not exist

    @property
    def changed(self) -> bool:
        return self.previous != self.slots


def transfer_pool_slots() -> int | None:
    """The slots of ``TRANSFER_POOL`` in Airflow's metadata database; None when it does not exist."""
    from airflow.models.pool import Pool

    pool = Pool.get_pool(TRANSFER_POOL)
    return None if pool is None else pool.slots


def sync_transfer_pool(catalogue: Catalogue) -> PoolSync:
    """Create ``TRANSFER_POOL`` with the catalogue's ``transfer_slots``, or resize it (idempotent)."""
    from airflow.models.pool import Pool

    previous = transfer_pool_slots()
    Pool.create_or_update_pool(TRANSFER_POOL, catalogue.transfer_slots, POOL_DESCRIPTION, include_deferred=False)
    return PoolSync(TRANSFER_POOL, catalogue.transfer_slots, previous)
