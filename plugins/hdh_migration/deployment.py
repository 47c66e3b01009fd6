"""Drive a migration through a running deployment: its REST API, scheduler and Celery workers do the work.

What the CLI's ``migrate``, ``cutover``, ``rollback`` and ``verify`` do by default (``--local`` runs
the DAGs in-process instead, for the embedded demo). The operator's machine needs only the API's
address and a login: no storage or ledger credential, and the scheduler's queues, pools and
deadlines apply.

- ``migrate``: for each chosen domain, unpause its transfer DAG and backfill it over the planned
  partitions (a snapshot domain, which has no schedule, gets one triggered run instead), then wait
  for the runs. The backfills run one partition at a time per domain, so that the cutover
  partition, whose commit announces the cutover, is the last one.
- ``run_dag``: trigger one run of a DAG (cutover, rollback, verify) with its params, and wait for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hdh_migration.airflow_api import AirflowApi
from hdh_migration.catalogue import Catalogue, Domain
from hdh_migration.naming import transfer_dag_id

TERMINAL = {"success", "failed"}
FINISHED_TASK = {"success", "failed", "skipped", "upstream_failed", "removed"}


class DeploymentError(RuntimeError):
    """The deployment did not finish the work in time, or cannot do it."""


@dataclass
class DomainDrive:
    domain: Domain
    started: float = field(default_factory=time.monotonic)
    backfill_id: int | None = None
    run_ids: list[str] = field(default_factory=list)
    transfer_s: float | None = None
    transfer_states: dict[str, str] = field(default_factory=dict)

    @property
    def transfer_dag(self) -> str:
        return transfer_dag_id(self.domain.name)


@dataclass
class RunOutcome:
    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str]
    seconds: float


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
        first, last = _plan_dates(drive.domain)
        runs = api.dag_runs(drive.transfer_dag, logical_date_gte=first, logical_date_lte=last)
    else:
        runs = [r for r in api.dag_runs(drive.transfer_dag) if r["dag_run_id"] in drive.run_ids]
        if not all(r["state"] in TERMINAL for r in runs):
            return False
    drive.transfer_states = {r["dag_run_id"]: r["state"] for r in runs}
    drive.run_ids = list(drive.transfer_states)
    drive.transfer_s = time.monotonic() - drive.started
    return True


def migrate(
    api: AirflowApi, catalogue: Catalogue, domain_names: list[str] | None, timeout: float, log=print, poll_s: float = 3
) -> list[DomainDrive]:
    """Backfill each chosen domain's transfer DAG through the deployment; returns what happened per domain."""
    chosen = [d for d in catalogue.domains if not domain_names or d.name in domain_names]
    drives = []
    for domain in sorted(chosen, key=lambda d: (d.wave, d.name)):
        drive = DomainDrive(domain)
        api.wait_for_dag(drive.transfer_dag, timeout=min(timeout, 180))
        api.unpause(drive.transfer_dag)
        drive.started = time.monotonic()
        _start_transfers(api, drive)
        how = f"backfill {drive.backfill_id}" if drive.backfill_id is not None else "triggered run"
        log(f"--> {drive.transfer_dag}: partitions {', '.join(domain.partitions())} ({how})")
        drives.append(drive)
    deadline = time.monotonic() + timeout
    pending = list(drives)
    while pending:
        for drive in list(pending):
            if _transfers_done(api, drive):
                states = sorted(drive.transfer_states.values())
                log(f"<-- {drive.transfer_dag}: {', '.join(states)} in {drive.transfer_s:.1f} s")
                pending.remove(drive)
        if pending and time.monotonic() > deadline:
            names = ", ".join(d.domain.name for d in pending)
            raise DeploymentError(f"not finished within {timeout:.0f} s: {names}; see the runs in the Airflow UI")
        if pending:
            time.sleep(poll_s)
    return drives


def run_dag(api: AirflowApi, dag_id: str, conf: dict, timeout: float, log=print, poll_s: float = 2) -> RunOutcome:
    """Unpause ``dag_id``, trigger one run with ``conf`` and wait for it, logging each change of progress."""
    api.wait_for_dag(dag_id, timeout=min(timeout, 180))
    api.unpause(dag_id)
    run_id = api.trigger(dag_id, conf)["dag_run_id"]
    log(f"--> {dag_id}: run {run_id}")
    started = time.monotonic()
    shown = None
    while True:
        state = api.dag_run(dag_id, run_id)["state"]
        tasks = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
        progress = (state, sum(s in FINISHED_TASK for s in tasks.values()), len(tasks))
        if progress != shown:
            log(f"    {dag_id}: {state}, {progress[1]}/{progress[2]} tasks finished")
            shown = progress
        if state in TERMINAL:
            return RunOutcome(dag_id, run_id, state, tasks, time.monotonic() - started)
        if time.monotonic() - started > timeout:
            raise DeploymentError(
                f"{dag_id} run {run_id} not finished within {timeout:.0f} s (it goes on): follow it in the Airflow UI"
            )
        time.sleep(poll_s)
