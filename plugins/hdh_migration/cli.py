"""``python -m hdh_migration <command>``: the commands data engineers run by hand.

- ``plan``: per domain, the partitions, source objects and bytes waiting in Azure;
- ``migrate``: run every domain's transfer DAG over its planned partitions (``dag.test()``, the demo);
- ``status``: per domain, wave, state, partitions committed out of expected, rows, bytes, quarantined
  partitions, the last error, the cutover and the last verification;
- ``cutover``: run a domain's cutover DAG (``hdh_cutover__<domain>``, ``dag.test()``), or every domain's;
- ``rollback``: run a domain's rollback DAG, with a mandatory reason;
- ``verify``: re-check cut-over domains against their cutover records, reading nothing from Azure;
- ``gaps``: find partitions in Azure not committed in the sovereign store and ask Airflow to backfill them;
- ``reindex``: rebuild the ledger's partition states, cutover history and freezes from the sovereign store;
- ``suites``: regenerate the generated part of every expectation suite from the schema files;
- ``seed``: write the deterministic synthetic SNDS data into Azure (Azurite);
- ``deployed-migrate``: backfill and cut over every domain through a running deployment's REST API,
  scheduler and Celery workers (``scripts/prod.sh demo``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time

from hdh_migration.catalogue import load_catalogue
from hdh_migration.signing import PUBLIC_KEY_SETTING


def _table(rows: list[list], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*(str(x) for x in row)) for row in rows)
    return "\n".join(out)


def cmd_plan(args) -> int:
    from hdh_migration.layout import partition_dir
    from hdh_migration.transfer import _source

    catalogue = load_catalogue(args.catalogue)
    source = _source()
    rows = []
    for domain in catalogue.domains:
        if args.domain and domain.name not in args.domain:
            continue
        for partition in domain.partitions():
            objects = size = 0
            for table in domain.tables:
                listed = source.list_objects(
                    partition_dir(domain.name, table.name, table.partition_column, partition), table.source_extension
                )
                objects += len(listed)
                size += sum(o.size for o in listed)
            rows.append([domain.name, domain.wave, partition, len(domain.tables), objects, f"{size / 1e6:.2f}"])
    print(_table(rows, ["domain", "wave", "partition", "tables", "objects", "MB"]))
    return 0


def _last_error(domain: str, problems: list, ledger) -> dict | None:
    """The domain's most recent unresolved error: a failed or quarantined partition, a refused cutover, a failed verify."""
    from hdh_migration.errors import where

    candidates = [
        {"at": r.updated_at, "where": where(domain, r.table_name, r.partition), "error": r.last_error} for r in problems
    ]
    refused = ledger.last_event(domain, ("cutover_refused", "domain_cut_over"))
    if refused and refused["kind"] == "cutover_refused":
        candidates.append({"at": refused["at"], "where": where(domain), "error": refused["detail"]})
    verify = ledger.last_event(domain, ("verify_failed", "verify_passed"))
    if verify and verify["kind"] == "verify_failed":
        detail = json.loads(verify["detail"])
        error = f"verify failed: {detail['problems']} problem(s), first: {detail['first_problems'][0]}"
        candidates.append({"at": verify["at"], "where": where(domain), "error": error})
    if not candidates:
        return None
    last = max(candidates, key=lambda c: c["at"])
    return {**last, "at": last["at"].isoformat(timespec="seconds")}


def _cutover_summary(domain: str, ledger) -> dict:
    history = ledger.cutover_history(domain)
    last = history[-1] if history else None
    verify = ledger.last_event(domain, ("verify_passed", "verify_failed"))
    return {
        "cutover": {
            "action": last["action"],
            "at": last["at"].isoformat(timespec="seconds"),
            "by": last["by"],
            "reason": last["reason"],
            "run_id": last["run_id"],
            "root_sha256": last["root_sha256"],
        }
        if last
        else None,
        "verify": {
            "at": verify["at"].isoformat(timespec="seconds"),
            "passed": verify["kind"] == "verify_passed",
            **{k: v for k, v in json.loads(verify["detail"]).items() if k in ("objects", "deep", "problems")},
        }
        if verify
        else None,
    }


def status_rows(catalogue, ledger, records=None) -> list[dict]:
    """Per domain: state, partitions committed of expected, rows, bytes, failures, quarantined partitions,
    last error, cutover and last verification (for status and the board, which passes the ledger's
    ``records`` it has already read)."""
    records = ledger.partitions() if records is None else records
    result = []
    for domain in catalogue.domains:
        expected = [(t.name, p) for t in domain.tables for p in domain.partitions()]
        mine = {(r.table_name, r.partition): r for r in records if r.domain == domain.name}
        committed = [mine[k] for k in expected if k in mine and mine[k].state == "committed"]
        problems = [r for r in mine.values() if r.state in ("failed", "quarantined")]
        result.append(
            {
                "domain": domain.name,
                "wave": domain.wave,
                "state": ledger.domain_state(domain.name),
                "partitions_committed": len(committed),
                "partitions_expected": len(expected),
                "rows": sum(r.rows or 0 for r in committed),
                "bytes": sum(r.bytes or 0 for r in committed),
                "failed": [
                    {"table": r.table_name, "partition": r.partition, "state": r.state, "last_error": r.last_error}
                    for r in problems
                ],
                "quarantined": [
                    {"table": r.table_name, "partition": r.partition} for r in problems if r.state == "quarantined"
                ],
                "last_error": _last_error(domain.name, problems, ledger),
                **_cutover_summary(domain.name, ledger),
            }
        )
    return result


def _verify_cell(row: dict) -> str:
    verify = row["verify"]
    if verify is None:
        return "-"
    return f"{'ok' if verify['passed'] else 'FAILED'} {verify['at'][:10]}{' deep' if verify.get('deep') else ''}"


def cmd_status(args) -> int:
    from hdh_migration.transfer import _ledger

    rows = status_rows(load_catalogue(args.catalogue), _ledger())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
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
                    r["cutover"]["at"][:10] if r["cutover"] and r["cutover"]["action"] == "cutover" else "-",
                    _verify_cell(r),
                ]
                for r in rows
            ],
            ["domain", "wave", "state", "committed", "rows", "MB", "quarantined", "failed", "cut over", "verified"],
        )
    )
    for r in rows:
        for quarantined in r["quarantined"]:
            print(f"  {r['domain']}: quarantined {quarantined['table']} {quarantined['partition']}")
        if r["last_error"]:
            lines = r["last_error"]["error"].splitlines()
            more = f" (+{len(lines) - 2} more: status --json)" if len(lines) > 2 else ""
            print(f"  {r['domain']}: last error {r['last_error']['at']}: {' '.join(lines[:2])}{more}")
    return 0


def cmd_migrate(args) -> int:
    """Run the transfer DAGs in-process with dag.test(), partition by partition (the demo)."""
    import datetime as dt

    from hdh_migration.catalogue import partition_start
    from hdh_migration.dag_factory import build_transfer_dag

    catalogue = load_catalogue(args.catalogue)
    started = time.monotonic()
    failures = 0
    from hdh_migration.transfer import _ledger

    ledger = _ledger()
    for domain in sorted(catalogue.domains, key=lambda d: (d.wave, d.name)):
        if args.domain and domain.name not in args.domain:
            continue
        if ledger.domain_state(domain.name) == "cut_over":
            print(f"--- hdh_transfer__{domain.name}: cut over, the transfer refuses to write; skipped", flush=True)
            continue
        dag = build_transfer_dag(domain, with_deadline=False)  # deadlines are the scheduler's; see the factory
        for partition in domain.partitions():
            day = partition_start(domain.grain, partition)
            logical_date = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            print(f"--> {dag.dag_id} partition {partition}", flush=True)
            run = dag.test(logical_date=logical_date, run_conf={"partition": partition, "force": args.force})
            state = str(getattr(run, "state", "unknown"))
            print(f"<-- {dag.dag_id} partition {partition}: {state}", flush=True)
            failures += state != "success"
    elapsed = time.monotonic() - started
    rows = status_rows(catalogue, ledger)
    total_bytes = sum(r["bytes"] for r in rows)
    print()
    print(
        _table(
            [
                [
                    r["domain"],
                    r["wave"],
                    f"{r['partitions_committed']}/{r['partitions_expected']}",
                    r["rows"],
                    f"{r['bytes'] / 1e6:.2f}",
                ]
                for r in rows
            ],
            ["domain", "wave", "committed", "rows", "MB"],
        )
    )
    print(
        f"\n{total_bytes / 1e6:.1f} MB committed in {elapsed:.1f} s ({total_bytes / 1e6 / max(elapsed, 1e-6):.2f} MB/s)"
    )
    return 1 if failures else 0


def cmd_deployed_migrate(args) -> int:
    """Backfills and cutovers through a running deployment; a summary per domain with durations."""
    from collections import Counter

    from hdh_migration import deployment
    from hdh_migration.airflow_api import AirflowApi
    from hdh_migration.transfer import _ledger

    catalogue = load_catalogue(args.catalogue)
    ledger = _ledger()
    api = AirflowApi.from_password_file(args.api_url, args.password_file, args.user)
    cut_over = {d.name for d in catalogue.domains if ledger.domain_state(d.name) == "cut_over"}
    started = time.monotonic()
    drives = deployment.migrate(api, catalogue, args.domain, args.timeout, skip=cut_over)
    elapsed = time.monotonic() - started
    rows, failures = [], 0
    for drive in drives:
        queues = Counter(
            (ti["task_id"], ti["queue"])
            for run_id in drive.run_ids
            for ti in api.task_instances(drive.transfer_dag, run_id)
            if ti["state"] == "success"
        )
        states = Counter(drive.transfer_states.values())
        cutover = drive.cutover_run["state"] if drive.cutover_run else "-"
        failures += sum(n for state, n in states.items() if state != "success") + (cutover != "success")
        rows.append(
            [
                drive.domain.name,
                " ".join(f"{n} {state}" for state, n in sorted(states.items())),
                f"{drive.transfer_s:.1f}",
                cutover,
                f"{drive.cutover_s:.1f}",
                " ".join(
                    f"{task}@{queue}:{n}" for (task, queue), n in sorted(queues.items()) if task == "transfer_object"
                ),
            ]
        )
    print()
    print(_table(rows, ["domain", "transfer runs", "transfer s", "cutover", "cutover done s", "tasks on queue"]))
    print(f"\nbackfills and cutovers through the scheduler and the Celery workers in {elapsed:.1f} s")
    return 1 if failures else 0


def cmd_reindex(args) -> int:
    from hdh_migration.cutover import restore_from_record
    from hdh_migration.errors import IntegrityError
    from hdh_migration.integrity import sha256_stream
    from hdh_migration.layout import manifest_key
    from hdh_migration.ledger import committed_fields
    from hdh_migration.signing import SigningKeyError
    from hdh_migration.transfer import _ledger, _target

    catalogue = load_catalogue(args.catalogue)
    target, ledger = _target(), _ledger()
    found = 0
    for domain in catalogue.domains:
        for table in domain.tables:
            for partition in domain.partitions():
                key = manifest_key(domain.name, table.name, table.partition_column, partition)
                if target.head(key) is None:
                    continue
                body = target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
                digest = sha256_stream()
                digest.update(body)
                found += 1
                fields = committed_fields(json.loads(body), digest.hexdigest())
                ledger.set_state(domain.name, table.name, partition, "committed", **fields)
    print(f"reindex: {found} committed partition(s) rebuilt from the manifests")
    refused = 0
    for domain in catalogue.domains:
        try:
            state = restore_from_record(domain.name, args.public_key)
        except (IntegrityError, SigningKeyError) as error:
            refused += 1
            print(f"reindex: {error}")
            continue
        if state:
            print(f"reindex: {domain.name}: cutover history restored from its record ({state})")
    return 1 if refused else 0


def _chosen_domains(catalogue, args) -> list:
    """The domains named with --domain, or every domain with --all, in wave order."""
    chosen = [d for d in catalogue.domains if args.all or d.name in (args.domain or [])]
    for name in set(args.domain or []) - {d.name for d in chosen}:
        catalogue.domain(name)  # raises, naming the known domains
    return sorted(chosen, key=lambda d: (d.wave, d.name))


def cmd_cutover(args) -> int:
    """Run each chosen domain's cutover DAG with dag.test(); print what it decided."""
    from hdh_migration.cutover import record_key
    from hdh_migration.dag_factory import build_cutover_dag
    from hdh_migration.transfer import _ledger

    catalogue = load_catalogue(args.catalogue)
    ledger = _ledger()
    failures = 0
    for domain in _chosen_domains(catalogue, args):
        dag = build_cutover_dag(domain)
        print(f"--> {dag.dag_id}", flush=True)
        run = dag.test(run_conf={"by": args.by})
        history = ledger.cutover_history(domain.name)
        refused = ledger.last_event(domain.name, ("cutover_refused",))
        if history and history[-1]["run_id"] == run.run_id:
            last = history[-1]
            print(
                f"<-- {dag.dag_id}: cut over by {last['by']}, record {record_key(domain.name)}, root {last['root_sha256']}",
                flush=True,
            )
        elif str(run.state) == "success":
            print(f"<-- {dag.dag_id}: already cut over; nothing to do", flush=True)
        else:
            failures += 1
            detail = refused["detail"] if refused and refused["run_id"] == run.run_id else "see the task logs above"
            print(f"<-- {dag.dag_id}: {run.state}: {detail}", flush=True)
    return 1 if failures else 0


def cmd_rollback(args) -> int:
    """Run a domain's rollback DAG with dag.test(), after checking the reason and the state here."""
    from hdh_migration.cutover import CutoverError, check_rollback
    from hdh_migration.dag_factory import build_rollback_dag

    catalogue = load_catalogue(args.catalogue)
    domain = catalogue.domain(args.domain)
    try:
        check_rollback(domain.name, args.reason)
    except CutoverError as refused:
        print(f"rollback: {refused}")
        return 2
    dag = build_rollback_dag(domain)
    print(f"--> {dag.dag_id}", flush=True)
    run = dag.test(run_conf={"reason": args.reason, "by": args.by})
    print(f"<-- {dag.dag_id}: {run.state}", flush=True)
    return 0 if str(run.state) == "success" else 1


def cmd_verify(args) -> int:
    """Re-check each chosen cut-over domain against its cutover record; reads nothing from Azure."""
    from hdh_migration.cutover import NothingToDoError, verify
    from hdh_migration.errors import IntegrityError
    from hdh_migration.signing import SigningKeyError, pinned_public_keys

    catalogue = load_catalogue(args.catalogue)
    try:
        pinned = pinned_public_keys(args.public_key)
    except SigningKeyError as error:
        print(f"verify: {error}")
        return 2
    print(f"verify: signatures checked against {', '.join(sorted(pinned))}")
    rows, failures = [], []
    for domain in _chosen_domains(catalogue, args):
        try:
            report = verify(domain.name, deep=not args.quick, public_key=args.public_key)
        except NothingToDoError:
            if not args.all:
                print(f"verify: {domain.name} is not cut over; nothing to verify")
                return 2
            rows.append([domain.name, "not cut over", "-", "-", "-", "-"])
            continue
        except IntegrityError as error:
            failures.append(str(error))
            rows.append([domain.name, "FAILED", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                domain.name,
                "ok",
                report["partitions"],
                report["objects"],
                f"{report['bytes'] / 1e6:.2f}" if report["deep"] else "-",
                report["root_sha256"],
            ]
        )
    print(_table(rows, ["domain", "verify", "partitions", "objects", "MB read", "root sha256"]))
    for failure in failures:
        print(failure)
    return 1 if failures else 0


def cmd_waive(args) -> int:
    """Accept failing expectations of one quarantined partition, with who and why, for the next run."""
    from hdh_migration.transfer import _ledger
    from hdh_migration.validation import INTEGRITY_CHECKS, PRIVACY_EXPECTATIONS

    catalogue = load_catalogue(args.catalogue)
    catalogue.domain(args.domain).table(args.table)
    refused = [e for e in args.expectation if e.split("(")[0] in PRIVACY_EXPECTATIONS | INTEGRITY_CHECKS]
    if refused:
        print(f"waive: {refused} cannot be waived: a raw NIR or a copy that differs from its source is never accepted")
        return 2
    ledger = _ledger()
    record = ledger.get(args.domain, args.table, args.partition)
    if record is None or record.state != "quarantined":
        print(f"waive: {args.domain} {args.table} {args.partition} is not quarantined; nothing to waive")
        return 2
    ledger.add_waiver(args.domain, args.table, args.partition, args.expectation, args.by, args.reason)
    print(f"waive: recorded; re-run hdh_transfer__{args.domain} for partition {args.partition} to commit it")
    return 0


def cmd_gaps(args) -> int:
    """The gap scan of the ``hdh_gap_scan`` DAG, from a shell."""
    from hdh_migration.gaps import run_gap_scan

    report = run_gap_scan(dry_run=args.dry_run, max_attempts=args.max_attempts)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for name, domain in report["domains"].items():
        request = domain["request"] or {}
        ranges = " ".join(a if a == b else f"{a}..{b}" for a, b in request.get("ranges", [])) or "-"
        rows.append([name, domain["gaps"], domain["held"], domain["not_in_azure"], ranges, request.get("status", "-")])
    print(_table(rows, ["domain", "gaps", "held", "not in Azure", "partitions to run", "request"]))
    for name, domain in report["domains"].items():
        for finding in domain["findings"]:
            print(f"  {name} {finding['table']} {finding['partition']}: {finding['reason']}")
    seconds = report["seconds"]["total"]
    print(
        f"{report['partitions_checked']} partition(s) checked in {seconds:.1f} s: {report['gaps']} gap(s), "
        f"{report['held']} held, {report['backfills']} backfill(s) requested; report {report['report_key']}"
    )
    return 0


def cmd_suites(args) -> int:
    from hdh_migration.suites import write_all

    changed = write_all(load_catalogue(args.catalogue))
    print(f"suites: {len(changed)} file(s) updated" + "".join(f"\n  {p}" for p in changed))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["seed"]:
        from hdh_migration.synthetic import main_seed  # its own options: see `seed --help`

        return main_seed(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m hdh_migration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", help="catalogue YAML (default: dags/domains.yaml or $HDH_CATALOGUE)")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="partitions, objects and bytes waiting in Azure")
    plan.add_argument("--domain", action="append")
    plan.set_defaults(func=cmd_plan)
    migrate = commands.add_parser("migrate", help="run the transfer DAGs over every planned partition")
    migrate.add_argument("--domain", action="append")
    migrate.add_argument("--force", action="store_true")
    migrate.set_defaults(func=cmd_migrate)
    status = commands.add_parser("status", help="per-domain migration status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    gaps = commands.add_parser("gaps", help="find partitions not committed and backfill them through Airflow")
    gaps.add_argument("--dry-run", action="store_true", help="find and report; create no backfill")
    gaps.add_argument("--json", action="store_true", help="print the whole report")
    gaps.add_argument("--max-attempts", type=int, default=3, help="failed runs before a partition is held")
    gaps.set_defaults(func=cmd_gaps)
    reindex = commands.add_parser("reindex", help="rebuild the ledger from the manifests and signed cutover records")
    reindex.add_argument("--public-key", help=f"the pinned cutover public key (default: ${PUBLIC_KEY_SETTING})")
    reindex.set_defaults(func=cmd_reindex)
    cutover = commands.add_parser("cutover", help="run the cutover DAG of chosen domains")
    cutover_domains = cutover.add_mutually_exclusive_group(required=True)
    cutover_domains.add_argument("--domain", action="append")
    cutover_domains.add_argument("--all", action="store_true", help="every domain of the catalogue")
    cutover.add_argument("--by", default=getpass.getuser(), help="who decides (default: your login)")
    cutover.set_defaults(func=cmd_cutover)
    rollback = commands.add_parser("rollback", help="roll a domain's cutover back, with a reason")
    rollback.add_argument("--domain", required=True)
    rollback.add_argument("--reason", required=True, help="why the French copy stops being the data")
    rollback.add_argument("--by", default=getpass.getuser(), help="who decides (default: your login)")
    rollback.set_defaults(func=cmd_rollback)
    verify = commands.add_parser("verify", help="re-check cut-over domains against their records, without Azure")
    verify_domains = verify.add_mutually_exclusive_group(required=True)
    verify_domains.add_argument("--domain", action="append")
    verify_domains.add_argument("--all", action="store_true", help="every cut-over domain")
    verify.add_argument("--quick", action="store_true", help="sizes and checksum metadata only; no byte read back")
    verify.add_argument(
        "--public-key", help=f"the cutover public key to trust, as published (default: ${PUBLIC_KEY_SETTING})"
    )
    verify.set_defaults(func=cmd_verify)
    deployed = commands.add_parser(
        "deployed-migrate", help="backfill and cut over every domain through a running deployment's REST API"
    )
    deployed.add_argument("--api-url", required=True, help="the api-server, e.g. http://127.0.0.1:8080")
    deployed.add_argument("--user", default="admin")
    deployed.add_argument("--password-file", required=True, help="SimpleAuthManager's generated passwords file")
    deployed.add_argument("--domain", action="append")
    deployed.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every run")
    deployed.set_defaults(func=cmd_deployed_migrate)
    commands.add_parser("suites", help="regenerate expectation suites").set_defaults(func=cmd_suites)
    waive = commands.add_parser("waive", help="accept failing expectations of a quarantined partition")
    waive.add_argument("--domain", required=True)
    waive.add_argument("--table", required=True)
    waive.add_argument("--partition", required=True)
    waive.add_argument("--expectation", action="append", required=True, help="as named in the error, e.g. type(column)")
    waive.add_argument("--by", required=True, help="who accepts")
    waive.add_argument("--reason", required=True, help="why it is acceptable")
    waive.set_defaults(func=cmd_waive)
    commands.add_parser("seed", help="seed synthetic SNDS data into Azure (see `seed --help`)")
    args = parser.parse_args(argv)
    if args.catalogue:
        # Task bodies load the catalogue from the environment, as they do on a worker.
        os.environ["HDH_CATALOGUE"] = args.catalogue
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
