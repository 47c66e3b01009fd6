"""
Airflow cutover, rollback and verify DAGs, three per catalogue domain.

- ``hdh_cutover__<domain>``: proves the domain complete and equal to the live Azure source, freezes
  it, writes ``_cutover/<domain>.json`` and announces it with an Asset event. Triggered when the
  transfer commits the planned cutover partition, or by hand.
- ``hdh_rollback__<domain>``: by hand, with a mandatory reason; the domain returns to transferring.
- ``hdh_verify__<domain>``: daily, re-checks the sovereign copy against its record without Azure.
- ``hdh_decommission__<domain>``: by hand, after a verified cutover and the retention period: deletes
  the old copy object by object and writes a signed receipt.

The per-DAG docs carry the triage notes.
"""

from hdh_migration.catalogue import cached_catalogue
from hdh_migration.dag_factory import (
    build_cutover_dag,
    build_decommission_dag,
    build_rollback_dag,
    build_verify_dag,
)

globals().update(
    {
        dag.dag_id: dag
        for domain in cached_catalogue().domains
        for dag in (
            build_cutover_dag(domain),
            build_rollback_dag(domain),
            build_verify_dag(domain),
            build_decommission_dag(domain),
        )
    }
)
