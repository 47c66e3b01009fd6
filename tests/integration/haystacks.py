"""Every output of a run, as text, to search for planted values: none may leave the worker."""

from __future__ import annotations

import json

import sqlalchemy as sa


def airflow_xcoms(dag_id: str) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [
            json.dumps(row.value, default=str) for row in session.scalars(sa.select(XComModel).filter_by(dag_id=dag_id))
        ]


def ledger_dump(migration) -> str:
    from hdh_migration.ledger import metadata

    with migration.ledger.engine.connect() as conn:
        return json.dumps(
            {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))] for t in metadata.sorted_tables},
            default=str,
        )


def outputs(migration, dag_id: str, logs: str, store_prefix: str = "") -> dict[str, str]:
    """Task logs (captured by the test; they hold every alert, logged as ``HDH ALERT``), XCom, the ledger,
    and every object of the bucket under ``store_prefix``, decoded as Latin-1 so that any byte compares."""
    return {
        "task logs": logs,
        "xcom": "\n".join(airflow_xcoms(dag_id)),
        "ledger": ledger_dump(migration),
        "store": "\n".join(
            migration.target_bytes(key).decode("latin-1") for key in migration.target_keys(store_prefix)
        ),
    }


def assert_nowhere(haystacks: dict[str, str], secrets) -> None:
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the {where}"


def tries(run) -> dict[str, tuple[set[str], int]]:
    """Each task's states (a mapped task has one per map index) and its highest try number."""
    found: dict[str, tuple[set[str], int]] = {}
    for ti in run.get_task_instances():
        states, number = found.get(ti.task_id, (set(), 0))
        found[ti.task_id] = (states | {str(ti.state)}, max(number, ti.try_number))
    return found
