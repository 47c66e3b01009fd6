"""Object keys, in one place: source blobs, target objects, staging, manifests.

Target keys: ``<domain>/<TABLE>/<PARTCOL>=<value>/part-NNNNN.parquet``.
Staging lives under ``_staging/`` and manifests under ``_manifests/``; readers ignore both
prefixes (they start with an underscore, as Hive and Spark expect).
"""

from __future__ import annotations

STAGING_PREFIX = "_staging"
MANIFEST_PREFIX = "_manifests"
QUARANTINE_PREFIX = "_quarantine"
CUTOVER_PREFIX = "_cutover"


def partition_dir(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{domain}/{table}/{partition_column}={partition}/"


def part_name(index: int, extension: str) -> str:
    return f"part-{index:05d}.{extension}"


def target_key(domain: str, table: str, partition_column: str, partition: str, index: int) -> str:
    return partition_dir(domain, table, partition_column, partition) + part_name(index, "parquet")


def staging_key(run_token: str, final_key: str) -> str:
    return f"{STAGING_PREFIX}/{run_token}/{final_key}"


def manifest_key(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{MANIFEST_PREFIX}/{domain}/{table}/{partition_column}={partition}.json"
