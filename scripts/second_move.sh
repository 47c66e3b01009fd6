#!/usr/bin/env bash
# The second move, after `make demo`: the interim French host (the demo's bucket) -> a final host (bucket
# <bucket>-final), cut over with the chained record; then the decommission of Azure, then of the interim
# copy; then `verify --chain` with no connection to Azure or the interim host. `make demo-second-move`.
#
# Each host is its own deployment: the interim one is the demo's (its catalogue, its ledger); the final one
# gets its own catalogue and ledger under $HDH_STATE_DIR/second-move. Both sign with the local cutover key.
# HDH_INTERIM_CATALOGUE names the first move's catalogue (default: dags/domains.yaml).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
PY=.venv/bin/python
DIR="$HDH_STATE_DIR/second-move"
mkdir -p "$DIR"
INTERIM_CATALOGUE="${HDH_INTERIM_CATALOGUE:-dags/domains.yaml}"
# The interim host's source: the same store as the demo's target (SeaweedFS), through its own connection.
export AIRFLOW_CONN_HDH_INTERIM_SOURCE="$AIRFLOW_CONN_HDH_SOVEREIGN_TARGET"
quiet() { grep --line-buffered -vE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T|^\[\]|^\s*$' || true; }

# The two catalogues: the interim host's with a retention of 0 days (a demo: production keeps the old copy
# for the period the catalogue sets), the final host's reading each domain from the interim bucket.
"$PY" - "$INTERIM_CATALOGUE" "$DIR" <<'EOF'
import sys
from pathlib import Path

import yaml

source, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
raw = yaml.safe_load(source.read_text())
for domain in raw["domains"].values():
    domain["retention_days"] = 0
    for table in domain["tables"].values():
        table["schema"] = str((source.parent / table["schema"]).resolve())
        table["suite"] = str((source.parent / table["suite"]).resolve())
(out / "interim.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
interim_bucket = raw["target_bucket"]
raw["target_bucket"] = f"{interim_bucket}-final"
for domain in raw["domains"].values():
    domain["source"] = {"kind": "s3", "conn_id": "hdh_interim_source", "bucket": interim_bucket}
    for table in domain["tables"].values():  # the interim host holds parquet only (CSV was converted),
        table["format"] = "parquet"  # in the table's own layout (a yearly family's T_MCO22B/ became
        table.pop("csv", None)  # T_MCOaaB/SOR_ANN=2022/)
        table.pop("source_name", None)
(out / "final.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
EOF

INTERIM_LEDGER="$AIRFLOW_CONN_HDH_LEDGER"
FINAL_LEDGER="{\"conn_type\": \"sqlite\", \"host\": \"$DIR/ledger.db\"}"
interim() { AIRFLOW_CONN_HDH_LEDGER="$INTERIM_LEDGER" "$PY" -m hdh_migration --catalogue "$DIR/interim.yaml" "$@"; }
final() { AIRFLOW_CONN_HDH_LEDGER="$FINAL_LEDGER" "$PY" -m hdh_migration --catalogue "$DIR/final.yaml" "$@"; }
DOMAINS=$("$PY" -c "import sys, yaml; print(' '.join(yaml.safe_load(open(sys.argv[1]))['domains']))" "$DIR/final.yaml")

echo "== interim -> final: migrate, cut over with the chained record, verify"
final migrate --local 2>&1 | quiet
final cutover --local --all --by "make demo-second-move" 2>&1 | quiet
final verify --local --all 2>&1 | quiet

echo "== decommission Azure (the interim host's source), then the interim copy (the final host's source)"
interim verify --local --all 2>&1 | quiet  # a deep verify since the cutover is required
# Run again, a decommission is refused (exit 2, its reason printed): the old copies are already gone.
for domain in $DOMAINS; do
  interim decommission --local --domain "$domain" --by "make demo-second-move" 2>&1 | quiet || echo "($domain: refused)"
done
for domain in $DOMAINS; do
  final decommission --local --domain "$domain" --by "make demo-second-move" 2>&1 | quiet || echo "($domain: refused)"
done

echo "== verify --chain, offline: no connection to Azure or to the interim host"
(
  unset AIRFLOW_CONN_HDH_AZURE_SOURCE AIRFLOW_CONN_HDH_INTERIM_SOURCE
  final verify --local --all --chain 2>&1 | quiet
)
final status
