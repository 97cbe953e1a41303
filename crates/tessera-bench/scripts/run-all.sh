#!/usr/bin/env bash
# Re-takes every figure in docs/performance.md: the in-process benchmarks (criterion) and their
# ratio report, the HTTP load runs, the peer suite (when Node.js is installed) and the scale
# runs. Run it on a quiet machine (the load average is printed with every table).
#
#   bash crates/tessera-bench/scripts/run-all.sh
#   QUICK=1 bash crates/tessera-bench/scripts/run-all.sh     # smoke test: short runs, 10 k only
#   SIZES="10000 1000000 10000000" bash crates/tessera-bench/scripts/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export OUT="${OUT:-$CARGO_TARGET_DIR/bench-results}"
CPU="${SERVER_CPU:-0}"
mkdir -p "$OUT"
if [ -n "${QUICK:-}" ]; then
  CRITERION_ARGS=(--warm-up-time 0.2 --measurement-time 0.5)
  export DURATION="${DURATION:-2}" WARMUP="${WARMUP:-0}" SIZES="${SIZES:-10000}" LOOKUPS="${LOOKUPS:-10000}"
else
  CRITERION_ARGS=()
fi

echo "== in-process benchmarks (criterion, pinned to core $CPU; load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
cargo bench --locked -p tessera-bench --no-run >&2
rm -rf "$CARGO_TARGET_DIR/criterion"
taskset -c "$CPU" cargo bench --locked -p tessera-bench -- "${CRITERION_ARGS[@]}" >"$OUT/criterion.txt" 2>&1 ||
  { tail -20 "$OUT/criterion.txt" >&2; exit 1; }
cargo build --release --locked -p tessera-bench >&2
{
  echo "In-process, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), core $CPU;"
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  "$CARGO_TARGET_DIR/release/tessera-bench" report --dir "$CARGO_TARGET_DIR/criterion"
} | tee "$OUT/inprocess.md"
# First-seen verification beside raw Ed25519, call by call (criterion's sequential timing
# drifts with the machine's speed).
cargo build --release --locked -p tessera-bench --example verifier_paired >&2
taskset -c "$CPU" "$CARGO_TARGET_DIR/release/examples/verifier_paired" "${PAIRED_ROUNDS:-4000}" |
  tee "$OUT/verifier-paired.md"

echo >&2
bash crates/tessera-bench/scripts/http-load.sh
echo >&2
if command -v node >/dev/null && command -v npm >/dev/null; then
  bash crates/tessera-bench/scripts/peers.sh
else
  echo "== no Node.js: the peer suite (scripts/peers.sh) is skipped" >&2
fi
echo >&2
bash crates/tessera-bench/scripts/scale.sh
echo "== all results in $OUT" >&2
