#!/usr/bin/env bash
# Start, stop or check the local stand-ins: Azurite (Azure Blob) and SeaweedFS (S3), on loopback.
# Usage: scripts/stack.sh start|stop|status|reset
# Safe to call twice; data lives in $HDH_STATE_DIR/stack (ignored by git).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
STACK_DIR="$HDH_STATE_DIR/stack"
AZURITE="$HDH_ROOT/node_modules/.bin/azurite-blob"
WEED="$HDH_ROOT/.venv/bin/weed"
mkdir -p "$STACK_DIR"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # name url seconds
  local name=$1 url=$2 deadline=$((SECONDS + $3))
  until curl -s -o /dev/null "$url"; do
    if ((SECONDS > deadline)); then
      echo "stack: $name did not answer at $url within $3 s; see $STACK_DIR/$name.log" >&2
      tail -n 20 "$STACK_DIR/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

refuse_taken_port() { # name port variable
  if port_open "$2"; then
    echo "stack: port $2 for $1 is already taken by another process. Stop it, or choose another port" \
      "with $3 (see scripts/env.sh)." >&2
    exit 1
  fi
}

start_azurite() {
  if pid_alive "$STACK_DIR/azurite.pid"; then echo "azurite: already running on 127.0.0.1:$HDH_AZURITE_PORT"; return; fi
  [[ -x "$AZURITE" ]] || { echo "stack: $AZURITE is missing; run 'make install'" >&2; exit 1; }
  refuse_taken_port azurite "$HDH_AZURITE_PORT" HDH_AZURITE_PORT
  mkdir -p "$STACK_DIR/azurite"
  nohup "$AZURITE" --blobHost 127.0.0.1 --blobPort "$HDH_AZURITE_PORT" --location "$STACK_DIR/azurite" \
    --skipApiVersionCheck --loose >"$STACK_DIR/azurite.log" 2>&1 &
  echo $! >"$STACK_DIR/azurite.pid"
  wait_for azurite "http://127.0.0.1:$HDH_AZURITE_PORT/devstoreaccount1?comp=list" 60
  echo "azurite: blob service on http://127.0.0.1:$HDH_AZURITE_PORT"
}

start_seaweedfs() {
  if pid_alive "$STACK_DIR/seaweedfs.pid"; then echo "seaweedfs: already running on 127.0.0.1:$HDH_S3_PORT"; return; fi
  [[ -x "$WEED" ]] || { echo "stack: $WEED is missing; run 'make install'" >&2; exit 1; }
  for variable in HDH_S3_PORT HDH_WEED_MASTER_PORT HDH_WEED_VOLUME_PORT HDH_WEED_FILER_PORT; do
    refuse_taken_port seaweedfs "${!variable}" "$variable"
  done
  mkdir -p "$HDH_S3_DATA_DIR"
  cat >"$STACK_DIR/s3.json" <<JSON
{"identities": [{"name": "hdh", "credentials": [{"accessKey": "$HDH_S3_ACCESS_KEY", "secretKey": "$HDH_S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  nohup "$WEED" server -dir="$HDH_S3_DATA_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$HDH_WEED_MASTER_PORT" -volume.port="$HDH_WEED_VOLUME_PORT" -filer.port="$HDH_WEED_FILER_PORT" \
    -master.volumeSizeLimitMB=1024 -volume.max=200 \
    -s3 -s3.port="$HDH_S3_PORT" -s3.config="$STACK_DIR/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 >"$STACK_DIR/seaweedfs.log" 2>&1 &
  echo $! >"$STACK_DIR/seaweedfs.pid"
  wait_for seaweedfs "http://127.0.0.1:$HDH_S3_PORT/" 90
  echo "seaweedfs: S3 gateway on http://127.0.0.1:$HDH_S3_PORT"
}

stop_one() { # name
  local pidfile="$STACK_DIR/$1.pid"
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    echo "$1: stopped"
  fi
  rm -f "$pidfile"
}

wait_ports_closed() {
  for port in "$@"; do
    for _ in $(seq 1 100); do port_open "$port" || break; sleep 0.2; done
  done
}

case "${1:-status}" in
  start) start_azurite; start_seaweedfs ;;
  stop)
    stop_one azurite; stop_one seaweedfs
    wait_ports_closed "$HDH_AZURITE_PORT" "$HDH_S3_PORT" "$HDH_WEED_MASTER_PORT" "$HDH_WEED_VOLUME_PORT" "$HDH_WEED_FILER_PORT"
    ;;
  reset) "$0" stop; rm -rf "$STACK_DIR" "$HDH_S3_DATA_DIR"; echo "stack: data removed" ;;
  status)
    for name in azurite seaweedfs; do
      if pid_alive "$STACK_DIR/$name.pid"; then echo "$name: running (pid $(cat "$STACK_DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
