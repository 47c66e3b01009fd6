# Environment of the embedded default: SQLite Airflow in an ignored AIRFLOW_HOME, local
# Azurite and SeaweedFS, connections as AIRFLOW_CONN_* JSON. Sourced by the Makefile and .ci/run.
# The Azurite account key is the emulator's published development key, not a secret; the S3 and
# gap scan passwords below are local-only defaults too (scripts/prod.sh and .env generate real ones).
HDH_ROOT="${HDH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export HDH_ROOT
export HDH_STATE_DIR="${HDH_STATE_DIR:-$HDH_ROOT/.local}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$HDH_STATE_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$HDH_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$HDH_ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# plugins/: the package every worker loads; tools/: the synthetic-data generator of `seed` (not shipped)
for HDH_PATH_ENTRY in "$HDH_ROOT/tools" "$HDH_ROOT/plugins"; do
  case ":${PYTHONPATH:-}:" in
    *":$HDH_PATH_ENTRY:"*) ;;
    *) export PYTHONPATH="$HDH_PATH_ENTRY${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
done
unset HDH_PATH_ENTRY

export HDH_AZURITE_PORT="${HDH_AZURITE_PORT:-10000}"
export HDH_S3_PORT="${HDH_S3_PORT:-8333}"
export HDH_WEED_MASTER_PORT="${HDH_WEED_MASTER_PORT:-9333}"
export HDH_WEED_VOLUME_PORT="${HDH_WEED_VOLUME_PORT:-8081}"
export HDH_WEED_FILER_PORT="${HDH_WEED_FILER_PORT:-8888}"
# SeaweedFS's data directory (-dir): tests read the store's own files there (tests/integration/test_canaries.py).
export HDH_S3_DATA_DIR="${HDH_S3_DATA_DIR:-$HDH_STATE_DIR/stack/seaweedfs}"
export HDH_API_PORT="${HDH_API_PORT:-8080}"  # the api-server of the browser tests
export HDH_S3_ACCESS_KEY="${HDH_S3_ACCESS_KEY:-hdh-local}"
export HDH_S3_SECRET_KEY="${HDH_S3_SECRET_KEY:-hdh-local-secret}"
export HDH_GAP_SCAN_PASSWORD="${HDH_GAP_SCAN_PASSWORD:-hdh-local-gap-scan}"
# The sovereignty guard accepts a loopback target (the SeaweedFS stand-in) only where this is 1.
export HDH_ALLOW_LOCAL_STANDINS="${HDH_ALLOW_LOCAL_STANDINS:-1}"

AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export AIRFLOW_CONN_HDH_AZURE_SOURCE="{\"conn_type\": \"wasb\", \"extra\": {\"connection_string\": \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$HDH_AZURITE_PORT/devstoreaccount1;\"}}"
export AIRFLOW_CONN_HDH_SOVEREIGN_TARGET="{\"conn_type\": \"aws\", \"login\": \"$HDH_S3_ACCESS_KEY\", \"password\": \"$HDH_S3_SECRET_KEY\", \"extra\": {\"endpoint_url\": \"http://127.0.0.1:$HDH_S3_PORT\", \"region_name\": \"fr-par\", \"provider_profile\": \"generic\"}}"
# A default that is a JSON object cannot sit in ${VAR:-...}: its own "}" would close the expansion.
if [[ -z "${AIRFLOW_CONN_HDH_LEDGER:-}" ]]; then
  export AIRFLOW_CONN_HDH_LEDGER="{\"conn_type\": \"sqlite\", \"host\": \"$HDH_STATE_DIR/ledger.db\"}"
fi
# The gap scan's backfills go through the api-server's REST API as the least-privilege user
# hdh_gap_scan (SimpleAuthManager role user). No api-server runs by default here: one started by
# hand needs AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin,hdh_gap_scan:user and this
# password in its passwords file (the tests start their own, with their own users).
export AIRFLOW_CONN_HDH_AIRFLOW_API="{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $HDH_API_PORT, \"schema\": \"http\", \"login\": \"hdh_gap_scan\", \"password\": \"$HDH_GAP_SCAN_PASSWORD\"}"

# --- the proofs' keys (local only) ----------------------------------------------------------------
# The content fingerprints' secret key: a local default here; scripts/prod.sh generates one and
# docker-compose requires one in .env (the code has no default). The cutover signing key (Ed25519)
# is generated once into $HDH_STATE_DIR/cutover-signing; HDH_CUTOVER_PUBLIC_KEY pins its public half
# for verify. Here one process runs every task, so the signing connection sits beside the others:
# docker-compose and scripts/prod.sh give it to the cutover worker alone.
export HDH_FINGERPRINT_KEY="${HDH_FINGERPRINT_KEY:-hdh-local-content-fingerprint-key}"
HDH_CUTOVER_KEY_DIR="$HDH_STATE_DIR/cutover-signing"
if [[ ! -s "$HDH_CUTOVER_KEY_DIR/public.key" && -x "$HDH_ROOT/.venv/bin/python" ]]; then
  "$HDH_ROOT/.venv/bin/python" -m hdh_migration.signing "$HDH_CUTOVER_KEY_DIR" >&2
fi
if [[ -s "$HDH_CUTOVER_KEY_DIR/public.key" ]]; then
  export HDH_CUTOVER_PUBLIC_KEY="${HDH_CUTOVER_PUBLIC_KEY:-$(<"$HDH_CUTOVER_KEY_DIR/public.key")}"
  export AIRFLOW_CONN_HDH_CUTOVER_SIGNING="{\"conn_type\": \"generic\", \"password\": \"$(<"$HDH_CUTOVER_KEY_DIR/private.key")\"}"
fi
