"""The data engineers' commands against real servers: plan, status, reindex."""

from __future__ import annotations

import json
import re

from hdh_migration.cli import main


def test_reindex_rebuilds_a_lost_ledger_from_the_manifests(migration, capsys):
    migration.seed(domains=["pmsi_mco"])
    assert str(migration.run("pmsi_mco", "2022").state) == "success"
    before = {(r.table_name, r.partition): (r.state, r.rows, r.bytes) for r in migration.ledger.partitions()}

    from hdh_migration.ledger import partitions_table

    with migration.ledger.engine.begin() as conn:
        conn.execute(partitions_table.delete())
    assert migration.ledger.partitions() == []

    assert main(["reindex"]) == 0
    after = {(r.table_name, r.partition): (r.state, r.rows, r.bytes) for r in migration.ledger.partitions()}
    assert after == before and len(after) == 2
    assert "2 committed partition(s)" in capsys.readouterr().out


def test_plan_and_status_report_partitions_objects_and_bytes(migration, capsys):
    summary = migration.seed(domains=["causes_deces"])
    assert main(["plan", "--domain", "causes_deces"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()[2:]]
    assert [(line[0], line[2], line[4]) for line in lines] == [
        ("causes_deces", "2022", "2"),
        ("causes_deces", "2023", "2"),
    ]
    planned_mb = sum(float(line[5]) for line in lines)
    assert abs(planned_mb - summary["causes_deces"]["bytes"] / 1e6) < 0.02

    assert str(migration.run("causes_deces", "2022").state) == "success"
    capsys.readouterr()  # the run's task logs
    assert main(["status", "--json"]) == 0
    status = {row["domain"]: row for row in json.loads(capsys.readouterr().out)}
    assert status["causes_deces"]["partitions_committed"] == 1
    assert status["causes_deces"]["partitions_expected"] == 2
    assert status["causes_deces"]["state"] == "transferring"
    assert status["causes_deces"]["rows"] > 0


def _json_out(capsys):
    """The command's JSON result, printed last. In this process, Airflow's loggers cached while an earlier
    test held stdout may still write there first; the production-profile test parses a real process's
    stdout whole."""
    lines = capsys.readouterr().out.splitlines()
    start = max(n for n, line in enumerate(lines) if line in ("{", "[", "{}", "[]"))
    return json.loads("\n".join(lines[start:]))


def _one_line_refusal(capsys, *expected: str) -> str:
    """The command's one line on stderr (Airflow's own log lines, timestamped, may precede it)."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    ours = [line for line in err.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert len(ours) == 1, err
    for text in expected:
        assert text in ours[0]
    return ours[0]


def test_user_errors_are_one_line_on_stderr_with_exit_2(migration, capsys, tmp_path):
    cases = [
        (["waive", "--domain", "nosuch", "--table", "T", "--partition", "2022", "--expectation", "e", "--by", "me",
          "--reason", "because"], "no domain 'nosuch'"),
        (["waive", "--domain", "dcir", "--table", "NO_SUCH_T", "--partition", "2024-01-01", "--expectation", "e",
          "--by", "me", "--reason", "because"], "domain 'dcir' has no table 'NO_SUCH_T' (known: "),
        (["cutover", "--local", "--domain", "nosuch"], "no domain nosuch in the catalogue (known: "),
        (["verify", "--domain", "dcir", "--domain", "nosuch"], "no domain nosuch in the catalogue"),
        (["rollback", "--domain", "dcir", "--reason", "short"], "a rollback needs a reason of at least 10 characters"),
        (["migrate", "--force"], "--force re-transfers in this process only"),
        (["migrate", "--api-url", "http://127.0.0.1:9"], "--api-url needs --password-file"),
        (["--catalogue", str(tmp_path / "missing.yaml"), "status"], "the catalogue file does not exist"),  # sets it
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2, argv
        command = argv[2] if argv[0] == "--catalogue" else argv[0]
        assert _one_line_refusal(capsys, expected).startswith(f"python -m hdh_migration {command}: ")


def test_an_unreachable_deployment_is_exit_3_with_what_to_do(migration, capsys, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_HDH_AIRFLOW_API", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": closed})
    )
    for argv in (["migrate", "--domain", "causes_deces"], ["cutover", "--all"], ["verify", "--all", "--json"]):
        assert main(argv) == 3, argv
        _one_line_refusal(capsys, "cannot reach the Airflow API", "--local for the embedded demo")
    monkeypatch.delenv("AIRFLOW_CONN_HDH_AIRFLOW_API")
    assert main(["verify", "--all"]) == 3
    _one_line_refusal(capsys, "hdh_airflow_api")


def test_every_command_prints_json_and_every_flag_has_help(migration, capsys):
    from hdh_migration.cli import _parser

    migration.seed(domains=["causes_deces"])
    assert main(["reindex"]) == 3  # no transfer yet, so no bucket
    _one_line_refusal(capsys, "the sovereign store answered NoSuchBucket to GetObject")
    assert main(["migrate", "--local", "--domain", "causes_deces", "--json"]) == 0
    migrated = _json_out(capsys)
    assert [(r["partition"], r["state"]) for r in migrated["runs"]] == [("2022", "success"), ("2023", "success")]
    for argv in (["plan", "--domain", "causes_deces"], ["status"], ["reindex"], ["suites"]):
        assert main([*argv, "--json"]) == 0, argv
        _json_out(capsys)
    assert main(["verify", "--local", "--domain", "causes_deces", "--json"]) == 2  # not cut over: a refusal
    _one_line_refusal(capsys, "causes_deces: not cut over; nothing to verify")

    parser = _parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert set(commands.choices) >= {"plan", "migrate", "status", "cutover", "rollback", "verify", "gaps", "waive"}
    for name, sub in commands.choices.items():
        if name == "seed":
            continue
        assert any(a.dest == "json" for a in sub._actions), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_gaps_check_exits_1_when_it_finds_gaps(migration, capsys):
    migration.seed(domains=["causes_deces"])
    assert main(["gaps", "--dry-run", "--json"]) == 0
    report = _json_out(capsys)
    assert report["domains"]["causes_deces"]["gaps"] == 2
    assert main(["gaps", "--dry-run", "--check"]) == 1
    capsys.readouterr()
    for partition in ("2022", "2023"):
        assert str(migration.run("causes_deces", partition).state) == "success"
    capsys.readouterr()  # the runs' task logs
    assert main(["gaps", "--dry-run", "--check", "--json"]) == 0
    assert _json_out(capsys)["domains"]["causes_deces"]["gaps"] == 0
