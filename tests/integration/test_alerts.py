"""Alerts: a failed transfer reaches the webhook and SMTP channels with what, where and the next step,
a privacy incident carries its own severity, a missed deadline alerts too, and no data value is sent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import rewrite_source, set_values

RAW_NIR = "253072B07300470"  # a valid Corsican NIR from the shared vectors
CANARY = "ZQXCANARY"
TOKEN = "hdh-test-token"


def _port() -> int:
    """The receivers' first port: HDH_ALERT_RECEIVER_PORT (a helper's port range), else any free port."""
    return int(os.environ.get("HDH_ALERT_RECEIVER_PORT", "0"))


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class _Smtp(socketserver.StreamRequestHandler):
    """The few SMTP commands a client sends to deliver one message (RFC 5321), no TLS, no auth."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 hdh-test ESMTP")
        envelope = {"from": None, "to": []}
        while line := self.rfile.readline():
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 hdh-test")
            elif verb == "MAIL":
                envelope["from"] = command.split(":", 1)[1].strip(" <>")
                self.reply("250 OK")
            elif verb == "RCPT":
                envelope["to"].append(command.split(":", 1)[1].strip(" <>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                data = bytearray()
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.server.received.append({**envelope, "data": bytes(data)})
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def _serving(server):
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def webhook():
    with _serving(ThreadingHTTPServer(("127.0.0.1", _port()), _Webhook)) as server:
        yield server


@pytest.fixture(scope="module")
def smtp():
    port = _port() + 1 if _port() else 0
    with _serving(_SmtpServer(("127.0.0.1", port), _Smtp)) as server:
        yield server


@pytest.fixture
def channels(webhook, smtp, monkeypatch):
    """Both alert channels on, pointing at the local receivers; emptied for each test."""
    webhook.received.clear()
    smtp.received.clear()
    monkeypatch.setenv(
        "AIRFLOW_CONN_HDH_ALERT_WEBHOOK",
        json.dumps(
            {
                "conn_type": "http",
                "host": f"http://127.0.0.1:{webhook.server_address[1]}/hooks/hdh",
                "extra": {"X-HDH-Token": TOKEN},
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_HDH_ALERT_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp.server_address[1],
                "extra": {
                    "from_email": "airflow@hdh.test",
                    "to": "oncall@hdh.test, dpo@hdh.test",
                    "disable_tls": True,
                    "disable_ssl": True,
                    "retry_limit": 0,
                },
            }
        ),
    )
    return webhook, smtp


def _webhook_alerts(webhook) -> list[dict]:
    for request in webhook.received:
        assert request["path"] == "/hooks/hdh"
        assert request["headers"]["X-HDH-Token"] == TOKEN, "the connection's extra is sent as headers"
    return [json.loads(r["body"]) for r in webhook.received]


def _mails(smtp) -> list[tuple[dict, str]]:
    """(envelope, decoded subject + body) of each message the SMTP receiver got."""
    mails = []
    for message in smtp.received:
        parsed = email.message_from_bytes(message["data"], policy=email.policy.default)
        body = "".join(part.get_content() for part in parsed.walk() if part.get_content_maintype() == "text")
        mails.append((message, f"{parsed['Subject']}\n{body}"))
    return mails


def _plant(migration, partition: str, column: str, rows: dict[int, str]) -> None:
    name = rewrite_source(migration, "causes_deces", "KI_CCI_R", partition, lambda t: set_values(t, column, rows))
    assert CANARY.encode("latin-1") in migration.source_bytes(name), "the canary is in the source"


def test_failed_transfer_alerts_the_webhook_with_what_where_and_next_step(
    migration, channels, monkeypatch, capfd, caplog
):
    webhook, smtp = channels
    monkeypatch.delenv("AIRFLOW_CONN_HDH_ALERT_SMTP")  # this channel is off
    migration.seed(domains=["causes_deces"], rows_per_partition=200, files_per_partition=1)
    _plant(migration, "2022", "DCD_CIM_COD", {7: CANARY[:4], 9: f"{CANARY}99"})
    _plant(migration, "2022", "DCD_LIE_LIB", {3: f"rue {CANARY}"})

    capfd.readouterr()
    run = migration.run("causes_deces", "2022")
    # The task log reaches the captured output or the log records, depending on who configured logging first.
    task_logs = "".join(capfd.readouterr()) + caplog.text

    assert str(run.state) == "failed"
    [alert] = _webhook_alerts(webhook)
    assert alert["kind"] == "task_failure" and alert["severity"] == "error"
    assert alert["dag_id"] == "hdh_transfer__causes_deces" and alert["task_id"] == "validate_partition"
    assert alert["run_id"] == run.run_id
    assert (alert["domain"], alert["table"], alert["partition"]) == ("causes_deces", "KI_CCI_R", "2022")
    assert alert["error_type"] == "QuarantinedError"
    assert "expect_column_values_to_match_regex(DCD_CIM_COD)" in alert["message"]
    assert "causes_deces/KI_CCI_R/FLX_PER_ANN=2022/part-00000.csv" in alert["message"], "the object is named"
    assert "waive" in alert["next_step"]
    assert "/tasks/validate_partition" in alert["log_url"]
    assert CANARY not in json.dumps(alert), "no data value in the alert"
    assert smtp.received == []
    assert "alert channel smtp is off: connection 'hdh_alert_smtp' is not defined" in task_logs


def test_privacy_incident_alerts_both_channels_as_critical_without_the_nir(migration, channels):
    webhook, smtp = channels
    migration.seed(domains=["causes_deces"], rows_per_partition=200, files_per_partition=1)
    _plant(migration, "2023", "DCD_LIE_LIB", {3: f"vu le {RAW_NIR} {CANARY}", 5: f"2 53 07 2B 073 004 70 {CANARY}"})

    run = migration.run("causes_deces", "2023")

    assert str(run.state) == "failed"
    [alert] = _webhook_alerts(webhook)
    assert alert["kind"] == "privacy_incident" and alert["severity"] == "critical"
    assert (alert["domain"], alert["table"], alert["partition"]) == ("causes_deces", "KI_CCI_R", "2023")
    assert alert["error_type"] == "PrivacyIncident" and "DCD_LIE_LIB" in alert["message"]
    assert "data protection officer" in alert["next_step"]
    [(envelope, mail)] = _mails(smtp)
    assert envelope["from"] == "airflow@hdh.test"
    assert envelope["to"] == ["oncall@hdh.test", "dpo@hdh.test"]
    assert mail.startswith("[HDH critical] privacy_incident: hdh_transfer__causes_deces.validate_partition failed")
    assert "severity: critical" in mail and "kind: privacy_incident" in mail and "partition: 2023" in mail
    for sent in (json.dumps(alert), mail):
        assert CANARY not in sent and RAW_NIR not in sent and "2B 073" not in sent, "no data value in an alert"


def test_transfer_dags_carry_a_deadline_from_the_catalogue():
    from airflow.serialization.serialized_objects import DagSerialization

    from hdh_migration.catalogue import load_catalogue
    from hdh_migration.dag_factory import build_transfer_dag

    for domain in load_catalogue().domains:
        # What the scheduler reads: the DAG as serialized for the metadata database.
        [deadline] = DagSerialization.from_dict(DagSerialization.to_dict(build_transfer_dag(domain))).deadline
        # Our name for "queued at": the built-in one breaks clearing a failed run (apache/airflow#70368).
        assert deadline["reference"] == {
            "reference_type": "TransferQueuedAt",
            "__class_path": "hdh_migration.alerts.TransferQueuedAt",
        }
        assert deadline["interval"]["__data__"] == domain.expected_duration.total_seconds()
        assert deadline["callback"]["__classname__"] == "airflow.sdk.definitions.callback.AsyncCallback"
        assert deadline["callback"]["__data__"] == {
            "path": "hdh_migration.alerts.deadline_missed",
            "kwargs": {"domain": domain.name},
        }
    assert load_catalogue().domain("dcir").expected_duration == dt.timedelta(hours=4)


def test_missed_deadline_callback_runs_in_the_triggerer_and_alerts(channels):
    """What the scheduler hands the triggerer when a transfer run misses its deadline (Deadline.handle_miss)."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse
    from airflow.models.callback import CallbackState
    from airflow.triggers.callback import CallbackTrigger

    webhook, smtp = channels
    queued = dt.datetime(2026, 11, 29, 1, 0, tzinfo=dt.UTC)
    # The dag_run part of the context, made the way Deadline.handle_miss makes it from the DagRun row.
    dag_run = DAGRunResponse.model_validate(
        {
            "run_id": "scheduled__2024-02-01T00:00:00+00:00",
            "dag_id": "hdh_transfer__dcir",
            "logical_date": dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
            "queued_at": queued,
            "start_date": queued,
            "end_date": None,
            "duration": None,
            "data_interval_start": dt.datetime(2024, 2, 1, tzinfo=dt.UTC),
            "data_interval_end": dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
            "run_after": dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
            "last_scheduling_decision": None,
            "run_type": "scheduled",
            "state": "running",
            "triggered_by": "timetable",
            "triggering_user_name": None,
            "conf": {},
            "note": None,
            "dag_versions": [],
            "bundle_version": None,
            "dag_model": {"dag_display_name": "hdh_transfer__dcir"},
            "partition_key": None,
            "partition_date": None,
        }
    ).model_dump(mode="json")
    context = {"dag_run": dag_run, "deadline": {"id": "0199", "deadline_time": queued + dt.timedelta(hours=4)}}
    trigger = CallbackTrigger("hdh_migration.alerts.deadline_missed", {"domain": "dcir", "context": context})

    async def events():
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(events())

    assert payloads[-1]["state"] == CallbackState.SUCCESS, payloads[-1]
    assert sorted(payloads[-1]["body"]) == ["smtp", "webhook"]
    [alert] = _webhook_alerts(webhook)
    assert alert["kind"] == "deadline_missed" and alert["severity"] == "warning"
    assert (alert["dag_id"], alert["domain"], alert["partition"]) == ("hdh_transfer__dcir", "dcir", "2024-02-01")
    assert alert["run_id"] == "scheduled__2024-02-01T00:00:00+00:00"
    assert "240 min" in alert["summary"] and alert["deadline"].startswith("2026-11-29T05:00")
    [(_, mail)] = _mails(smtp)
    assert mail.startswith("[HDH warning] deadline_missed: hdh_transfer__dcir")
