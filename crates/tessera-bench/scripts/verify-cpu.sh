#!/usr/bin/env bash
# CPU per verify of one tessera instance on a core of its own, by deployment: the per-core
# figures docs/scaling.md builds its capacity model on.
#
#   TESSERA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#     bash crates/tessera-bench/scripts/verify-cpu.sh
#
# For each deployment — SQLite; Redis (one node) + PostgreSQL; a three-master Redis Cluster +
# PostgreSQL — one release `tessera serve` runs pinned to core $SERVER_CPU (tokio then runs one
# worker), and `tessera-bench mixed` sends verifies only (half opaque cookie, half JWT bearer
# seen before) from core $LOAD_CPU, where Redis runs too. The report gives tessera's CPU time
# per verify (from /proc, so independent of how busy the other core is), Redis's CPU and
# commands per verify, and the throughput reached (bounded by whichever core saturates first).
# Redis runs with appendfsync always; a verify writes nothing (activity writes are due once a
# minute per session, and a run is shorter than that after the sessions' logins).
#
# Knobs: CLIENTS (32), RUN_SECONDS (15), SERVER_CPU (0), LOAD_CPU (1), DEPLOYMENTS
# ("sqlite redis cluster"), SERVER_ENV (extra NAME=value settings for tessera, e.g.
# "TESSERA_ACTIVITY_WRITE_INTERVAL=0s" to make every verify an activity write).
set -euo pipefail
cd "$(dirname "$0")/../../.."

: "${TESSERA_TEST_DATABASE_URL:?set TESSERA_TEST_DATABASE_URL to a PostgreSQL URL}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
CLIENTS="${CLIENTS:-32}"
RUN_SECONDS="${RUN_SECONDS:-15}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
DEPLOYMENTS="${DEPLOYMENTS:-sqlite redis cluster}"
PASSWORD="verify cpu admin password"
MASTER_KEY="dGVzc2VyYS12ZXJpZnktY3B1LW1hc3Rlci1rZXktMzI"

for tool in redis-server redis-cli psql taskset; do
  command -v "$tool" >/dev/null || { echo "verify-cpu: $tool is needed" >&2; exit 1; }
done
cargo build --release --locked -p tessera -p tessera-bench >&2
TESSERA="$CARGO_TARGET_DIR/release/tessera"
BENCH="$CARGO_TARGET_DIR/release/tessera-bench"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/tessera-verify-cpu.XXXXXX")
# The databases the run may create (named here: `database` runs in a subshell).
DBS=("tessera_cpu_redis_$$" "tessera_cpu_cluster_$$")
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
cleanup() {
  stop_all
  for db in "${DBS[@]}"; do
    psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
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
wait_for() { # wait_for WHAT COMMAND...: up to 30 s
  local what=$1
  shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "verify-cpu: $what never happened" >&2
  exit 1
}
redis_node() { # redis_node DIR PORT [args...]: a redis-server on the load core
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  taskset -c "$LOAD_CPU" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
    --appendonly yes --appendfsync always "$@" >"$dir.log" 2>&1 &
  PIDS+=($!)
  wait_for "redis on $port" redis-cli -p "$port" ping
}
database() { # database NAME: a fresh database; prints its URL
  psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $1" >/dev/null
  python3 -c 'import sys, urllib.parse as u; s = u.urlsplit(sys.argv[1]); print(u.urlunsplit(s._replace(path="/" + sys.argv[2])))' \
    "$TESSERA_TEST_DATABASE_URL" "$1"
}

echo "== $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== tessera on core $SERVER_CPU; load generator and Redis on core $LOAD_CPU; $CLIENTS clients, ${RUN_SECONDS}s; ${SERVER_ENV:-default settings}"
for deployment in $DEPLOYMENTS; do
  dir="$WORK/$deployment"
  mkdir -p "$dir"
  nodes=""
  case "$deployment" in
    sqlite)
      store="sqlite"
      sessions="same"
      ;;
    redis)
      port=$(free_port)
      redis_node "$dir/redis" "$port"
      nodes="127.0.0.1:$port"
      store=$(database "tessera_cpu_redis_$$")
      sessions="redis://127.0.0.1:$port"
      ;;
    cluster)
      list=()
      for i in 1 2 3; do
        port=$(free_port)
        redis_node "$dir/redis-$i" "$port" --cluster-enabled yes --cluster-config-file nodes.conf
        list+=("127.0.0.1:$port")
      done
      redis-cli --cluster create "${list[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster.log"
      for node in "${list[@]}"; do
        wait_for "cluster state on $node" sh -c "redis-cli -p ${node#*:} cluster info | grep -q cluster_state:ok"
      done
      nodes=$(IFS=,; echo "${list[*]}")
      store=$(database "tessera_cpu_cluster_$$")
      sessions="redis+cluster://$nodes"
      ;;
    *) echo "unknown deployment $deployment" >&2; exit 2 ;;
  esac
  port=$(free_port)
  env TESSERA_SESSIONS="$sessions" TESSERA_MASTER_KEY="$MASTER_KEY" TESSERA_ADMIN_PASSWORD="$PASSWORD" \
    TESSERA_LOGIN_MAX_FAILURES=1000000 TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 \
    TESSERA_LOGIN_MAX_FAILURES_GLOBAL=1000000 ${SERVER_ENV:-} \
    $( [ "$store" = sqlite ] || echo "TESSERA_STORE=$store" ) \
    taskset -c "$SERVER_CPU" "$TESSERA" serve --data "$dir/data" --listen "127.0.0.1:$port" \
    >"$dir/tessera.out" 2>"$dir/tessera.log" &
  pid=$!
  PIDS+=($pid)
  wait_for "tessera listening" grep -q "listening on" "$dir/tessera.log"
  echo
  echo "### $deployment"
  echo
  args=(--url "http://127.0.0.1:$port" --admin-password "$PASSWORD" --clients "$CLIENTS"
    --seconds "$RUN_SECONDS" --weights 1000,0,0,0 --cpu "tessera (1 instance, core $SERVER_CPU)=$pid")
  if [ -n "$nodes" ]; then
    args+=(--redis-nodes "$nodes" --database-url "$store")
  fi
  taskset -c "$LOAD_CPU" "$BENCH" mixed "${args[@]}"
  stop_all
done
echo
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
