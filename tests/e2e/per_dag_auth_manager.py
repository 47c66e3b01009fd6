"""Airflow's simple auth manager, with some users allowed to read only some DAGs.

The simple auth manager grants a role on every DAG at once; deployments (FAB, Keycloak) grant DAGs
one by one. The board's tests need such users: ``HDH_TEST_DAG_GRANTS`` (JSON, user name to DAG ids)
lists them. A listed user may read exactly those DAGs and nothing asked without a DAG id, as FAB
refuses a user without the "all DAGs" permission; every other user keeps the simple manager's rules.
The api-server of ``test_board.py`` loads it through ``[core] auth_manager``.
"""

from __future__ import annotations

import json
import os

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class PerDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        allowed = super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        grants = json.loads(os.environ.get("HDH_TEST_DAG_GRANTS", "{}"))
        if user.get_name() not in grants:
            return allowed
        return allowed and details is not None and details.id in grants[user.get_name()]
