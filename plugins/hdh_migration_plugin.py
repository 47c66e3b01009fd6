"""The hdh-migration Airflow plugin: what on-call sees in the Airflow UI.

- a global operator extra link, "Validation report", on every task that published one (a failed
  ``validate_partition`` links to the redacted report of its quarantined partition);
- a FastAPI app under ``/hdh``, behind Airflow's own authentication, that renders those reports from
  the sovereign store and serves the on-call board (``/hdh/board``, ``/hdh/board.json``), under a
  Content-Security-Policy that allows the api-server's own origin only;
- the board in the UI's navigation, as the "Migration" external view;
- the deadline reference of the transfer DAGs (``TransferQueuedAt``), which the scheduler must know.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from hdh_migration.alerts import TransferQueuedAt


class ValidationReportLink(BaseOperatorLink):
    """The link a task published under ``hdh_validation_report`` in XCom, if any."""

    name = "Validation report"

    @property
    def xcom_key(self) -> str:
        from hdh_migration.reports import REPORT_XCOM_KEY

        return REPORT_XCOM_KEY

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.execute(
                XComModel.get_many(
                    key=self.xcom_key,
                    run_id=ti_key.run_id,
                    dag_ids=ti_key.dag_id,
                    task_ids=ti_key.task_id,
                    map_indexes=ti_key.map_index,
                ).with_only_columns(XComModel.value)
            ).first()
        return XComModel.deserialize_value(row) if row else ""


def _board_app():
    from hdh_migration.board import create_app

    return create_app()


class HdhMigrationPlugin(AirflowPlugin):
    name = "hdh_migration"
    global_operator_extra_links = [ValidationReportLink()]
    deadline_references = [TransferQueuedAt]
    fastapi_apps = [{"app": _board_app(), "url_prefix": "/hdh", "name": "hdh-migration"}]
    external_views = [
        {
            "name": "Migration",
            "href": "/hdh/board",
            "url_route": "hdh-board",
            "destination": "nav",
            "nav_top_level": True,
            "icon": "/hdh/board-icon.svg",
        }
    ]
