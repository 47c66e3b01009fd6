"""The plugin's FastAPI app: redacted validation reports for on-call, behind Airflow's auth.

Only documents under the quarantine prefix are served: they are redacted by construction.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from hdh_migration.layout import QUARANTINE_PREFIX


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(title="hdh-migration", description="On-call views of the SNDS migration")

    @app.get("/reports/{key:path}", response_class=HTMLResponse, dependencies=[Depends(requires_access_dag("GET"))])
    def get_report(key: str) -> HTMLResponse:
        if not key.startswith(f"{QUARANTINE_PREFIX}/") or not key.endswith(".html") or ".." in key:
            raise HTTPException(status_code=404, detail="not a validation report")
        from hdh_migration.transfer import _target

        target = _target()
        if target.head(key) is None:
            raise HTTPException(status_code=404, detail="report not found")
        body = target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
        return HTMLResponse(body.decode("utf-8"))

    return app
