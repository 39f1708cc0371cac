# Shared by the ops/bench-*.sh scripts (sourced, not run): the release binary,
# a work directory removed on exit with every process started (by its PID), the
# median of interleaved rounds, and a broker started and waited for.
#
#   bench_init NAME   after option parsing (BUILD=0 for --skip-build): sets BIN,
#                     WORK, PIDS; BENCH_ON_EXIT (a command) runs at exit first.

bench_init() {
  local name=$1
  SCRATCH_PATH=${CONVEYOR_SCRATCH_PATH:-.build}
  if [ "${BUILD:-1}" = 1 ]; then
    swift build -c release --scratch-path "$SCRATCH_PATH" --product conveyor >&2
  fi
  BIN=${CONVEYOR_BIN:-$SCRATCH_PATH/release/conveyor}
  [ -x "$BIN" ] || { echo "no conveyor binary at $BIN" >&2; exit 1; }
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-bench-$name.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_ON_EXIT:-}" ]; then eval "$BENCH_ON_EXIT" || true; fi
  rm -rf "$WORK"
}

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_broker NAME ARGS... : starts a broker on ephemeral ports, waits (at most
# 60 s) for its ready line, sets CLIENTS, WORKERS and BROKER_PID; its stdout and
# stderr are in $WORK/NAME.out and .err.
start_broker() {
  local name=$1; shift
  "$BIN" broker --clients 'tcp://127.0.0.1:*' --workers 'tcp://127.0.0.1:*' --events 'tcp://127.0.0.1:*' "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  for _ in $(seq 1 1200); do
    grep -q 'conveyor broker ready' "$WORK/$name.out" 2>/dev/null && break
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; exit 1; }
    sleep 0.05
  done
  local ready
  ready=$(grep 'conveyor broker ready' "$WORK/$name.out") || { echo "broker $name not ready" >&2; exit 1; }
  CLIENTS=$(sed -n 's/.*clients=\([^ ]*\).*/\1/p' <<<"$ready")
  WORKERS=$(sed -n 's/.*workers=\([^ ]*\).*/\1/p' <<<"$ready")
}
