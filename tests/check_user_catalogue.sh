#!/usr/bin/env bash
# Proves that a user's own catalogue never turns the tests red: copies this tree (tracked files) to a
# scratch folder, adds a domain the demo does not have to its dags/domains.yaml the way the README's
# "Adding a table" says (schema file, catalogue entry, `suites`, a hand-written expectation), and runs
# `pytest tests/unit tests/dags` there. Usage: tests/check_user_catalogue.sh [scratch dir] [pytest args]
# (about 2 min on a 2-core machine). Needs the environment of scripts/env.sh (HDH_STATE_DIR is kept,
# so the copy uses this tree's migrated Airflow database).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DST="${1:-$(mktemp -d /tmp/hdh-user-catalogue.XXXXXX)}"
shift || true
export HDH_STATE_DIR="${HDH_STATE_DIR:-$ROOT/.local}"
rm -rf "$DST" && mkdir -p "$DST"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$DST" 2>/dev/null || true)
ln -s "$(readlink -f "$ROOT/.venv")" "$DST/.venv"
cp "$ROOT/tests/data/schema-snds/T_HADaaB.json" "$DST/schemas/"
cat >>"$DST/dags/domains.yaml" <<'YAML'

  pmsi_had:
    description: PMSI HAD home hospitalisation stays (a domain the demo does not have).
    owner: team-pmsi
    wave: 2
    grain: yearly
    first_partition: "2021"
    cutover_partition: "2023"
    tables:
      T_HADaaB:
        format: parquet
        partition_column: SOR_ANN
        primary_key: [ETA_NUM_EPMSI, RHAD_NUM]
        schema: ../schemas/T_HADaaB.json
        suite: ../expectations/pmsi_had/T_HADaaB.json
YAML
cd "$DST"
# the copy's own code and DAG folder, whatever environment this was started from (Airflow's state stays)
export HDH_ROOT="$DST" AIRFLOW__CORE__DAGS_FOLDER="$DST/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$DST/plugins"
export PYTHONPATH="$DST/tools:$DST/plugins"
unset HDH_CATALOGUE
.venv/bin/python -m hdh_migration suites >/dev/null
.venv/bin/python - <<'PY'
import json
from pathlib import Path

path = Path("expectations/pmsi_had/T_HADaaB.json")
suite = json.loads(path.read_text())
suite["expectations"].append(
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "SEJ_NBJ", "min_value": 0},
     "meta": {"hdh_origin": "hand-written", "rule": "a stay lasts 0 days or more"}}
)
path.write_text(json.dumps(suite, indent=2) + "\n")
PY
echo "user catalogue: $(grep -c '^  [a-z_]*:$' dags/domains.yaml) domains in $DST/dags/domains.yaml" >&2
exec .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/dags "$@"
