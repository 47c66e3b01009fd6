"""``python -m hdh_migration <command>``: the commands data engineers run by hand.

- ``plan``: per domain, the partitions, source objects and bytes waiting in Azure;
- ``migrate``: run every domain's transfer DAG over its planned partitions (``dag.test()``, the demo);
- ``status``: per domain and table, partitions committed out of expected, rows, bytes, failures;
- ``reindex``: rebuild the ledger's partition states from the manifests in the sovereign store;
- ``suites``: regenerate the generated part of every expectation suite from the schema files;
- ``seed``: write the deterministic synthetic SNDS data into Azure (Azurite).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from hdh_migration.catalogue import load_catalogue


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


def status_rows(catalogue, ledger) -> list[dict]:
    """Per domain: state, partitions committed of expected, rows, bytes, failures (for status and the board)."""
    records = ledger.partitions()
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
            }
        )
    return result


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
                    len(r["failed"]),
                ]
                for r in rows
            ],
            ["domain", "wave", "state", "committed", "rows", "MB", "failed"],
        )
    )
    for r in rows:
        for failure in r["failed"]:
            print(
                f"  {r['domain']} {failure['table']} {failure['partition']} {failure['state']}: {failure['last_error']}"
            )
    return 0


def cmd_migrate(args) -> int:
    """Run the transfer DAGs in-process with dag.test(), partition by partition (the demo)."""
    import datetime as dt

    from hdh_migration.catalogue import partition_start
    from hdh_migration.dag_factory import build_transfer_dag

    catalogue = load_catalogue(args.catalogue)
    started = time.monotonic()
    failures = 0
    for domain in sorted(catalogue.domains, key=lambda d: (d.wave, d.name)):
        if args.domain and domain.name not in args.domain:
            continue
        dag = build_transfer_dag(domain)
        for partition in domain.partitions():
            day = partition_start(domain.grain, partition)
            logical_date = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            print(f"--> {dag.dag_id} partition {partition}", flush=True)
            run = dag.test(logical_date=logical_date, run_conf={"partition": partition, "force": args.force})
            state = str(getattr(run, "state", "unknown"))
            print(f"<-- {dag.dag_id} partition {partition}: {state}", flush=True)
            failures += state != "success"
    elapsed = time.monotonic() - started
    from hdh_migration.transfer import _ledger

    rows = status_rows(catalogue, _ledger())
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


def cmd_reindex(args) -> int:
    from hdh_migration.layout import manifest_key
    from hdh_migration.transfer import _ledger, _target

    catalogue = load_catalogue(args.catalogue)
    target, ledger = _target(), _ledger()
    found = 0
    for domain in catalogue.domains:
        for table in domain.tables:
            for partition in domain.partitions():
                manifest = target.get_json(manifest_key(domain.name, table.name, table.partition_column, partition))
                if manifest is None:
                    continue
                found += 1
                ledger.set_state(
                    domain.name,
                    table.name,
                    partition,
                    "committed",
                    run_id=manifest["run_id"],
                    rows=manifest["rows"],
                    bytes=manifest["bytes"],
                    source_etags={o["name"]: o["etag"] for o in manifest["source_objects"]},
                    last_error=None,
                )
    print(f"reindex: {found} committed partition(s) rebuilt from the manifests")
    return 0


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
    commands.add_parser("reindex", help="rebuild the ledger from the manifests").set_defaults(func=cmd_reindex)
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
