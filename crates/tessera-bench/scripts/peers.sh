#!/usr/bin/env bash
# The peer suite: tessera's session check and login beside Node's express-session and Better
# Auth (SQLite adapter, without and with its cookie cache), all served on one pinned core and
# loaded by wrk from the other, in one run.
#
#   bash crates/tessera-bench/scripts/peers.sh             # 5 s per run
#   DURATION=2 bash crates/tessera-bench/scripts/peers.sh  # smoke test
#
# The peers are the exact versions in crates/tessera-bench/peers/package-lock.json, installed
# with `npm ci` into $CARGO_TARGET_DIR/peers (once; again when the lock file changes), and
# started here with the machine's Node.js. Every server listens on 127.0.0.1 only and is
# stopped on exit. Prints a Markdown table and writes it to $OUT/peers.md.
set -euo pipefail
cd "$(dirname "$0")/../../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONNECTIONS="${CONNECTIONS:-64}"
LOGIN_CONNECTIONS="${LOGIN_CONNECTIONS:-8}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-results}"
BIN="$CARGO_TARGET_DIR/release"
PASSWORD="peer password 1"

# shellcheck source=load-common.sh
source crates/tessera-bench/scripts/load-common.sh
need node && need npm || { echo "peers.sh needs Node.js and npm" >&2; exit 1; }

PEERS=crates/tessera-bench/peers
NODE_DIR="$CARGO_TARGET_DIR/peers"
if [ ! -d "$NODE_DIR/node_modules" ] || ! cmp -s "$PEERS/package-lock.json" "$NODE_DIR/package-lock.json"; then
  echo "== installing the peers (npm ci)" >&2
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  cp "$PEERS/package.json" "$PEERS/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2)
fi
cp "$PEERS"/*.mjs "$NODE_DIR/"

echo "== building release binaries" >&2
cargo build --release --locked -p tessera -p tessera-bench >&2

# The Cookie header for every cookie in a curl jar (HttpOnly ones included).
jar_cookies() {
  sed 's/^#HttpOnly_//' "$1" | awk -F'\t' '!/^#/ && NF >= 7 { printf "%s%s=%s", sep, $6, $7; sep = "; " }'
}

TESSERA_PORT=$(free_port 18600)
EXPRESS_PORT=$(free_port $((TESSERA_PORT + 1)))
BA_PORT=$(free_port $((EXPRESS_PORT + 1)))
BA_CACHE_PORT=$(free_port $((BA_PORT + 1)))
T="http://127.0.0.1:$TESSERA_PORT"
X="http://127.0.0.1:$EXPRESS_PORT"
A="http://127.0.0.1:$BA_PORT"
AC="http://127.0.0.1:$BA_CACHE_PORT"

env TESSERA_ADMIN_PASSWORD="$PASSWORD" TESSERA_LOGIN_MAX_FAILURES=1000000 \
  TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 TESSERA_LOGIN_MAX_FAILURES_GLOBAL=1000000 \
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN/tessera" serve --data "$WORK/tessera" \
  --listen "127.0.0.1:$TESSERA_PORT" 2>>"$WORK/tessera.log" &
PIDS+=("$!")
(cd "$NODE_DIR" && exec taskset -c "$SERVER_CPU" node express-session.mjs "$EXPRESS_PORT") 2>>"$WORK/express.log" &
PIDS+=("$!")
(cd "$NODE_DIR" && exec taskset -c "$SERVER_CPU" node better-auth.mjs "$BA_PORT" "$WORK/ba.db" plain) 2>>"$WORK/ba.log" &
PIDS+=("$!")
(cd "$NODE_DIR" && exec taskset -c "$SERVER_CPU" node better-auth.mjs "$BA_CACHE_PORT" "$WORK/ba-cache.db" cookie-cache) 2>>"$WORK/ba-cache.log" &
PIDS+=("$!")
wait_up "$T/healthz"
wait_up "$X/session"
wait_up "$A/api/auth/ok"
wait_up "$AC/api/auth/ok"

TESSERA_COOKIE=$(curl -fsS -D - -o /dev/null -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$T/v1/login" |
  tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: __Host-tessera=\([^;]*\).*/\1/p')
curl -fsS -c "$WORK/express.jar" -o /dev/null -X POST "$X/login"
EXPRESS_COOKIE=$(jar_cookies "$WORK/express.jar")
# Better Auth: sign up, then sign in (its CSRF check wants the Origin of a trusted origin).
ba_session() { # BASE JAR
  local credentials="{\"email\":\"alice@example.com\",\"password\":\"$PASSWORD\""
  curl -fsS -o /dev/null -H 'content-type: application/json' -H "Origin: $1" \
    -d "$credentials,\"name\":\"alice\"}" "$1/api/auth/sign-up/email"
  curl -fsS -c "$2" -o /dev/null -H 'content-type: application/json' -H "Origin: $1" \
    -d "$credentials}" "$1/api/auth/sign-in/email"
}
ba_session "$A" "$WORK/ba.jar"
ba_session "$AC" "$WORK/ba-cache.jar"
BA_COOKIE=$(jar_cookies "$WORK/ba.jar")
BA_CACHE_COOKIE=$(jar_cookies "$WORK/ba-cache.jar")
for pair in "tessera:$TESSERA_COOKIE" "express:$EXPRESS_COOKIE" "ba:$BA_COOKIE" "ba-cache:$BA_CACHE_COOKIE"; do
  [ -n "${pair#*:}" ] || { echo "no session cookie for ${pair%%:*}" >&2; exit 1; }
done
# A check must find the session (Better Auth answers 200 with `null` without one).
[ "$(curl -fsS -H "Cookie: $BA_COOKIE" "$A/api/auth/get-session" | jq -r .user.email)" = alice@example.com ]
[ "$(curl -fsS -H "Cookie: $BA_CACHE_COOKIE" "$AC/api/auth/get-session" | jq -r .user.email)" = alice@example.com ]

post_script() { # FILE BODY [ORIGIN]
  cat "$WORK/report.lua" >"$1"
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '$2'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    [ -z "${3:-}" ] || echo "wrk.headers[\"Origin\"] = \"$3\""
  } >>"$1"
}
post_script "$WORK/tessera-login.lua" "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}"
post_script "$WORK/ba-login.lua" "{\"email\":\"alice@example.com\",\"password\":\"$PASSWORD\"}" "$A"

declare -A RPS P50 P99
measure() { # KEY LABEL CONNECTIONS SCRIPT URL [wrk args…]
  local key=$1 label=$2 conns=$3 script=$4 url=$5 line
  shift 5
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$script" "$@" "$url" >/dev/null
  line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$script" "$@" "$url" | grep '^RESULT')
  read -r _ requests seconds p50 p99 errors <<<"$line"
  [ "$errors" = 0 ] || { echo "$label: $errors errors or non-2xx answers of $requests" >&2; exit 1; }
  RPS[$key]=$(awk -v r="$requests" -v s="$seconds" 'BEGIN { printf "%.1f", r / s }')
  P50[$key]=$p50
  P99[$key]=$p99
  echo "   $label: ${RPS[$key]} req/s, p50 $p50 µs, p99 $p99 µs" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== every server on core $SERVER_CPU, wrk on core $LOAD_CPU (load average $LOAD_BEFORE)" >&2
R="$WORK/report.lua"
measure verify "tessera GET /v1/verify (opaque cookie)" "$CONNECTIONS" "$R" "$T/v1/verify" -H "Cookie: __Host-tessera=$TESSERA_COOKIE"
measure session "tessera GET /v1/session (opaque cookie)" "$CONNECTIONS" "$R" "$T/v1/session" -H "Cookie: __Host-tessera=$TESSERA_COOKIE"
measure express "express-session GET /session" "$CONNECTIONS" "$R" "$X/session" -H "Cookie: $EXPRESS_COOKIE"
measure ba "Better Auth GET /api/auth/get-session" "$CONNECTIONS" "$R" "$A/api/auth/get-session" -H "Cookie: $BA_COOKIE"
measure ba_cache "Better Auth get-session, cookie cache" "$CONNECTIONS" "$R" "$AC/api/auth/get-session" -H "Cookie: $BA_CACHE_COOKIE"
measure tessera_login "tessera POST /v1/login" "$LOGIN_CONNECTIONS" "$WORK/tessera-login.lua" "$T/v1/login"
measure ba_login "Better Auth POST sign-in/email" "$LOGIN_CONNECTIONS" "$WORK/ba-login.lua" "$A/api/auth/sign-in/email"

# Each one's own hash limit on the server's core: one verification's time, one after another.
ARGON_MS=$(taskset -c "$SERVER_CPU" "$BIN/tessera-bench" argon2 --count 15 | jq -r .verify_ms_p50)
SCRYPT_MS=$(cd "$NODE_DIR" && taskset -c "$SERVER_CPU" node scrypt-limit.mjs 20 | jq -r .verify_ms)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

ms() { awk -v us="$1" 'BEGIN { printf "%.3f ms", us / 1000 }'; }
x() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", a / b }'; }
limit() { awk -v ms="$1" 'BEGIN { printf "%.1f", 1000 / ms }'; }
row() { echo "| $1 | ${RPS[$2]} | $(ms "${P50[$2]}") | $(ms "${P99[$2]}") | $3 |"; }
mkdir -p "$OUT"
{
  echo "Peers, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), node $(node --version)"
  echo "every server pinned to core $SERVER_CPU, wrk -t1 on core $LOAD_CPU; ${DURATION} s per run after ${WARMUP} s warm-up,"
  echo "$CONNECTIONS connections ($LOGIN_CONNECTIONS for logins); load average before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo
  echo "| what | req/s | p50 | p99 | tessera's opaque verify against it |"
  echo "|---|---:|---:|---:|---|"
  row "tessera \`GET /v1/verify\`, opaque cookie (SQLite)" verify ""
  row "tessera \`GET /v1/session\`, opaque cookie" session ""
  row "express-session 1.19.0 (memory store) \`GET /session\`" express "$(x "${RPS[verify]}" "${RPS[express]}")"
  row "Better Auth 1.7.29 \`get-session\`, SQLite, no cookie cache" ba "$(x "${RPS[verify]}" "${RPS[ba]}") (target ≥ 50×)"
  row "Better Auth 1.7.29 \`get-session\`, 300 s cookie cache (no instant revocation)" ba_cache "$(x "${RPS[verify]}" "${RPS[ba_cache]}") (target ≥ 40×)"
  echo
  echo "| login | logins/s | p50 | p99 | its own hash limit on one core |"
  echo "|---|---:|---:|---:|---|"
  row "tessera \`POST /v1/login\` (Argon2id m=19456 t=2 p=1)" tessera_login "$(limit "$ARGON_MS")/s (one verification $ARGON_MS ms): $(x "${RPS[tessera_login]}" "$(limit "$ARGON_MS")")"
  row "Better Auth \`sign-in/email\` (scrypt N=16384 r=16 p=1)" ba_login "$(limit "$SCRYPT_MS")/s (one verification $(printf '%.2f' "$SCRYPT_MS") ms): $(x "${RPS[ba_login]}" "$(limit "$SCRYPT_MS")")"
} | tee "$OUT/peers.md"
echo "(written to $OUT/peers.md)" >&2
