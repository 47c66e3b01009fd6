"""Privacy: a raw NIR quarantines its partition as an incident, and no data value leaves the worker."""

from __future__ import annotations

import json

from conftest import rewrite_source, set_values
from haystacks import airflow_xcoms, assert_nowhere, ledger_dump, outputs, tries

from hdh_migration.cli import main

RAW_NIR = "253072B07300470"  # a valid Corsican NIR from the shared vectors
CANARY = "ZQXCANARY"


def _run_with_logs(migration, capfd, domain: str, partition: str):
    """One DAG run of the partition, and everything it wrote to stdout and stderr."""
    capfd.readouterr()
    run = migration.run(domain, partition)
    return run, "".join(capfd.readouterr())


def test_raw_nir_is_a_privacy_incident_and_no_canary_leaves_the_worker(migration, capfd):
    migration.seed(domains=["causes_deces"])
    name = rewrite_source(
        migration,
        "causes_deces",
        "KI_CCI_R",
        "2022",
        lambda t: set_values(
            set_values(
                t, "DCD_LIE_LIB", {3: f"vu le {RAW_NIR} à Ajaccio {CANARY}", 5: f"2 53 07 2B 073 004 70 {CANARY}"}
            ),
            "DCD_CIM_COD",
            {7: CANARY[:4]},
        ),
    )
    assert CANARY.encode("latin-1") in migration.source_bytes(name), "the canaries are in the source"
    run, logs = _run_with_logs(migration, capfd, "causes_deces", "2022")
    assert str(run.state) == "failed"
    validate = [ti for ti in run.get_task_instances() if ti.task_id == "validate_partition"][0]
    assert str(validate.state) == "failed" and validate.try_number == 1, "a privacy incident is never retried"

    record = migration.ledger.get("causes_deces", "KI_CCI_R", "2022")
    assert record.state == "quarantined"
    assert record.last_error.startswith("PRIVACY INCIDENT domain=causes_deces table=KI_CCI_R partition=2022")
    assert "DCD_LIE_LIB" in record.last_error
    assert [e["kind"] for e in migration.ledger.events("causes_deces")].count("privacy_incident") == 1
    assert migration.target_keys("causes_deces/") == [] and migration.target_keys("_staging/") == []
    keys = migration.target_keys("_quarantine/")
    (report_key,) = keys
    assert report_key.endswith(".json"), "the report alone: its page is rendered when it is read"
    report = migration.target.get_json(report_key)
    assert report["severity"] == "privacy"
    assert "expect_column_values_to_not_contain_raw_nir(DCD_LIE_LIB)" in report["failing_expectations"]
    failing = {r["kwargs"].get("column"): r for r in report["validation"]["results"] if not r["success"]}
    assert failing["DCD_LIE_LIB"]["result"]["unexpected_count"] == 2

    from hdh_migration.board import _current_view, render_board
    from hdh_migration.reports import report_link

    view = _current_view()  # as the api-server builds it: this ledger, and Airflow's database for the log links
    (problem,) = [p for p in view["problems"] if p["domain"] == "causes_deces"]
    assert problem["privacy_incident"] is True and problem["kind"] == "privacy_incident"
    assert "expect_column_values_to_not_contain_raw_nir(DCD_LIE_LIB)" in problem["expectations"]
    assert problem["report_url"] == report_link(report_key)
    assert [link["url"] for link in problem["log_links"]] == [
        f"/dags/hdh_transfer__causes_deces/runs/{run.run_id}/tasks/validate_partition"
    ]

    everything = {
        "board": render_board(view, "/hdh"),
        "task logs": logs,
        "xcom": "\n".join(airflow_xcoms("hdh_transfer__causes_deces")),
        "ledger": ledger_dump(migration),
        "store documents": "\n".join(
            migration.target_bytes(k).decode("utf-8")
            for k in migration.target_keys("_")
            if k.endswith((".json", ".html"))
        ),
    }
    assert "PRIVACY INCIDENT" in everything["task logs"]
    assert "KI_CCI_R" in everything["xcom"] and "quarantined" in everything["ledger"]
    assert "failing_expectations" in everything["store documents"], "every haystack holds this run's output"
    for where, text in everything.items():
        for secret in (RAW_NIR, "2 53 07 2B", CANARY, CANARY[:4]):
            assert secret not in text, f"{secret!r} leaked into the {where}"

    assert main(["waive", "--domain", "causes_deces", "--table", "KI_CCI_R", "--partition", "2022",
                 "--expectation", "expect_column_values_to_not_contain_raw_nir(DCD_LIE_LIB)",
                 "--by", "someone", "--reason", "in a hurry"]) == 2  # fmt: skip


def test_a_quarantined_partition_is_released_by_a_recorded_waiver(migration):
    migration.seed(domains=["pmsi_mco"])
    rewrite_source(migration, "pmsi_mco", "T_MCOaaB", "2023", lambda t: set_values(t, "DGN_REL", {0: "9ZZ", 1: "9ZZ"}))
    run = migration.run("pmsi_mco", "2023")
    assert str(run.state) == "failed"
    record = migration.ledger.get("pmsi_mco", "T_MCOaaB", "2023")
    assert record.state == "quarantined"
    assert "expect_column_values_to_match_regex(DGN_REL)" in record.last_error
    assert "python -m hdh_migration waive" in record.last_error

    args = ["waive", "--domain", "pmsi_mco", "--table", "T_MCOaaB", "--partition", "2023"]
    who = ["--by", "dr.martin@hdh", "--reason", "legacy codes kept as delivered by ATIH"]
    assert main([*args, "--expectation", "expect_column_values_to_match_regex(DGN_REL)", *who]) == 0

    run = migration.run("pmsi_mco", "2023")
    assert str(run.state) == "success"
    assert migration.ledger.get("pmsi_mco", "T_MCOaaB", "2023").state == "committed"
    manifest = migration.target.get_json("_manifests/pmsi_mco/T_MCOaaB/SOR_ANN=2023.json")
    (waiver,) = manifest["waivers"]
    assert waiver["accepted_by"] == "dr.martin@hdh" and waiver["reason"].startswith("legacy codes")
    assert waiver["expectations"] == ["expect_column_values_to_match_regex(DGN_REL)"]
    assert manifest["validation"]["waived"] == ["expect_column_values_to_match_regex(DGN_REL)"]
    assert manifest["validation"]["success"] is False  # the manifest says what failed and why it was accepted


def test_on_call_reaches_the_redacted_report_from_the_failed_task(migration):
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient
    from hdh_migration_plugin import ValidationReportLink

    migration.seed(domains=["beneficiaires"])
    rewrite_source(
        migration, "beneficiaires", "IR_BEN_R", "2024-06-30", lambda t: set_values(t, "BEN_RES_COM", {2: CANARY})
    )
    run = migration.run("beneficiaires", "2024-06-30")
    assert str(run.state) == "failed"
    validate = next(ti for ti in run.get_task_instances() if ti.task_id == "validate_partition")
    link = ValidationReportLink().get_link(None, ti_key=validate.key)
    assert link.startswith("/hdh/reports/beneficiaires/IR_BEN_R/snapshot=2024-06-30/")

    client = TestClient(create_app(apps="core"))
    assert client.get(link).status_code == 401, "reports are not open without Airflow's login"
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="oncall", role="viewer"))
    page = client.get(link, headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self';")
    assert '<tr class="failed" data-expectation="expect_column_value_lengths_to_be_between(BEN_RES_COM)">' in page.text
    assert f'<a href="/dags/hdh_transfer__beneficiaires/runs/{run.run_id}" class="airflow">' in page.text
    assert CANARY not in page.text
    for other in ("/hdh/reports/_manifests/beneficiaires/IR_BEN_R/snapshot=2024-06-30.json", link + "0"):
        assert client.get(other, headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_a_raw_nir_in_a_numeric_column_is_a_privacy_incident_and_leaves_no_trace(migration, capfd):
    migration.seed(domains=["dcir"])
    nir = 295109912611193  # a valid NIR from the shared vectors, as a number
    rewrite_source(
        migration,
        "dcir",
        "ER_PHA_F",
        "2024-01-01",
        lambda t: set_values(set_values(t, "PHA_PRS_C13", {4: nir}), "PHA_ACT_PRU", {6: float(nir)}),
    )
    run, logs = _run_with_logs(migration, capfd, "dcir", "2024-01-01")
    assert str(run.state) == "failed"
    assert tries(run)["validate_partition"] == ({"failed"}, 1)
    record = migration.ledger.get("dcir", "ER_PHA_F", "2024-01-01")
    assert record.state == "quarantined"
    assert record.last_error.startswith("PRIVACY INCIDENT domain=dcir table=ER_PHA_F partition=2024-01-01")
    assert "raw NIR values in column(s) PHA_ACT_PRU, PHA_PRS_C13 " in record.last_error
    # ER_PRS_F passed: its staging waits for the next run's commit; nothing of ER_PHA_F stays.
    assert migration.target_keys("dcir/") == [] and migration.target_keys("_staging/dcir/ER_PHA_F/") == []
    haystacks = outputs(migration, "hdh_transfer__dcir", logs, "_")
    assert "PRIVACY INCIDENT" in haystacks["task logs"] and "privacy_incident" in haystacks["ledger"]
    assert_nowhere(haystacks, [str(nir), "2.95109912611193e+14", "2 95 10 99"])


def test_a_suite_cannot_weaken_the_nir_guard(migration, tmp_path, capfd):
    from conftest import write_catalogue

    from hdh_migration.catalogue import cached_catalogue
    from hdh_migration.suites import PRIVACY_EXPECTATION

    table = migration.catalogue.domain("causes_deces").table("KI_CCI_R")
    suite = json.loads(table.suite_path.read_text())
    weakened = []
    for expectation in suite["expectations"]:
        if expectation["type"] == PRIVACY_EXPECTATION and expectation["kwargs"]["column"] == "DCD_CIM_COD":
            continue  # the guard removed
        if expectation["type"] == PRIVACY_EXPECTATION and expectation["kwargs"]["column"] == "DCD_LIE_LIB":
            expectation["kwargs"]["mostly"] = 0.01  # the guard made lenient
        weakened.append(expectation)
    suite["expectations"] = weakened
    path = tmp_path / "KI_CCI_R.weakened.json"
    path.write_text(json.dumps(suite))

    def use_weakened_suite(raw):
        raw["domains"]["causes_deces"]["tables"]["KI_CCI_R"]["suite"] = str(path)

    write_catalogue(migration.catalogue_path, migration.name, use_weakened_suite)
    cached_catalogue.cache_clear()
    migration.seed(domains=["causes_deces"])
    rewrite_source(
        migration,
        "causes_deces",
        "KI_CCI_R",
        "2022",
        lambda t: set_values(set_values(t, "DCD_LIE_LIB", {3: f"vu le {RAW_NIR}"}), "DCD_CIM_COD", {5: RAW_NIR}),
    )
    run, logs = _run_with_logs(migration, capfd, "causes_deces", "2022")
    assert str(run.state) == "failed"
    record = migration.ledger.get("causes_deces", "KI_CCI_R", "2022")
    assert record.state == "quarantined"
    assert "raw NIR values in column(s) DCD_CIM_COD, DCD_LIE_LIB " in record.last_error
    report = migration.target.get_json(next(k for k in migration.target_keys("_quarantine/") if k.endswith(".json")))
    guards = {r["kwargs"]["column"]: r for r in report["validation"]["results"] if r["type"] == PRIVACY_EXPECTATION}
    assert guards["DCD_LIE_LIB"]["kwargs"] == {"column": "DCD_LIE_LIB"}, "reported as enforced: no mostly"
    assert guards["DCD_LIE_LIB"]["result"]["unexpected_count"] == 1 and not guards["DCD_LIE_LIB"]["success"]
    assert guards["DCD_CIM_COD"]["result"]["unexpected_count"] == 1
    assert_nowhere(outputs(migration, "hdh_transfer__causes_deces", logs, "_"), [RAW_NIR, "2 53 07 2B"])


def test_a_guard_that_cannot_run_fails_closed_and_says_it_could_not_look(migration, monkeypatch, capfd):
    """A raw-NIR guard that raises (a library fault) quarantines as a privacy incident, but on-call reads
    that the guard could not run, not that raw NIRs were found; the exception's text, which may quote a
    value, is nowhere."""
    from hdh_migration import nir

    def broken(values):
        raise ValueError(f"cannot decode {RAW_NIR}")  # a library message quoting a value

    migration.seed(domains=["causes_deces"])
    monkeypatch.setattr(nir, "raw_nir_mask", broken)
    run, logs = _run_with_logs(migration, capfd, "causes_deces", "2022")
    assert str(run.state) == "failed"
    record = migration.ledger.get("causes_deces", "KI_CCI_R", "2022")
    assert record.state == "quarantined"
    assert record.last_error.startswith("PRIVACY INCIDENT domain=causes_deces table=KI_CCI_R partition=2022")
    assert "raw NIR values" not in record.last_error
    assert "the raw-NIR guard could not run on column(s) " in record.last_error
    assert "could not be evaluated on a batch of 150 rows (ValueError)" in record.last_error
    assert_nowhere(outputs(migration, "hdh_transfer__causes_deces", logs, "_"), [RAW_NIR])
