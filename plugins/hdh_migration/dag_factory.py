"""One factory per DAG kind, building DAGs from the catalogue.

Only ``airflow.sdk`` and the light catalogue are imported here: DAG files call these factories at
parse time, and task bodies import the heavy modules when they run.
"""

from __future__ import annotations

import datetime as dt
import textwrap

from airflow.sdk import (
    DAG,
    CronDataIntervalTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    get_current_context,
    task,
)

from hdh_migration.catalogue import Domain, partition_start, partition_value
from hdh_migration.errors import MigrationError

TAGS = ("hdh", "transfer", "cutover", "verify", "operations")
GRAIN_CRON = {"monthly": "0 0 1 * *", "yearly": "0 0 1 1 *"}

# Data, integrity and sovereignty errors cannot be fixed by retrying: fail at once. Everything
# else (network errors, 5xx, throttling) falls through to the exponential-backoff retries.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[RetryRule(exception=MigrationError, action=RetryAction.FAIL, reason="data or policy error: not retryable")]
)


def default_args(domain: Domain) -> dict:
    return {
        "owner": domain.owner,
        "retries": 4,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=20),
        "retry_policy": RETRY_POLICY,
    }


TRANSFER_DOC = """
### Transfer `{domain}` to the sovereign store

{description}

One run moves **one partition** ({grain}) of every table of the domain ({tables}) from Azure to
the French S3 store: `plan_partition` → `transfer_object` (mapped per object) →
`validate_partition` → `commit_partition` (manifest written last) → `reconcile_partition`.
Owner: {owner}. Wave {wave}. Partitions {first} to {cutover}.

#### Triage notes
- **A task failed with `domain=… table=… partition=… object=…`**: the message names the rule and
  the next step. Data and policy errors (`DataError`, `IntegrityError`, `SovereigntyError`,
  `FrozenDomainError`) fail at once without retry; fix the cause and clear the run.
- **Network errors** (Azure or the sovereign store unreachable, 5xx, throttling) are retried with
  exponential backoff; a retried `transfer_object` resumes its multipart upload.
- **Nothing is promoted** until every object of every table passed validation; a failed run leaves
  only `_staging/` objects, which the next successful run removes.
- **Re-run a partition**: clear the DAG run (or trigger with `{{"partition": "<value>", "force": true}}`).
  A committed partition whose source is unchanged is a fast no-op unless `force` is set.

#### Backfill missed partitions
`airflow backfill create --dag-id hdh_transfer__{domain} --from-date <first> --to-date <last>
--reprocess-behavior failed` (or the Backfill button in the UI, or `POST /api/v2/backfills`).
"""


def _run_partition(domain: Domain) -> str:
    context = get_current_context()
    explicit = context["params"].get("partition")
    if explicit:
        partition_start(domain.grain, explicit)  # raises on a malformed value
        return explicit
    if domain.grain == "snapshot":
        return domain.cutover_partition
    return partition_value(domain.grain, context["data_interval_start"].date())


def build_transfer_dag(domain: Domain) -> DAG:
    schedule = None
    if domain.grain in GRAIN_CRON:
        schedule = CronDataIntervalTimetable(GRAIN_CRON[domain.grain], timezone="UTC")
    start = partition_start(domain.grain, domain.first_partition)
    doc = TRANSFER_DOC.format(
        domain=domain.name,
        description=domain.description,
        grain=domain.grain,
        tables=", ".join(t.name for t in domain.tables),
        owner=domain.owner,
        wave=domain.wave,
        first=domain.first_partition,
        cutover=domain.cutover_partition,
    )
    with DAG(
        dag_id=f"hdh_transfer__{domain.name}",
        description=f"Move one {domain.grain} partition of {domain.name} from Azure to the sovereign store",
        schedule=schedule,
        start_date=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=4,
        tags=["hdh", "transfer", f"wave-{domain.wave}"],
        default_args=default_args(domain),
        doc_md=textwrap.dedent(doc),
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

        @task(max_active_tis_per_dagrun=8)
        def transfer_object(item: dict, run_id=None, task_state_store=None) -> dict:
            from hdh_migration import transfer

            return transfer.transfer_object(item, run_id, task_state_store=task_state_store)

        @task(trigger_rule="none_failed")
        def validate_partition(tables: list, results: list, run_id=None) -> dict:
            from hdh_migration import transfer

            return transfer.validate_partition(tables, list(results), run_id)

        @task(trigger_rule="none_failed")
        def commit_partition(tables: list, results: list, verdicts: dict, run_id=None) -> list:
            from hdh_migration import transfer

            return transfer.commit_partition(tables, list(results), verdicts, run_id)

        @task(trigger_rule="none_failed")
        def reconcile_partition(committed: list, run_id=None) -> dict:
            from hdh_migration import transfer

            return transfer.reconcile_partition(domain.name, _run_partition(domain), run_id)

        plan = plan_partition()
        moved = transfer_object.expand(item=plan)
        verdicts = validate_partition(plan["tables"], moved)
        committed = commit_partition(plan["tables"], moved, verdicts)
        reconcile_partition(committed)
    return dag
