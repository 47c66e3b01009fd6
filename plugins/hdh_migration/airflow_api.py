"""The project's one client of Airflow's public REST API (v2), for the gap scan and the CLI's deployment mode.

A JWT comes from the api-server's ``/auth/token`` with a user's login and password (with no login,
without credentials: the simple auth manager's all-admins mode). A busy api-server (it also serves
every task's Execution API calls) may answer late: reads and idempotent calls are retried with
backoff on 502/503/504; a POST never is, so a request that creates something is made at most once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# The http connection of the gap scan: host, port, schema http/https, login and password.
API_CONN_ID = "hdh_airflow_api"


class AirflowApiError(RuntimeError):
    """The Airflow REST API refused a request."""


class AirflowApi:
    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # A busy api-server answers late (retried); one that refuses connections is down (told soon).
        retry = Retry(total=6, connect=2, backoff_factor=2, status_forcelist=(502, 503, 504))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if username:
            response = self.session.post(
                f"{self.url}/auth/token", json={"username": username, "password": password or ""}, timeout=timeout
            )
        else:
            response = self.session.get(f"{self.url}/auth/token", timeout=timeout)
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"Airflow API at {self.url} refused a token (HTTP {response.status_code}): check the login "
                f"and password of user {username!r}"
            )
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @classmethod
    def from_connection(cls, conn_id: str = API_CONN_ID, timeout: float = 120.0) -> AirflowApi:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        host = (conn.host or "").rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        try:
            return cls(host, conn.login, conn.password, timeout)
        except AirflowApiError as error:
            raise AirflowApiError(f"{error} (connection {conn_id!r})") from None

    @classmethod
    def from_password_file(cls, url: str, password_file: str | Path, username: str = "admin") -> AirflowApi:
        """A user of the deployment, with its password from a passwords file (JSON ``{user: password}``)."""
        passwords = json.loads(Path(password_file).read_text())
        return cls(url, username, passwords[username], timeout=60.0)

    def call(self, method: str, path: str, what: str | None = None, **kwargs) -> dict:
        response = self.session.request(method, f"{self.url}/api/v2{path}", timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else ""
            raise AirflowApiError(
                f"{what or f'{method} /api/v2{path}'}: HTTP {response.status_code}: {detail or response.text[:500]}"
            )
        return response.json() if response.content else {}

    # -- DAGs and runs ----------------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}")

    def wait_for_dag(self, dag_id: str, timeout: float) -> None:
        """Until the dag-processor has serialized the DAG."""
        deadline = time.monotonic() + timeout
        while self.session.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=self.timeout).status_code != 200:
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"{dag_id} is not in the deployment after {timeout:.0f} s: is the dag-processor up?"
                )
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", f"unpause {dag_id}", json={"is_paused": False})

    def dag_runs(self, dag_id: str, **filters) -> list[dict]:
        params = {"limit": 100, "order_by": "run_after", **filters}
        return self.call("GET", f"/dags/{dag_id}/dagRuns", f"list the runs of {dag_id}", params=params)["dag_runs"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}", f"read {dag_id} {run_id}")

    def return_value(self, dag_id: str, run_id: str, task_id: str):
        """What a task returned (its ``return_value`` XCom), or None when it returned nothing."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        response = self.session.get(f"{self.url}/api/v2{path}", timeout=self.timeout)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise AirflowApiError(f"read what {task_id} of {dag_id} {run_id} returned: HTTP {response.status_code}")
        value = response.json()["value"]
        return json.loads(value) if isinstance(value, str) else value

    def active_runs(self, dag_id: str) -> int:
        runs = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"state": ["queued", "running"], "limit": 1})
        return runs["total_entries"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.call("GET", path, f"list the tasks of {dag_id} {run_id}", params={"limit": 1000})["task_instances"]

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> dict:
        """A run, by default with no logical date (a snapshot partition, a cutover); a partition in ``conf``."""
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.call("POST", f"/dags/{dag_id}/dagRuns", f"trigger {dag_id}", json=body)

    # -- backfills --------------------------------------------------------------------------------

    def create_backfill(
        self, dag_id: str, from_date: str, to_date: str, reprocess_behavior: str, max_active_runs: int
    ) -> dict:
        return self.call(
            "POST",
            "/backfills",
            f"backfill {dag_id}",
            json={
                "dag_id": dag_id,
                "from_date": from_date,
                "to_date": to_date,
                "reprocess_behavior": reprocess_behavior,
                "max_active_runs": max_active_runs,
            },
        )

    def backfill(self, backfill_id: int) -> dict:
        return self.call("GET", f"/backfills/{backfill_id}", f"read backfill {backfill_id}")

    def active_backfill(self, dag_id: str) -> dict | None:
        # At most one backfill per DAG is active, and it is the newest one.
        backfills = self.call("GET", "/backfills", params={"dag_id": dag_id, "limit": 1, "order_by": "-id"})
        return next((b for b in backfills["backfills"] if b["completed_at"] is None), None)
