"""Drive a migration through a running deployment: its REST API, scheduler and Celery workers do the work.

``python -m hdh_migration deployed-migrate`` (what ``scripts/prod.sh demo`` runs): for every domain
not cut over yet, unpause its transfer and cutover DAGs, backfill the transfer DAG over the planned
partitions (a snapshot domain, which has no schedule, gets one triggered run instead), wait for the
runs, then wait for the cutover run that the cutover-partition Asset event starts (or trigger it
when none comes). The backfills run one partition at a time per domain, so that the cutover
partition, whose commit announces the cutover, is the last one.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from hdh_migration.airflow_api import AirflowApi
from hdh_migration.catalogue import Catalogue, Domain
from hdh_migration.dag_factory import cutover_dag_id, transfer_dag_id

TERMINAL = {"success", "failed"}


class DeploymentError(RuntimeError):
    pass


@dataclass
class DomainDrive:
    domain: Domain
    started: float = field(default_factory=time.monotonic)
    backfill_id: int | None = None
    run_ids: list[str] = field(default_factory=list)
    transfer_s: float | None = None
    transfer_states: dict[str, str] = field(default_factory=dict)
    cutover_run: dict | None = None
    cutover_s: float | None = None

    @property
    def transfer_dag(self) -> str:
        return transfer_dag_id(self.domain.name)

    @property
    def cutover_dag(self) -> str:
        return cutover_dag_id(self.domain.name)


def _plan_dates(domain: Domain) -> tuple[str, str]:
    """The logical dates of the first and the last planned partition's runs."""
    partitions = domain.partitions()
    return domain.logical_date(partitions[0]).isoformat(), domain.logical_date(partitions[-1]).isoformat()


def _start_transfers(api: AirflowApi, drive: DomainDrive) -> None:
    domain = drive.domain
    if domain.grain == "snapshot":
        run = api.trigger(drive.transfer_dag, {"partition": domain.cutover_partition})
        drive.run_ids = [run["dag_run_id"]]
        return
    backfill = api.create_backfill(
        drive.transfer_dag, *_plan_dates(domain), reprocess_behavior="failed", max_active_runs=1
    )
    drive.backfill_id = backfill["id"]


def _transfers_done(api: AirflowApi, drive: DomainDrive) -> bool:
    if drive.backfill_id is not None:
        backfill = api.backfill(drive.backfill_id)
        if backfill["completed_at"] is None:
            return False
        domain = drive.domain
        runs = api.dag_runs(
            drive.transfer_dag,
            logical_date_gte=_plan_dates(domain)[0],
            logical_date_lte=_plan_dates(domain)[1],
        )
    else:
        runs = [r for r in api.dag_runs(drive.transfer_dag) if r["dag_run_id"] in drive.run_ids]
        if not all(r["state"] in TERMINAL for r in runs):
            return False
    drive.transfer_states = {r["dag_run_id"]: r["state"] for r in runs}
    drive.run_ids = list(drive.transfer_states)
    drive.transfer_s = time.monotonic() - drive.started
    return True


def _cutover_done(api: AirflowApi, drive: DomainDrive, since: str, trigger_after_s: float) -> bool:
    runs = api.dag_runs(drive.cutover_dag, run_after_gte=since)
    if not runs and time.monotonic() - drive.started - drive.transfer_s > trigger_after_s:
        # No Asset event came (the cutover partition failed, or was committed before this drive).
        api.trigger(drive.cutover_dag)
        return False
    if runs and runs[-1]["state"] in TERMINAL:
        drive.cutover_run = runs[-1]
        drive.cutover_s = time.monotonic() - drive.started
        return True
    return False


def migrate(
    api: AirflowApi,
    catalogue: Catalogue,
    domain_names: list[str] | None,
    timeout: float,
    skip: set[str] = frozenset(),
    log=print,
) -> list[DomainDrive]:
    """Backfill and cut over each chosen domain through the deployment; returns what happened per domain."""
    chosen = [d for d in catalogue.domains if not domain_names or d.name in domain_names]
    since = dt.datetime.now(dt.UTC).isoformat()
    drives = []
    for domain in sorted(chosen, key=lambda d: (d.wave, d.name)):
        if domain.name in skip:
            log(f"--- {domain.name}: cut over, the transfer refuses to write; skipped")
            continue
        drive = DomainDrive(domain)
        for dag_id in (drive.transfer_dag, drive.cutover_dag):
            api.wait_for_dag(dag_id, timeout=min(timeout, 180))
            api.unpause(dag_id)
        drive.started = time.monotonic()
        _start_transfers(api, drive)
        how = f"backfill {drive.backfill_id}" if drive.backfill_id is not None else "triggered run"
        log(f"--> {drive.transfer_dag}: partitions {', '.join(domain.partitions())} ({how})")
        drives.append(drive)
    deadline = time.monotonic() + timeout
    pending = list(drives)
    while pending:
        for drive in list(pending):
            if drive.transfer_s is None:
                if _transfers_done(api, drive):
                    states = sorted(drive.transfer_states.values())
                    log(f"<-- {drive.transfer_dag}: {', '.join(states)} in {drive.transfer_s:.1f} s")
                continue
            if _cutover_done(api, drive, since, trigger_after_s=60):
                log(f"<-- {drive.cutover_dag}: {drive.cutover_run['state']} after {drive.cutover_s:.1f} s")
                pending.remove(drive)
        if pending and time.monotonic() > deadline:
            names = ", ".join(d.domain.name for d in pending)
            raise DeploymentError(f"not finished within {timeout:.0f} s: {names}; see the runs in the Airflow UI")
        time.sleep(3)
    return drives
