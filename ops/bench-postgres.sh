#!/usr/bin/env bash
# PostgreSQL journal benchmark (figures, not pass/fail), release build, loopback only,
# on a throwaway server (ops/pg-throwaway: fsync=on, synchronous_commit=on):
#   1. durable end-to-end throughput of no-op tasks, PostgreSQL (fsync and batch
#      modes) against the SQLite journal in fsync mode, with 2 workers x 16 and x 64
#      slots, interleaved rounds on the same machine; the median of each;
#   2. recovery: N queued tasks (default 1,000,000, mixed priorities) in the
#      journal, a broker started on it: its own "journal recovered ... ms=" figure
#      and the time to its ready line;
#   3. takeover: an active and a standby broker on one journal holding those
#      tasks; kill -9 of the active: time until the standby logs "took over".
# Usage: ops/bench-postgres.sh [--tasks N] [--rounds R] [--recovery-tasks N] [--skip-build]
# Every process it starts (the PostgreSQL server included) is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=100000 ROUNDS=3 RECOVERY_TASKS=1000000 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) TASKS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --recovery-tasks) RECOVERY_TASKS=$2; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. ops/bench-lib.sh
BENCH_ON_EXIT='ops/pg-throwaway stop "$WORK/pg" >/dev/null 2>&1'
bench_init pg

pg=$(ops/pg-throwaway start "$WORK/pg")
URL=$(sed -n 's/^url=//p' <<<"$pg")
PGPASSWORD=$(sed -n 's/^password=//p' <<<"$pg")
export PGPASSWORD
echo "conveyor PostgreSQL journal bench: $(nproc) cores, $(uname -r), $("$(ops/pg-throwaway bindir)/postgres" --version), $(date -u +%FT%TZ)"

# --- 1. throughput: PostgreSQL against SQLite fsync ----------------------------------
declare -A RATES
for r in $(seq 1 "$ROUNDS"); do
  for mode in sqlite-fsync postgres-fsync postgres-batch sqlite-fsync-c64 postgres-fsync-c64; do
    case $mode in
      sqlite-fsync) args=(--durability fsync) ;;
      postgres-fsync) args=(--durability fsync "--broker-arg=--journal=$URL?schema=bench_${r}_fsync") ;;
      postgres-batch) args=(--durability batch "--broker-arg=--journal=$URL?schema=bench_${r}_batch") ;;
      # 2 workers x 64 slots instead of x 16: more tasks per commit.
      sqlite-fsync-c64) args=(--durability fsync --worker-concurrency 64) ;;
      postgres-fsync-c64) args=(--durability fsync --worker-concurrency 64 "--broker-arg=--journal=$URL?schema=bench_${r}_c64") ;;
    esac
    line=$("$BIN" bench --phase throughput --tasks "$TASKS" "${args[@]}" | grep 'throughput\[' || true)
    echo "round $r [$mode]: $line"
    rate=$(sed -n 's/.* = \([0-9]*\) tasks\/s.*/\1/p' <<<"$line")
    RATES[$mode]="${RATES[$mode]:-} ${rate:-0}"
  done
done
if [ "$ROUNDS" -gt 0 ]; then
  base=$(median "${RATES[sqlite-fsync]}")
  for mode in sqlite-fsync postgres-fsync postgres-batch sqlite-fsync-c64 postgres-fsync-c64; do
    m=$(median "${RATES[$mode]}")
    echo "throughput median [$mode]: $m tasks/s ($(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') x sqlite-fsync)"
  done
fi

psql_q() { "$(ops/pg-throwaway bindir)/psql" -X -q -v ON_ERROR_STOP=1 "$URL" "$@"; }

# --- 2. recovery of N queued tasks ------------------------------------------------
# The schema comes from a broker; the rows are written by SQL exactly as a broker
# writes queued tasks (ids ascending, mixed priorities), which is what recovery reads.
SCHEMA=recovery
start_broker schema --journal "$URL?schema=$SCHEMA" --log-level warning
kill -TERM "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
t0=$(date +%s.%N)
psql_q -c "SET search_path TO $SCHEMA" -c "
  INSERT INTO conveyor_tasks (id, seq, state, priority, type, attempt, max_attempts, failures, lost_deliveries, timeout_ms,
                              created_at, dead, backoff_ms, backoff_max_ms, payload)
  SELECT (1::bigint << 56) + i, i, 'queued', i % 4, 'bench', 0, 1, 0, 0, 3600000,
         (extract(epoch from now()) * 1000000)::bigint, false, 1000, 300000, convert_to('task-' || i, 'UTF8')
  FROM generate_series(1, $RECOVERY_TASKS) AS i" -c "ANALYZE conveyor_tasks"
echo "recovery: $RECOVERY_TASKS queued rows written in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; table $(psql_q -tAc "SELECT pg_size_pretty(pg_total_relation_size('$SCHEMA.conveyor_tasks'))")"
t0=$(date +%s.%N)
start_broker recover --journal "$URL?schema=$SCHEMA" --max-queue 2000000
ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
line=$(grep 'journal recovered' "$WORK/recover.err" | head -1)
echo "recovery: broker reports queued=$(sed -n 's/.*queued=\([0-9]*\).*/\1/p' <<<"$line") in ms=$(sed -n 's/.*ms=\([0-9]*\).*/\1/p' <<<"$line"); process start to ready line ${ready_s} s; RSS $(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$BROKER_PID/status") MiB"
ACTIVE=$BROKER_PID

# --- 3. takeover with those tasks queued --------------------------------------------
start_broker standby --journal "$URL?schema=$SCHEMA" --max-queue 2000000
grep -q 'standby:' "$WORK/standby.err" || { echo "the second broker is not a standby" >&2; exit 1; }
STANDBY=$BROKER_PID
t0=$(date +%s.%N)
kill -9 "$ACTIVE"
for _ in $(seq 1 1200); do grep -q 'took over' "$WORK/standby.err" && break; sleep 0.02; done
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
echo "takeover: kill -9 of the active to 'took over' ${took} s (lease TTL 5 s); $(grep 'journal recovered' "$WORK/standby.err" | sed -n 's/.*ms=\([0-9]*\).*/recovery in the standby ms=\1/p')"
