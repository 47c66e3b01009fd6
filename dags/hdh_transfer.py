"""
Airflow transfer DAGs, one per catalogue domain: ``hdh_transfer__<domain>``.

Each run moves one partition of every table of the domain from Azure to the sovereign S3 store,
validates it, commits it (manifest last) and reconciles it. The per-DAG docs carry the triage notes.
"""

from hdh_migration.catalogue import cached_catalogue
from hdh_migration.dag_factory import build_transfer_dag

for _domain in cached_catalogue().domains:
    globals()[f"hdh_transfer__{_domain.name}"] = build_transfer_dag(_domain)
