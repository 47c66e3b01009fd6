"""Object keys, in one place: source blobs, target objects, staging, manifests, reports.

Target keys: ``<domain>/<TABLE>/<PARTCOL>=<value>/part-NNNNN-<run token>.parquet``, one set per run;
the manifest under ``_manifests/`` names the committed set (readers find objects there).
Staging lives under ``_staging/``, manifests under ``_manifests/`` and gap-scan reports under
``_reports/gap_scan/``; readers ignore these prefixes (they start with an underscore, as Hive and
Spark expect).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

STAGING_PREFIX = "_staging"
MANIFEST_PREFIX = "_manifests"
QUARANTINE_PREFIX = "_quarantine"
CUTOVER_PREFIX = "_cutover"
GAP_SCAN_REPORT_PREFIX = "_reports/gap_scan"


def run_token(run_id: str) -> str:
    """A short, key-safe token for a DAG run: its staging folder and final keys, stable across retries."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def table_prefix(domain: str, table: str) -> str:
    return f"{domain}/{table}/"


def partition_dir(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{table_prefix(domain, table)}{partition_column}={partition}/"


def part_name(index: int, extension: str) -> str:
    return f"part-{index:05d}.{extension}"


def target_key(source_name: str, domain: str, table: str, partition_column: str, partition: str, run_token: str) -> str:
    """The final key of a source object as one run writes it: its part name and the run's token, always parquet.

    Each run writes a set of its own; the partition's manifest names the committed set, so a re-transfer
    replaces the old set in the one write of the manifest (see transfer.py), with no copy.
    """
    stem = PurePosixPath(source_name).stem
    return partition_dir(domain, table, partition_column, partition) + f"{stem}-{run_token}.parquet"


def is_run_key(key: str, run_token: str) -> bool:
    """Whether a final key was written by the run of ``run_token``."""
    return key.endswith(f"-{run_token}.parquet")


def staging_prefix(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{STAGING_PREFIX}/{partition_dir(domain, table, partition_column, partition)}"


def run_staging_prefix(domain: str, table: str, partition_column: str, partition: str, run_token: str) -> str:
    """Where one run stages a partition's objects (and their key-hash files): the run cleans only this."""
    return f"{staging_prefix(domain, table, partition_column, partition)}{run_token}/"


def parse_staging_key(key: str) -> tuple[str, str, str, str] | None:
    """``(domain, table, partition, run_token)`` of a staging key, or None for any other key."""
    if not key.startswith(f"{STAGING_PREFIX}/"):
        return None
    parts = key[len(STAGING_PREFIX) + 1 :].split("/")
    if len(parts) < 5 or "=" not in parts[2] or not parts[3]:
        return None
    return parts[0], parts[1], parts[2].split("=", 1)[1], parts[3]


def key_hashes_prefix(final_key: str, run_token: str) -> str:
    """Where a run stages the primary-key hash files of one object (working files, never published)."""
    directory, name = final_key.rsplit("/", 1)
    return f"{STAGING_PREFIX}/{directory}/{run_token}/{name}.keys/"


def manifest_key(domain: str, table: str, partition_column: str, partition: str) -> str:
    return f"{MANIFEST_PREFIX}/{domain}/{table}/{partition_column}={partition}.json"


def parse_manifest_key(key: str) -> tuple[str, str, str] | None:
    """``(domain, table, partition)`` of a manifest key, or None for any other key."""
    if not key.startswith(f"{MANIFEST_PREFIX}/") or not key.endswith(".json"):
        return None
    parts = key[len(MANIFEST_PREFIX) + 1 : -len(".json")].split("/")
    if len(parts) != 3 or "=" not in parts[2]:
        return None
    return parts[0], parts[1], parts[2].split("=", 1)[1]


def partition_from_dir(prefix: str, partition_column: str, name: str) -> str | None:
    """The partition value of a listed directory ``<prefix><PARTCOL>=<value>/``, or None."""
    marker = f"{prefix}{partition_column}="
    if not name.startswith(marker) or not name.endswith("/") or name.count("/", len(marker)) != 1:
        return None
    return name[len(marker) : -1] or None


def gap_scan_report_key(started_at) -> str:
    """One report per scan, named from its start time (UTC)."""
    return f"{GAP_SCAN_REPORT_PREFIX}/{started_at:%Y-%m-%dT%H%M%S.%fZ}.json"


def quarantine_key(domain: str, table: str, partition_column: str, partition: str, run_token: str) -> str:
    """The redacted validation report of a quarantined partition, one per run."""
    return f"{QUARANTINE_PREFIX}/{domain}/{table}/{partition_column}={partition}/{run_token}.json"


def receipt_key(domain: str) -> str:
    """The decommission receipt, next to the domain's cutover record."""
    return f"{CUTOVER_PREFIX}/{domain}.decommission.json"
