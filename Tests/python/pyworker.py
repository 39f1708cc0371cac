#!/usr/bin/env python3
"""A conveyor.Worker in its own process, for the tests (kill -9, SIGTERM drain).

Prints ``ready`` once registered, ``start TASK_ID ATTEMPT`` when a handler starts and
``end TASK_ID ATTEMPT`` when it returns, flushed, on stdout.

Handlers:
  echo        returns the payload
  slow        sleeps float(payload) seconds (or until cancelled), returns "slow:NAME"
  first-hangs attempt 1 blocks until cancelled (at most 30 s); later attempts return
              "done by NAME attempt N" at once
"""
import argparse
import sys
import threading
import time

import conveyor


_out = threading.Lock()


def say(*words):
    with _out:  # one whole line at a time: handler threads and the main thread both print
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--grace", type=float, default=5.0)
    a = ap.parse_args()
    w = conveyor.Worker(a.endpoint, name=a.name, concurrency=a.concurrency,
                        heartbeat_interval=a.heartbeat_ms / 1000, grace=a.grace)

    @w.handler("echo")
    def echo(task, ctx):
        return task.payload

    @w.handler("slow")
    def slow(task, ctx):
        say("start", task.id, task.attempt)
        ctx.cancelled.wait(float(task.payload or b"1"))
        say("end", task.id, task.attempt)
        return "slow:" + a.name

    @w.handler("first-hangs")
    def first_hangs(task, ctx):
        say("start", task.id, task.attempt)
        if task.attempt == 1:
            ctx.cancelled.wait(30)
        say("end", task.id, task.attempt)
        return f"done by {a.name} attempt {task.attempt}"

    def announce():
        if w.registered.wait(30):
            say("ready")

    threading.Thread(target=announce, daemon=True).start()
    w.run()  # SIGTERM/SIGINT: drain
    say("stopped", w.stats["returned"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
