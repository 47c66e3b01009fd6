"""One factory per DAG kind, building DAGs from the catalogue.

Only ``airflow.sdk`` and the light catalogue are imported here: DAG files call these factories at
parse time, and task bodies import the heavy modules when they run.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap

from airflow.sdk import (
    DAG,
    Asset,
    AsyncCallback,
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    DeadlineAlert,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from hdh_migration.alerts import FailureNotifier, TransferQueuedAt, deadline_missed
from hdh_migration.catalogue import TRANSFER_POOL, Domain
from hdh_migration.errors import MigrationError
from hdh_migration.naming import (
    GAP_SCAN_DAG_ID,
    cutover_dag_id,
    decommission_dag_id,
    rollback_dag_id,
    transfer_dag_id,
    verify_dag_id,
)
from hdh_migration.waits import WaitForWindowOperator

TAGS = ("hdh", "transfer", "cutover", "verify", "operations")
GRAIN_CRON = {"monthly": "0 0 1 * *", "yearly": "0 0 1 1 *"}
# The Celery queue of the object transfers, so that a pool of workers can be sized for them (the
# workers of docker-compose.yml and scripts/prod.sh); every other task goes to [operators] default_queue.
TRANSFER_QUEUE = "transfer"
# The Celery queue of the cutover and rollback DAGs: only its worker holds the cutover signing key
# (connection hdh_cutover_signing), so no transfer worker can sign a cutover record.
CUTOVER_QUEUE = "cutover"

# Tasks returning a dict say multiple_outputs=False: Airflow infers True from a ``-> dict`` annotation and
# would push every key again as an XCom of its own (15 rows per transferred object, its results twice).

# Data, integrity, configuration and sovereignty errors cannot be fixed by retrying: fail at once.
# Everything else (network errors, 5xx, throttling) falls through to the exponential-backoff retries.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[RetryRule(exception=MigrationError, action=RetryAction.FAIL, reason="data or policy error: not retryable")]
)


# The first retry's delay (doubled at each retry); HDH_RETRY_DELAY_S shortens it for the fault tests
# on the production profile only: deployments leave it unset.
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("HDH_RETRY_DELAY_S", 30)))


def default_args(owner: str, domain: str | None = None) -> dict:
    """Retries, the retry policy and the failure alert (naming ``domain`` when the DAG has one)."""
    return {
        "owner": owner,
        "retries": 4,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=20),
        "retry_policy": RETRY_POLICY,
        "on_failure_callback": [FailureNotifier(domain)],
    }


def transfer_deadline(domain: Domain) -> DeadlineAlert:
    """Alert when a partition transfer is still unfinished its expected duration after it was queued."""
    return DeadlineAlert(
        reference=TransferQueuedAt(),
        interval=domain.expected_duration,
        callback=AsyncCallback(deadline_missed, kwargs={"domain": domain.name}),
        name=f"hdh_transfer__{domain.name} past its expected duration",
    )


TRANSFER_DOC = """
### Transfer `{domain}` to the sovereign store

{description}

One run moves **one partition** ({grain}) of every table of the domain ({tables}) from Azure to
the French S3 store: `wait_for_window` → `plan_partition` → `transfer_object` (mapped per object) →
`validate_partition` → `commit_partition` (manifest written last) → `reconcile_partition` →
`announce_cutover_partition` (only for the planned cutover partition {cutover}: it triggers
`hdh_cutover__{domain}`; skipped for the others).
Owner: {owner}. Wave {wave}. Partitions {first} to {cutover}.

#### Triage notes
- **A task failed with `domain=… table=… partition=… object=…`**: the message names the rule and
  the next step. Data, configuration and policy errors (`DataError`, `IntegrityError`, `ConfigurationError`,
  `SovereigntyError`, `FrozenDomainError`) fail at once without retry; fix the cause (for a
  `ConfigurationError`, the file and setting it names) and clear the run.
- **`the ledger refuses to move the partition from … to …`** (`StateTransitionError`, not retried):
  another run or an operator changed the partition meanwhile, or a bug. Look at the board first; clear
  the whole run once nothing else acts on the partition.
- **An object that cannot be read or checked** (`expect_file_to_be_valid_parquet`,
  `expect_csv_to_parse_with_schema_types`, `expect_batch_checks_to_complete`): its partition is
  quarantined at once; the message gives the exception's class, the columns and counts, never a value.
- **Network errors** (Azure or the sovereign store unreachable, 5xx, throttling) are retried with
  exponential backoff; a retried `transfer_object` resumes its multipart upload.
- **Nothing is promoted** until every object of every table passed validation; a failed run leaves
  only `_staging/` objects, which the next successful run removes.
- **Re-run a partition**: clear the DAG run (or trigger with `{{"partition": "<value>", "force": true}}`).
  A committed partition whose source is unchanged is a fast no-op unless `force` is set.
- **`plan_partition` waits with `run … is writing this partition`**: another run of the same
  partition holds its write lease; this one goes on when it finishes (it then usually finds the
  partition committed and unchanged). `PartitionLeaseLost`: another run took over; nothing to do.
- **`FrozenDomainError` in `plan_partition`**: the domain is cut over, so the French copy is the data
  and every run, backfills included, is refused. Roll back first (`hdh_rollback__{domain}`, with a reason).
- **`wait_for_window` is deferred** ("waiting for wave {wave}'s transfer window: opens at …"): nothing
  is wrong. The wave has not started yet or its window is closed; the wait sits in the triggerer and
  holds no worker slot, and the run goes on when the window opens. Windows and start dates are in
  `dags/domains.yaml` (`waves`). A deferred task that never resumes means the triggerer is down.
- **`transfer_object` tasks queued, not running**: the pool `{pool}` is full (other domains are
  transferring) or the domain's `max_transfers` is reached; see Admin → Pools.
- **Slow transfers**: each `transfer_object` logs its bandwidth share ("bandwidth per direction:
  … MB/s"); the caps are in the catalogue (`bandwidth_mb_s`: global, per wave, per domain).
- **Pause a wave**: pause its transfer DAGs, tagged `wave-{wave}` and `transfer`: in the UI filter the
  DAG list by both tags, or `PATCH /api/v2/dags?tags=wave-{wave}&tags=transfer&tags_match_mode=all&dag_id_pattern=%25`
  with `{{"is_paused": true}}` (the CLI has no tag filter: `airflow dags pause -y --treat-dag-id-as-regex
  '^hdh_transfer__(<domain>|<domain>)$'`). Running tasks finish; no new task starts.
- **Deadline alert** (`deadline_missed`, severity warning): a run is still unfinished
  {expected_minutes} minutes after it was queued (`expected_duration_minutes` in the catalogue).
  Open its grid: a task waiting for a pool slot or a worker, retries against a slow store, or a
  larger partition. Nothing to undo; raise the expected duration if this size is the new normal.

#### How to backfill
`airflow backfill create --dag-id hdh_transfer__{domain} --from-date <first> --to-date <last>
--reprocess-behavior failed` (or the Backfill button in the UI, or `POST /api/v2/backfills`).
Committed partitions whose source is unchanged are fast no-ops, so a wide range is safe.
"""


def _run_partition(domain: Domain) -> str:
    context = get_current_context()
    start = context.get("data_interval_start")
    return domain.run_partition(context["params"].get("partition"), start and start.date())


def build_transfer_dag(domain: Domain, with_deadline: bool = True) -> DAG:
    """The transfer DAG of a domain.

    ``with_deadline=False`` is for ``dag.test()`` (the CLI's ``migrate``, the tests): in Airflow
    3.3.2, ``dag.test()`` fails a *successful* run of a DAG that has a ``DeadlineAlert``
    (``DagRun.update_state`` looks the alerts up by their database id, which the DAG that
    ``dag.test()`` builds in memory does not carry). The scheduler, which fires deadlines, runs the
    DAG files' DAGs, built with the deadline.
    """
    schedule = None
    if domain.grain in GRAIN_CRON:
        schedule = CronDataIntervalTimetable(GRAIN_CRON[domain.grain], timezone="UTC")
    with _domain_dag(
        domain,
        transfer_dag_id(domain.name),
        TRANSFER_DOC,
        ["transfer"],
        description=f"Move one {domain.grain} partition of {domain.name} from Azure to the sovereign store",
        schedule=schedule,
        # The plan ends at the cutover partition: unpaused, the DAG schedules nothing after it.
        end_date=domain.logical_date(domain.cutover_partition),
        max_active_runs=4,
        deadline=transfer_deadline(domain) if with_deadline else None,
        params={
            "partition": Param(None, type=["null", "string"], description="Partition value; default: the run's"),
            "force": Param(False, type="boolean", description="Re-transfer even if committed and unchanged"),
        },
    ) as dag:

        @task
        def plan_partition(run_id=None, params=None, ti=None) -> list:
            from hdh_migration import transfer

            plan = transfer.plan_partition(domain.name, _run_partition(domain), run_id, force=params["force"])
            ti.xcom_push(key="tables", value=plan["tables"])
            return plan["objects"]

        @task(
            pool=TRANSFER_POOL,
            max_active_tis_per_dag=domain.max_transfers,
            queue=TRANSFER_QUEUE,
            multiple_outputs=False,
        )
        def transfer_object(item: dict, run_id=None, task_state_store=None) -> dict:
            from hdh_migration import transfer

            return transfer.transfer_object(item, run_id, task_state_store=task_state_store)

        # results[:] fetches every mapped result in one request; iterating asks for them one at a time.
        @task(trigger_rule="none_failed", multiple_outputs=False)
        def validate_partition(tables: list, results: list, run_id=None) -> dict:
            from hdh_migration import transfer

            return transfer.validate_partition(tables, list(results[:]), run_id)

        @task(trigger_rule="none_failed")
        def commit_partition(tables: list, results: list, verdicts: dict, run_id=None) -> list:
            from hdh_migration import transfer

            return transfer.commit_partition(tables, list(results[:]), verdicts, run_id)

        @task(trigger_rule="none_failed", multiple_outputs=False)
        def reconcile_partition(committed: list, run_id=None) -> dict:
            from hdh_migration import transfer

            return transfer.reconcile_partition(domain.name, _run_partition(domain), run_id)

        @task(outlets=[cutover_partition_committed(domain)])
        def announce_cutover_partition(report: dict) -> None:
            if _run_partition(domain) != domain.cutover_partition:
                raise AirflowSkipException(f"not the planned cutover partition {domain.cutover_partition}")

        plan = plan_partition()
        WaitForWindowOperator(task_id="wait_for_window", domain=domain.name) >> plan
        moved = transfer_object.expand(item=plan)
        verdicts = validate_partition(plan["tables"], moved)
        committed = commit_partition(plan["tables"], moved, verdicts)
        announce_cutover_partition(reconcile_partition(committed))
    return dag


# ---------------------------------------------------------------------------------------------
# cutover, rollback, verify


def cutover_partition_committed(domain: Domain) -> Asset:
    """Updated when a transfer run has committed and reconciled the domain's planned cutover partition."""
    return Asset(name=f"hdh_cutover_partition_committed__{domain.name}", uri=f"x-hdh://committed/{domain.name}")


def sovereign_asset(domain: Domain) -> Asset:
    """The domain's data: an event at each cutover and rollback, whose extra ``state`` says which.

    The extra names the bucket, prefix, cutover record and root hash. The URI does not hold the
    bucket, so the asset stays the same whichever store a deployment points at.
    """
    return Asset(name=f"hdh_sovereign__{domain.name}", uri=f"x-hdh://sovereign/{domain.name}")


CUTOVER_DOC = """
### Cut `{domain}` over to the sovereign store

From this run on, the French copy of {domain} (partitions {first} to {cutover}, tables {tables}) is
the data. Five steps: `check_completeness` → `reconcile_source` (against the live Azure listing) →
`freeze_domain` → `write_cutover_record` (`_cutover/{domain}.json`: every partition manifest and its
sha256 chained into one root, who, when, which run, the history, signed with the cutover key) →
`announce_cutover` (an event of the asset `hdh_sovereign__{domain}`). Every task runs on the Celery
queue `cutover`, whose worker alone holds the signing key (connection `hdh_cutover_signing`).
Triggered when `hdh_transfer__{domain}` commits the planned cutover partition {cutover}, or by hand
(param `by`: who decides). Owner: {owner}. Wave {wave}.

#### Triage notes
- **Tasks queued, never running**: no worker serves the queue `cutover` (`airflow-worker-cutover` in
  docker-compose.yml, `worker-cutover` in scripts/prod.sh). Start it.
- **`connection 'hdh_cutover_signing' is not defined`**: the task ran on a worker without the
  signing key. Nothing was frozen: give the key to the cutover worker only, then trigger again.
- **`cutover refused at check_completeness`**: the message lists each missing, failed or quarantined
  partition with its last error. Run the missing ones, fix or waive the quarantined ones, then
  trigger this DAG again. Nothing was frozen: the domain stays `transferring`.
- **`cutover refused at reconcile_source`**: Azure changed after a commit (late-arriving objects,
  changed ETags, a newer snapshot) or a landed object differs from its manifest. The message names
  each object; re-transfer the named partitions (`{{"partition": "<value>"}}` on
  `hdh_transfer__{domain}`), then trigger the cutover again.
- **`write_cutover_record` refused**: a transfer committed between reconciliation and freeze; the
  domain was thawed back to `transferring`. Trigger the cutover again.
- **Every task skipped**: the domain is already cut over. Roll it back (`hdh_rollback__{domain}`,
  with a reason) to cut it over again.
- **Network errors** are retried; every step is idempotent (a retried record write adds no second
  history entry).

#### How to backfill
Nothing to backfill: a cutover is one decision per domain, not per interval. Backfill the missing
partitions on `hdh_transfer__{domain}`, then trigger this DAG once.
"""

ROLLBACK_DOC = """
### Roll the cutover of `{domain}` back

Returns {domain} from `cut_over` to `transferring`, so transfers may write again: `roll_back_cutover`
appends the rollback (who, when, why, which run) to the append-only history of
`_cutover/{domain}.json` and to the ledger, then `announce_rollback` emits an event of the asset
`hdh_sovereign__{domain}` whose extra says `state: rolled_back`. By hand only, with a mandatory
`reason` (at least 10 characters). It signs the history entry, so it runs on the queue `cutover`.
Owner: {owner}. Wave {wave}.

#### Triage notes
- **`a rollback needs a reason`**: trigger again with `{{"reason": "<why>", "by": "<who>"}}`.
- **`not cut over`**: there is nothing to roll back; `python -m hdh_migration status` shows the state.
- **After a rollback**: re-transfer what needs it, then trigger `hdh_cutover__{domain}`; the next
  cutover appends to the same history.

#### How to backfill
Never: a rollback is a decision taken by hand, with its reason. Backfill transfers on
`hdh_transfer__{domain}` after the rollback.
"""

VERIFY_DOC = """
### Verify the sovereign copy of `{domain}` against its cutover record

Daily, `verify_cutover` re-checks `_cutover/{domain}.json` and reads **nothing from Azure**: the
signatures of the root and of every history entry against the public key pinned in
`HDH_CUTOVER_PUBLIC_KEY`, the hash chain and root, the history against the ledger, every manifest's
sha256, every object's presence, size and checksum, and no object under `{domain}/` or
`_manifests/{domain}/` outside the record. On Sundays (or with `deep: true`) every byte is
read back and hashed. With `chain: true`, it also proves from the record alone that every object
descends from a first-source object through the embedded interim record (a second move); a
decommissioned domain's signed receipt is checked too. Skipped while the domain is not cut over.
Owner: {owner}. Wave {wave}.

#### Triage notes
- **`verify failed`**: the French copy is the data, so this is an incident. The message names each
  missing, altered or stray object or manifest, the edited record, or a signature no pinned key
  verifies (a record rewritten without the signing key). Restore from the store's
  backup or versioning; while Azure still holds the source, roll back with a reason, re-transfer the
  named partitions with `force`, and cut over again. Then trigger this DAG with `deep: true`.
- **Network errors** are retried with backoff; a verify only reads.

#### How to backfill
Not needed: every run checks the whole domain as it is now, so missed days leave no gap. After an
outage, trigger one run with `{{"deep": true}}`.
"""

DECOMMISSION_DOC = """
### Decommission the old copy of `{domain}`

Deletes the domain's source (its Azure blobs, or the interim bucket's keys on a second move) object
by object, once the domain is cut over, a deep verify has passed since, and the catalogue's
`retention_days` have passed; only objects with the same ETag or sha256 as the cutover record's
manifests are deleted. Writes the signed receipt `_cutover/{domain}.decommission.json` (every object
with its size and hashes, when, by whom, which run); the domain becomes `decommissioned`, and
rollbacks are refused from then on. By hand only (`by`, `dry_run`); signs, so it runs on the queue
`cutover`. Owner: {owner}. Wave {wave}.

#### Triage notes
- **`verify is not ok`**: run `hdh_verify__{domain}` with `{{"deep": true}}`, then trigger again.
- **`object(s) changed or vanished in the source since the cutover`**: nothing was deleted; the message
  names them. Find out who wrote to the old copy; never delete it by hand.
- **`already decommissioned`**: a second run is refused; the receipt says when and by whom.
- **A run that failed mid-way** left the receipt `in_progress`: trigger again, it finishes the deletes.

#### How to backfill
Never: a decommission is one decision per domain, taken by hand.
"""

ALERTS_DOC = """
#### What an alert means
Every failed task of this DAG sends one alert (connections `hdh_alert_webhook`, `hdh_alert_smtp`;
a channel without its connection is off) naming the DAG, task, run, domain, table, partition and
object, the error and the next step, never a data value. `severity: critical, kind:
privacy_incident` is a raw NIR: call the data protection officer first. `severity: error, kind:
task_failure` is any other failure: follow its `next_step` and the notes above.
"""


def _doc(template: str, domain: Domain) -> str:
    return textwrap.dedent(
        (template + ALERTS_DOC).format(
            domain=domain.name,
            description=domain.description,
            grain=domain.grain,
            owner=domain.owner,
            wave=domain.wave,
            first=domain.first_partition,
            cutover=domain.cutover_partition,
            tables=", ".join(t.name for t in domain.tables),
            pool=TRANSFER_POOL,
            expected_minutes=domain.expected_duration_minutes,
        )
    )


def _domain_dag(
    domain: Domain,
    dag_id: str,
    doc: str,
    tags: list[str],
    *,
    schedule,
    max_active_runs: int = 1,
    queue: str | None = None,
    **kwargs,
) -> DAG:
    """A DAG of one domain (transfer, cutover, rollback, verify): from the domain's start, no catchup,
    its owner's default args (and ``queue`` for every task), tagged hdh, its kind(s) and its wave,
    documented from ``doc``."""
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=domain.logical_date(domain.first_partition),
        catchup=False,
        max_active_runs=max_active_runs,
        tags=["hdh", *tags, f"wave-{domain.wave}"],
        default_args={**default_args(domain.owner, domain.name), **({"queue": queue} if queue else {})},
        doc_md=_doc(doc, domain),
        **kwargs,
    )


def build_cutover_dag(domain: Domain) -> DAG:
    with _domain_dag(
        domain,
        cutover_dag_id(domain.name),
        CUTOVER_DOC,
        ["cutover"],
        description=f"Prove {domain.name} complete, freeze it, record and announce its cutover",
        schedule=[cutover_partition_committed(domain)],
        queue=CUTOVER_QUEUE,
        params={"by": Param(None, type=["null", "string"], description="Who decides; default: who triggered")},
    ) as dag:

        @task
        def check_completeness(run_id=None) -> list:
            from hdh_migration import cutover

            try:
                return cutover.check_completeness(domain.name, run_id)
            except cutover.NothingToDoError as done:
                raise AirflowSkipException(str(done)) from None

        @task(multiple_outputs=False)
        def reconcile_source(committed: list, run_id=None) -> dict:
            from hdh_migration import cutover

            return cutover.reconcile_source(domain.name, committed, run_id)

        @task
        def freeze_domain(reconciled: dict, run_id=None) -> None:
            from hdh_migration import cutover

            cutover.freeze_domain(domain.name, run_id)

        @task(multiple_outputs=False)
        def write_cutover_record(reconciled: dict, run_id=None, params=None, dag_run=None) -> dict:
            from hdh_migration import cutover

            by = cutover.decided_by(params["by"], dag_run.triggering_user_name, dag_run.run_type)
            return cutover.write_cutover_record(domain.name, reconciled, by, dag_run.dag_id, run_id)

        @task(outlets=[sovereign_asset(domain)])
        def announce_cutover(announcement: dict, outlet_events=None) -> None:
            outlet_events[sovereign_asset(domain)].extra = announcement

        reconciled = reconcile_source(check_completeness())
        record = write_cutover_record(reconciled)
        freeze_domain(reconciled) >> record
        announce_cutover(record)
    return dag


def build_rollback_dag(domain: Domain) -> DAG:
    with _domain_dag(
        domain,
        rollback_dag_id(domain.name),
        ROLLBACK_DOC,
        ["cutover", "operations"],
        description=f"Return {domain.name} from cut_over to transferring, with a reason",
        schedule=None,
        queue=CUTOVER_QUEUE,
        params={
            "reason": Param(type="string", description="Why the French copy stops being the data (mandatory)"),
            "by": Param(None, type=["null", "string"], description="Who decides; default: who triggered"),
        },
    ) as dag:

        @task(multiple_outputs=False)
        def roll_back_cutover(run_id=None, params=None, dag_run=None) -> dict:
            from hdh_migration import cutover

            by = cutover.decided_by(params["by"], dag_run.triggering_user_name, dag_run.run_type)
            return cutover.rollback(domain.name, params["reason"], by, dag_run.dag_id, run_id)

        @task(outlets=[sovereign_asset(domain)])
        def announce_rollback(announcement: dict, outlet_events=None) -> None:
            outlet_events[sovereign_asset(domain)].extra = announcement

        announce_rollback(roll_back_cutover())
    return dag


def build_verify_dag(domain: Domain) -> DAG:
    with _domain_dag(
        domain,
        verify_dag_id(domain.name),
        VERIFY_DOC,
        ["verify"],
        description=f"Re-check the sovereign copy of {domain.name} against its cutover record, without Azure",
        schedule=CronTriggerTimetable("0 4 * * *", timezone="UTC"),
        params={
            "deep": Param(False, type="boolean", description="Read every byte back (always on Sundays)"),
            "chain": Param(False, type="boolean", description="Also prove the chain of custody from the record"),
        },
    ) as dag:

        @task(multiple_outputs=False)
        def verify_cutover(params=None, dag_run=None) -> dict:
            from hdh_migration import cutover

            try:
                deep = params["deep"] or dag_run.run_after.weekday() == 6
                return cutover.verify(domain.name, deep=deep, chain=params.get("chain", False))
            except cutover.NothingToDoError as skip:
                raise AirflowSkipException(str(skip)) from None

        verify_cutover()
    return dag


def build_decommission_dag(domain: Domain) -> DAG:
    with _domain_dag(
        domain,
        decommission_dag_id(domain.name),
        DECOMMISSION_DOC,
        ["cutover", "operations"],
        description=f"Delete the old copy of {domain.name} after its verified cutover, with a signed receipt",
        schedule=None,
        queue=CUTOVER_QUEUE,
        params={
            "dry_run": Param(False, type="boolean", description="List what would be deleted; delete nothing"),
            "by": Param(None, type=["null", "string"], description="Who decides; default: who triggered"),
        },
    ) as dag:

        @task(multiple_outputs=False)
        def decommission_old_copy(run_id=None, params=None, dag_run=None) -> dict:
            from hdh_migration import cutover, decommission

            by = cutover.decided_by(params["by"], dag_run.triggering_user_name, dag_run.run_type)
            return decommission.decommission(domain.name, by, dag_run.dag_id, run_id, dry_run=params["dry_run"])

        decommission_old_copy()
    return dag


# ---------------------------------------------------------------------------------------------
# gap scan

GAP_SCAN_OWNER = "team-migration"

GAP_SCAN_DOC = """
### Find missed partitions and backfill them

Daily, `scan_gaps` compares the partitions present in Azure (one listing per table) with those
committed in the sovereign store (ledger state `committed` AND a manifest under `_manifests/`), over
each domain's catalogue range ({domains}). Each domain with gaps gets **one Airflow backfill** of
`hdh_transfer__<domain>` over the span of its gaps, reprocess behaviour `failed`, created through
Airflow's REST API (connection `hdh_airflow_api`); a snapshot domain gets one triggered run. The
report (names, partitions, reasons and counts only) is written to `_reports/gap_scan/<started>.json`
and to the ledger; the on-call board shows the last one. Param `dry_run`: find and report, create
nothing. Owner: {owner}.

What is backfilled: partitions in Azure never transferred (`missing`), whose last run failed fewer
than `max_attempts` times (`failed`), committed in only one of ledger and manifests
(`manifest_missing`, `unindexed`), stuck in a dead run (`stale`), or quarantined **and** changed since
(`quarantined_changed`: a source object modified later, or a waiver recorded later).
What is held back and only reported: runs in flight (`in_flight`), partitions that failed
`max_attempts` times (`failed_too_often`), and quarantined partitions with nothing new
(`quarantined_waiting`): re-running them would quarantine them again at every scan.

#### Triage notes
- **`Airflow API ... refused a token`**: the login or password of the `hdh_airflow_api` connection is
  wrong or the user lacks the right to create backfills; fix the connection, clear the task.
- **A domain's request says `skipped: a backfill of this DAG is already running`**: Airflow runs one
  backfill per DAG at a time. Nothing to do: the next scan asks again once it has finished.
- **`skipped: the domain is cut over`**: a gap after cutover means Azure changed after the freeze;
  compare with `hdh_verify__<domain>`, roll back with a reason only if the change must move.
- **The same gap in every report**: look at the backfill's runs (run type `backfill` on the DAG's page) and at
  the partition's last error (`python -m hdh_migration status`). A run that succeeded while an
  optional table was not yet delivered is not re-run by a `failed` backfill: trigger
  `hdh_transfer__<domain>` with `{{"partition": "<value>"}}`.
- **`failed_too_often`**: read the partition's last error; once fixed, trigger the partition by hand
  (its attempts count keeps growing, so the scan will not re-try it on its own).
- **`quarantined_waiting`**: follow the quarantine runbook (fix the source in Azure, or waive);
  the next scan backfills it.
- **`error: ... HTTP 409/400`** in a request: read the detail (dates in the future, DAG paused or
  missing); `dag_paused: true` means the backfill exists but its runs wait for the DAG to be unpaused.
- The scan only reads listings and writes its report: clearing or re-triggering it is always safe.

#### How to backfill
Not needed: every run scans every domain's whole range as it is now, so a missed day leaves no gap.
The scan is what creates the transfer DAGs' backfills; to backfill by hand, see `hdh_transfer__<domain>`.
"""


def build_gap_scan_dag(catalogue) -> DAG:
    with DAG(
        dag_id=GAP_SCAN_DAG_ID,
        description="Find partitions in Azure not committed in the sovereign store and backfill them",
        schedule=CronTriggerTimetable("0 5 * * *", timezone="UTC"),
        start_date=min(domain.logical_date(domain.first_partition) for domain in catalogue.domains),
        catchup=False,
        max_active_runs=1,
        tags=["hdh", "operations"],
        default_args=default_args(GAP_SCAN_OWNER),
        doc_md=textwrap.dedent(
            (GAP_SCAN_DOC + ALERTS_DOC).format(
                domains=", ".join(d.name for d in catalogue.domains), owner=GAP_SCAN_OWNER
            )
        ),
        params={
            "dry_run": Param(False, type="boolean", description="Find and report the gaps; create no backfill"),
            "max_attempts": Param(3, type="integer", minimum=1, description="Failed runs before a partition is held"),
        },
    ) as dag:

        @task
        def scan_gaps(run_id=None, params=None) -> dict:
            from hdh_migration import gaps

            report = gaps.run_gap_scan(dry_run=params["dry_run"], run_id=run_id, max_attempts=params["max_attempts"])
            return {k: report[k] for k in ("partitions_checked", "gaps", "held", "backfills", "report_key")}

        scan_gaps()
    return dag
