#!/usr/bin/env bash
# Durability benchmark (figures, not pass/fail), release build, loopback only:
#   1. end-to-end throughput in each durability mode (none, batch, fsync), in
#      interleaved rounds because a shared machine is noisy; the median of each;
#   2. recovery: a journal holding N queued tasks (default 1,000,000, mixed
#      priorities), the broker killed -9 and restarted: the broker's own
#      "journal recovered ... ms=" figure, time to its ready line, RSS, file size;
#   3. disk under steady load: journal size sampled while tasks flow with a
#      short result TTL (expired results are deleted, space is reused).
# Usage: ops/bench-durability.sh [--tasks N] [--rounds R] [--recovery-tasks N]
#                                [--disk-seconds S] [--disk-rate N] [--skip-build]
# Every process it starts is killed by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=100000 ROUNDS=3 RECOVERY_TASKS=1000000 DISK_SECONDS=90 DISK_RATE=5000 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) TASKS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --recovery-tasks) RECOVERY_TASKS=$2; shift 2 ;;
    --disk-seconds) DISK_SECONDS=$2; shift 2 ;;
    --disk-rate) DISK_RATE=$2; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. ops/bench-lib.sh
bench_init durability

echo "conveyor durability bench: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ)"

# --- 1. throughput per mode ---------------------------------------------------
declare -A RATES
for r in $(seq 1 "$ROUNDS"); do
  for mode in none batch fsync; do
    line=$("$BIN" bench --phase throughput --durability "$mode" --tasks "$TASKS" | grep 'throughput\[' || true)
    echo "round $r: $line"
    rate=$(sed -n 's/.* = \([0-9]*\) tasks\/s.*/\1/p' <<<"$line")
    RATES[$mode]="${RATES[$mode]:-} ${rate:-0}"
  done
done
if [ "$ROUNDS" -gt 0 ]; then
  none=$(median "${RATES[none]}")
  for mode in none batch fsync; do
    m=$(median "${RATES[$mode]}")
    echo "throughput median [$mode]: $m tasks/s ($(awk -v a="$m" -v b="$none" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') x none)"
  done
fi

# --- helpers ------------------------------------------------------------------
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
journal_bytes() { du -cb "$1"/conveyor-journal.sqlite* 2>/dev/null | tail -1 | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# --- 2. recovery of N queued tasks ----------------------------------------------
DATA="$WORK/recovery-data"
CHUNK=100000
awk -v n="$CHUNK" 'BEGIN { for (i = 0; i < n; i++) printf "{\"type\":\"bench\",\"priority\":%d,\"payload\":\"task-%d\"}\n", i % 4, i }' >"$WORK/chunk.jsonl"
start_broker fill --durability batch --data-dir "$DATA" --max-queue 2000000 --log-level warning
t0=$(date +%s.%N)
for ((done = 0; done < RECOVERY_TASKS; done += CHUNK)); do
  n=$(( RECOVERY_TASKS - done < CHUNK ? RECOVERY_TASKS - done : CHUNK ))
  head -n "$n" "$WORK/chunk.jsonl" | "$BIN" submit --broker "$CLIENTS" --batch - >/dev/null
done
queued=$("$BIN" stats --broker "$CLIENTS" --json | json_field queue_size)
fill_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "recovery: $queued tasks queued through the CLI in $fill_s s (durability batch)"
kill -9 "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
echo "recovery: journal on disk after kill -9: $(mib "$(journal_bytes "$DATA")")"

t0=$(date +%s.%N)
start_broker recover --durability fsync --data-dir "$DATA" --max-queue 2000000 --log-level info
ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
line=$(grep 'journal recovered' "$WORK/recover.err" | head -1)
ms=$(sed -n 's/.*ms=\([0-9]*\).*/\1/p' <<<"$line")
q=$(sed -n 's/.*queued=\([0-9]*\).*/\1/p' <<<"$line")
echo "recovery: broker reports queued=$q in ms=$ms; process start to ready line ${ready_s} s; broker RSS $(rss_mib "$BROKER_PID") MiB"
again=$("$BIN" stats --broker "$CLIENTS" --json | json_field queue_size)
echo "recovery: STATS queue_size after restart: $again"
t0=$(date +%s.%N)
kill -TERM "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
echo "recovery: SIGTERM to exit $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s; journal $(mib "$(journal_bytes "$DATA")")"

# --- 3. disk under steady load ----------------------------------------------------
# A fixed rate (DISK_RATE tasks/s, below what the workers sustain, so nothing
# piles up in the queue) with a 10 s result TTL: the journal should reach a
# plateau of about rate x TTL results and stay there while millions of tasks
# go through it. (Finished tasks beyond the broker's in-memory cap wait for
# the once-a-minute compaction, so a rate above 10,000/s plateaus higher.)
if [ "$DISK_SECONDS" -gt 0 ]; then
  DATA="$WORK/disk-data"
  start_broker disk --durability fsync --data-dir "$DATA" --max-queue 2000000 --max-running 64 --result-ttl 10 --log-level warning
  for i in 1 2; do
    "$BIN" worker --broker "$WORKERS" --name "disk-$i" --builtin noop --concurrency 16 --log-level warning >/dev/null 2>&1 &
    PIDS+=("$!")
  done
  head -n "$DISK_RATE" "$WORK/chunk.jsonl" >"$WORK/second.jsonl"
  start=$(date +%s)
  total=0 sizes=""
  for ((s = 0; s < DISK_SECONDS; s++)); do
    "$BIN" submit --broker "$CLIENTS" --batch "$WORK/second.jsonl" >/dev/null || true
    total=$((total + DISK_RATE))
    if (( s % 10 == 9 )); then sizes="$sizes $(( $(journal_bytes "$DATA") / 1024 ))"; fi
    # Pace to one batch per second.
    while [ "$(date +%s)" -lt $((start + s + 1)) ]; do sleep 0.05; done
  done
  backlog=$("$BIN" stats --broker "$CLIENTS" --json | json_field queue_size)
  echo "disk: $total tasks in ${DISK_SECONDS} s ($DISK_RATE/s, result TTL 10 s, queue at the end $backlog); journal KiB every 10 s:$sizes"
fi
