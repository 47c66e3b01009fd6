"""
Airflow gap-scan DAG: ``hdh_gap_scan``.

Daily, finds the partitions delivered in Azure but not committed in the sovereign store and asks
Airflow for a backfill of each domain's transfer DAG. The DAG's docs carry the triage notes.
"""

from hdh_migration.catalogue import cached_catalogue
from hdh_migration.dag_factory import build_gap_scan_dag

hdh_gap_scan = build_gap_scan_dag(cached_catalogue())
