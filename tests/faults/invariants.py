"""What "the migration survived the fault" means: one checker, run by every fault test after its fault.

1. no object under a final key that is partial or not listed in its partition's manifest;
2. no staging object and no unfinished multipart upload left over;
3. no duplicate rows: per partition, rows landed == rows in Azure, primary keys unique;
4. the ledger equals the manifests (state, manifest sha256, rows, bytes, source ETags), both ways;
5. every committed partition reconciles with its source: the package's own reconcile checks, plus
   every landed byte read back against its manifest and the content fingerprint of the landed rows
   equal to that of the Azure objects, read the way a data user would.
"""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import read_table_bytes

from hdh_migration.errors import Where
from hdh_migration.integrity import Fingerprint, check_fingerprint_algorithm
from hdh_migration.layout import CUTOVER_PREFIX, MANIFEST_PREFIX, QUARANTINE_PREFIX, STAGING_PREFIX, manifest_key
from hdh_migration.manifest import Manifest

METADATA_PREFIXES = (f"{MANIFEST_PREFIX}/", f"{QUARANTINE_PREFIX}/", f"{CUTOVER_PREFIX}/")


def assert_survived(migration, committed: dict[str, list[str]]) -> dict:
    """Check every invariant; ``committed`` is {domain: [partition, ...]} that must have completed.

    Returns counts (partitions, objects, rows) for the test's log.
    """
    target, source, ledger = migration.target, migration.source, migration.ledger
    problems: list[str] = []
    keys = target.list_keys("")
    staging = [k for k in keys if k.startswith(f"{STAGING_PREFIX}/")]
    if staging:
        problems.append(f"staging objects left over: {staging[:5]}")
    uploads = target.client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", [])
    if uploads:
        problems.append(f"unfinished multipart uploads left over: {[u['Key'] for u in uploads][:5]}")

    manifests: dict[str, tuple[dict, str]] = {}
    for key in keys:
        if key.startswith(f"{MANIFEST_PREFIX}/"):
            body = target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
            manifests[key] = (json.loads(body), hashlib.sha256(body).hexdigest())
    manifested = {f["key"]: f for manifest, _ in manifests.values() for f in manifest["files"]}
    final_keys = [k for k in keys if not k.startswith((f"{STAGING_PREFIX}/", *METADATA_PREFIXES))]
    problems.extend(f"{k}: under a final key but in no manifest" for k in final_keys if k not in manifested)

    for domain_name, partitions in committed.items():
        domain = migration.catalogue.domain(domain_name)
        for table in domain.tables:
            for partition in partitions:
                key = manifest_key(domain.name, table.name, table.partition_column, partition)
                if key not in manifests:
                    problems.append(f"{key}: expected committed, no manifest")
    counts = {"partitions": len(manifests), "objects": 0, "rows": 0}
    for _key, (manifest, manifest_sha256) in sorted(manifests.items()):
        table = migration.catalogue.domain(manifest["domain"]).table(manifest["table"])
        partition = manifest["partition"]
        label = f"{table.domain}/{table.name}/{partition}"
        problems.extend(f"{label}: {p}" for p in Manifest(manifest).problems(target, source, table))
        record = ledger.get(table.domain, table.name, partition)
        expected = ("committed", manifest_sha256, manifest["rows"], manifest["bytes"])
        found = (record.state, record.manifest_sha256, record.rows, record.bytes) if record else None
        if found != expected:
            problems.append(f"{label}: ledger {found} != manifest {expected}")
        if record and record.source_etags != {o["name"]: o["etag"] for o in manifest["source_objects"]}:
            problems.append(f"{label}: ledger source ETags differ from the manifest's")
        problems.extend(f"{label}: {p}" for p in _content_problems(migration, table, manifest))
        counts["objects"] += len(manifest["files"])
        counts["rows"] += manifest["rows"]
    for record in ledger.partitions():
        key = manifest_key(
            record.domain,
            record.table_name,
            migration.catalogue.domain(record.domain).table(record.table_name).partition_column,
            record.partition,
        )
        if record.state == "committed" and key not in manifests:
            problems.append(f"{key}: the ledger says committed, there is no manifest")
    assert not problems, "invariants broken after the fault:\n" + "\n".join(f"- {p}" for p in problems)
    return counts


def _content_problems(migration, table, manifest: dict) -> list[str]:
    """Every landed byte against its manifest; the landed rows against the Azure rows."""
    problems = []
    check_fingerprint_algorithm(manifest.get("content_fingerprint_algorithm"), Where(table.domain, table.name))
    landed_fp, source_fp = Fingerprint(), Fingerprint()
    landed_tables = []
    for entry in manifest["files"]:
        data = migration.target_bytes(entry["key"])
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['key']}: bytes read back differ from the manifest (partial or altered)")
            continue
        landed = pq.read_table(io.BytesIO(data))
        if landed.num_rows != entry["rows"]:
            problems.append(f"{entry['key']}: {landed.num_rows} rows, manifest says {entry['rows']}")
        landed_tables.append(landed)
        for batch in landed.to_batches():
            landed_fp.update(batch)
    for obj in manifest["source_objects"]:
        for batch in read_table_bytes(migration.source_bytes(obj["name"]), table).to_batches():
            source_fp.update(batch)
    if landed_fp.rows != source_fp.rows:
        problems.append(f"{landed_fp.rows} rows landed, {source_fp.rows} in Azure (missing or duplicate rows)")
    if landed_fp.hexdigest() != source_fp.hexdigest() or landed_fp.hexdigest() != manifest["content_fingerprint"]:
        problems.append("the content fingerprint of the landed rows differs from Azure's or the manifest's")
    if table.primary_key and landed_tables:
        keys = pa.concat_tables(landed_tables).select(list(table.primary_key))
        if keys.group_by(list(table.primary_key)).aggregate([]).num_rows != keys.num_rows:
            problems.append(f"duplicate primary keys ({', '.join(table.primary_key)}) across the partition's files")
    return problems
