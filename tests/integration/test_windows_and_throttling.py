"""Waves, windows and egress caps through Airflow itself and against the real Azurite and SeaweedFS."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import time

import pytest
import yaml

from hdh_migration.throttle import MB, TokenBucket

# Well under what the stand-ins move on a loaded 2-core machine (about 10 MB/s each way at worst).
CAP_MB_S = 5
OBJECT_MB = 30


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _open_wave_1_at(migration, opens: dt.datetime) -> None:
    from hdh_migration.catalogue import cached_catalogue

    raw = yaml.safe_load(migration.catalogue_path.read_text())
    raw["waves"][1]["start"] = opens.isoformat()
    # A cap small enough to be seen on a small object proves the catalogue's cap reaches the task.
    raw["domains"]["beneficiaires"]["bandwidth_mb_s"] = 0.4
    raw["domains"]["beneficiaires"]["max_transfers"] = 2
    migration.catalogue_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cached_catalogue.cache_clear()


def test_a_transfer_before_its_window_defers_then_runs_when_the_window_opens(migration, monkeypatch):
    """The wave opens some seconds from now: wait_for_window defers to the trigger, which fires at
    the opening, and the run goes on. dag.test() may take longer than that to reach its first task
    on a loaded machine: then the window was already open, which proves nothing, so the run is
    repeated with a later opening."""
    migration.seed(domains=["beneficiaires"], rows_per_partition=200, files_per_partition=1)
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    fired = []  # a spy: the real trigger runs, in line, as dag.test() runs it for a deferred task
    real_run = DateTimeTrigger.run

    async def recording_run(self):
        async for event in real_run(self):
            fired.append(self.moment)
            yield event

    monkeypatch.setattr(DateTimeTrigger, "run", recording_run)
    for margin_s in (60, 180):
        fired.clear()
        opens = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=margin_s)).replace(microsecond=0)
        _open_wave_1_at(migration, opens)
        run = migration.run("beneficiaires", "2024-06-30", force=True)
        assert str(run.state) == "success", _states(run)
        tis = {ti.task_id: ti for ti in run.get_task_instances()}
        assert tis["wait_for_window"].end_date >= opens, "the wait ended before the window opened"
        assert tis["plan_partition"].start_date >= opens, "the transfer started before its window"
        if fired:
            break
    assert fired == [opens], "wait_for_window did not defer to a DateTimeTrigger firing at the opening"
    assert migration.ledger.get("beneficiaires", "IR_BEN_R", "2024-06-30").state == "committed"

    transferred = tis["transfer_object"].xcom_pull(task_ids="transfer_object", map_indexes=0)
    assert transferred["bandwidth_bytes_s"] == 0.2 * MB  # 0.4 MB/s over 2 transfers
    size = transferred["source"]["size"]
    assert transferred["download_s"] >= 0.9 * size / (0.2 * MB)
    assert transferred["upload_s"] >= 0.9 * size / (0.2 * MB)


@pytest.fixture
def large_object(migration, tmp_path):
    """A 30 MB object in Azure (random bytes: the throttle is format-blind), written with the raw SDK."""
    from azure.core.exceptions import ResourceExistsError

    source = migration.source
    with contextlib.suppress(ResourceExistsError):
        source.container_client.create_container()
    data = os.urandom(OBJECT_MB * MB)
    source.container_client.upload_blob("throttle/part-00000.bin", data, overwrite=True)
    (obj,) = source.list_objects("throttle/", "bin")
    return obj, hashlib.sha256(data).hexdigest()


def _copy(source, target, obj, spool, key: str, throttle_mb_s: float | None) -> tuple[float, float, str]:
    """Read ``obj`` from Azure into ``spool`` and upload it; returns (read MB/s, write MB/s, sha256)."""
    bucket = None if throttle_mb_s is None else TokenBucket(throttle_mb_s * MB)
    digest = hashlib.sha256()
    started = time.monotonic()
    source.download_to(obj, spool, target.settings.read_chunk, digest, throttle=bucket)
    read = obj.size / (time.monotonic() - started) / MB
    bucket = None if throttle_mb_s is None else TokenBucket(throttle_mb_s * MB)
    started = time.monotonic()
    target.upload_file(spool, key, digest.hexdigest(), {}, throttle=bucket)
    write = obj.size / (time.monotonic() - started) / MB
    return read, write, digest.hexdigest()


def test_the_bandwidth_cap_holds_within_ten_percent_azurite_to_seaweedfs(migration, large_object, tmp_path):
    """30 MB read from Azurite then uploaded to SeaweedFS, each way capped at 5 MB/s (about 6 s each).

    Never above the cap; within 10% of it whenever the stand-ins, uncapped, move at least twice
    the cap (on a machine too loaded for that, the lower bound cannot be measured: skipped, said so).
    """
    obj, sha256 = large_object
    source, target = migration.source, migration.target
    target.ensure_bucket()
    spool = tmp_path / "spool.bin"
    assert target.part_size_for(obj.size, TokenBucket(CAP_MB_S * MB)) == 5 << 20  # six parts, paced one by one

    base_read, base_write, _ = _copy(source, target, obj, spool, "throttle/baseline.bin", None)
    read, write, digest = _copy(source, target, obj, spool, "throttle/part-00000.bin", CAP_MB_S)
    target.verify_object("throttle/part-00000.bin", sha256, obj.size)
    assert digest == sha256

    figures = f"capped read {read:.2f}, write {write:.2f} MB/s; uncapped {base_read:.2f}, {base_write:.2f} MB/s"
    assert read <= 1.10 * CAP_MB_S and write <= 1.10 * CAP_MB_S, figures
    if min(base_read, base_write) < 2 * CAP_MB_S:
        pytest.skip(f"stand-ins too slow here to measure the lower bound: {figures}")
    assert read >= 0.90 * CAP_MB_S and write >= 0.90 * CAP_MB_S, figures
