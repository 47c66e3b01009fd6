"""The cutover record against an attacker who holds the bucket and the ledger, but not the signing key.

A transfer worker holds the sovereign bucket's and the ledger's credentials: the tests below play
that worker, with the real SeaweedFS and ledger, and rewrite objects, manifests, record and ledger
consistently (chain, root, totals and history recomputed). Only the signatures, checked against the
public key pinned outside the bucket (``HDH_CUTOVER_PUBLIC_KEY``), tell; verify says so. Also: verify
lists the whole domain prefix and its manifests' prefix; ``reindex`` rebuilds every field of the
ledger; S3 Object Lock (SeaweedFS supports it) retains the proofs.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import time

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from hdh_migration.cli import main
from hdh_migration.layout import manifest_key, partition_dir

ROWS = 200
DOMAIN = "beneficiaires"
PARTITION = "2024-06-30"
RECORD = f"_cutover/{DOMAIN}.json"


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _cut_over(migration, by: str = "test-operator"):
    from hdh_migration.dag_factory import build_cutover_dag

    migration.seed(domains=[DOMAIN], rows_per_partition=ROWS, files_per_partition=1)
    transfer = migration.run(DOMAIN, PARTITION)
    assert str(transfer.state) == "success", _states(transfer)
    run = build_cutover_dag(migration.catalogue.domain(DOMAIN)).test(run_conf={"by": by})
    assert str(run.state) == "success", _states(run)
    return migration.target.get_json(RECORD)


def _verify_problems(domain: str = DOMAIN, **kwargs) -> str:
    from hdh_migration.cutover import verify
    from hdh_migration.errors import IntegrityError

    with pytest.raises(IntegrityError) as failed:
        verify(domain, deep=True, **kwargs)
    return str(failed.value)


def _reseal(domain: str, history: list[dict], root: str | None) -> list[dict]:
    """The attacker's history: every hash recomputed around the new root, the old signatures kept."""
    from hdh_migration.signing import canonical_json

    previous, resealed = None, []
    for entry in history:
        body = {k: v for k, v in entry.items() if k not in ("entry_sha256", "signature")}
        body["previous_sha256"] = previous
        if body.get("root_sha256") is not None:
            body["root_sha256"] = root
        entry_sha256 = hashlib.sha256(canonical_json(body)).hexdigest()
        resealed.append({**body, "entry_sha256": entry_sha256, "signature": entry.get("signature")})
        previous = entry_sha256
    return resealed


def _rewrite_ledger_history(migration, history: list[dict]) -> None:
    """The ledger's anchor made to agree with a rewritten history (the worker holds the ledger too)."""
    from hdh_migration.ledger import cutover_history_table

    with migration.ledger.engine.begin() as conn:
        ids = conn.execute(
            sa.select(cutover_history_table.c.id)
            .where(cutover_history_table.c.domain == DOMAIN)
            .order_by(cutover_history_table.c.id)
        ).scalars()
        for row_id, entry in zip(ids, history, strict=True):
            conn.execute(
                sa.update(cutover_history_table)
                .where(cutover_history_table.c.id == row_id)
                .values(
                    entry_sha256=entry["entry_sha256"], root_sha256=entry.get("root_sha256"), reason=entry.get("reason")
                )
            )


def test_a_record_forged_with_the_bucket_and_the_ledger_together_is_caught_by_its_signatures(migration, capfd):
    from hdh_migration.cutover import _signing, _totals, chain_entries
    from hdh_migration.ledger import partitions_table
    from hdh_migration.signing import Signer, fingerprint

    record = _cut_over(migration)
    original_record = migration.target_bytes(RECORD)
    target = migration.target
    seed = json.loads(os.environ["AIRFLOW_CONN_HDH_CUTOVER_SIGNING"])["password"]
    out, err = capfd.readouterr()
    assert len(base64.b64decode(seed)) == 32
    assert seed not in out + err + original_record.decode(), "the signing key leaked into a log or the record"
    assert record["signing"]["algorithm"] == "ed25519"
    assert record["signing"]["public_key"] == os.environ["HDH_CUTOVER_PUBLIC_KEY"]
    assert record["signing"]["public_key_fingerprint"] == fingerprint(os.environ["HDH_CUTOVER_PUBLIC_KEY"])
    assert record["history"][0]["signed_by"] == record["signing"]["public_key_fingerprint"]

    # The attacker's object: other rows in place of the landed file, its checksum metadata to match.
    (entry,) = record["entries"]
    victim = entry["files"][0]
    forged_bytes = migration.target_bytes(victim["key"]) + b"appended by the attacker"
    forged_sha256 = hashlib.sha256(forged_bytes).hexdigest()
    target.client.put_object(
        Bucket=target.bucket, Key=victim["key"], Body=forged_bytes, Metadata={"hdh-sha256": forged_sha256}
    )
    # Its manifest, rewritten to list it.
    manifest = json.loads(migration.target_bytes(entry["manifest_key"]))
    for file in manifest["files"]:
        if file["key"] == victim["key"]:
            file.update(size=len(forged_bytes), sha256=forged_sha256)
    manifest["bytes"] = sum(f["size"] for f in manifest["files"])
    manifest_sha256 = target.put_json(entry["manifest_key"], manifest)
    # The record: the entry, the chain, the root, the totals and the history hashes recomputed.
    forged = copy.deepcopy(record)
    forged_entry = {
        **{k: v for k, v in entry.items() if k != "link_sha256"},
        "manifest_sha256": manifest_sha256,
        "bytes": manifest["bytes"],
        "files": [{k: f[k] for k in ("key", "size", "sha256", "rows")} for f in manifest["files"]],
    }
    forged["entries"], forged["root_sha256"] = chain_entries(DOMAIN, [forged_entry])
    forged.update(_totals(forged["entries"]))
    forged["history"] = _reseal(DOMAIN, record["history"], forged["root_sha256"])
    target.put_json(RECORD, forged)
    # The ledger: the partition's manifest hash and the history anchor, to agree with the forgery.
    with migration.ledger.engine.begin() as conn:
        conn.execute(
            sa.update(partitions_table)
            .where(partitions_table.c.domain == DOMAIN)
            .values(manifest_sha256=manifest_sha256, bytes=manifest["bytes"])
        )
    _rewrite_ledger_history(migration, forged["history"])

    # Every hash agrees: without the signatures, nothing would tell.
    message = _verify_problems()
    assert "2 problem(s)" in message, message
    assert f"the root hash {forged['root_sha256']} is not signed by a pinned key" in message
    assert "history entry 0 (cutover at" in message and "is not signed by a pinned key" in message
    assert "rule: signed by the cutover signer, whose pinned key is SHA256:" in message

    # Re-signed with a key of the attacker's own, named in the record: the pinned key still refuses it.
    attacker = Signer(hashlib.sha256(b"the attacker's key").digest())
    resigned = {**forged, "signing": _signing(DOMAIN, forged["root_sha256"], attacker)}
    resigned["history"] = [
        {**h, "signature": attacker.sign(f"hdh-migration cutover history v1\n{DOMAIN}\n{h['entry_sha256']}".encode())}
        for h in forged["history"]
    ]
    target.put_json(RECORD, resigned)
    capfd.readouterr()
    assert main(["verify", "--local", "--domain", DOMAIN]) == 1
    out = capfd.readouterr().out
    assert f"the record names the signing key {fingerprint(attacker.public_key)}, which is not pinned" in out
    assert "not signed by a pinned key" in out
    # Trusting the key the record names is exactly what an attacker wants: verify never does it alone.
    assert main(["verify", "--local", "--domain", DOMAIN, "--public-key", attacker.public_key]) == 0
    # A forged record is not anchored into a rebuilt ledger either.
    assert main(["reindex"]) == 1
    assert "the cutover record _cutover/beneficiaires.json is not restored into the ledger" in capfd.readouterr().out

    # Put back, the signed original names the forged object and manifest.
    target.client.put_object(Bucket=target.bucket, Key=RECORD, Body=original_record)
    message = _verify_problems()
    assert f"object={victim['key']}: size or checksum differs from the cutover record" in message
    assert f"object={entry['manifest_key']}: the manifest differs from its hash in the cutover record" in message


def test_verify_lists_the_whole_domain_and_checks_each_history_entry_signature(migration, capsys):
    from hdh_migration.cutover import verify
    from hdh_migration.dag_factory import build_rollback_dag

    first = _cut_over(migration, by="alice")
    target = migration.target
    landed = migration.target_bytes(first["entries"][0]["files"][0]["key"])

    # A new partition folder, a new table folder, a manifest the record never listed.
    strays = [
        partition_dir(DOMAIN, "IR_BEN_R", "snapshot", "2099-12-31") + "part-00000.parquet",
        partition_dir(DOMAIN, "IR_NEW_R", "snapshot", PARTITION) + "part-00000.parquet",
        manifest_key(DOMAIN, "IR_NEW_R", "snapshot", PARTITION),
    ]
    for key in strays:
        target.client.put_object(Bucket=target.bucket, Key=key, Body=landed)
    message = _verify_problems()
    assert "3 problem(s)" in message, message
    assert (
        f"domain={DOMAIN} table=IR_BEN_R partition=2099-12-31 object={strays[0]}: not in the cutover record "
        "(rule: nothing written after the cutover)" in message
    )
    assert (
        f"domain={DOMAIN} table=IR_NEW_R partition={PARTITION} object={strays[1]}: not in the cutover record" in message
    )
    assert (
        f"domain={DOMAIN} table=IR_NEW_R partition={PARTITION} object={strays[2]}: not in the cutover record" in message
    )
    target.delete_keys(strays)
    assert verify(DOMAIN, deep=False)["problems"] == 0

    # A history of three signed entries: cutover, rollback, cutover.
    reason = "late IR_BEN_R deliveries announced by CNAM"
    rollback = build_rollback_dag(migration.catalogue.domain(DOMAIN)).test(run_conf={"reason": reason, "by": "bob"})
    assert str(rollback.state) == "success", _states(rollback)
    assert main(["cutover", "--local", "--domain", DOMAIN, "--by", "carol"]) == 0
    record = migration.target.get_json(RECORD)
    assert [h["action"] for h in record["history"]] == ["cutover", "rollback", "cutover"]
    assert len({h["signature"] for h in record["history"]}) == 3
    assert verify(DOMAIN, deep=False)["problems"] == 0

    # The old rollback's reason rewritten, every hash after it recomputed, in the record and the ledger.
    tampered = copy.deepcopy(record["history"])
    tampered[1]["reason"] = "routine maintenance"
    tampered = _reseal(DOMAIN, tampered, record["root_sha256"])
    target.put_json(RECORD, {**record, "history": tampered})
    _rewrite_ledger_history(migration, tampered)
    message = _verify_problems()
    assert "2 problem(s)" in message, message
    assert f"history entry 1 (rollback at {record['history'][1]['at']}) is not signed by a pinned key" in message
    assert f"history entry 2 (cutover at {record['history'][2]['at']}) is not signed by a pinned key" in message
    assert "broken out of its chain" not in message and "differs from the one anchored" not in message


def test_reindex_rebuilds_the_ledger_field_by_field(migration, capsys):
    from hdh_migration.ledger import cutover_history_table, domains_table, partitions_table

    _cut_over(migration)
    ledger = migration.ledger
    before = {(r.domain, r.table_name, r.partition): dataclasses.asdict(r) for r in ledger.partitions()}
    history_before = ledger.cutover_history(DOMAIN)
    assert before and all(r["manifest_sha256"] for r in before.values())

    with ledger.engine.begin() as conn:  # the ledger lost
        for table in (partitions_table, cutover_history_table, domains_table):
            conn.execute(table.delete())
    assert ledger.partitions() == []
    assert main(["reindex"]) == 0
    assert "cutover history restored from its record (cut_over)" in capsys.readouterr().out

    after = {(r.domain, r.table_name, r.partition): dataclasses.asdict(r) for r in ledger.partitions()}
    assert after.keys() == before.keys()
    for key, row in before.items():
        # attempts (how many runs tried) and updated_at (when the row was written) are the ledger's own.
        for field in sorted(set(row) - {"attempts", "updated_at"}):
            assert after[key][field] == row[field], (key, field)
    assert ledger.domain_state(DOMAIN) == "cut_over"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "id"} for r in rows]  # noqa: E731
    assert strip(ledger.cutover_history(DOMAIN)) == strip(history_before)


def test_the_cutover_refuses_to_start_without_the_signing_key_and_freezes_nothing(migration, monkeypatch):
    from hdh_migration.dag_factory import build_cutover_dag

    migration.seed(domains=[DOMAIN], rows_per_partition=ROWS, files_per_partition=1)
    monkeypatch.delenv("AIRFLOW_CONN_HDH_CUTOVER_SIGNING")  # as on a transfer worker
    run = build_cutover_dag(migration.catalogue.domain(DOMAIN)).test(run_conf={"by": "mallory"})
    assert str(run.state) == "failed"
    assert _states(run)["check_completeness"] == "failed"
    assert _states(run)["freeze_domain"] == "upstream_failed"
    assert migration.ledger.domain_state(DOMAIN) != "cut_over"
    buckets = {b["Name"] for b in migration.target.client.list_buckets()["Buckets"]}
    assert migration.name not in buckets, "the refused cutover wrote to the store"


LOCK_SECONDS = 45


def test_object_lock_retains_the_manifests_and_the_record(migration, monkeypatch):
    """SeaweedFS 4.48 implements S3 Object Lock: the proofs are written under a COMPLIANCE retention."""
    from hdh_migration.errors import MigrationError
    from hdh_migration.target import SovereignTarget

    connection = json.loads(os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])
    connection["extra"]["object_lock_retention_days"] = LOCK_SECONDS / 86400
    monkeypatch.setenv("AIRFLOW_CONN_HDH_SOVEREIGN_TARGET", json.dumps(connection))

    # A bucket made without Object Lock cannot take the retention: a clear error, nothing written.
    unlocked = f"{migration.name}-unlocked"
    migration.target.client.create_bucket(Bucket=unlocked)
    try:
        with pytest.raises(MigrationError, match="Object Lock is off on this bucket"):
            SovereignTarget("hdh_sovereign_target", unlocked).put_json(RECORD, {"state": "cut_over"})
    finally:
        migration.target.client.delete_bucket(Bucket=unlocked)

    target = migration.target
    try:
        record = _cut_over(migration)
        (entry,) = record["entries"]
        locked_keys = [RECORD, entry["manifest_key"]]
        for key in locked_keys:
            head = target.client.head_object(Bucket=target.bucket, Key=key)
            assert head["ObjectLockMode"] == "COMPLIANCE", key
            assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC), key
        assert "ObjectLockMode" not in target.client.head_object(Bucket=target.bucket, Key=entry["files"][0]["key"])

        original = migration.target_bytes(RECORD)
        version = target.client.head_object(Bucket=target.bucket, Key=RECORD)["VersionId"]
        for key in locked_keys:
            locked_version = target.client.head_object(Bucket=target.bucket, Key=key)["VersionId"]
            with pytest.raises(ClientError) as refused:
                target.client.delete_object(Bucket=target.bucket, Key=key, VersionId=locked_version)
            assert refused.value.response["Error"]["Code"] == "AccessDenied", key
        with pytest.raises(ClientError):
            target.client.put_object_retention(
                Bucket=target.bucket,
                Key=RECORD,
                VersionId=version,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": dt.datetime.now(dt.UTC)},
            )

        # An overwrite is a new version: verify sees the forgery, and the signed original stays retrievable.
        target.client.put_object(Bucket=target.bucket, Key=RECORD, Body=b'{"domain": "beneficiaires"}')
        assert "problem(s)" in _verify_problems()
        kept = target.client.get_object(Bucket=target.bucket, Key=RECORD, VersionId=version)["Body"].read()
        assert kept == original
        target.client.copy_object(
            Bucket=target.bucket, Key=RECORD, CopySource={"Bucket": target.bucket, "Key": RECORD, "VersionId": version}
        )
        assert main(["verify", "--local", "--domain", DOMAIN]) == 0
    finally:
        _empty_locked_bucket(target)


def _empty_locked_bucket(target) -> None:
    """Wait out the test's short retention, then remove every version, and the bucket."""
    deadline = time.monotonic() + LOCK_SECONDS + 60
    while True:
        listed = target.client.list_object_versions(Bucket=target.bucket)
        versions = listed.get("Versions", []) + listed.get("DeleteMarkers", [])
        left = []
        for version in versions:
            try:
                target.client.delete_object(Bucket=target.bucket, Key=version["Key"], VersionId=version["VersionId"])
            except ClientError:
                left.append(version["Key"])
        if not left:
            break
        assert time.monotonic() < deadline, f"still retained after the test's retention: {left}"
        time.sleep(5)
    target.client.delete_bucket(Bucket=target.bucket)
