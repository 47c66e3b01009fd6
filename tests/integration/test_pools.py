"""``python -m hdh_migration pools sync``: the deployment sizes the transfers' pool from the catalogue.

Against this worktree's Airflow metadata database: the pool is created when missing, resized when its
size differs from the catalogue's ``transfer_slots``, left alone when it matches, and preflight then
finds it right. scripts/prod.sh and docker-compose.yml's airflow-init run this same command
(tests/compose checks that they do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from hdh_migration.catalogue import TRANSFER_POOL, load_catalogue
from hdh_migration.cli import main

pytestmark = [pytest.mark.integration]


@pytest.fixture
def catalogue_with_slots(tmp_path):
    """dags/domains.yaml with another transfer_slots, beside links to the schemas and suites it names."""
    (tmp_path / "dags").mkdir()
    for folder in ("schemas", "expectations"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    text = (ROOT / "dags" / "domains.yaml").read_text()
    assert "\ntransfer_slots: 16\n" in text

    def write(slots: int):
        path = tmp_path / "dags" / "domains.yaml"
        path.write_text(text.replace("\ntransfer_slots: 16\n", f"\ntransfer_slots: {slots}\n"))
        assert load_catalogue(path).transfer_slots == slots
        return path

    return write


@pytest.fixture
def no_pool():
    from airflow.models.pool import Pool

    Pool.delete_pool(TRANSFER_POOL) if Pool.get_pool(TRANSFER_POOL) else None
    yield
    Pool.delete_pool(TRANSFER_POOL)


@pytest.fixture
def sync(capsys, monkeypatch):
    """``pools sync --json`` in this process; main() exports HDH_CATALOGUE, restored afterwards."""
    monkeypatch.delenv("HDH_CATALOGUE", raising=False)

    def run(catalogue) -> dict:
        return _sync(capsys, catalogue)

    return run


def _sync(capsys, catalogue) -> dict:
    capsys.readouterr()
    assert main(["--catalogue", str(catalogue), "pools", "sync", "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def test_sync_creates_resizes_and_keeps_the_pool_at_transfer_slots(no_pool, catalogue_with_slots, sync):
    from airflow.models.pool import Pool

    from hdh_migration.preflight import OK, check_pool

    five = catalogue_with_slots(5)
    assert sync(five) == {"pool": TRANSFER_POOL, "slots": 5, "previous": None, "changed": True}
    assert Pool.get_pool(TRANSFER_POOL).slots == 5
    assert check_pool(load_catalogue(five)).verdict == OK

    Pool.create_or_update_pool(TRANSFER_POOL, 3, "resized by hand", include_deferred=False)
    assert sync(five) == {"pool": TRANSFER_POOL, "slots": 5, "previous": 3, "changed": True}
    assert sync(five)["changed"] is False
    pool = Pool.get_pool(TRANSFER_POOL)
    assert (pool.slots, pool.include_deferred) == (5, False)
    assert "transfer_slots" in pool.description

    seven = catalogue_with_slots(7)
    assert check_pool(load_catalogue(seven)).verdict != OK, "the catalogue changed, the pool did not yet"
    assert sync(seven)["previous"] == 5
    assert Pool.get_pool(TRANSFER_POOL).slots == 7


def test_the_command_as_the_deployment_runs_it(no_pool):
    """A real process, with the default catalogue (dags/domains.yaml), as prod.sh and compose run it."""
    result = subprocess.run(
        [sys.executable, "-m", "hdh_migration", "pools", "sync"],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "HDH_CATALOGUE"},
        timeout=120,
    )
    slots = load_catalogue(ROOT / "dags" / "domains.yaml").transfer_slots
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pool {TRANSFER_POOL}: {slots} slot(s) (created)"
    from airflow.models.pool import Pool

    assert Pool.get_pool(TRANSFER_POOL).slots == slots
