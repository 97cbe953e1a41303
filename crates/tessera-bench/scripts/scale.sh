#!/usr/bin/env bash
# Scale runs: verify latency and store size with many live sessions in SQLite, PostgreSQL and
# Redis.
#
#   bash crates/tessera-bench/scripts/scale.sh                         # 10 k and 1 M sessions
#   SIZES="10000 1000000 10000000" bash crates/tessera-bench/scripts/scale.sh   # and 10 M
#   STORES="postgres redis" bash crates/tessera-bench/scripts/scale.sh
#
# STORES defaults to "sqlite", plus "postgres" when TESSERA_TEST_DATABASE_URL is set and "redis"
# when TESSERA_TEST_REDIS_URL is set (the URLs the runs use). For each store and size,
# `tessera-bench scale` seeds that many live sessions straight into the store's own layout (a
# fresh SQLite database; a PostgreSQL schema of its own; Redis keys under a prefix of their own,
# with users and keys in SQLite), then times `Tessera::authenticate` on 10 000 sampled sessions
# in shuffled order (100 000 calls per series) on one core. Prints one Markdown table per store
# and writes them to $OUT/scale.md. Each run's database, schema or keys are removed after it; a
# size whose data would not fit (disk for SQLite and PostgreSQL, memory for Redis) is skipped.
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
DEFAULT_STORES="sqlite"
[ -n "${TESSERA_TEST_DATABASE_URL:-}" ] && DEFAULT_STORES="$DEFAULT_STORES postgres"
[ -n "${TESSERA_TEST_REDIS_URL:-}" ] && DEFAULT_STORES="$DEFAULT_STORES redis"
STORES="${STORES:-$DEFAULT_STORES}"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need jq || ! need taskset; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq util-linux >/dev/null
fi
cargo build --release --locked -p tessera-bench >&2
mkdir -p "$DIR" "$OUT"
trap 'rm -rf "$DIR"' EXIT

# KiB free where PostgreSQL keeps its data (its data directory when psql can ask, else $DIR's
# file system).
pg_free_kb() {
  local where="$DIR"
  if need psql; then
    where=$(psql "$TESSERA_TEST_DATABASE_URL" -Atqc 'SHOW data_directory' 2>/dev/null || echo "$DIR")
    [ -d "$where" ] || where="$DIR"
  fi
  df -Pk "$where" | awk 'NR == 2 { print $4 }'
}

# KiB Redis may still take: the lower of this machine's available memory (Redis is assumed
# local) and the room left under its maxmemory, when redis-cli can ask.
redis_free_kb() {
  local avail used max
  avail=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
  if need redis-cli; then
    max=$(redis-cli -u "$TESSERA_TEST_REDIS_URL" config get maxmemory 2>/dev/null | sed -n 2p)
    used=$(redis-cli -u "$TESSERA_TEST_REDIS_URL" info memory 2>/dev/null |
      awk -F: '/^used_memory:/ { print int($2) }')
    if [ -n "$max" ] && [ "$max" != 0 ] && [ -n "$used" ]; then
      local room=$(((max - used) / 1024))
      [ "$room" -lt "$avail" ] && avail=$room
    fi
  fi
  echo "$avail"
}

TABLES=()
for store in $STORES; do
  case "$store" in
    sqlite)
      title="SQLite"; size_col="database"; unit="disk"
      per_session=450 ;;
    postgres)
      title="PostgreSQL (bytes: pg_total_relation_size of the run's schema's tables, after VACUUM ANALYZE)"
      size_col="tables"; unit="disk"
      # Table and indexes, the WAL written while seeding, and the vacuum.
      per_session=1100 ;;
    redis)
      title="Redis (bytes: used_memory from INFO memory; users and keys in SQLite)"
      size_col="used_memory"; unit="memory"
      # Measured ~1340: the user agent is longer than hash-max-listpack-value, so each
      # session is a real hash table.
      per_session=1600 ;;
    *) echo "unknown store $store (sqlite, postgres or redis)" >&2; exit 2 ;;
  esac
  ROWS=()
  BASE=""
  for n in $SIZES; do
    need_kb=$((n * per_session / 1024 + 102400))
    case "$store" in
      sqlite) free_kb=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }') ;;
      postgres) need_kb=$((need_kb + 2097152)); free_kb=$(pg_free_kb) ;;
      redis) free_kb=$(redis_free_kb) ;;
    esac
    if [ "$free_kb" -lt "$need_kb" ]; then
      echo "skipping $store at $n sessions: ~$((need_kb / 1024)) MiB of $unit needed, $((free_kb / 1024)) MiB free" >&2
      ROWS+=("| $n | skipped: not enough $unit (~$((need_kb / 1024)) MiB needed, $((free_kb / 1024)) MiB free) | | | | | | | | |")
      continue
    fi
    echo "== $store, $n sessions (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    json=$(taskset -c "$CPU" "$BIN" scale --store "$store" --dir "$DIR" --sessions "$n" --samples "$SAMPLES" --lookups "$LOOKUPS")
    echo "   $json" >&2
    get() { jq -r "$1" <<<"$json"; }
    p50=$(get .opaque_verify_us.p50)
    [ -z "$BASE" ] && BASE=$p50
    ratio=$(awk -v a="$p50" -v b="$BASE" 'BEGIN { printf "%.2f×", a / b }')
    # The raw round trip (PostgreSQL, Redis: the same statement or script sent straight by the
    # same client library) and the opaque verify against it; an embedded store has none.
    raw=$(get '.raw_lookup_us.p50 // empty')
    if [ -n "$raw" ]; then
      raw_cell="$raw / $(get .raw_lookup_us.p99)"
      over_raw=$(awk -v a="$p50" -v b="$raw" 'BEGIN { printf "%.2f×", a / b }')
    else
      raw_cell="—"
      over_raw="—"
    fi
    ROWS+=("| $n | $(get .db_bytes | awk '{ printf "%.1f MiB", $1 / 1048576 }') | $(get .bytes_per_session) | $(get .seed_s) s | $raw_cell | $(get .store_lookup_us.p50) / $(get .store_lookup_us.p99) | $(get .opaque_verify_us.p50) / $(get .opaque_verify_us.p99) | $over_raw | $(get .jwt_verify_cached_us.p50) / $(get .jwt_verify_cached_us.p99) | $ratio |")
  done
  table=""
  # A single SQLite table is printed as it always was, without a title.
  [ "$STORES" != sqlite ] && table+="$title"$'\n\n'
  table+="| live sessions | $size_col | bytes/session | seeding | raw round trip p50 / p99 (µs) | store lookup p50 / p99 (µs) | opaque verify p50 / p99 (µs) | opaque p50 vs raw | JWT verify, seen before, p50 / p99 (µs) | opaque p50 vs smallest |"$'\n'
  table+="|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"$'\n'
  table+=$(printf '%s\n' "${ROWS[@]}")
  TABLES+=("$table")
done

{
  echo "Scale runs, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), core $CPU,"
  echo "$SAMPLES sampled sessions, $LOOKUPS timed calls per series; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  for table in "${TABLES[@]}"; do
    echo
    echo "$table"
  done
} | tee "$OUT/scale.md"
