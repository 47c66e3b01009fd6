"""``python -m hdh_migration <command>``: the commands data engineers run by hand.

- ``plan``: per domain, the partitions, source objects and bytes waiting in Azure;
- ``migrate``: backfill every domain's transfer DAG over its planned partitions;
- ``status``: per domain, wave, state, partitions committed out of expected, rows, bytes, quarantined
  partitions, the last error, partitions in flight (and stalled), the cutover and the last verification
  (the status model of ``status``, which the on-call board renders too);
- ``cutover``: run a domain's cutover DAG (``hdh_cutover__<domain>``), or every domain's;
- ``rollback``: run a domain's rollback DAG, with a mandatory reason;
- ``verify``: re-check cut-over domains against their cutover records, reading nothing from Azure
  (``--chain``: and prove offline that every object descends from a first-source object);
- ``decommission``: delete a verified, cut-over domain's old copy object by object, with a signed receipt;
- ``gaps``: find partitions in Azure not committed in the sovereign store and ask Airflow to backfill them;
- ``reindex``: rebuild the ledger's partition states, cutover history and freezes from the sovereign store;
- ``suites``: regenerate the generated part of every expectation suite from the schema files;
- ``waive``: accept named failing expectations of a quarantined partition;
- ``preflight``: before wave 1, check the real accounts, the store's settings and the Airflow side;
- ``seed``: write the deterministic synthetic SNDS data into Azure (Azurite).

``migrate``, ``cutover``, ``rollback`` and ``verify`` drive the running deployment through Airflow's
REST API (connection ``hdh_airflow_api``, or ``--api-url``): its scheduler, queues, pools and deadlines
apply, and this machine needs no storage credential. ``--local`` runs the DAGs in this process with
``dag.test()`` instead, for the embedded demo.

Every command prints a table, or JSON with ``--json``; progress goes to stderr. Exit codes: 0 done,
1 the work ran and failed (a run failed, verify found problems, ``gaps --check`` found gaps), 2 bad
input or a refusal (one line on stderr), 3 the deployment could not be reached or did not finish in time.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path

from hdh_migration.catalogue import load_catalogue
from hdh_migration.signing import PUBLIC_KEY_SETTING
from hdh_migration.states import FROZEN_STATES, PartitionState
from hdh_migration.status import status_rows

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3


class Refused(Exception):
    """Bad input, or a command that refuses to act: one line on stderr and exit 2, never a traceback."""


def _table(rows: list[list], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*(str(x) for x in row)) for row in rows)
    return "\n".join(out)


def _emit(args, data, text: str) -> None:
    """The command's result on stdout: JSON with --json, else the text."""
    print(json.dumps(data, indent=2, default=str) if args.json else text, file=args.result_stream, flush=True)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_plan(args) -> int:
    from hdh_migration.resources import open_source as _source

    catalogue = load_catalogue(args.catalogue)
    rows = []
    for domain in catalogue.domains:
        if args.domain and domain.name not in args.domain:
            continue
        source = _source(domain.name)
        for partition in domain.partitions():
            objects = size = 0
            for table in domain.tables:
                listed = source.list_objects(table.source_dir(partition), table.source_extension)
                objects += len(listed)
                size += sum(o.size for o in listed)
            rows.append(
                {
                    "domain": domain.name,
                    "wave": domain.wave,
                    "partition": partition,
                    "tables": len(domain.tables),
                    "objects": objects,
                    "bytes": size,
                }
            )
    text = _table(
        [[r["domain"], r["wave"], r["partition"], r["tables"], r["objects"], f"{r['bytes'] / 1e6:.2f}"] for r in rows],
        ["domain", "wave", "partition", "tables", "objects", "MB"],
    )
    _emit(args, rows, text)
    return EXIT_OK


def _verify_cell(row: dict) -> str:
    verify = row["verify"]
    if verify is None:
        return "-"
    return f"{'ok' if verify['passed'] else 'FAILED'} {verify['at'][:10]}{' deep' if verify.get('deep') else ''}"


def cmd_status(args) -> int:
    from hdh_migration.resources import open_ledger as _ledger

    rows = status_rows(load_catalogue(args.catalogue), _ledger())
    lines = [
        _table(
            [
                [
                    r["domain"],
                    r["wave"],
                    r["state"],
                    f"{r['partitions_committed']}/{r['partitions_expected']}",
                    r["rows"],
                    f"{r['bytes'] / 1e6:.2f}",
                    len(r["quarantined"]),
                    len(r["failed"]) - len(r["quarantined"]),
                    r["partitions_in_flight"]
                    if not r["partitions_stalled"]
                    else f"{r['partitions_in_flight']} ({r['partitions_stalled']} stalled)",
                    r["cutover"]["at"][:10] if r["cutover"] and r["cutover"]["action"] == "cutover" else "-",
                    _verify_cell(r),
                ]
                for r in rows
            ],
            [
                "domain",
                "wave",
                "state",
                "committed",
                "rows",
                "MB",
                "quarantined",
                "failed",
                "in flight",
                "cut over",
                "verified",
            ],
        )
    ]
    for r in rows:
        for quarantined in r["quarantined"]:
            lines.append(f"  {r['domain']}: quarantined {quarantined['table']} {quarantined['partition']}")
        for waiting in r["waiting"]:
            lines.append(f"  {r['domain']}: {waiting['table']} {waiting['partition']} passed, {waiting['waits_for']}")
        if r["last_error"]:
            error_lines = r["last_error"]["error"].splitlines()
            more = f" (+{len(error_lines) - 2} more: status --json)" if len(error_lines) > 2 else ""
            lines.append(f"  {r['domain']}: last error {r['last_error']['at']}: {' '.join(error_lines[:2])}{more}")
    _emit(args, rows, "\n".join(lines))
    return EXIT_OK


def _api(args):
    """The deployment's REST API: ``--api-url`` with a passwords file, else connection ``hdh_airflow_api``."""
    from hdh_migration.airflow_api import AirflowApi

    if args.api_url:
        if not args.password_file:
            raise Refused("--api-url needs --password-file (the users' passwords file) for the login")
        return AirflowApi.from_password_file(args.api_url, args.password_file, args.user)
    return AirflowApi.from_connection()


def _local_migrate(args, catalogue) -> tuple[list[dict], int]:
    """Every planned partition of every chosen domain through dag.test(), in this process (the demo)."""
    from hdh_migration.dag_factory import build_transfer_dag
    from hdh_migration.resources import open_ledger as _ledger

    ledger = _ledger()
    runs, failures = [], 0
    for domain in sorted(catalogue.domains, key=lambda d: (d.wave, d.name)):
        if args.domain and domain.name not in args.domain:
            continue
        if ledger.domain_state(domain.name) in FROZEN_STATES:
            _progress(f"--- hdh_transfer__{domain.name}: cut over, the transfer refuses to write; skipped")
            continue
        dag = build_transfer_dag(domain, with_deadline=False)  # deadlines are the scheduler's; see the factory
        for partition in domain.partitions():
            _progress(f"--> {dag.dag_id} partition {partition}")
            run = dag.test(
                logical_date=domain.logical_date(partition), run_conf={"partition": partition, "force": args.force}
            )
            state = str(getattr(run, "state", "unknown"))
            _progress(f"<-- {dag.dag_id} partition {partition}: {state}")
            runs.append({"domain": domain.name, "partition": partition, "run_id": run.run_id, "state": state})
            failures += state != "success"
    return runs, failures


def _deployed_migrate(args, catalogue) -> tuple[list[dict], int]:
    """Backfills through the deployment's REST API; the scheduler and workers do the work."""
    from hdh_migration import deployment

    if args.force:
        raise Refused("--force re-transfers in this process only: use it with --local, or trigger the DAG with force")
    drives = deployment.migrate(_api(args), catalogue, args.domain, args.timeout, log=_progress)
    runs = [
        {"domain": drive.domain.name, "run_id": run_id, "state": state}
        for drive in drives
        for run_id, state in drive.transfer_states.items()
    ]
    return runs, sum(r["state"] != "success" for r in runs)


def cmd_migrate(args) -> int:
    catalogue = load_catalogue(args.catalogue)
    _chosen_domains(catalogue, args.domain)  # refuses an unknown domain before anything starts
    started = time.monotonic()
    runs, failures = (_local_migrate if args.local else _deployed_migrate)(args, catalogue)
    elapsed = time.monotonic() - started
    data = {"runs": runs, "failed": failures, "seconds": round(elapsed, 1)}
    if not args.local:
        text = _table([[r["domain"], r["run_id"], r["state"]] for r in runs], ["domain", "transfer run", "state"]) + (
            f"\n\n{len(runs)} run(s) through the deployment in {elapsed:.1f} s, {failures} not successful"
        )
        _emit(args, data, text)
        return EXIT_FAILED if failures else EXIT_OK
    from hdh_migration.resources import open_ledger as _ledger

    rows = status_rows(catalogue, _ledger())
    total_bytes = sum(r["bytes"] for r in rows)
    data["status"] = rows
    text = _table(
        [
            [r["domain"], r["wave"], f"{r['partitions_committed']}/{r['partitions_expected']}", r["rows"]]
            + [f"{r['bytes'] / 1e6:.2f}"]
            for r in rows
        ],
        ["domain", "wave", "committed", "rows", "MB"],
    ) + (
        f"\n\n{total_bytes / 1e6:.1f} MB committed in {elapsed:.1f} s "
        f"({total_bytes / 1e6 / max(elapsed, 1e-6):.2f} MB/s)"
    )
    _emit(args, data, text)
    return EXIT_FAILED if failures else EXIT_OK


def cmd_reindex(args) -> int:
    from hdh_migration.cutover import restore_from_record
    from hdh_migration.errors import IntegrityError
    from hdh_migration.manifest import Manifest
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.resources import open_target as _target
    from hdh_migration.signing import SigningKeyError

    catalogue = load_catalogue(args.catalogue)
    target, ledger = _target(), _ledger()
    found = 0
    for domain in catalogue.domains:
        for table in domain.tables:
            for partition in domain.partitions():
                stored = Manifest.read(target, Manifest.key_for(table, partition))
                if stored is None:
                    continue
                manifest, manifest_sha256 = stored
                found += 1
                ledger.set_state(
                    domain.name,
                    table.name,
                    partition,
                    PartitionState.COMMITTED,
                    rebuild=True,
                    **manifest.committed_fields(manifest_sha256),
                )
    restored, refused = {}, {}
    for domain in catalogue.domains:
        try:
            state = restore_from_record(domain.name, args.public_key)
        except (IntegrityError, SigningKeyError) as error:
            refused[domain.name] = str(error)
            continue
        if state:
            restored[domain.name] = state
    lines = [f"reindex: {found} committed partition(s) rebuilt from the manifests"]
    lines += [
        f"reindex: {name}: cutover history restored from its record ({state})" for name, state in restored.items()
    ]
    lines += [f"reindex: {error}" for error in refused.values()]
    data = {"partitions": found, "cutover_history_restored": restored, "cutover_history_refused": refused}
    _emit(args, data, "\n".join(lines))
    return EXIT_FAILED if refused else EXIT_OK


def _chosen_domains(catalogue, names: list[str] | None) -> list:
    """The named domains, or every domain when none is named, in wave order; refuses an unknown name."""
    unknown = sorted(set(names or []) - {d.name for d in catalogue.domains})
    if unknown:
        known = ", ".join(d.name for d in catalogue.domains)
        raise Refused(f"no domain {', '.join(unknown)} in the catalogue (known: {known})")
    chosen = [d for d in catalogue.domains if not names or d.name in names]
    return sorted(chosen, key=lambda d: (d.wave, d.name))


def _cutover_outcome_local(domain, args, ledger) -> dict:
    from hdh_migration.cutover import record_key
    from hdh_migration.dag_factory import build_cutover_dag

    dag = build_cutover_dag(domain)
    _progress(f"--> {dag.dag_id}")
    run = dag.test(run_conf={"by": args.by})
    history = ledger.cutover_history(domain.name)
    refused = ledger.last_event(domain.name, ("cutover_refused",))
    outcome = {"domain": domain.name, "dag_id": dag.dag_id, "run_id": run.run_id, "state": str(run.state)}
    if history and history[-1]["run_id"] == run.run_id:
        last = history[-1]
        return {**outcome, "outcome": "cut over", "by": last["by"], "record": record_key(domain.name)} | {
            "root_sha256": last["root_sha256"]
        }
    if outcome["state"] == "success":
        return {**outcome, "outcome": "already cut over; nothing to do"}
    detail = refused["detail"] if refused and refused["run_id"] == run.run_id else "see the task logs above"
    return {**outcome, "outcome": "failed", "detail": detail}


def _cutover_outcome_deployed(domain, args, api) -> dict:
    from hdh_migration.deployment import run_dag
    from hdh_migration.naming import cutover_dag_id

    done = run_dag(api, cutover_dag_id(domain.name), {"by": args.by}, args.timeout, log=_progress)
    outcome = {"domain": domain.name, "dag_id": done.dag_id, "run_id": done.run_id, "state": done.state}
    if done.state != "success":
        return {
            **outcome,
            "outcome": "failed",
            "detail": "refused or failed: see the run's task logs in the Airflow UI",
        }
    if done.tasks.get("check_completeness") == "skipped":
        return {**outcome, "outcome": "already cut over; nothing to do"}
    announced = api.return_value(done.dag_id, done.run_id, "write_cutover_record") or {}
    return {
        **outcome,
        "outcome": "cut over",
        "by": args.by,
        "record": announced.get("record_key"),
        "root_sha256": announced.get("root_sha256"),
    }


def cmd_cutover(args) -> int:
    """Run each chosen domain's cutover DAG; print what it decided."""
    catalogue = load_catalogue(args.catalogue)
    chosen = _chosen_domains(catalogue, args.domain)
    if args.local:
        from hdh_migration.resources import open_ledger as _ledger

        ledger = _ledger()
        outcomes = [_cutover_outcome_local(domain, args, ledger) for domain in chosen]
    else:
        api = _api(args)
        outcomes = [_cutover_outcome_deployed(domain, args, api) for domain in chosen]
    lines = []
    for o in outcomes:
        if o["outcome"] == "cut over":
            lines.append(f"<-- {o['dag_id']}: cut over by {o['by']}, record {o['record']}, root {o['root_sha256']}")
        elif o["outcome"] == "failed":
            lines.append(f"<-- {o['dag_id']}: {o['state']}: {o['detail']}")
        else:
            lines.append(f"<-- {o['dag_id']}: {o['outcome']}")
    _emit(args, outcomes, "\n".join(lines))
    return EXIT_FAILED if any(o["outcome"] == "failed" for o in outcomes) else EXIT_OK


def cmd_rollback(args) -> int:
    """Run a domain's rollback DAG, after checking the reason (and, locally, the state)."""
    from hdh_migration.cutover import MIN_REASON_CHARS, CutoverError, check_rollback
    from hdh_migration.dag_factory import build_rollback_dag
    from hdh_migration.naming import rollback_dag_id

    (domain,) = _chosen_domains(load_catalogue(args.catalogue), [args.domain])
    conf = {"reason": args.reason, "by": args.by}
    if args.local:
        try:
            check_rollback(domain.name, args.reason)
        except CutoverError as refused:
            raise Refused(str(refused)) from None
        dag = build_rollback_dag(domain)
        _progress(f"--> {dag.dag_id}")
        run = dag.test(run_conf=conf)
        outcome = {"domain": domain.name, "dag_id": dag.dag_id, "run_id": run.run_id, "state": str(run.state)}
    else:
        from hdh_migration.deployment import run_dag

        if len(args.reason.strip()) < MIN_REASON_CHARS:
            raise Refused(
                f"a rollback needs a reason of at least {MIN_REASON_CHARS} characters (rule: mandatory reason)"
            )
        done = run_dag(_api(args), rollback_dag_id(domain.name), conf, args.timeout, log=_progress)
        outcome = {"domain": domain.name, "dag_id": done.dag_id, "run_id": done.run_id, "state": done.state}
    _emit(args, outcome, f"<-- {outcome['dag_id']}: {outcome['state']}")
    return EXIT_OK if outcome["state"] == "success" else EXIT_FAILED


def _verify_local(domain, args) -> dict:
    from hdh_migration.cutover import NothingToDoError, verify
    from hdh_migration.errors import IntegrityError

    try:
        report = verify(domain.name, deep=not args.quick, public_key=args.public_key, chain=args.chain)
        return {"domain": domain.name, "verify": "ok", **report}
    except NothingToDoError:
        return {"domain": domain.name, "verify": "not cut over"}
    except IntegrityError as error:
        return {"domain": domain.name, "verify": "FAILED", "problems": str(error)}


def _verify_deployed(domain, args, api) -> dict:
    from hdh_migration.deployment import run_dag
    from hdh_migration.naming import verify_dag_id

    conf = {"deep": not args.quick, "chain": args.chain}
    done = run_dag(api, verify_dag_id(domain.name), conf, args.timeout, log=_progress)
    if done.state != "success":
        problems = f"see the log of verify_cutover in {done.dag_id} run {done.run_id}"
        return {"domain": domain.name, "verify": "FAILED", "problems": problems}
    if done.tasks.get("verify_cutover") == "skipped":
        return {"domain": domain.name, "verify": "not cut over"}
    return {
        "domain": domain.name,
        "verify": "ok",
        **(api.return_value(done.dag_id, done.run_id, "verify_cutover") or {}),
    }


def cmd_verify(args) -> int:
    """Re-check each chosen cut-over domain against its cutover record; reads nothing from Azure."""
    from hdh_migration.signing import SigningKeyError, pinned_public_keys

    chosen = _chosen_domains(load_catalogue(args.catalogue), args.domain)
    if args.local:
        try:
            pinned = pinned_public_keys(args.public_key)
        except SigningKeyError as error:
            raise Refused(str(error)) from None
        checked_against = f"signatures checked against {', '.join(sorted(pinned))}"
    else:
        checked_against = "signatures checked by the deployment against the key its workers pin"
    if args.public_key and not args.local:
        raise Refused(
            f"--public-key needs --local: the deployment's verify DAG trusts the key its workers pin (${PUBLIC_KEY_SETTING})"
        )
    api = None if args.local else _api(args)
    reports = [_verify_local(domain, args) if args.local else _verify_deployed(domain, args, api) for domain in chosen]
    if not args.all and all(r["verify"] == "not cut over" for r in reports):
        raise Refused(f"{', '.join(r['domain'] for r in reports)}: not cut over; nothing to verify")
    rows = [
        [
            r["domain"],
            r["verify"],
            r.get("partitions", "-"),
            r.get("objects", "-"),
            f"{r['bytes'] / 1e6:.2f}" if r.get("deep") else "-",
            r.get("root_sha256", "-"),
        ]
        for r in reports
    ]
    text = _table(rows, ["domain", "verify", "partitions", "objects", "MB read", "root sha256"])
    for r in reports:
        if r.get("chain"):
            chain = r["chain"]
            text += (
                f"\n{r['domain']}: chain of custody: {chain['objects_chained']} object(s) descend from first-source "
                f"objects through the interim record, root {chain['upstream_root_sha256']} signed by "
                f"{chain['upstream_signed_by']}"
            )
        if r.get("receipt"):
            receipt = r["receipt"]
            text += (
                f"\n{r['domain']}: decommission receipt {receipt['state']}: {receipt['objects']} object(s) deleted "
                f"{receipt['finished_at']} by {receipt['by']}, signed by {receipt['signed_by']}"
            )
    text += "".join(f"\n{r['problems']}" for r in reports if r["verify"] == "FAILED") + f"\n{checked_against}"
    _emit(args, reports, text)
    return EXIT_FAILED if any(r["verify"] == "FAILED" for r in reports) else EXIT_OK


def cmd_decommission(args) -> int:
    """Run a domain's decommission DAG (or, with --dry-run, list what it would delete)."""
    from hdh_migration.dag_factory import build_decommission_dag
    from hdh_migration.decommission import DecommissionRefused, check_decommission
    from hdh_migration.layout import receipt_key
    from hdh_migration.naming import decommission_dag_id
    from hdh_migration.signing import SigningKeyError

    (domain,) = _chosen_domains(load_catalogue(args.catalogue), [args.domain])
    conf = {"dry_run": args.dry_run, "by": args.by}
    if args.local:
        try:
            plan = check_decommission(domain.name)
        except (DecommissionRefused, SigningKeyError) as refused:
            raise Refused(str(refused).replace("\n", " ")) from None
        if args.dry_run:
            outcome = {
                "domain": domain.name,
                "dry_run": True,
                "source": plan["source"],
                "objects": len(plan["objects"]),
                "bytes": plan["bytes"],
                "would_delete": [{"name": o["name"], "size": o["size"]} for o in plan["objects"]],
            }
            lines = [f"  {o['name']} ({o['size']} bytes)" for o in outcome["would_delete"]]
            text = f"dry run: {outcome['objects']} object(s), {outcome['bytes'] / 1e6:.2f} MB would be deleted from "
            _emit(args, outcome, text + f"{outcome['source']}:\n" + "\n".join(lines))
            return EXIT_OK
        dag = build_decommission_dag(domain)
        _progress(f"--> {dag.dag_id}")
        run = dag.test(run_conf=conf)
        outcome = {"domain": domain.name, "dag_id": dag.dag_id, "run_id": run.run_id, "state": str(run.state)}
    else:
        from hdh_migration.deployment import run_dag

        api = _api(args)
        done = run_dag(api, decommission_dag_id(domain.name), conf, args.timeout, log=_progress)
        outcome = {"domain": domain.name, "dag_id": done.dag_id, "run_id": done.run_id, "state": done.state}
        if done.state == "success":
            outcome.update(api.return_value(done.dag_id, done.run_id, "decommission_old_copy") or {})
    if outcome["state"] == "success" and not args.dry_run:
        outcome["receipt_key"] = receipt_key(domain.name)
        text = f"<-- {outcome['dag_id']}: decommissioned; signed receipt {outcome['receipt_key']}"
    elif outcome["state"] == "success":
        text = f"<-- {outcome['dag_id']}: dry run: {outcome.get('objects', '?')} object(s) would be deleted"
    else:
        text = f"<-- {outcome['dag_id']}: {outcome['state']}: see the task log (nothing is deleted before every check passed)"
    _emit(args, outcome, text)
    return EXIT_OK if outcome["state"] == "success" else EXIT_FAILED


def cmd_waive(args) -> int:
    """Accept failing expectations of one quarantined partition, with who and why, for the next run."""
    from hdh_migration.resources import open_ledger as _ledger
    from hdh_migration.validation import INTEGRITY_CHECKS, PRIVACY_EXPECTATIONS

    catalogue = load_catalogue(args.catalogue)
    catalogue.domain(args.domain).table(args.table)
    refused = [e for e in args.expectation if e.split("(")[0] in PRIVACY_EXPECTATIONS | INTEGRITY_CHECKS]
    if refused:
        raise Refused(f"{refused} cannot be waived: a raw NIR or a copy that differs from its source is never accepted")
    ledger = _ledger()
    record = ledger.get(args.domain, args.table, args.partition)
    if record is None or record.state != PartitionState.QUARANTINED:
        raise Refused(f"{args.domain} {args.table} {args.partition} is not quarantined; nothing to waive")
    ledger.add_waiver(args.domain, args.table, args.partition, args.expectation, args.by, args.reason)
    waiver = {
        "domain": args.domain,
        "table": args.table,
        "partition": args.partition,
        "expectations": args.expectation,
        "by": args.by,
    }
    _emit(
        args,
        waiver,
        f"waive: recorded; re-run hdh_transfer__{args.domain} for partition {args.partition} to commit it",
    )
    return EXIT_OK


def cmd_gaps(args) -> int:
    """The gap scan of the ``hdh_gap_scan`` DAG, from a shell."""
    from hdh_migration.gaps import run_gap_scan

    report = run_gap_scan(dry_run=args.dry_run, max_attempts=args.max_attempts)
    rows = []
    for name, domain in report["domains"].items():
        request = domain["request"] or {}
        ranges = " ".join(a if a == b else f"{a}..{b}" for a, b in request.get("ranges", [])) or "-"
        rows.append([name, domain["gaps"], domain["held"], domain["not_in_azure"], ranges, request.get("status", "-")])
    lines = [_table(rows, ["domain", "gaps", "held", "not in Azure", "partitions to run", "request"])]
    for name, domain in report["domains"].items():
        for finding in domain["findings"]:
            lines.append(f"  {name} {finding['table']} {finding['partition']}: {finding['reason']}")
    seconds = report["seconds"]["total"]
    lines.append(
        f"{report['partitions_checked']} partition(s) checked in {seconds:.1f} s: {report['gaps']} gap(s), "
        f"{report['held']} held, {report['backfills']} backfill(s) requested; report {report['report_key']}"
    )
    _emit(args, report, "\n".join(lines))
    return EXIT_FAILED if args.check and (report["gaps"] or report["held"]) else EXIT_OK


def cmd_suites(args) -> int:
    from hdh_migration.suites import write_all

    changed = [str(p) for p in write_all(load_catalogue(args.catalogue))]
    _emit(args, {"updated": changed}, f"suites: {len(changed)} file(s) updated" + "".join(f"\n  {p}" for p in changed))
    return EXIT_OK


def cmd_preflight(args) -> int:
    """The readiness table; exit 1 on any blocker."""
    from hdh_migration.preflight import BLOCKER, as_json, run_preflight

    rows = run_preflight(load_catalogue(args.catalogue), max_skew_s=args.max_clock_skew)
    data = as_json(rows)
    text = _table([[r.check, r.verdict, r.detail] for r in rows], ["check", "verdict", "detail"]) + (
        f"\n\n{'ready for wave 1' if data['ready'] else 'NOT ready'}: {data['blockers']} blocker(s), "
        f"{data['warnings']} warning(s)"
    )
    _emit(args, data, text)
    return EXIT_FAILED if any(r.verdict == BLOCKER for r in rows) else EXIT_OK


def cmd_pools(args) -> int:
    """Create or resize the transfers' Airflow pool to the catalogue's transfer_slots."""
    from hdh_migration.pools import sync_transfer_pool

    synced = sync_transfer_pool(load_catalogue(args.catalogue))
    was = "created" if synced.previous is None else ("unchanged" if not synced.changed else f"was {synced.previous}")
    _emit(
        args,
        {"pool": synced.pool, "slots": synced.slots, "previous": synced.previous, "changed": synced.changed},
        f"pool {synced.pool}: {synced.slots} slot(s) ({was})",
    )
    return EXIT_OK


def cmd_users(args) -> int:
    """Create or update the deployment's users and roles (FAB auth manager)."""
    from hdh_migration.accounts import AccountError, parse_users, sync_users

    try:
        synced = sync_users(parse_users(args.users), Path(args.password_file))
    except AccountError as error:
        raise Refused(str(error)) from None
    rows = [
        [s.username, s.role, "created" if s.created else ("password set" if s.password_changed else "unchanged")]
        for s in synced
    ]
    _emit(args, [s.as_dict() for s in synced], _table(rows, ["user", "role", "change"]))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    deployment = argparse.ArgumentParser(add_help=False)
    deployment.add_argument(
        "--local", action="store_true", help="run the DAGs in this process with dag.test() (the embedded demo)"
    )
    deployment.add_argument(
        "--api-url",
        help="the deployment's api-server, e.g. http://127.0.0.1:8080 (default: connection hdh_airflow_api)",
    )
    deployment.add_argument("--user", default="admin", help="login for --api-url (default: admin)")
    deployment.add_argument(
        "--password-file",
        help="with --api-url: the users' passwords file, JSON {user: password} (the profile's passwords.json)",
    )
    deployment.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait for the deployment's runs (default: 1800)"
    )
    domains = argparse.ArgumentParser(add_help=False)
    domains.add_argument("--domain", action="append", help="a domain of the catalogue (repeatable)")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--by", default=getpass.getuser(), help="who decides (default: your login)")

    parser = argparse.ArgumentParser(prog="python -m hdh_migration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", help="catalogue YAML (default: dags/domains.yaml or $HDH_CATALOGUE)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, func, help: str, parents=()):  # noqa: A002 - argparse's own word
        sub = commands.add_parser(name, help=help, description=help, parents=[output, *parents])
        sub.set_defaults(func=func)
        return sub

    command("plan", cmd_plan, "partitions, objects and bytes waiting in Azure", [domains])
    migrate = command(
        "migrate", cmd_migrate, "backfill the transfer DAGs over every planned partition", [domains, deployment]
    )
    migrate.add_argument("--force", action="store_true", help="with --local: re-transfer committed partitions")
    command("status", cmd_status, "per-domain migration status")
    gaps = command("gaps", cmd_gaps, "find partitions not committed and backfill them through Airflow")
    gaps.add_argument("--dry-run", action="store_true", help="find and report; create no backfill")
    gaps.add_argument("--check", action="store_true", help="exit 1 when a gap is found or held (for monitoring)")
    gaps.add_argument("--max-attempts", type=int, default=3, help="failed runs before a partition is held (default: 3)")
    reindex = command("reindex", cmd_reindex, "rebuild the ledger from the manifests and signed cutover records")
    reindex.add_argument("--public-key", help=f"the pinned cutover public key (default: ${PUBLIC_KEY_SETTING})")
    cutover = command("cutover", cmd_cutover, "run the cutover DAG of chosen domains", [deployment, who])
    chosen = cutover.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--domain", action="append", help="a domain of the catalogue (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every domain of the catalogue")
    rollback = command("rollback", cmd_rollback, "roll a domain's cutover back, with a reason", [deployment, who])
    rollback.add_argument("--domain", required=True, help="the domain to roll back")
    rollback.add_argument("--reason", required=True, help="why the French copy stops being the data")
    verify = command(
        "verify", cmd_verify, "re-check cut-over domains against their records, without Azure", [deployment]
    )
    chosen = verify.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--domain", action="append", help="a domain of the catalogue (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every cut-over domain")
    verify.add_argument("--quick", action="store_true", help="sizes and checksum metadata only; no byte read back")
    verify.add_argument(
        "--chain",
        action="store_true",
        help="also prove, from the record alone (offline), that every object descends from a first-source object",
    )
    verify.add_argument(
        "--public-key",
        help=f"with --local: the cutover public key to trust, as published (default: ${PUBLIC_KEY_SETTING})",
    )
    decommission = command(
        "decommission",
        cmd_decommission,
        "delete a verified, cut-over domain's old copy object by object, with a signed receipt",
        [deployment, who],
    )
    decommission.add_argument("--domain", required=True, help="the domain whose old copy (its source) is deleted")
    decommission.add_argument(
        "--dry-run", action="store_true", help="check every precondition and list what would be deleted; delete nothing"
    )
    command("suites", cmd_suites, "regenerate the generated part of every expectation suite")
    waive = command("waive", cmd_waive, "accept failing expectations of a quarantined partition")
    waive.add_argument("--domain", required=True, help="the quarantined partition's domain")
    waive.add_argument("--table", required=True, help="the quarantined partition's table")
    waive.add_argument("--partition", required=True, help="the quarantined partition, e.g. 2024-03-01")
    waive.add_argument("--expectation", action="append", required=True, help="as named in the error, e.g. type(column)")
    waive.add_argument("--by", required=True, help="who accepts")
    waive.add_argument("--reason", required=True, help="why it is acceptable")
    preflight = command(
        "preflight", cmd_preflight, "before wave 1: check the accounts, the store and Airflow; exit 1 on a blocker"
    )
    preflight.add_argument(
        "--max-clock-skew",
        type=float,
        default=300,
        help="seconds this machine's clock may differ from the store's before it blocks (default: 300)",
    )
    pools = command(
        "pools",
        cmd_pools,
        "size the transfers' Airflow pool from the catalogue's transfer_slots (run by the deployment at start)",
    )
    pools.add_argument(
        "action", choices=["sync"], help="sync: create the pool, or resize it, to transfer_slots (idempotent)"
    )
    users = command(
        "users",
        cmd_users,
        "create or update the deployment's users with their roles (FAB auth manager; run by the deployment at start)",
    )
    users.add_argument("action", choices=["sync"], help="sync: create each user, or set its role and password again")
    users.add_argument(
        "--users",
        default=os.environ.get("HDH_AIRFLOW_USERS", ""),
        help="name:Role pairs, comma-separated; Role one of Viewer, User, Op, Admin (default: $HDH_AIRFLOW_USERS)",
    )
    users.add_argument(
        "--password-file",
        required=True,
        help="JSON {user: password}, mode 600: a user without a password gets a generated one, written there",
    )
    commands.add_parser("seed", help="seed synthetic SNDS data into Azure (see `seed --help`)")
    return parser


def _run(args) -> int:
    """The command, with every expected failure turned into one line on stderr and its exit code."""
    import requests
    from airflow.sdk.exceptions import AirflowNotFoundException
    from botocore.exceptions import ClientError

    from hdh_migration.airflow_api import AirflowApiError
    from hdh_migration.catalogue import CatalogueError
    from hdh_migration.deployment import DeploymentError

    name = f"python -m hdh_migration {args.command}"
    try:
        return args.func(args)
    except (Refused, CatalogueError) as refused:
        print(f"{name}: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    except (AirflowApiError, AirflowNotFoundException, DeploymentError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ClientError as error:
        code, operation = error.response.get("Error", {}).get("Code", "an error"), error.operation_name
        print(
            f"{name}: the sovereign store answered {code} to {operation}: check the bucket of the catalogue and the "
            "connection hdh_sovereign_target",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except requests.exceptions.RequestException as error:
        print(
            f"{name}: cannot reach the Airflow API ({type(error).__name__}): start the deployment, check connection "
            "hdh_airflow_api or --api-url, or run with --local for the embedded demo",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["seed"]:
        try:  # tooling beside the package (tools/), on PYTHONPATH through scripts/env.sh; never deployed
            from hdh_synthetic import main_seed  # its own options: see `seed --help`
        except ModuleNotFoundError:
            print(
                "seed: the synthetic-data generator (tools/hdh_synthetic) is not on PYTHONPATH; it ships with the "
                "project's checkout, not with the deployment. Run it from a checkout after `source scripts/env.sh`",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        return main_seed(argv[1:])
    args = _parser().parse_args(argv)
    # Each retry of the API client is a warning of urllib3's; the command's own line says what failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if args.catalogue:
        # Task bodies load the catalogue from the environment, as they do on a worker.
        os.environ["HDH_CATALOGUE"] = args.catalogue
    # stdout carries the result alone (a table, or JSON to pipe); whatever else is printed while the
    # command runs (Airflow's and the libraries' logs, dag.test()'s task logs) goes to stderr.
    args.result_stream = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


if __name__ == "__main__":
    sys.exit(main())
