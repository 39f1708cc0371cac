#!/usr/bin/env python3
"""Throughput and latency of the Python package end to end.

Starts a broker (``--durability none``) and two worker processes of this package
(no-op handler), then, with one AsyncClient producer:

1. throughput: ``--tasks`` no-op tasks submitted pipelined (at most ``--window``
   outstanding), tasks/s from the first SUBMIT to the last FINISHED;
2. latency: tasks submitted at a fixed ``--rate`` per second for ``--seconds``;
   p50/p90/p99/max of submit-to-FINISHED as the client sees it.

Every phase is bounded in count and time; all processes are stopped at the end.

    python3 Sources/python/examples/bench.py [--bin .build/release/conveyor] [--tasks 20000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import conveyor  # noqa: E402


def worker_main(endpoint: str, concurrency: int) -> None:
    w = conveyor.Worker(endpoint, concurrency=concurrency, name=f"bench-{os.getpid()}")

    @w.handler("noop")
    def noop(task, ctx):
        return b""

    w.run()


def start_broker(binary: str, data: str) -> tuple:
    p = subprocess.Popen([binary, "broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*",
                          "--events", "tcp://127.0.0.1:*", "--durability", "none", "--data-dir", data,
                          "--max-running", "10000", "--max-queue", "10000000", "--log-level", "error"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    if not line.startswith("conveyor broker ready"):
        p.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    eps = dict(kv.split("=", 1) for kv in line.split()[3:])
    return p, eps


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def throughput(c: conveyor.AsyncClient, n: int, window: int, limit_s: float, keys: bool) -> tuple:
    sem = asyncio.Semaphore(window)
    done = 0
    deadline = time.monotonic() + limit_s

    async def one() -> None:
        nonlocal done
        try:
            t = await c.submit("noop", b"", idempotency_key=None if keys else False)
            await c.wait(t.task_id, timeout=max(0.1, deadline - time.monotonic()))
            done += 1
        finally:
            sem.release()

    t0 = time.monotonic()
    tasks = []
    for _ in range(n):
        await sem.acquire()
        if time.monotonic() > deadline:
            sem.release()
            break
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks, return_exceptions=True)
    return done, time.monotonic() - t0


async def latency(c: conveyor.AsyncClient, rate: float, seconds: float) -> list:
    lat = []
    n = int(rate * seconds)

    async def one(at: float) -> None:
        t = await c.submit("noop", b"")
        await c.wait(t.task_id, timeout=10)
        lat.append(time.monotonic() - at)

    t0 = time.monotonic() + 0.05
    tasks = []
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(time.monotonic())))
    await asyncio.gather(*tasks, return_exceptions=True)
    return sorted(lat)


async def bench(a, eps) -> None:
    async with conveyor.AsyncClient(eps["clients"], timeout=30) as c:
        deadline = time.monotonic() + 15
        while (await c.stats())["workers_connected"] < a.workers:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not register")
            await asyncio.sleep(0.05)
        await throughput(c, min(2000, a.tasks), a.window, 10, True)  # warm-up
        for keys in (True, False):
            done, dt = await throughput(c, a.tasks, a.window, a.max_seconds, keys)
            label = "automatic idempotency keys" if keys else "no idempotency keys"
            print(f"throughput ({label}): {done} tasks in {dt:.2f} s = {done / dt:,.0f} tasks/s "
                  f"(1 producer, {a.workers} worker processes x concurrency {a.concurrency})", flush=True)
        lat = await latency(c, a.rate, a.seconds)
        ms = [x * 1000 for x in lat]
        print(f"latency at {a.rate:g} tasks/s for {a.seconds:g} s ({len(ms)} tasks): p50 {pct(ms, .5):.2f} ms, "
              f"p90 {pct(ms, .9):.2f} ms, p99 {pct(ms, .99):.2f} ms, max {ms[-1]:.2f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = HERE.parents[2]
    ap.add_argument("--bin", default=os.environ.get("CONVEYOR_BIN") or str(repo / ".build" / "debug" / "conveyor"))
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--window", type=int, default=500, help="outstanding tasks in the throughput phase")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="bound of each throughput round")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="capacity of each worker process")
    ap.add_argument("--worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.worker, a.concurrency)

    data = tempfile.mkdtemp(prefix="conveyor-bench-")
    broker, eps = start_broker(a.bin, data)
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", eps["workers"], "--concurrency",
                                 str(a.concurrency)], stdin=subprocess.DEVNULL) for _ in range(a.workers)]
    try:
        asyncio.run(bench(a, eps))
    finally:
        for p in [*workers, broker]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*workers, broker]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


if __name__ == "__main__":
    main()
