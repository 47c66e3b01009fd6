#!/usr/bin/env bash
# What the tests need beyond the venv and the stand-ins: PostgreSQL (ledger and production-profile
# tests) and Redis (the production profile's Celery broker) on loopback, and Debian's Chromium (the
# on-call board's browser tests). Starts what is installed but stopped, installs Chromium from the
# system packages when it can, and otherwise stops at once with one line saying what to install.
# Usage: scripts/services.sh [check]   (check: report only, install and start nothing)
set -euo pipefail
MODE="${1:-ensure}"
PG_HOST=127.0.0.1 PG_PORT="${HDH_PG_PORT:-5432}" REDIS_PORT="${HDH_REDIS_PORT:-6379}" CHROMIUM="${HDH_CHROMIUM:-/usr/bin/chromium}"

fail() { echo "services: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 75); do port_open "$1" && return 0; sleep 0.2; done; return 1; }
can_apt() { [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; }

ensure_postgres() {
  port_open "$PG_PORT" && return
  if [[ $MODE == ensure ]] && command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    wait_port "$PG_PORT" && return
  fi
  fail "PostgreSQL is not answering on $PG_HOST:$PG_PORT: install and start PostgreSQL (Debian: apt-get install postgresql)" \
    "with trust auth for user postgres on $PG_HOST; the ledger and production-profile tests use it"
}

ensure_redis() {
  port_open "$REDIS_PORT" && return
  if [[ $MODE == ensure ]] && command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' >/dev/null
    wait_port "$REDIS_PORT" && return
  fi
  fail "Redis is not answering on 127.0.0.1:$REDIS_PORT: install and start it (Debian: apt-get install redis-server);" \
    "the production profile's Celery broker uses it"
}

ensure_chromium() {
  [[ -x $CHROMIUM ]] && return
  if [[ $MODE == ensure ]] && can_apt; then
    echo "services: installing Debian's chromium for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    [[ -x $CHROMIUM ]] && return
  fi
  fail "$CHROMIUM is missing: install Debian's chromium package (apt-get install chromium); the on-call board's browser tests drive it"
}

case "$MODE" in
  ensure | check) ensure_postgres; ensure_redis; ensure_chromium ;;
  *) echo "usage: $0 [check]" >&2; exit 2 ;;
esac
