#!/usr/bin/env bash
# Runs schemathesis (every operation, `--checks all`, bounded examples) against the API
# document a local tessera serves, authenticated as the admin with a bearer token (see
# schemathesis_hooks.py) so the admin routes are exercised too. Exits non-zero on any failure.
#
# Usage: crates/tessera/tests/schemathesis.sh [TESSERA_BINARY]
#   ST (default: st on PATH) is the schemathesis command; ST_MAX_EXAMPLES (default 20)
#   bounds the test cases per operation; ST_SEED fixes the random seed.
set -euo pipefail

binary="${1:-${CARGO_TARGET_DIR:-target}/debug/tessera}"
st="${ST:-st}"
hooks_dir="$(cd "$(dirname "$0")" && pwd)"
max_examples="${ST_MAX_EXAMPLES:-20}"

data="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
password="schemathesis admin password"

# Cheap password hashing: schemathesis sends many logins. Lockouts far away: its failing
# logins (some as `admin`, a name it learns from the user list) all come from this host, and
# a locked admin could not log in again to exercise the admin routes. Passkeys on (for the
# browser origin of this port), and DBSC on, so their operations answer with their own refusals.
TESSERA_ADMIN_PASSWORD="$password" TESSERA_ARGON2_MEMORY_KIB=1024 TESSERA_ARGON2_ITERATIONS=1 \
  TESSERA_WEBAUTHN_RP_ID=localhost TESSERA_WEBAUTHN_ORIGINS="http://localhost:$port" TESSERA_DBSC=true \
  TESSERA_LOGIN_MAX_FAILURES=1000000 TESSERA_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000 \
  TESSERA_LOGIN_MAX_FAILURES_GLOBAL=1000000 \
  "$binary" serve --listen "127.0.0.1:$port" --data "$data" 2>"$data/server.log" &
server_pid=$!

for _ in $(seq 100); do
  curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
  sleep 0.1
done

status=0
# The hooks log in as the admin (again after any 401: some operations end their session) and
# generate usernames by tessera's rule.
# It runs in the temporary directory, where it keeps its replay cache; no bytecode is written.
(cd "$data" && TESSERA_SCHEMATHESIS_BASE="$base" TESSERA_SCHEMATHESIS_PASSWORD="$password" \
  PYTHONPATH="$hooks_dir${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  PYTHONDONTWRITEBYTECODE=1 \
  "$st" run "$base/openapi.json" \
  --checks all \
  --max-examples "$max_examples" \
  ${ST_SEED:+--seed "$ST_SEED"} \
  --workers 1 \
  --no-color) \
  || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed; the server's log:" >&2
  tail -n 50 "$data/server.log" >&2
fi
exit "$status"
