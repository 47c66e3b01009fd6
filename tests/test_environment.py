"""scripts/env.sh and scripts/services.sh: what `make test` relies on before any test runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEAN_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}


def _exports_after(sources: int) -> dict[str, str]:
    script = " && ".join(['source "$1"'] * sources) + " && env -0"
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(ROOT / "scripts" / "env.sh")],
        env=CLEAN_ENV,
        capture_output=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in result.stdout.decode().split("\0") if "=" in line)


def test_sourcing_env_sh_twice_changes_nothing():
    once, twice = _exports_after(1), _exports_after(2)
    assert twice == once
    ledger = json.loads(twice["AIRFLOW_CONN_HDH_LEDGER"])
    assert ledger == {"conn_type": "sqlite", "host": f"{ROOT}/.local/ledger.db"}
    assert twice["PYTHONPATH"] == f"{ROOT}/plugins:{ROOT}/tools"  # the package, then the seed tooling


def test_a_ledger_connection_given_by_the_user_is_kept():
    given = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "schema": "ledger"})
    result = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1" && source "$1" && printf %s "$AIRFLOW_CONN_HDH_LEDGER"',
            "bash",
            str(ROOT / "scripts" / "env.sh"),
        ],
        env={**CLEAN_ENV, "AIRFLOW_CONN_HDH_LEDGER": given},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == given


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _services_check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_services_are_there_for_the_tests():
    result = _services_check()
    assert (result.returncode, result.stderr) == (0, "")


def test_a_missing_service_stops_with_one_line_naming_what_to_install(tmp_path):
    cases = {
        "HDH_PG_PORT": ("PostgreSQL is not answering", "apt-get install postgresql"),
        "HDH_REDIS_PORT": ("Redis is not answering", "apt-get install redis-server"),
    }
    for variable, (problem, remedy) in cases.items():
        result = _services_check(**{variable: str(_closed_port())})
        assert result.returncode == 1, variable
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert problem in result.stderr and remedy in result.stderr
    result = _services_check(HDH_CHROMIUM=str(tmp_path / "chromium"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"services: {tmp_path / 'chromium'} is missing: install Debian's chromium package (apt-get install chromium); "
        "the on-call board's browser tests drive it"
    )
