#!/usr/bin/env bash
# The production-shaped profile on this machine, without Docker: the deployment of
# docker-compose.yml as local processes. Airflow's metadata database and the ledger on the local
# PostgreSQL, Redis as the Celery broker, Celery results on PostgreSQL; api-server, scheduler,
# dag-processor, triggerer and three Celery workers (queue default, queue transfer, queue cutover);
# Azurite and SeaweedFS from scripts/stack.sh.
#
# Usage: scripts/prod.sh start|stop|status|demo|config
#   start   start what is not running yet, wait until everything is healthy (safe to call twice)
#   stop    stop everything this script started, wait until its ports are closed
#   status  each service: running or stopped, and the api-server's health report
#   demo    start, then a full migration of the demo domains through the scheduler and the workers
#   config  the services' commands and the Airflow settings they run with (secrets masked)
#
# Users (FAB auth manager, deploy/airflow.env), created or updated at each start by
# `python -m hdh_migration users sync` from HDH_AIRFLOW_USERS (name:Role pairs; default admin:Admin,
# oncall:Viewer, engineer:User, and hdh_gap_scan:User for the gap scan's connection hdh_airflow_api).
# Their passwords are in HDH_PROD_DIR/passwords.json (mode 600; generated for new users); the gap
# scan's is generated into HDH_PROD_DIR/secrets.env with the other secrets (HDH_FINGERPRINT_KEY among them).
#
# The cutover signing key (Ed25519) is generated once into HDH_PROD_DIR/cutover-signing: its private
# half reaches the cutover worker alone, as connection hdh_cutover_signing; every service gets the
# public half as HDH_CUTOVER_PUBLIC_KEY, which verify checks the records against. All services run
# as one OS user here, so this split keeps the key out of the other services' environment but is no
# security boundary: docker-compose.yml's containers are.
#
# The Airflow settings come from deploy/airflow.env (shared with docker-compose.yml); a setting
# already exported in the environment wins. Everything else is overridable with these variables:
#   HDH_AIRFLOW_PORT (8080) api-server, HDH_API_WORKERS (2) its processes;
#   HDH_SCHEDULER_HEALTH_PORT (8974); HDH_TRIGGERER_LOG_PORT (8794);
#   HDH_WORKER_LOG_PORT (8793), HDH_TRANSFER_WORKER_LOG_PORT (8795) and HDH_CUTOVER_WORKER_LOG_PORT
#   (8796): the workers' log servers;
#   HDH_PG_HOST (127.0.0.1) HDH_PG_PORT (5432) HDH_PG_USER (postgres) HDH_PG_PASSWORD (empty);
#   HDH_AIRFLOW_DB (hdh_airflow) HDH_LEDGER_DB (hdh_ledger): created when missing;
#   HDH_REDIS_URL (redis://127.0.0.1:6379/0): the Celery broker;
#   HDH_PROD_CONN_<ID> (unset): the connection <ID> of the services instead of the one built here
#   (AIRFLOW_CONN_<ID> JSON; the fault tests route the services through their fault proxies);
#   the stand-ins' ports of scripts/env.sh. State (logs, pids, secrets, AIRFLOW_HOME) lives in
#   HDH_PROD_DIR ($HDH_STATE_DIR/prod). Stand-ins already running when the profile starts are left
#   running by stop.
set -euo pipefail
CALLER_ENV=" $(compgen -e | tr '\n' ' ') "
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PROD_DIR="${HDH_PROD_DIR:-$HDH_STATE_DIR/prod}"
LOG_DIR="$PROD_DIR/logs"
PID_DIR="$PROD_DIR/pids"
AIRFLOW="$HDH_ROOT/.venv/bin/airflow"
PYTHON="$HDH_ROOT/.venv/bin/python"
mkdir -p "$LOG_DIR" "$PID_DIR"

export HDH_AIRFLOW_PORT="${HDH_AIRFLOW_PORT:-8080}"
export HDH_SCHEDULER_HEALTH_PORT="${HDH_SCHEDULER_HEALTH_PORT:-8974}"
export HDH_TRIGGERER_LOG_PORT="${HDH_TRIGGERER_LOG_PORT:-8794}"
export HDH_WORKER_LOG_PORT="${HDH_WORKER_LOG_PORT:-8793}"
export HDH_TRANSFER_WORKER_LOG_PORT="${HDH_TRANSFER_WORKER_LOG_PORT:-8795}"
export HDH_CUTOVER_WORKER_LOG_PORT="${HDH_CUTOVER_WORKER_LOG_PORT:-8796}"
HDH_PG_HOST="${HDH_PG_HOST:-127.0.0.1}"
HDH_PG_PORT="${HDH_PG_PORT:-5432}"
HDH_PG_USER="${HDH_PG_USER:-postgres}"
HDH_PG_PASSWORD="${HDH_PG_PASSWORD:-}"
HDH_AIRFLOW_DB="${HDH_AIRFLOW_DB:-hdh_airflow}"
HDH_LEDGER_DB="${HDH_LEDGER_DB:-hdh_ledger}"
HDH_REDIS_URL="${HDH_REDIS_URL:-redis://127.0.0.1:6379/0}"
export HDH_API_URL="http://127.0.0.1:$HDH_AIRFLOW_PORT"
# The Celery node names; the queues are those of docker-compose.yml's three workers.
WORKER_HOST="$(hostname)"
DEFAULT_WORKER="hdh-default@$WORKER_HOST"
TRANSFER_WORKER="hdh-transfer@$WORKER_HOST"
CUTOVER_WORKER="hdh-cutover@$WORKER_HOST"

# --- the Airflow environment ------------------------------------------------------------------------
while IFS='=' read -r name value; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  [[ $CALLER_ENV == *" $name "* ]] || export "$name=$value"
done <"$HDH_ROOT/deploy/airflow.env"

# The secrets, generated once each: one missing from an older secrets.env is added to it.
SECRETS="$PROD_DIR/secrets.env"
missing_secrets=()
for name in AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY HDH_GAP_SCAN_PASSWORD HDH_FINGERPRINT_KEY; do
  grep -q "^$name=" "$SECRETS" 2>/dev/null || missing_secrets+=("$name")
done
if ((${#missing_secrets[@]})); then
  (umask 077 && "$PYTHON" - "${missing_secrets[@]}" >>"$SECRETS" <<'PY'
import base64, os, secrets, sys
for name in sys.argv[1:]:
    value = base64.urlsafe_b64encode(os.urandom(32)).decode() if name == "AIRFLOW__CORE__FERNET_KEY" else secrets.token_hex(32)
    print(f"{name}={value}")
PY
  )
fi
set -a && source "$SECRETS" && set +a

# The cutover signing key: the public half for every service, the private half for the cutover worker
# only (start_service), never exported here.
"$PYTHON" -m hdh_migration.signing "$PROD_DIR/cutover-signing" >/dev/null
HDH_CUTOVER_PUBLIC_KEY="$(<"$PROD_DIR/cutover-signing/public.key")"
export HDH_CUTOVER_PUBLIC_KEY
CUTOVER_SIGNING_CONN="{\"conn_type\": \"generic\", \"password\": \"$(<"$PROD_DIR/cutover-signing/private.key")\"}"
unset AIRFLOW_CONN_HDH_CUTOVER_SIGNING

pg_auth="$HDH_PG_USER${HDH_PG_PASSWORD:+:$HDH_PG_PASSWORD}"
export AIRFLOW_HOME="$PROD_DIR/airflow"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$pg_auth@$HDH_PG_HOST:$HDH_PG_PORT/$HDH_AIRFLOW_DB"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://$pg_auth@$HDH_PG_HOST:$HDH_PG_PORT/$HDH_AIRFLOW_DB"
export AIRFLOW__CELERY__BROKER_URL="$HDH_REDIS_URL"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$HDH_API_URL/execution/"
export AIRFLOW__API__BASE_URL="$HDH_API_URL"
export AIRFLOW__API__PORT="$HDH_AIRFLOW_PORT"
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT="$HDH_SCHEDULER_HEALTH_PORT"
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$HDH_TRIGGERER_LOG_PORT"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$HDH_WORKER_LOG_PORT"
# The users and their FAB roles: an admin, on-call staff (Viewer: read only), data engineers (User:
# trigger, clear, backfill), and the gap scan's own user (User: creates backfills) with the generated
# password of secrets.env.
GAP_SCAN_USER=hdh_gap_scan
export HDH_AIRFLOW_USERS="${HDH_AIRFLOW_USERS:-admin:Admin,oncall:Viewer,engineer:User,$GAP_SCAN_USER:User}"
export HDH_PASSWORDS_FILE="$PROD_DIR/passwords.json"
export AIRFLOW_CONN_HDH_LEDGER="{\"conn_type\": \"postgres\", \"host\": \"$HDH_PG_HOST\", \"port\": $HDH_PG_PORT, \"schema\": \"$HDH_LEDGER_DB\", \"login\": \"$HDH_PG_USER\", \"password\": \"$HDH_PG_PASSWORD\"}"
export AIRFLOW_CONN_HDH_AIRFLOW_API="{\"conn_type\": \"http\", \"host\": \"127.0.0.1\", \"port\": $HDH_AIRFLOW_PORT, \"schema\": \"http\", \"login\": \"$GAP_SCAN_USER\", \"password\": \"$HDH_GAP_SCAN_PASSWORD\"}"
for name in $(compgen -e | grep '^HDH_PROD_CONN_' || true); do export "AIRFLOW_CONN_${name#HDH_PROD_CONN_}=${!name}"; done

# The users' passwords file: the gap scan user's password (that of its connection) is merged in,
# keeping the others; `users sync` generates the missing ones at start.
"$PYTHON" - "$HDH_PASSWORDS_FILE" "$GAP_SCAN_USER" <<'PY'
import fcntl, json, os, sys

path, user = sys.argv[1:]
with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as file:
    fcntl.flock(file, fcntl.LOCK_EX)
    passwords = json.loads(file.read().strip() or "{}")
    if passwords.get(user) != os.environ["HDH_GAP_SCAN_PASSWORD"]:
        passwords[user] = os.environ["HDH_GAP_SCAN_PASSWORD"]
        file.seek(0)
        file.truncate()
        file.write(json.dumps(passwords) + "\n")
os.chmod(path, 0o600)
PY

# --- the services -------------------------------------------------------------------------------------
SERVICES=(api-server scheduler dag-processor triggerer worker-default worker-transfer worker-cutover)

service_command() { # name: the command line of a service
  case "$1" in
    api-server) echo "$AIRFLOW api-server --host 127.0.0.1 --port $HDH_AIRFLOW_PORT --workers ${HDH_API_WORKERS:-2}" ;;
    scheduler) echo "$AIRFLOW scheduler" ;;
    dag-processor) echo "$AIRFLOW dag-processor" ;;
    triggerer) echo "$AIRFLOW triggerer" ;;
    worker-default) echo "$AIRFLOW celery worker --queues default --celery-hostname $DEFAULT_WORKER" ;;
    worker-transfer) echo "$AIRFLOW celery worker --queues transfer --celery-hostname $TRANSFER_WORKER" ;;
    worker-cutover) echo "$AIRFLOW celery worker --queues cutover --celery-hostname $CUTOVER_WORKER" ;;
  esac
}

service_ports() { # name: the ports a service listens on
  case "$1" in
    api-server) echo "$HDH_AIRFLOW_PORT" ;;
    scheduler) echo "$HDH_SCHEDULER_HEALTH_PORT" ;;
    triggerer) echo "$HDH_TRIGGERER_LOG_PORT" ;;
    worker-default) echo "$HDH_WORKER_LOG_PORT" ;;
    worker-transfer) echo "$HDH_TRANSFER_WORKER_LOG_PORT" ;;
    worker-cutover) echo "$HDH_CUTOVER_WORKER_LOG_PORT" ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$PID_DIR/$1.pid" ]] && kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; }
elapsed() { printf '%d.%d s' $((($(date +%s%N) - $1) / 1000000000)) $(((($(date +%s%N) - $1) / 100000000) % 10)); }

ensure_databases() { # prints the databases it created
  "$PYTHON" - "$HDH_AIRFLOW_DB" "$HDH_LEDGER_DB" <<PY
import sys

import psycopg2

conn = psycopg2.connect(host="$HDH_PG_HOST", port=$HDH_PG_PORT, user="$HDH_PG_USER", password="$HDH_PG_PASSWORD" or None, dbname="postgres")
conn.autocommit = True
with conn.cursor() as cursor:
    for name in sys.argv[1:]:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
            print(name)
PY
}

empty_broker() {
  # A new metadata database knows none of the messages a broker may still hold (an earlier
  # profile's tasks): a worker would take them and fail them. Each profile has its own Redis database.
  "$PYTHON" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1]).flushdb()' "$HDH_REDIS_URL"
  echo "prod: emptied the broker database $HDH_REDIS_URL"
}

start_service() { # name
  local name=$1
  if pid_alive "$name"; then echo "$name: already running (pid $(cat "$PID_DIR/$name.pid"))"; return; fi
  for port in $(service_ports "$name"); do
    if port_open "$port"; then
      echo "prod: port $port for $name is taken by another process; stop it or choose another port (see scripts/prod.sh)" >&2
      exit 1
    fi
  done
  # Its own session, so that stop reaches the service's children (uvicorn, Celery's pool, log servers);
  # a subshell, so that what one service alone gets (the signing key) is in no command line.
  (
    case "$name" in
      worker-transfer) export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$HDH_TRANSFER_WORKER_LOG_PORT" ;;
      worker-cutover)
        export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$HDH_CUTOVER_WORKER_LOG_PORT"
        export AIRFLOW_CONN_HDH_CUTOVER_SIGNING="$CUTOVER_SIGNING_CONN"
        ;;
    esac
    # shellcheck disable=SC2046
    exec setsid $(service_command "$name") >>"$LOG_DIR/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$PID_DIR/$name.pid"
}

api_health() { curl -s --max-time 5 "$HDH_API_URL/api/v2/monitor/health"; }

services_healthy() { # default-, transfer- and cutover-worker-log-offset
  local health
  health=$(api_health) || return 1
  for part in metadatabase scheduler triggerer dag_processor; do
    [[ $health == *"\"$part\":{\"status\":\"healthy\""* ]] || return 1
  done
  curl -sf --max-time 5 "http://127.0.0.1:$HDH_SCHEDULER_HEALTH_PORT/health" >/dev/null || return 1
  tail -c "+$(($1 + 1))" "$LOG_DIR/worker-default.log" | grep -q "$DEFAULT_WORKER ready" || return 1
  tail -c "+$(($2 + 1))" "$LOG_DIR/worker-transfer.log" | grep -q "$TRANSFER_WORKER ready" || return 1
  tail -c "+$(($3 + 1))" "$LOG_DIR/worker-cutover.log" | grep -q "$CUTOVER_WORKER ready"
}

workers_answer() {
  local answer
  answer=$("$HDH_ROOT/.venv/bin/celery" --app airflow.providers.celery.executors.celery_executor.app \
    inspect ping --timeout 10 -d "$DEFAULT_WORKER,$TRANSFER_WORKER,$CUTOVER_WORKER" 2>/dev/null) || return 1
  [[ $answer == *"$DEFAULT_WORKER: OK"* && $answer == *"$TRANSFER_WORKER: OK"* && $answer == *"$CUTOVER_WORKER: OK"* ]]
}

cmd_start() {
  local started
  started=$(date +%s%N)
  if [[ ! -f "$PROD_DIR/stack.ours" && $("$HDH_ROOT/scripts/stack.sh" status) == *running* ]]; then
    touch "$PROD_DIR/stack.theirs"
  else
    rm -f "$PROD_DIR/stack.theirs" && touch "$PROD_DIR/stack.ours"
  fi
  "$HDH_ROOT/scripts/stack.sh" start
  local created
  created=$(ensure_databases)
  for name in $created; do echo "prod: created database $name"; done
  if grep -qxF "$HDH_AIRFLOW_DB" <<<"$created"; then empty_broker; fi
  # Where each worker's log is now: a worker started below is ready once it says so after that.
  local log_offsets=()
  for name in worker-default worker-transfer worker-cutover; do
    if pid_alive "$name"; then log_offsets+=(0); else log_offsets+=("$(stat -c %s "$LOG_DIR/$name.log" 2>/dev/null || echo 0)"); fi
  done
  if ! pid_alive scheduler && ! "$AIRFLOW" db check-migrations --migration-wait-timeout 1 >/dev/null 2>&1; then
    "$AIRFLOW" db migrate >>"$LOG_DIR/db-migrate.log" 2>&1 || {
      echo "prod: airflow db migrate failed; see $LOG_DIR/db-migrate.log" >&2
      exit 1
    }
  fi
  # The pool every transfer_object runs in, sized by the catalogue's transfer_slots, and the users
  # with their roles and passwords (both idempotent).
  local sync
  for sync in "pools sync" "users sync --password-file $HDH_PASSWORDS_FILE"; do
    # shellcheck disable=SC2086 # the words of the command
    "$PYTHON" -m hdh_migration $sync >>"$LOG_DIR/db-migrate.log" 2>&1 || {
      echo "prod: python -m hdh_migration ${sync%% --*} failed; see $LOG_DIR/db-migrate.log" >&2
      exit 1
    }
  done
  for name in "${SERVICES[@]}"; do start_service "$name"; done
  local deadline=$((SECONDS + ${HDH_PROD_START_TIMEOUT:-240}))
  until services_healthy "${log_offsets[@]}"; do
    for name in "${SERVICES[@]}"; do
      if ! pid_alive "$name"; then
        echo "prod: $name exited; the end of $LOG_DIR/$name.log:" >&2
        tail -n 30 "$LOG_DIR/$name.log" >&2
        exit 1
      fi
    done
    if ((SECONDS > deadline)); then
      echo "prod: not healthy within ${HDH_PROD_START_TIMEOUT:-240} s; logs in $LOG_DIR" >&2
      api_health >&2 || true
      exit 1
    fi
    sleep 2
  done
  # The workers answer on the broker (what docker-compose.yml's healthcheck asks them).
  workers_answer || workers_answer || { echo "prod: the Celery workers do not answer a ping; logs in $LOG_DIR" >&2; exit 1; }
  echo "prod: healthy in $(elapsed "$started"): api-server $HDH_API_URL (users $HDH_AIRFLOW_USERS, passwords in" \
    "$HDH_PASSWORDS_FILE), workers $DEFAULT_WORKER (default), $TRANSFER_WORKER (transfer)," \
    "$CUTOVER_WORKER (cutover, signing key $(fingerprint))"
}

stop_services() { # names: TERM to each service's process group, then KILL what is left after 30 s
  local name pid
  local -a pids=()
  for name in "$@"; do
    if pid_alive "$name"; then
      pid=$(cat "$PID_DIR/$name.pid")
      kill -TERM -- "-$pid" 2>/dev/null || true
      pids+=("$pid")
      echo "$name: stopping"
    fi
    rm -f "$PID_DIR/$name.pid"
  done
  for _ in $(seq 1 150); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

cmd_stop() {
  local name port
  # Workers first (a warm shutdown lets a running task finish or be handed back), then the rest.
  stop_services worker-default worker-transfer worker-cutover
  stop_services triggerer scheduler dag-processor api-server
  for name in "${SERVICES[@]}"; do
    for port in $(service_ports "$name"); do
      for _ in $(seq 1 100); do port_open "$port" || break; sleep 0.2; done
    done
  done
  if [[ -f "$PROD_DIR/stack.ours" ]]; then "$HDH_ROOT/scripts/stack.sh" stop; fi
  rm -f "$PROD_DIR/stack.ours" "$PROD_DIR/stack.theirs"
  echo "prod: stopped"
}

cmd_status() {
  local name
  "$HDH_ROOT/scripts/stack.sh" status
  for name in "${SERVICES[@]}"; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$PID_DIR/$name.pid"))"; else echo "$name: stopped"; fi
  done
  api_health && echo || echo "api-server: no answer at $HDH_API_URL"
}

fingerprint() { "$PYTHON" -c 'import sys; from hdh_migration.signing import fingerprint; print(fingerprint(sys.argv[1]))' "$HDH_CUTOVER_PUBLIC_KEY"; }

cmd_config() {
  local name
  for name in "${SERVICES[@]}"; do echo "service $name: $(service_command "$name")"; done
  echo "service-connections worker-cutover: hdh_cutover_signing"
  env | grep -E '^AIRFLOW__' | sort | sed -E 's/^(AIRFLOW__(CORE__FERNET_KEY|API_AUTH__JWT_SECRET|API__SECRET_KEY))=.*/\1=<secret>/'
  env | grep -E '^AIRFLOW_CONN_' | sort | sed -E 's/("password": ")[^"]+"/\1<secret>"/'
  echo "HDH_ALLOW_LOCAL_STANDINS=${HDH_ALLOW_LOCAL_STANDINS:-}"
  echo "HDH_AIRFLOW_USERS=$HDH_AIRFLOW_USERS"
  echo "HDH_PASSWORDS_FILE=$HDH_PASSWORDS_FILE"
  env | grep -E '^HDH_(FINGERPRINT_KEY|CUTOVER_PUBLIC_KEY)=' | sort | sed -E 's/^(HDH_FINGERPRINT_KEY)=.*/\1=<secret>/'
}

cmd_demo() {
  local started
  cmd_start
  started=$(date +%s%N)
  "$PYTHON" -m hdh_migration seed --seed 42 --rows-per-partition "${SEED_ROWS:-2000}"
  local api=(--api-url "$HDH_API_URL" --password-file "$HDH_PASSWORDS_FILE")
  "$PYTHON" -m hdh_migration migrate "${api[@]}"
  "$PYTHON" -m hdh_migration cutover --all --by "prod.sh demo" "${api[@]}"
  "$PYTHON" -m hdh_migration verify --all "${api[@]}"
  "$PYTHON" -m hdh_migration status
  echo "prod: demo end to end (seed, backfills, cutovers) in $(elapsed "$started")"
}

case "${1:-status}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  demo) cmd_demo ;;
  config) cmd_config ;;
  *) echo "usage: $0 start|stop|status|demo|config" >&2; exit 2 ;;
esac
