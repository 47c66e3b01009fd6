"""The second move, end to end on the real servers: Azure (Azurite) -> SeaweedFS bucket "interim" -> cutover ->
second bucket "final" -> cutover with the chained record -> decommission of Azure, then of the interim
bucket -> ``verify --chain`` offline -> receipts verified. A changed source object blocks the
decommission and is named.

Each host is its own deployment, as in production: the interim host's catalogue, ledger and target
bucket; the final host's catalogue (source: the interim bucket, kind s3), its own ledger and bucket.
Both sign with the local cutover key (``HDH_CUTOVER_PUBLIC_KEY`` pins it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest
import yaml
from conftest import write_catalogue

from hdh_migration.cli import main
from hdh_migration.layout import partition_dir, receipt_key

DOMAIN = "beneficiaires"
PREFIX = partition_dir(DOMAIN, "IR_BEN_R", "snapshot", "2024-06-30")
INTERIM_CONN_ENV = "AIRFLOW_CONN_HDH_INTERIM_SOURCE"


class Host:
    """One deployment: its catalogue and ledger, switched into the environment (as its workers have them)."""

    def __init__(self, monkeypatch, catalogue, ledger):
        self.monkeypatch, self.catalogue_path, self.ledger_path = monkeypatch, catalogue, ledger

    def __enter__(self):
        from hdh_migration.catalogue import cached_catalogue

        self.monkeypatch.setenv("HDH_CATALOGUE", str(self.catalogue_path))
        self.monkeypatch.setenv(
            "AIRFLOW_CONN_HDH_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(self.ledger_path)})
        )
        cached_catalogue.cache_clear()
        return self

    def __exit__(self, *_):
        return False

    @property
    def domain(self):
        from hdh_migration.catalogue import load_catalogue

        return load_catalogue(self.catalogue_path).domain(DOMAIN)

    @property
    def ledger(self):
        from hdh_migration.resources import open_ledger as _ledger

        return _ledger()

    @property
    def target(self):
        from hdh_migration.resources import open_target as _target

        return _target()

    def transfer(self):
        from hdh_migration.dag_factory import build_transfer_dag

        run = build_transfer_dag(self.domain, with_deadline=False).test(
            logical_date=self.domain.logical_date("2024-06-30"), run_conf={"partition": "2024-06-30", "force": False}
        )
        assert str(run.state) == "success"

    def cli(self, capsys, *argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err


def _refusal(err: str, command: str) -> str:
    """The command's refusal: one line of its own on stderr (the libraries' logs may precede it)."""
    (line,) = [x for x in err.splitlines() if x.startswith(f"python -m hdh_migration {command}:")]
    return line


def _result(out: str):
    """The command's JSON result, printed last (in this process, a logger cached by an earlier test may write first)."""
    lines = out.splitlines()
    start = max(n for n, line in enumerate(lines) if line in ("{", "[", "{}", "[]"))
    return json.loads("\n".join(lines[start:]))


@pytest.fixture
def hosts(migration, monkeypatch, tmp_path):
    """The interim host (the migration fixture's container and bucket) and the final host (bucket <name>-final)."""
    monkeypatch.setenv(INTERIM_CONN_ENV, os.environ["AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"])

    def retention(raw):
        raw["domains"][DOMAIN]["retention_days"] = 0

    interim_catalogue = write_catalogue(tmp_path / "interim.yaml", migration.name, retention)

    def second_move(raw):
        retention(raw)
        raw["target_bucket"] = f"{migration.name}-final"
        raw["domains"][DOMAIN]["source"] = {"kind": "s3", "conn_id": "hdh_interim_source", "bucket": migration.name}

    final_catalogue = write_catalogue(tmp_path / "final.yaml", migration.name, second_move)
    interim = Host(monkeypatch, interim_catalogue, tmp_path / "interim-ledger.db")
    final = Host(monkeypatch, final_catalogue, tmp_path / "final-ledger.db")
    yield migration, interim, final
    with final:
        target = final.target
        target.delete_keys(target.list_keys(""))
        target.client.delete_bucket(Bucket=target.bucket)
    with interim:
        pass  # the migration fixture drops the container and the interim bucket


def test_second_move_chain_of_custody_and_decommissions(hosts, capsys, monkeypatch):
    migration, interim, final = hosts
    migration.seed(domains=[DOMAIN], rows_per_partition=300, files_per_partition=3)
    azure = {o.name: o for o in migration.source.list_objects(PREFIX, "parquet")}
    azure_sha256 = {name: hashlib.sha256(migration.source_bytes(name)).hexdigest() for name in azure}
    assert len(azure) == 3

    # 1. Azure -> interim, cut over and verified deep.
    with interim:
        interim.transfer()
        assert interim.cli(capsys, "cutover", "--local", "--domain", DOMAIN, "--by", "alice")[0] == 0
        code, out, _ = interim.cli(capsys, "verify", "--local", "--domain", DOMAIN, "--json")
        assert code == 0, out
        interim_record = interim.target.get_json(f"_cutover/{DOMAIN}.json")

    # 2. interim -> final (source kind s3), cut over with the chained record, verified deep.
    with final:
        # The gap scan lists each domain's own source: here the interim bucket.
        code, out, _ = final.cli(capsys, "gaps", "--dry-run", "--json")
        assert code == 0
        found = _result(out)["domains"][DOMAIN]
        assert [(f["table"], f["partition"]) for f in found["findings"]] == [("IR_BEN_R", "2024-06-30")]
        assert found["not_in_azure"] == 0
        final.transfer()
        assert final.cli(capsys, "cutover", "--local", "--domain", DOMAIN, "--by", "bob")[0] == 0
        record = final.target.get_json(f"_cutover/{DOMAIN}.json")
        assert record["upstream"]["record"] == interim_record
        assert record["history"][-1]["upstream_root_sha256"] == interim_record["root_sha256"]
        files = [f for e in record["entries"] for f in e["files"]]
        assert len(files) == 3
        for f in files:
            # the interim key it was read from (no prefix), under the final run's own key
            assert f["key"].startswith(f["source"]["name"].removesuffix(".parquet") + "-")
            assert f["sha256"] == f["source"]["sha256"]
            name = f["origin"]["name"]
            assert f["origin"] == {"name": name, "etag": azure[name].etag, "sha256": azure_sha256[name]}
            assert final.target.head(f["key"])["Metadata"]["hdh-sha256"] == azure_sha256[name]
        code, out, _ = final.cli(capsys, "verify", "--local", "--domain", DOMAIN, "--json")
        assert code == 0, out

    # 6. A changed source object blocks the decommission, named, nothing deleted; then restored to the same bytes
    #    (a new ETag, the same sha256) it matches again.
    with interim:
        changed = sorted(azure)[1]
        original = migration.source_bytes(changed)
        migration.source.container_client.upload_blob(changed, original[:-1] + b"\0", overwrite=True)
        code, out, err = interim.cli(capsys, "decommission", "--local", "--domain", DOMAIN)
        assert code == 2, out + err
        line = _refusal(err, "decommission")
        assert "1 object(s) changed or vanished in the source since the cutover" in line and changed in line
        assert sorted(o.name for o in migration.source.list_objects(PREFIX, "parquet")) == sorted(azure)
        assert interim.target.head(f"_cutover/{DOMAIN}.decommission.json") is None
        assert interim.ledger.domain_state(DOMAIN) == "cut_over"
        migration.source.container_client.upload_blob(changed, original, overwrite=True)
        assert migration.source.current(changed).etag != azure[changed].etag

        # 3a. Decommission Azure: dry run lists, then the run deletes and signs its receipt.
        code, out, _ = interim.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--dry-run", "--json")
        assert code == 0
        assert sorted(o["name"] for o in _result(out)["would_delete"]) == sorted(azure)
        assert len(migration.source.list_objects(PREFIX, "parquet")) == 3
        code, out, err = interim.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--by", "carol", "--json")
        assert code == 0, err[-3000:]
        assert migration.source.list_objects(PREFIX, "parquet") == []
        receipt = interim.target.get_json(f"_cutover/{DOMAIN}.decommission.json")
        assert receipt["state"] == "done" and receipt["by"] == "carol"
        assert receipt["root_sha256"] == interim_record["root_sha256"]
        assert {o["name"]: (o["size"], o["sha256"]) for o in receipt["objects"]} == {
            n: (azure[n].size, azure_sha256[n]) for n in azure
        }
        assert receipt["run_id"] and receipt["dag_id"] == f"hdh_decommission__{DOMAIN}"

        # After it: status shows decommissioned; a rollback and a second decommission are refused, with the reason.
        code, out, _ = interim.cli(capsys, "status", "--json")
        assert {r["domain"]: r["state"] for r in _result(out)}[DOMAIN] == "decommissioned"
        code, _, err = interim.cli(
            capsys, "rollback", "--local", "--domain", DOMAIN, "--reason", "late deliveries from CNAM"
        )
        assert code == 2 and "nothing to roll back to" in _refusal(err, "rollback")
        code, _, err = interim.cli(capsys, "decommission", "--local", "--domain", DOMAIN)
        assert code == 2 and "already decommissioned" in _refusal(err, "decommission") and "carol" in err
        # A lost ledger keeps the decommission: reindex restores it from the signed receipt.
        from hdh_migration.ledger import cutover_history_table, domains_table

        with interim.ledger.engine.begin() as conn:
            conn.execute(cutover_history_table.delete())
            conn.execute(domains_table.delete())
        assert interim.cli(capsys, "reindex")[0] == 0
        assert interim.ledger.domain_state(DOMAIN) == "decommissioned"
        # 5. The interim host's verify checks its receipt too.
        code, out, _ = interim.cli(capsys, "verify", "--local", "--domain", DOMAIN, "--json")
        assert code == 0, out
        assert _result(out)[0]["receipt"]["state"] == "done" and _result(out)[0]["receipt"]["objects"] == 3

    # 3b. Decommission the interim bucket's copy (the final host's source).
    with final:
        from hdh_migration.target import SovereignTarget

        interim_bucket = SovereignTarget("hdh_interim_source", migration.name)
        interim_data = [f["key"] for e in interim_record["entries"] for f in e["files"]]
        assert all(interim_bucket.head(k) for k in interim_data)
        final_record = final.target.get_json(f"_cutover/{DOMAIN}.json")
        final_data = [f["key"] for e in final_record["entries"] for f in e["files"]]
        assert len(final_data) == len(interim_data) and all(final.target.head(k) for k in final_data)
        code, out, err = final.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--by", "dave")
        assert code == 0, err[-3000:]
        assert interim_bucket.list_keys(f"{DOMAIN}/") == []  # the interim copy's data is gone
        assert interim_bucket.head(f"_cutover/{DOMAIN}.json") is not None  # its proofs stay (no data values)
        assert all(final.target.head(k) for k in final_data)

        # 4. verify --chain offline: no connection to Azure or to the interim host exists any more.
        monkeypatch.delenv("AIRFLOW_CONN_HDH_AZURE_SOURCE")
        monkeypatch.delenv(INTERIM_CONN_ENV)
        code, out, err = final.cli(capsys, "verify", "--local", "--domain", DOMAIN, "--chain", "--json")
        assert code == 0, out + err[-3000:]
        (report,) = _result(out)
        assert report["chain"] == {
            "upstream_root_sha256": interim_record["root_sha256"],
            "upstream_signed_by": interim_record["signing"]["public_key_fingerprint"],
            "objects_chained": 3,
        }
        assert report["receipt"]["state"] == "done" and report["receipt"]["by"] == "dave"


def test_verify_chain_names_a_broken_link(hosts, capsys):
    """verify_chain alone, on a record whose origin, sha256 or embedded interim record was altered."""
    from hdh_migration.catalogue import cached_catalogue
    from hdh_migration.cutover import verify_chain
    from hdh_migration.signing import pinned_public_keys
    from hdh_migration.target import SovereignTarget

    migration, interim, final = hosts
    migration.seed(domains=[DOMAIN], rows_per_partition=200, files_per_partition=2)
    with interim:
        interim.transfer()
        assert interim.cli(capsys, "cutover", "--local", "--domain", DOMAIN)[0] == 0
    with final:
        final.transfer()
        assert final.cli(capsys, "cutover", "--local", "--domain", DOMAIN)[0] == 0
        record = final.target.get_json(f"_cutover/{DOMAIN}.json")
        # No decommission before a deep verify, nor before the retention period, nor without one.
        code, _, err = final.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--dry-run")
        assert code == 2 and "verify is not ok" in _refusal(err, "decommission")
        assert final.cli(capsys, "verify", "--local", "--domain", DOMAIN, "--quick")[0] == 0
        code, _, err = final.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--dry-run")
        assert code == 2 and "verify is not ok" in _refusal(err, "decommission"), "a quick verify is not enough"
        assert final.cli(capsys, "verify", "--local", "--domain", DOMAIN)[0] == 0
        for retention, refusal in ((30, "the old copy is kept until"), (None, "sets no retention_days")):
            raw = yaml.safe_load(final.catalogue_path.read_text())
            raw["domains"][DOMAIN]["retention_days"] = retention
            final.catalogue_path.write_text(yaml.safe_dump(raw))
            cached_catalogue.cache_clear()
            code, _, err = final.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--dry-run")
            assert code == 2 and refusal in _refusal(err, "decommission")
        interim_bucket = SovereignTarget("hdh_interim_source", migration.name)
        interim_data = sorted(f["key"] for e in record["upstream"]["record"]["entries"] for f in e["files"])
        assert all(interim_bucket.head(k) for k in interim_data), "nothing deleted"

        # A decommission that crashed after its first delete is finished by the next run: the object it
        # deleted is in its in-progress receipt, so it is not "changed".
        from hdh_migration import decommission
        from hdh_migration.resources import open_source as _source
        from hdh_migration.signing import Signer
        from hdh_migration.source import SourceObject

        raw = yaml.safe_load(final.catalogue_path.read_text())
        raw["domains"][DOMAIN]["retention_days"] = 0
        final.catalogue_path.write_text(yaml.safe_dump(raw))
        cached_catalogue.cache_clear()
        plan = decommission.check_decommission(DOMAIN)
        receipt = decommission.receipt_body(
            plan, "in_progress", "erin", "crashed", "run-1", "now", Signer.from_connection()
        )
        final.target.put_json(receipt_key(DOMAIN), receipt)
        first = plan["objects"][0]
        _source(DOMAIN).delete(SourceObject(first["name"], first["size"], first["live_etag"], ""))
        code, _, err = final.cli(capsys, "decommission", "--local", "--domain", DOMAIN, "--by", "erin")
        assert code == 0, err[-3000:]
        assert interim_bucket.list_keys(f"{DOMAIN}/") == []
        done = final.target.get_json(receipt_key(DOMAIN))
        assert done["state"] == "done" and sorted(o["name"] for o in done["objects"]) == interim_data
    pinned = pinned_public_keys()
    report, problems = verify_chain(record, pinned)
    assert problems == [] and report["objects_chained"] == 2

    other_origin = copy.deepcopy(record)
    victim = other_origin["entries"][0]["files"][0]
    victim["origin"]["etag"] = "0x8DEADBEEF"
    _, problems = verify_chain(other_origin, pinned)
    assert len(problems) == 1 and victim["key"] in problems[0] and "origin differs" in problems[0]

    forged_interim = copy.deepcopy(record)
    forged_interim["upstream"]["record"]["entries"][0]["files"][0]["sha256"] = "0" * 64
    _, problems = verify_chain(forged_interim, pinned)
    assert any("upstream" in p and "hash chain" in p for p in problems)
    assert any("differs from the interim object" in p for p in problems)

    assert verify_chain({**record, "upstream": None}, pinned)[1][0].endswith(
        "the record carries no upstream record (rule: a chained move embeds the interim record)"
    )
