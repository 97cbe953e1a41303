#!/usr/bin/env bash
# Scale runs: verify latency and store size with many live sessions in SQLite.
#
#   bash crates/tessera-bench/scripts/scale.sh                         # 10 k and 1 M sessions
#   SIZES="10000 1000000 10000000" bash crates/tessera-bench/scripts/scale.sh   # and 10 M
#
# For each size, `tessera-bench scale` seeds that many live sessions into a fresh SQLite
# database (directly into tessera's schema, in batched transactions), then times
# `Tessera::authenticate` on 10 000 sampled sessions in shuffled order (100 000 calls per
# series) on one core. Prints a Markdown table and writes it to $OUT/scale.md. Each database is
# deleted after its run; a size whose database would not fit on the disk is skipped.
set -euo pipefail
cd "$(dirname "$0")/../../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
SIZES="${SIZES:-10000 1000000}"
SAMPLES="${SAMPLES:-10000}"
LOOKUPS="${LOOKUPS:-100000}"
CPU="${CPU:-0}"
DIR="${SCALE_DIR:-${TMPDIR:-/var/tmp}/tessera-scale}"
OUT="${OUT:-$CARGO_TARGET_DIR/bench-results}"
BIN="$CARGO_TARGET_DIR/release/tessera-bench"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need jq || ! need taskset; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq util-linux >/dev/null
fi
cargo build --release --locked -p tessera-bench >&2
mkdir -p "$DIR" "$OUT"
trap 'rm -rf "$DIR"' EXIT

ROWS=()
BASE=""
for n in $SIZES; do
  need_kb=$((n * 450 / 1024 + 102400))
  free_kb=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
  if [ "$free_kb" -lt "$need_kb" ]; then
    echo "skipping $n sessions: ~$((need_kb / 1024)) MiB needed, $((free_kb / 1024)) MiB free" >&2
    ROWS+=("| $n | skipped: not enough disk | | | | | |")
    continue
  fi
  echo "== $n sessions (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  json=$(taskset -c "$CPU" "$BIN" scale --dir "$DIR" --sessions "$n" --samples "$SAMPLES" --lookups "$LOOKUPS")
  echo "   $json" >&2
  get() { jq -r "$1" <<<"$json"; }
  p50=$(get .opaque_verify_us.p50)
  [ -z "$BASE" ] && BASE=$p50
  ratio=$(awk -v a="$p50" -v b="$BASE" 'BEGIN { printf "%.2f×", a / b }')
  ROWS+=("| $n | $(get .db_bytes | awk '{ printf "%.1f MiB", $1 / 1048576 }') | $(get .bytes_per_session) | $(get .seed_s) s | $(get .store_lookup_us.p50) / $(get .store_lookup_us.p99) | $(get .opaque_verify_us.p50) / $(get .opaque_verify_us.p99) | $(get .jwt_verify_cached_us.p50) / $(get .jwt_verify_cached_us.p99) | $ratio |")
done

{
  echo "Scale runs, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), core $CPU,"
  echo "$SAMPLES sampled sessions, $LOOKUPS timed calls per series; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| live sessions | database | bytes/session | seeding | store lookup p50 / p99 (µs) | opaque verify p50 / p99 (µs) | JWT verify, seen before, p50 / p99 (µs) | opaque p50 vs smallest |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/scale.md"
