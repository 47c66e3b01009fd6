"""Metrics through Airflow's Stats reach a real StatsD listener (a UDP socket) during real DAG runs.

Airflow is configured with ``[metrics] statsd_on`` and this listener's host and port; the transfer
DAG runs through ``dag.test()`` against Azurite, SeaweedFS and a SQLite ledger: one clean partition
(committed), one with raw NIR values (a privacy incident). What arrives is parsed as StatsD lines.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
from conftest import rewrite_source, set_values

from hdh_migration.layout import partition_dir

RAW_NIR = "253072B07300470"
CANARY = "ZQXCANARY"
LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+):(?P<value>-?[0-9.]+)\|(?P<kind>c|g|ms)(\|@[0-9.]+)?(\|#.*)?$")


class StatsdListener:
    """A StatsD server for the test: a UDP socket on the loopback that keeps every line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode("utf-8", "replace").splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def ours(self) -> list[tuple[str, float, str]]:
        """(name, value, kind) of the project's metrics (``<prefix>.hdh.``)."""
        found = []
        for line in self.lines:
            match = LINE.match(line)
            assert match, f"not a StatsD line: {line!r}"
            if ".hdh." in match["name"] or match["name"].startswith("hdh."):
                found.append((match["name"], float(match["value"]), match["kind"]))
        return found

    def total(self, name: str) -> float:
        return sum(value for n, value, kind in self.ours() if n == name and kind == "c")

    def last(self, name: str) -> float | None:
        values = [value for n, value, kind in self.ours() if n == name and kind == "g"]
        return values[-1] if values else None


@pytest.fixture
def statsd(monkeypatch):
    import statsd  # noqa: F401 - Airflow's StatsD backend needs it (apache-airflow[statsd]): fail here, not later

    listener = StatsdListener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    yield listener
    listener.close()


def test_a_real_run_sends_the_migrations_metrics_to_statsd(migration, statsd):
    migration.seed(domains=["causes_deces"])
    rewrite_source(
        migration,
        "causes_deces",
        "KI_CCI_R",
        "2022",
        lambda t: set_values(t, "DCD_LIE_LIB", {3: f"vu le {RAW_NIR} {CANARY}"}),
    )
    clean = migration.run("causes_deces", "2023")
    assert str(clean.state) == "success"
    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    listed = {
        p: migration.source.list_objects(
            partition_dir("causes_deces", "KI_CCI_R", table.partition_column, p), table.source_extension
        )
        for p in ("2022", "2023")
    }
    sizes = sum(o.size for o in listed["2023"])
    assert sizes > 0
    deadline = time.monotonic() + 10  # the listener's thread reads the datagrams already sent
    while statsd.total("airflow.hdh.bytes_moved.causes_deces") < sizes and time.monotonic() < deadline:
        time.sleep(0.1)
    assert statsd.total("airflow.hdh.bytes_moved.causes_deces") == sizes, "the clean partition's objects, once"
    incident = migration.run("causes_deces", "2022")
    assert str(incident.state) == "failed"
    assert migration.ledger.get("causes_deces", "KI_CCI_R", "2022").state == "quarantined"

    statsd.close()  # every datagram of this process is in: the runs ran in it
    prefix = "airflow.hdh"
    # the incident's objects: the clean one was moved (to staging, removed since), the one with the NIR never left
    incident_bytes = statsd.total(f"{prefix}.bytes_moved.causes_deces") - sizes
    assert incident_bytes in {sum(o.size for o in listed["2022"]) - o.size for o in listed["2022"]}
    assert statsd.total(f"{prefix}.partitions_committed.causes_deces") == 1
    assert statsd.total(f"{prefix}.partitions_quarantined.causes_deces") == 1
    assert statsd.total(f"{prefix}.privacy_incidents.causes_deces") == 1
    assert statsd.last(f"{prefix}.transfer_mb_s.causes_deces") > 0
    # after the quarantine, the domain's one table has 2022 left to commit, of known size
    assert statsd.last(f"{prefix}.lag_partitions.causes_deces") == 1
    planned_2022 = migration.ledger.latest_details("planned", [("causes_deces", "KI_CCI_R", "2022")])
    assert (
        statsd.last(f"{prefix}.lag_bytes.causes_deces")
        == planned_2022[("causes_deces", "KI_CCI_R", "2022")]["source_bytes"]
    )
    names = {name for name, _value, _kind in statsd.ours()}
    assert all(re.fullmatch(r"airflow\.hdh\.[a-z_]+\.causes_deces", name) for name in names), names
    assert all(RAW_NIR not in line and CANARY not in line for line in statsd.lines)

    # the progress the board reads: the clean run's bytes, in transfer_progress events
    events = [e for e in migration.ledger.events("causes_deces", kinds=("transfer_progress",))]
    assert sum(json.loads(e["detail"])["bytes"] for e in events if e["run_id"] == clean.run_id) == sizes
