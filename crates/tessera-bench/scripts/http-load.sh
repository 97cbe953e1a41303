#!/usr/bin/env bash
# HTTP load benchmark of tessera on loopback, beside baselines served in the same run.
#
#   bash crates/tessera-bench/scripts/http-load.sh            # 10 s per run
#   DURATION=2 bash crates/tessera-bench/scripts/http-load.sh # smoke test
#
# Starts `tessera serve` (release build, temporary data directory, SQLite), the baseline
# server (`tessera-bench baseline`) and the embedded verifier's server (`tessera-bench
# embedded`) pinned to core $SERVER_CPU, runs wrk pinned to core
# $LOAD_CPU against each endpoint for $DURATION seconds, prints a Markdown table (requests/s,
# p50, p99, ratio to the ceiling) and writes it to $OUT. The ceiling is a bare axum handler
# (the baseline's `/bare`, same axum and tokio configuration), alternated with each endpoint.
# The isolation rows run `/v1/verify` alone and then beside a login flood (a second wrk).
# Everything listens on 127.0.0.1 only and every server started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5}"           # seconds per measured run
ROUNDS="${ROUNDS:-3}"               # alternating runs of an endpoint and its baseline
WARMUP="${WARMUP:-1}"               # seconds of unmeasured load before each run
CONNECTIONS="${CONNECTIONS:-64}"    # wrk connections for throughput runs
LOGIN_CONNECTIONS="${LOGIN_CONNECTIONS:-8}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-results}"
BIN="$CARGO_TARGET_DIR/release"
PASSWORD="load-test-password-1"

# shellcheck source=load-common.sh
source crates/tessera-bench/scripts/load-common.sh

echo "== building release binaries" >&2
cargo build --release --locked -p tessera -p tessera-bench >&2

TESSERA_PORT=$(free_port 18080)
BASELINE_PORT=$(free_port $((TESSERA_PORT + 1)))
EMBEDDED_PORT=$(free_port $((BASELINE_PORT + 1)))
T="http://127.0.0.1:$TESSERA_PORT"
B="http://127.0.0.1:$BASELINE_PORT"
E="http://127.0.0.1:$EMBEDDED_PORT"

# Starts tessera on the shared data directory; extra arguments are VAR=value settings.
start_tessera() {
  env TESSERA_ADMIN_PASSWORD="$PASSWORD" TESSERA_LOGIN_MAX_FAILURES=1000000 \
    TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 TESSERA_LOGIN_MAX_FAILURES_GLOBAL=1000000 \
    RUST_LOG=warn "$@" \
    taskset -c "$SERVER_CPU" "$BIN/tessera" serve --data "$WORK/data" \
    --listen "127.0.0.1:$TESSERA_PORT" 2>>"$WORK/tessera.log" &
  TESSERA_PID=$!
  PIDS+=("$TESSERA_PID")
  wait_up "$T/healthz"
}

stop_tessera() {
  kill "$TESSERA_PID" && wait "$TESSERA_PID" 2>/dev/null || true
}

cat "$WORK/report.lua" >"$WORK/paced.lua"
echo 'delay = function() return 1 end' >>"$WORK/paced.lua"
cat "$WORK/report.lua" >"$WORK/login.lua"
cat >>"$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"username":"admin","password":"$PASSWORD"}'
wrk.headers["Content-Type"] = "application/json"
EOF

ROWS=()
declare -A RPS P50 P99

# measure KEY LABEL CONNECTIONS SCRIPT URL [wrk header args...]
measure() {
  local key=$1 label=$2 conns=$3 script=$4 url=$5
  shift 5
  if [ "$WARMUP" -gt 0 ]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$WORK/report.lua" "$@" "$url" >/dev/null
  fi
  local line
  line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s -s "$script" "$@" "$url" |
    grep '^RESULT')
  read -r _ requests seconds p50 p99 errors <<<"$line"
  if [ "$errors" != 0 ]; then
    echo "$label: $errors errors or non-2xx answers out of $requests" >&2
    exit 1
  fi
  RPS[$key]=$(awk -v r="$requests" -v s="$seconds" 'BEGIN { printf "%.0f", r / s }')
  P50[$key]=$p50
  P99[$key]=$p99
  echo "   $label: ${RPS[$key]} req/s, p50 ${p50} µs, p99 ${p99} µs" >&2
}

# pair BASE KEY: ROUNDS alternating runs of the baseline's measuring function m_BASE and the
# endpoint's m_KEY. Each round's ratio is taken against the baseline run just before it, so a
# machine whose speed drifts (shared cores) moves both alike; the row reports the round with the
# median ratio (its req/s, p50 and p99) and that ratio.
declare -A RATIO
pair() {
  local base=$1 key=$2 r rounds=()
  for r in $(seq 1 "$ROUNDS"); do
    "m_$base" "${base}_$r"
    "m_$key" "${key}_$r"
    rounds+=("$(awk -v a="${RPS[${key}_$r]}" -v b="${RPS[${base}_$r]}" 'BEGIN { printf "%.4f", a / b }') $r")
  done
  local median
  median=$(printf '%s\n' "${rounds[@]}" | sort -n | awk '{ line[NR] = $2 } END { print line[int((NR + 1) / 2)] }')
  RPS[$key]=${RPS[${key}_$median]}
  P50[$key]=${P50[${key}_$median]}
  P99[$key]=${P99[${key}_$median]}
  RPS[$base]=${RPS[${base}_$median]}
  P50[$base]=${P50[${base}_$median]}
  P99[$base]=${P99[${base}_$median]}
  RATIO[$key]=$(awk -v a="${RPS[$key]}" -v b="${RPS[$base]}" 'BEGIN { printf "%.2f×", a / b }')
  echo "   => ${key}: median ratio ${RATIO[$key]} of $base (rounds: ${rounds[*]})" >&2
}

ms() { awk -v us="$1" 'BEGIN { printf "%.3f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
row() { # KEY LABEL BASE_KEY BASE_LABEL [target]
  local r=${RATIO[$1]:-$(ratio "${RPS[$1]}" "${RPS[$3]}")}
  ROWS+=("| $2 | ${RPS[$1]} | $(ms "${P50[$1]}") | $(ms "${P99[$1]}") | $r of $4 | ${5:-} |")
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== tessera on core $SERVER_CPU, wrk on core $LOAD_CPU, ${DURATION}s per run (load average $LOAD_BEFORE)" >&2

start_tessera
COOKIE=$(curl -fsS -D - -o /dev/null -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$T/v1/login" |
  tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: __Host-tessera=\([^;]*\).*/\1/p')
JWT=$(curl -fsS -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"delivery\":\"bearer\"}" "$T/v1/login" |
  jq -r .access_token)
ED25519_X=$(curl -fsS "$T/.well-known/jwks.json" | jq -r '.keys[] | select(.crv == "Ed25519") | .x')
[ -n "$COOKIE" ] && [ -n "$JWT" ] && [ -n "$ED25519_X" ] || { echo "login failed" >&2; exit 1; }

taskset -c "$SERVER_CPU" "$BIN/tessera-bench" baseline --listen "127.0.0.1:$BASELINE_PORT" \
  --ed25519-x "$ED25519_X" --opaque-token "$COOKIE" 2>>"$WORK/baseline.log" &
PIDS+=("$!")
wait_up "$B/bare"

m_ceiling() { measure "$1" "baseline GET /bare (bare axum: the ceiling)" "$CONNECTIONS" "$WORK/report.lua" "$B/bare"; }
m_healthz() { measure "$1" "GET /healthz" "$CONNECTIONS" "$WORK/report.lua" "$T/healthz"; }
m_verify_opaque() {
  measure "$1" "GET /v1/verify, opaque cookie" "$CONNECTIONS" "$WORK/report.lua" "$T/v1/verify" \
    -H "Cookie: __Host-tessera=$COOKIE"
}
m_verify_jwt() {
  measure "$1" "GET /v1/verify, JWT bearer seen before" "$CONNECTIONS" "$WORK/report.lua" "$T/v1/verify" \
    -H "Authorization: Bearer $JWT"
}
m_session_opaque() {
  measure "$1" "GET /v1/session, opaque cookie" "$CONNECTIONS" "$WORK/report.lua" "$T/v1/session" \
    -H "Cookie: __Host-tessera=$COOKIE"
}
m_session_jwt() {
  measure "$1" "GET /v1/session, JWT bearer" "$CONNECTIONS" "$WORK/report.lua" "$T/v1/session" \
    -H "Authorization: Bearer $JWT"
}
m_ceiling ceiling
CEILING_START=${RPS[ceiling]}
pair ceiling healthz
pair ceiling verify_opaque
pair ceiling verify_jwt
pair ceiling session_opaque
pair ceiling session_jwt
measure login "POST /v1/login" "$LOGIN_CONNECTIONS" "$WORK/login.lua" "$T/v1/login"

# Latency at 80 % of the opaque verify peak: wrk paces each connection (1 ms between a response
# and the next request), and short probes adjust the connection count until the rate is within
# 5 % of the target (at most 6 probes; the table shows the rate actually reached).
TARGET=$(awk -v r="${RPS[verify_opaque]}" 'BEGIN { printf "%.0f", r * 0.8 }')
PACED_CONNS=$(((TARGET + 999) / 1000))
SAVED_DURATION=$DURATION
SAVED_WARMUP=$WARMUP
DURATION=2
WARMUP=0
for _ in 1 2 3 4 5 6; do
  measure probe "pacing probe, $PACED_CONNS connections" "$PACED_CONNS" "$WORK/paced.lua" "$T/v1/verify" \
    -H "Cookie: __Host-tessera=$COOKIE"
  read -r PACED_CONNS CLOSE < <(awk -v t="$TARGET" -v r="${RPS[probe]}" -v c="$PACED_CONNS" 'BEGIN {
    close_enough = (r > t * 0.95 && r < t * 1.05)
    n = int(c * t / r + 0.5); if (n < 1) n = 1
    print (close_enough ? c : n), close_enough }')
  [ "$CLOSE" = 1 ] && break
done
DURATION=$SAVED_DURATION
WARMUP=$SAVED_WARMUP
measure paced "GET /v1/verify, opaque, paced to 80 % of peak" "$PACED_CONNS" "$WORK/paced.lua" "$T/v1/verify" \
  -H "Cookie: __Host-tessera=$COOKIE"
# Isolation: /v1/verify alone, then the same run while a second wrk (8 connections, the same
# load core) floods logins, which keeps the password-hashing pool busy throughout.
m_verify_opaque iso_alone
taskset -c "$LOAD_CPU" wrk -t1 -c"$LOGIN_CONNECTIONS" -d"$((DURATION + WARMUP + 2))s" --timeout 10s \
  -s "$WORK/login.lua" "$T/v1/login" >"$WORK/flood.txt" &
FLOOD=$!
sleep 1
m_verify_opaque iso_flood
wait "$FLOOD"
read -r _ FLOOD_REQUESTS FLOOD_SECONDS _ _ FLOOD_ERRORS < <(grep '^RESULT' "$WORK/flood.txt")
[ "$FLOOD_ERRORS" = 0 ] || { echo "login flood: $FLOOD_ERRORS errors" >&2; exit 1; }
RPS[flood]=$(awk -v r="$FLOOD_REQUESTS" -v s="$FLOOD_SECONDS" 'BEGIN { printf "%.1f", r / s }')
echo "   login flood: ${RPS[flood]} logins/s" >&2

# The ceiling again: a drift between the first and the last run means the machine was not quiet
# (the ratios above are each taken against an adjacent ceiling run).
m_ceiling ceiling_end
RPS[ceiling]=$(( (CEILING_START + RPS[ceiling_end]) / 2 ))
DRIFT=$(awk -v a="$CEILING_START" -v b="${RPS[ceiling_end]}" 'BEGIN { d = (a - b) / (a > b ? a : b) * 100; printf "%.0f", d < 0 ? -d : d }')
stop_tessera

# First-seen JWTs: the same server and data with the verified-token cache off, so every request
# verifies the signature (plus the session lookup), like a token never seen before; alternated
# with the baseline server's bare axum + Ed25519 handler, both pinned to the same core (the idle
# one waits in epoll).
start_tessera TESSERA_JWT_CACHE_CAPACITY=0
m_ed25519() {
  measure "$1" "baseline GET /ed25519 (bare axum + Ed25519 verify)" "$CONNECTIONS" "$WORK/report.lua" \
    "$B/ed25519" -H "Authorization: Bearer $JWT"
}
m_verify_jwt_first() {
  measure "$1" "GET /v1/verify, JWT bearer first seen (cache off)" "$CONNECTIONS" "$WORK/report.lua" \
    "$T/v1/verify" -H "Authorization: Bearer $JWT"
}
pair ed25519 verify_jwt_first

# The embedded verifier (tessera-verify): one handler alone and behind VerifyLayer, in one
# server on the same runtime, its keys from this tessera's JWKS; the same JWT on both routes,
# so /verified verifies a token seen before (a hit in the verifier's cache).
taskset -c "$SERVER_CPU" "$BIN/tessera-bench" embedded --listen "127.0.0.1:$EMBEDDED_PORT" \
  --tessera-url "$T" 2>>"$WORK/embedded.log" &
PIDS+=("$!")
wait_up "$E/plain"
m_app_plain() {
  measure "$1" "embedded: the handler alone" "$CONNECTIONS" "$WORK/report.lua" "$E/plain" \
    -H "Authorization: Bearer $JWT"
}
m_app_verified() {
  measure "$1" "embedded: the handler behind VerifyLayer, JWT seen before" "$CONNECTIONS" \
    "$WORK/report.lua" "$E/verified" -H "Authorization: Bearer $JWT"
}
pair app_plain app_verified
stop_tessera

measure sha_map "baseline GET /sha-map (SHA-256 + in-memory map)" "$CONNECTIONS" "$WORK/report.lua" "$B/sha-map" \
  -H "Cookie: __Host-tessera=$COOKIE"

# The login ceiling: cores given to the server ÷ one Argon2id verification's time.
ARGON_MS=$(taskset -c "$SERVER_CPU" "$BIN/tessera-bench" argon2 --count 15 | jq -r .verify_ms_p50)
SERVER_CORES=$(taskset -c "$SERVER_CPU" nproc)
# tessera's default: one fewer than its cores, at least one.
HASHING_THREADS=$((SERVER_CORES > 1 ? SERVER_CORES - 1 : 1))
RPS[argon2]=$(awk -v c="$SERVER_CORES" -v ms="$ARGON_MS" 'BEGIN { printf "%.1f", c * 1000 / ms }')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

row ceiling "baseline: bare axum \`/bare\` — the ceiling (mean of first and last run)" ceiling "ceiling"
row sha_map "baseline: SHA-256 + in-memory map" ceiling "ceiling"
row healthz "**GET /healthz**" ceiling "ceiling" "≥ 0.95×"
row verify_opaque "**GET /v1/verify, opaque cookie (SQLite)**" ceiling "ceiling" "≥ 0.85×"
row verify_jwt "**GET /v1/verify, EdDSA JWT seen before**" ceiling "ceiling" "≥ 0.85×"
row session_opaque "**GET /v1/session, opaque cookie**" ceiling "ceiling" "≥ 0.80×"
row session_jwt "GET /v1/session, EdDSA JWT seen before" ceiling "ceiling"
row ed25519 "baseline: bare axum + Ed25519 verify" ceiling "ceiling"
row verify_jwt_first "**GET /v1/verify, EdDSA JWT first seen**" ed25519 "bare axum + Ed25519" "≥ 0.95×"
row iso_alone "GET /v1/verify, opaque, alone (isolation run)" ceiling "ceiling"
row iso_flood "**GET /v1/verify, opaque, during a login flood**" iso_alone "verify alone" "≥ 0.60×, p99 ≤ 3 ms"
row app_plain "embedded: an axum handler alone" ceiling "ceiling"
row app_verified "**embedded: the same handler behind VerifyLayer, EdDSA JWT seen before**" app_plain "the handler alone" "≥ 0.85×"
ROWS+=("| **POST /v1/login** (Argon2id m=19456 t=2 p=1) | ${RPS[login]} | $(ms "${P50[login]}") | $(ms "${P99[login]}") | $(ratio "${RPS[login]}" "${RPS[argon2]}") of the Argon2id limit (${SERVER_CORES} core ÷ ${ARGON_MS} ms = ${RPS[argon2]}/s) | ≥ 0.90× |")
ROWS+=("| **POST /v1/login during that flood** (${HASHING_THREADS} hashing thread(s) in the idle class) | ${RPS[flood]} | | | $(ratio "${RPS[flood]}" "${RPS[argon2]}") of the Argon2id limit | (see performance.md) |")
ROWS+=("| **GET /v1/verify, opaque, paced** ($PACED_CONNS conns) | ${RPS[paced]} | $(ms "${P50[paced]}") | $(ms "${P99[paced]}") | $(ratio "${RPS[paced]}" "${RPS[verify_opaque]}") of its peak | p99 < 2 ms at 0.80× |")

mkdir -p "$OUT"
REPORT="$OUT/http-load.md"
{
  echo "HTTP load, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "machine: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p'), kernel $(uname -r), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "tessera and the baseline pinned to core $SERVER_CPU (tokio: 1 worker), wrk -t1 on core $LOAD_CPU;"
  echo "${DURATION} s per run after ${WARMUP} s warm-up, $CONNECTIONS connections ($LOGIN_CONNECTIONS for login);"
  echo "ratios in bold rows: median of $ROUNDS rounds, each against the baseline run just before it;"
  echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER; the ceiling is the mean of $CEILING_START and ${RPS[ceiling_end]} req/s (drift ${DRIFT} %)"
  echo
  echo "| endpoint | req/s | p50 | p99 | ratio | target |"
  echo "|---|---:|---:|---:|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$REPORT"
echo "(written to $REPORT)" >&2
