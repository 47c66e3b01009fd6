"""The DAG ids, in one place: the DAG factory builds them, the CLI, the board, the gap scan and
preflight name them (without importing the factory, so no import cycle goes through it)."""

from __future__ import annotations

GAP_SCAN_DAG_ID = "hdh_gap_scan"


def transfer_dag_id(domain_name: str) -> str:
    return f"hdh_transfer__{domain_name}"


def cutover_dag_id(domain_name: str) -> str:
    return f"hdh_cutover__{domain_name}"


def rollback_dag_id(domain_name: str) -> str:
    return f"hdh_rollback__{domain_name}"


def verify_dag_id(domain_name: str) -> str:
    return f"hdh_verify__{domain_name}"


def decommission_dag_id(domain_name: str) -> str:
    return f"hdh_decommission__{domain_name}"
