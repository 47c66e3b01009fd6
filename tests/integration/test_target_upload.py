"""Streamed multipart upload to the real SeaweedFS: part sizing, checksum metadata, resume after a crash."""

from __future__ import annotations

import hashlib
import os

import pytest

from hdh_migration.target import SHA256_METADATA, MiB


class TaskStateStore:
    """The get/set/delete surface of Airflow's task_state_store, kept across a task's tries."""

    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value, **_):
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)


class Crash(Exception):
    pass


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(23 * MiB))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_multipart_upload_lands_byte_for_byte_with_its_checksum(migration, payload, monkeypatch):
    path, sha = payload
    target = migration.target
    target.ensure_bucket()
    monkeypatch.setattr(target, "settings", type(target.settings)(part_size=5 * MiB, concurrency=3))
    target.upload_file(path, "x/part-00000.parquet", sha, {"hdh-source-sha256": sha})
    head = target.head("x/part-00000.parquet")
    assert head["ContentLength"] == path.stat().st_size
    assert head["Metadata"][SHA256_METADATA] == sha
    assert head["ETag"].strip('"').endswith("-5"), "23 MiB in 5 MiB parts is a 5-part upload"
    target.verify_object("x/part-00000.parquet", sha, path.stat().st_size)


def test_a_retried_upload_resumes_from_the_parts_already_sent(migration, payload, monkeypatch):
    path, sha = payload
    target = migration.target
    target.ensure_bucket()
    monkeypatch.setattr(target, "settings", type(target.settings)(part_size=5 * MiB, concurrency=1))
    state = TaskStateStore()
    sent = []

    def crash_after_two_parts(nbytes):
        sent.append(nbytes)
        if len(sent) == 2:
            raise Crash("worker lost")

    with pytest.raises(Crash):
        target.upload_file(path, "x/part-00001.parquet", sha, {}, state=state, progress=crash_after_two_parts)
    assert target.head("x/part-00001.parquet") is None, "nothing is visible before the upload completes"
    saved = state.get("upload:x/part-00001.parquet")
    assert saved and saved["sha256"] == sha

    listed = target.client.list_parts(Bucket=target.bucket, Key="x/part-00001.parquet", UploadId=saved["upload_id"])
    already = {p["PartNumber"] for p in listed.get("Parts", [])}
    assert {1, 2} <= already and len(already) < 5
    uploaded_parts = []
    original = target.client.upload_part

    def counting_upload_part(**kwargs):
        uploaded_parts.append(kwargs["PartNumber"])
        return original(**kwargs)

    monkeypatch.setattr(target.client, "upload_part", counting_upload_part)
    target.upload_file(path, "x/part-00001.parquet", sha, {}, state=state)
    assert sorted(uploaded_parts) == sorted({1, 2, 3, 4, 5} - already), "the retry sends only the missing parts"
    target.verify_object("x/part-00001.parquet", sha, path.stat().st_size)
    assert state.get("upload:x/part-00001.parquet") is None
