"""Object keys, in one place: source blobs, target objects, staging, manifests.

Target keys: ``<domain>/<TABLE>/<PARTCOL>=<value>/part-NNNNN.parquet``.
Staging lives under ``_staging/`` and manifests under ``_manifests/``; readers ignore both
prefixes (they start with an underscore, as Hive and Spark expect).
"""

from __future__ import annotations

from pathlib import PurePosixPath

STAGING_PREFIX = "_staging"
MANIFEST_PREFIX = "_manifests"
QUARANTINE_PREFIX = "_quarantine"
CUTOVER_PREFIX = "_cutover"


def partition_dir(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{domain}/{table}/{partition_column}={partition}/"


def part_name(index: int, extension: str) -> str:
    return f"part-{index:05d}.{extension}"


def target_key(source_name: str, domain: str, table: str, partition_column: str, partition: str) -> str:
    """The final key of a source object: same part name, always parquet."""
    stem = PurePosixPath(source_name).stem
    return partition_dir(domain, table, partition_column, partition) + f"{stem}.parquet"


def staging_prefix(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{STAGING_PREFIX}/{partition_dir(domain, table, partition_column, partition)}"


def staging_key(final_key: str, run_token: str) -> str:
    """Where a run stages a final key; one token per DAG run, so retries resume the same upload."""
    directory, name = final_key.rsplit("/", 1)
    return f"{STAGING_PREFIX}/{directory}/{run_token}/{name}"


def manifest_key(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{MANIFEST_PREFIX}/{domain}/{table}/{partition_column}={partition}.json"


def quarantine_key(domain: str, table: str, partition_column: str, partition: str, run_token: str) -> str:
    """The redacted validation report of a quarantined partition, one per run."""
    return f"{QUARANTINE_PREFIX}/{domain}/{table}/{partition_column}={partition}/{run_token}.json"
