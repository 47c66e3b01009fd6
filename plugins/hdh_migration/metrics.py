"""The migration's metrics, through Airflow's own Stats (StatsD or OpenTelemetry, as ``[metrics]`` says).

Emitted where the action happens, by one-line calls in ``transfer``. Every name ends with the
domain, and the same value carries the tag ``domain`` (for a StatsD with tags, or OpenTelemetry);
no name or tag holds a table's content, a partition's rows or an error's text. With StatsD they
arrive under Airflow's ``statsd_prefix`` (``airflow.`` unless changed):

- ``hdh.bytes_moved.<domain>`` (counter): source bytes of each object moved (read, checked, uploaded);
- ``hdh.transfer_mb_s.<domain>`` (gauge): the MB/s of the last object moved;
- ``hdh.partitions_committed.<domain>`` (counter): table-partitions committed;
- ``hdh.partitions_quarantined.<domain>`` (counter): table-partitions quarantined;
- ``hdh.privacy_incidents.<domain>`` (counter): quarantines for raw NIR values (a privacy incident);
- ``hdh.lag_partitions.<domain>``, ``hdh.lag_bytes.<domain>`` (gauges): the domain's lag, the
  table-partitions the catalogue expects that are not committed yet, and their source bytes (those of
  the partitions not planned yet estimated from the planned ones), after each commit or quarantine.

A transfer's progress is also kept in the ledger for the board: ``ProgressBeat`` records a
``transfer_progress`` event (bytes since the last one) at most every ``BEAT_SECONDS`` while an object
downloads, and when it ends. A metric or a beat that cannot be sent is logged and never fails a task.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

PREFIX = "hdh"
BEAT_SECONDS = 60.0
_configured: tuple | None = None
_lock = threading.Lock()


def _stats():
    """Airflow's Stats, set up from ``[metrics]`` (again when it changes): a task run by ``dag.test()`` or a
    CLI process has no Stats backend otherwise (the task runner's own set-up is the same)."""
    global _configured
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats

    key = tuple(
        conf.get("metrics", option, fallback=None)
        for option in ("statsd_on", "statsd_host", "statsd_port", "statsd_prefix", "otel_on", "statsd_datadog_enabled")
    )
    with _lock:
        if key != _configured:
            from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

            stats.initialize(
                factory=get_stats_factory(),
                export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
            )
            _configured = key
    return stats


def _emit(kind: str, metric: str, domain: str, value: float) -> None:
    try:
        stats = _stats()
        name = f"{PREFIX}.{metric}.{domain}"
        if kind == "incr":
            stats.incr(name, count=int(value), tags={"domain": domain})
        else:
            stats.gauge(name, value, tags={"domain": domain})
    except Exception as error:  # noqa: BLE001 - monitoring never fails a transfer
        log.warning("metric %s.%s not sent (%s)", PREFIX, metric, type(error).__name__)


class ProgressBeat:
    """Counts an object's bytes as they land; records them in the ledger at most every ``BEAT_SECONDS``."""

    def __init__(self, ledger, domain: str, table: str, partition: str, run_id: str, every: float = BEAT_SECONDS):
        self.ledger, self.domain, self.table, self.partition, self.run_id = ledger, domain, table, partition, run_id
        self.every = every
        self._pending = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            due = time.monotonic() - self._last >= self.every
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._last = self._pending, 0, time.monotonic()
        if not pending:
            return
        try:
            self.ledger.record_event(
                self.domain,
                "transfer_progress",
                {"bytes": pending},
                table_name=self.table,
                partition=self.partition,
                run_id=self.run_id,
            )
        except Exception as error:  # noqa: BLE001 - a missed beat only ages the board's last progress
            log.warning("%s/%s: progress not recorded (%s)", self.domain, self.partition, type(error).__name__)


def object_moved(beat: ProgressBeat, nbytes: int, seconds: float, uploaded: bool = True) -> None:
    """One object read and checked: its last progress beat; if it was uploaded, its bytes and its rate."""
    beat.flush()
    if not uploaded:
        return
    _emit("incr", "bytes_moved", beat.domain, nbytes)
    _emit("gauge", "transfer_mb_s", beat.domain, round(nbytes / 1e6 / max(seconds, 1e-6), 3))


def partition_committed(domain: str) -> None:
    """One table-partition committed (the task measures the domain's ``lag`` once all its tables are)."""
    _emit("incr", "partitions_committed", domain, 1)


def partition_quarantined(catalogue, ledger, domain: str, privacy: bool) -> None:
    _emit("incr", "partitions_quarantined", domain, 1)
    if privacy:
        _emit("incr", "privacy_incidents", domain, 1)
    lag(catalogue, ledger, domain)


def lag(catalogue, ledger, domain: str) -> None:
    """The domain's table-partitions not committed yet, and their source bytes, as gauges."""
    from hdh_migration.status import expected_ranges, remaining

    try:
        ranges = {domain: expected_ranges(catalogue)[domain]}
        behind = remaining(catalogue.domain(domain), ledger.partition_summary(ranges).get(domain, {}))
    except Exception as error:  # noqa: BLE001 - monitoring never fails a transfer
        log.warning("%s: lag not measured (%s)", domain, type(error).__name__)
        return
    _emit("gauge", "lag_partitions", domain, behind["partitions"])
    _emit("gauge", "lag_bytes", domain, behind["source_bytes"])
