# Sourced by http-load.sh and peers.sh: the load tools, a work directory whose servers are
# stopped (and which is removed) on exit, free loopback ports, waiting for a server, and the
# wrk script that prints one RESULT line (requests, seconds, p50 µs, p99 µs, errors).

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need jq || ! need curl || ! need taskset; then
  echo "== installing wrk, jq, curl (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk jq curl util-linux >/dev/null
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/tessera-load.XXXXXX")"
PIDS=()  # every server started; add each one's PID
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The first port from $1 up that nothing listens on.
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

# Waits until URL answers at all (any HTTP status), at most 15 s.
wait_up() {
  for _ in $(seq 1 150); do
    curl -s -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server at $1 did not come up" >&2
  return 1
}

cat >"$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.6f %d %d %d\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
