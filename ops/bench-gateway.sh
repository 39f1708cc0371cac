#!/usr/bin/env bash
# HTTP gateway benchmark (figures, not pass/fail): wrk against POST /api/tasks
# and GET /api/queue/stats, with a broker (memory only, a queue bound large
# enough never to fill) and the gateway on loopback. No worker: this measures
# the submission path. Release build; bounded runs.
#
# Usage: ops/bench-gateway.sh [DURATION] [CONNECTIONS] [THREADS]
#        (defaults 10s, 64, 2; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNECTIONS=${2:-64}
THREADS=${3:-2}
command -v wrk >/dev/null || { echo "bench-gateway: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
if [ -z "${CONVEYOR_BIN:-}" ]; then
  swift build -c release --product conveyor >&2
  CONVEYOR_BIN=.build/release/conveyor
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits (bounded) for a line containing $2 in file $1 and prints it.
wait_line() {
  for _ in $(seq 1 200); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
    sleep 0.05
  done
  echo "bench-gateway: timed out waiting for '$2' in $1" >&2
  cat "${1%.out}.err" >&2 || true
  return 1
}

"$CONVEYOR_BIN" broker --clients 'tcp://127.0.0.1:*' --workers 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' \
  --max-queue 2000000 --durability none --data-dir "$WORK/data" --log-level warning \
  >"$WORK/broker.out" 2>"$WORK/broker.err" &
PIDS+=($!)
line=$(wait_line "$WORK/broker.out" "conveyor broker ready")
CLIENTS=$(echo "$line" | sed -n 's/.*clients=\([^ ]*\).*/\1/p')
EVENTS=$(echo "$line" | sed -n 's/.*events=\([^ ]*\).*/\1/p')

"$CONVEYOR_BIN" gateway --host 127.0.0.1 --port 0 --broker "$CLIENTS" --events "$EVENTS" --log-level warning \
  >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
PIDS+=($!)
URL=$(wait_line "$WORK/gateway.out" "conveyor gateway ready" | awk '{print $4}')

cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"type":"bench","payload":"hello","priority":"high"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("answers other than 2xx/3xx: %d\n", summary.errors.status))
end
EOF

# Stats first, on an empty queue: the broker answers STATS in O(tasks) today (its
# dead-letter count scans every task), so after the POST run the figure below
# measures the broker rather than the gateway; both are shown.
echo "== GET /api/queue/stats (empty queue): $DURATION, $CONNECTIONS connections, $THREADS threads"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$URL/api/queue/stats"
echo "== warm-up (2s)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "$URL/api/tasks" >/dev/null
echo "== POST /api/tasks: $DURATION, $CONNECTIONS connections, $THREADS threads"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/post.lua" "$URL/api/tasks"
echo "== GET /api/queue/stats (after the POST run, large queue): 5s"
wrk -t"$THREADS" -c"$CONNECTIONS" -d5s --latency "$URL/api/queue/stats"
echo "== broker after the runs"
curl -s "$URL/api/queue/stats" | tr ',' '\n' | grep -E '"(queue_size|tasks_submitted|submissions_rejected)"' || true
