#!/usr/bin/env bash
# Instructions per HTTP request in the server's user space, counted by callgrind: repeatable
# whatever else the machine is doing, so two builds can be compared on a busy machine.
#
#   bash crates/tessera-bench/scripts/callgrind-http.sh
#   BIN=/path/to/other/tessera bash crates/tessera-bench/scripts/callgrind-http.sh   # another build
#   KEEP=1 …   # keep the callgrind files (one dump per endpoint, names uncompressed, so each
#              # reads alone: callgrind_annotate --inclusive=yes "$WORK"/cg.PID.N)
#
# Runs `tessera serve` under valgrind (core 0; a cheap Argon2id, since logins are not counted),
# logs in once with each delivery, then for /healthz, /v1/verify with the opaque
# cookie and /v1/verify with the JWT seen before, and then the baseline server's bare axum
# handler (`/bare`, the load runs' ceiling): loads each with wrk for 2 s (warm-up), zeroes
# the counters, loads it for 5 s, dumps, and prints the instructions divided by wrk's request
# count. Kernel time (the socket calls) is not counted.
set -euo pipefail
cd "$(dirname "$0")/../../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
need() { command -v "$1" >/dev/null 2>&1; }
if ! need valgrind || ! need wrk || ! need jq || ! need curl; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind wrk jq curl >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p tessera -p tessera-bench >&2
  BIN="$CARGO_TARGET_DIR/release/tessera"
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/tessera-callgrind.XXXXXX")"
PORT="${PORT:-18190}"
T="http://127.0.0.1:$PORT"
PASSWORD="load-test-password-1"
TESSERA_ADMIN_PASSWORD="$PASSWORD" RUST_LOG=warn TESSERA_ARGON2_MEMORY_KIB=1024 TESSERA_ARGON2_ITERATIONS=1 \
  taskset -c 0 valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$WORK/cg.%p" \
  "$BIN" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" 2>"$WORK/log" &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "callgrind files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$T/healthz" 2>/dev/null && break
  sleep 0.2
done
login() {
  curl -fsS -D - -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"delivery\":\"$1\"}" "$T/v1/login"
}
COOKIE=$(login cookie | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: __Host-tessera=\([^;]*\).*/\1/p')
JWT=$(login bearer | sed -n '/^{/p' | jq -r .access_token)
[ -n "$COOKIE" ] && [ -n "$JWT" ] || { echo "login failed" >&2; exit 1; }

# count ID LABEL URL [wrk header args…]
count() {
  local name=$1 label=$2 url=$3
  shift 3
  taskset -c 1 wrk -t1 -c4 -d2s "$@" "$url" >/dev/null
  callgrind_control --zero "$SERVER" >/dev/null 2>&1
  local requests
  requests=$(taskset -c 1 wrk -t1 -c4 -d5s "$@" "$url" | awk '/requests in/ { print $1 }')
  callgrind_control --dump="$name" "$SERVER" >/dev/null 2>&1
  local dump=""
  for _ in $(seq 1 50); do
    dump=$(grep -l "^desc: Trigger: dump $name\$" "$WORK"/cg.* 2>/dev/null | head -1) && [ -n "$dump" ] && break
    sleep 0.2
  done
  local total
  total=$(awk '/^summary:/ { print $2; exit }' "$dump")
  printf '| %s | %s | %s |\n' "$label" "$requests" "$((total / requests))"
}

echo "Instructions per request (user space, callgrind), $(date -u +%Y-%m-%dT%H:%MZ), $BIN"
echo
echo "| endpoint | requests | instructions/request |"
echo "|---|---:|---:|"
count healthz "GET /healthz" "$T/healthz"
count opaque "GET /v1/verify, opaque cookie" "$T/v1/verify" -H "Cookie: __Host-tessera=$COOKIE"
count jwt "GET /v1/verify, JWT seen before" "$T/v1/verify" -H "Authorization: Bearer $JWT"

# The ceiling of the load runs: the baseline server's bare axum handler, under callgrind the
# same way (same axum, tokio configuration and allocator).
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
taskset -c 0 valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$WORK/cg.%p" \
  "$(dirname "$BIN")/tessera-bench" baseline --listen "127.0.0.1:$PORT" 2>>"$WORK/log" &
SERVER=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$T/bare" 2>/dev/null && break
  sleep 0.2
done
count bare "baseline GET /bare (bare axum)" "$T/bare"
