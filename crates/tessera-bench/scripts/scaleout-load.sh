#!/usr/bin/env bash
# The multi-instance load run of issue 18, on this one machine:
#
#   TESSERA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#     bash crates/tessera-bench/scripts/scaleout-load.sh
#
# Starts a three-master Redis Cluster (redis-server ×3, appendonly yes, appendfsync $FSYNC —
# `always` by default, as the README asks for production), a database of its own on the
# PostgreSQL of TESSERA_TEST_DATABASE_URL (created and dropped; the URL's user must be allowed
# to), three release `tessera serve` instances sharing both, and nginx in front of them
# (round-robin upstream). Then `tessera-bench mixed` runs twice against nginx: a mixed load
# (verifies, refreshes, logouts each followed by a check of the revoked token on the next
# instance and a fresh login, checks of tokens revoked earlier) and verifies only. Each run
# prints throughput, p50/p99 per request kind, the number of revoked tokens answered 200 after
# their logout returned (the run fails unless it is 0), and per request served: Redis commands,
# bytes and CPU, PostgreSQL transactions, tuples and backend CPU, and the CPU of tessera, nginx
# and the load generator.
#
# Everything shares this machine's cores (nothing is pinned): the figures are what two shared
# cores serve with every component on them, not what one component can do alone. docs/scaling.md
# turns the per-request CPU figures into a capacity model.
#
# Knobs: CLIENTS (32), RUN_SECONDS (20), FSYNC (always|everysec|no), WEIGHTS ("940,30,10,20":
# verify, refresh, logout, revoked-check), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../../.."

: "${TESSERA_TEST_DATABASE_URL:?set TESSERA_TEST_DATABASE_URL to a PostgreSQL URL}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
CLIENTS="${CLIENTS:-32}"
SECONDS_PER_RUN="${RUN_SECONDS:-20}"
FSYNC="${FSYNC:-always}"
WEIGHTS="${WEIGHTS:-940,30,10,20}"
PASSWORD="scaleout load admin password"
MASTER_KEY="dGVzc2VyYS1zY2FsZW91dC1sb2FkLW1hc3Rlci1rZXk"

need() { command -v "$1" >/dev/null 2>&1; }
for tool in redis-server redis-cli nginx psql; do
  need "$tool" || { echo "scaleout-load: $tool is needed" >&2; exit 1; }
done

cargo build --release --locked -p tessera -p tessera-bench >&2
TESSERA="$CARGO_TARGET_DIR/release/tessera"
BENCH="$CARGO_TARGET_DIR/release/tessera-bench"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/tessera-scaleout.XXXXXX")
DB="tessera_load_$$"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free port at most 55535 whose port + 10000 is free too (a cluster node's bus).
free_port() {
  python3 -c '
import random, socket
while True:
    port = random.randint(20000, 55535)
    try:
        for p in (port, port + 10000):
            socket.socket().bind(("127.0.0.1", p))
    except OSError:
        continue
    print(port)
    break
'
}

# --- Redis Cluster: three masters, no replicas.
NODES=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$WORK/redis-$i"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis-$i" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --save "" --appendonly yes --appendfsync "$FSYNC" >"$WORK/redis-$i.log" 2>&1 &
  PIDS+=($!)
  NODES+=("127.0.0.1:$port")
done
wait_for() { # wait_for WHAT COMMAND...: up to 30 s
  local what=$1
  shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "scaleout-load: $what never happened (logs in $WORK)" >&2
  KEEP=1
  exit 1
}
for node in "${NODES[@]}"; do
  wait_for "redis $node answering" redis-cli -h 127.0.0.1 -p "${node#*:}" ping
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/cluster.log"
cluster_ok() { redis-cli -h 127.0.0.1 -p "$1" cluster info | grep -q cluster_state:ok; }
for node in "${NODES[@]}"; do
  wait_for "cluster state ok on $node" cluster_ok "${node#*:}"
done
REDIS_PIDS=$(IFS=,; echo "${PIDS[*]}")
SESSIONS="redis+cluster://$(IFS=,; echo "${NODES[*]}")"

# --- PostgreSQL: a database of the run's own.
psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $DB" >/dev/null
STORE=$(python3 - "$TESSERA_TEST_DATABASE_URL" "$DB" <<'EOF'
import sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(url._replace(path="/" + sys.argv[2])))
EOF
)

# --- Three tessera instances.
PORTS=()
TESSERA_PIDS=()
start_instance() {
  local i=$1 port
  port=$(free_port)
  mkdir -p "$WORK/tessera-$i"
  env TESSERA_STORE="$STORE" TESSERA_SESSIONS="$SESSIONS" TESSERA_MASTER_KEY="$MASTER_KEY" \
    TESSERA_ADMIN_PASSWORD="$PASSWORD" TESSERA_LOGIN_MAX_FAILURES=1000000 \
    TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 TESSERA_LOGIN_MAX_FAILURES_GLOBAL=1000000 \
    "$TESSERA" serve --data "$WORK/tessera-$i" --listen "127.0.0.1:$port" \
    >"$WORK/tessera-$i.out" 2>"$WORK/tessera-$i.log" &
  PIDS+=($!)
  TESSERA_PIDS+=($!)
  PORTS+=("$port")
  for _ in $(seq 300); do
    grep -q "listening on" "$WORK/tessera-$i.log" 2>/dev/null && return
    sleep 0.1
  done
  echo "tessera $i did not start:" >&2
  cat "$WORK/tessera-$i.log" >&2
  exit 1
}
start_instance 1 # creates the schema, the first key and the admin user
start_instance 2
start_instance 3

# --- nginx, round-robin over the three.
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
{
  echo "daemon off; worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log warn;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  echo "  access_log off;"
  echo "  client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;"
  echo "  fastcgi_temp_path $WORK/nginx/fastcgi; uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;"
  echo "  upstream tessera {"
  for port in "${PORTS[@]}"; do echo "    server 127.0.0.1:$port;"; done
  echo "    keepalive 128;"
  echo "  }"
  echo "  server {"
  echo "    listen 127.0.0.1:$NGINX_PORT;"
  echo "    location / {"
  echo "      proxy_pass http://tessera;"
  echo "      proxy_http_version 1.1;"
  echo "      proxy_set_header Connection \"\";"
  echo "    }"
  echo "  }"
  echo "}"
} >"$WORK/nginx/nginx.conf"
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
wait_for "nginx's pid file" test -s "$WORK/nginx/nginx.pid"
wait_for "nginx listening" python3 -c "import socket; socket.create_connection(('127.0.0.1', $NGINX_PORT), 1)"
NGINX_PIDS="$(cat "$WORK/nginx/nginx.pid"),$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | paste -sd,)"

echo "== $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== Redis Cluster ${NODES[*]} (appendfsync $FSYNC), PostgreSQL database $DB, tessera on ${PORTS[*]}, nginx on $NGINX_PORT"
run() {
  local title=$1 weights=$2
  echo
  echo "### $title"
  echo
  "$BENCH" mixed --url "http://127.0.0.1:$NGINX_PORT" --admin-password "$PASSWORD" \
    --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" --weights "$weights" \
    --redis-nodes "$(IFS=,; echo "${NODES[*]}")" --database-url "$STORE" \
    --cpu "tessera (3 instances)=$(IFS=,; echo "${TESSERA_PIDS[*]}")" \
    --cpu "nginx=$NGINX_PIDS" --cpu "redis-server (3 processes)=$REDIS_PIDS"
}
run "Mixed load (weights verify,refresh,logout,revoked-check = $WEIGHTS)" "$WEIGHTS"
run "Verifies only" "1000,0,0,0"
echo
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
