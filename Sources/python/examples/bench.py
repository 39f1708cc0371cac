#!/usr/bin/env python3
"""Conveyor (this package) against beanstalkd + greenstalk, side by side, in one run.

Both systems get the same load on the same machine, one after the other:

* 1 Python producer, 2 Python worker processes, no-op tasks;
* throughput: ``--tasks`` tasks, from the first submission until the last one has
  been handled (Conveyor: the broker's ``total_success``; beanstalkd: ``cmd-delete``);
* latency: tasks submitted at a fixed ``--rate`` for ``--seconds``; the producer
  stamps ``time.monotonic_ns()`` into the payload just before submitting, the
  handler reads the clock first thing (CLOCK_MONOTONIC is one clock for every
  process of the machine): p50/p99/max of submit → handler start. For Conveyor also
  submit → FINISHED as the producer sees it.

Conveyor: broker ``--durability none``; the producer uses ``submit_many`` (SUBMIT_BATCH)
with ``notify="none"`` for throughput and ``submit(notify="final")`` for latency;
the workers are ``conveyor.Worker(concurrency=4)`` (READY batch=4, TASK_BATCH,
DONE_BATCH). beanstalkd: started here on a free loopback port and killed by PID
afterwards; the producer calls ``put`` per job, each worker process loops
``reserve``/``delete`` with greenstalk (its usual Python client).

Every loop is bounded in count and time; every process started here is stopped.

    python3 Sources/python/examples/bench.py [--bin .build/release/conveyor] [--tasks 20000]
        [--rate 500] [--seconds 5] [--no-beanstalkd]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import conveyor  # noqa: E402

STAMP = b"L"  # payloads of the latency phase: b"L" + monotonic_ns at submission


# ----- worker processes ---------------------------------------------------------------


def conveyor_worker_main(endpoint: str, concurrency: int, out: str, inline: bool) -> None:
    lat: List[int] = []
    w = conveyor.Worker(endpoint, concurrency=concurrency, name=f"bench-{os.getpid()}")

    @w.handler("noop", inline=inline)
    def noop(task, ctx):
        now = time.monotonic_ns()
        p = task.payload
        if p[:1] == STAMP:
            lat.append(now - int(p[1:]))
        return b""

    w.run()  # until SIGTERM
    st = w.stats
    Path(out).write_text(f"#stats tasks={st['tasks']} task_batches={st['task_batches']} "
                         f"done_batches={st['done_batches']} succeeded={st['succeeded']}\n"
                         + "\n".join(map(str, lat)))


def beanstalk_worker_main(port: int, out: str, limit_s: float) -> None:
    import greenstalk

    lat: List[int] = []
    c = greenstalk.Client(("127.0.0.1", port), encoding=None)  # bodies as bytes
    stop = time.monotonic() + limit_s
    while time.monotonic() < stop:  # bounded in time; ends on the STOP job
        try:
            job = c.reserve(timeout=1)
        except greenstalk.TimedOutError:
            continue
        now = time.monotonic_ns()
        body = job.body
        c.delete(job)
        if body == b"STOP":
            break
        if body[:1] == STAMP:
            lat.append(now - int(body[1:]))
    c.close()
    Path(out).write_text("\n".join(map(str, lat)))


# ----- helpers -------------------------------------------------------------------------


def pct(sorted_values: List[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


def read_latencies(paths: List[str]) -> List[float]:
    ms: List[float] = []
    for p in paths:
        try:
            ms += [int(x) / 1e6 for x in Path(p).read_text().splitlines() if x and not x.startswith("#")]
        except OSError:
            pass
    return sorted(ms)


def read_worker_stats(paths: List[str]) -> str:
    tot: Dict[str, int] = {}
    for p in paths:
        try:
            first = Path(p).read_text().splitlines()[0]
        except (OSError, IndexError):
            continue
        if first.startswith("#stats"):
            for kv in first.split()[1:]:
                k, v = kv.split("=")
                tot[k] = tot.get(k, 0) + int(v)
    if not tot:
        return ""
    return (f"{tot['tasks']} tasks, {tot['task_batches']} TASK_BATCH, {tot['done_batches']} DONE_BATCH "
            f"for {tot['succeeded']} results (whole run, warm-up and latency phase included)")


def stop_all(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def cpu_seconds(pid: Optional[int] = None) -> float:
    """CPU time (user + system) of a process so far; ours when pid is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_snapshot(procs: Dict[str, List[subprocess.Popen]]) -> Dict[str, float]:
    snap = {name: sum(cpu_seconds(p.pid) for p in ps) for name, ps in procs.items()}
    snap["producer"] = cpu_seconds()
    return snap


def cpu_per_task(before: Dict[str, float], after: Dict[str, float], n: int) -> str:
    if not n:
        return ""
    return ", ".join(f"{k} {1e6 * (after[k] - before[k]) / n:.0f}" for k in before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe_binary(binary: str) -> str:
    try:
        v = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        v = "?"
    real = os.path.realpath(binary)
    build = "release" if "/release/" in real else "debug" if "/debug/" in real else "unknown build"
    return f"{real} ({build}, {v or 'no --version'})"


# ----- Conveyor -------------------------------------------------------------------------


def start_broker(binary: str, data: str) -> Tuple[subprocess.Popen, Dict[str, str]]:
    p = subprocess.Popen([binary, "broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*",
                          "--events", "tcp://127.0.0.1:*", "--durability", "none", "--data-dir", data,
                          "--max-running", "10000", "--max-queue", "10000000", "--log-level", "error"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    if not line.startswith("conveyor broker ready"):
        p.kill()
        raise SystemExit(f"broker did not start: {line!r}")
    return p, dict(kv.split("=", 1) for kv in line.split()[3:])


def wait_success(c: conveyor.Client, target: int, limit_s: float) -> Tuple[int, float]:
    """Poll STATS until total_success reaches target (or the bound): (count, time)."""
    deadline = time.monotonic() + limit_s
    while True:
        n = c.stats()["total_success"]
        now = time.monotonic()
        if n >= target or now > deadline:
            return n, now
        time.sleep(0.005)


def conveyor_throughput(c: conveyor.Client, n: int, limit_s: float, chunk: int) -> Tuple[int, float]:
    base = c.stats()["total_success"]
    t0 = time.monotonic()
    accepted = 0
    for i in range(0, n, chunk):
        if time.monotonic() - t0 > limit_s:
            break
        res = c.submit_many([("noop", b"")] * min(chunk, n - i), notify="none")
        accepted += sum(isinstance(r, conveyor.Submitted) for r in res)
    done, t1 = wait_success(c, base + accepted, limit_s)
    return done - base, t1 - t0


async def conveyor_latency(endpoint: str, rate: float, seconds: float) -> List[float]:
    """submit → FINISHED in ms, as the producer sees it (the handler's view is
    recorded by the workers)."""
    out: List[float] = []
    async with conveyor.AsyncClient(endpoint, timeout=30) as c:
        async def one() -> None:
            t = time.monotonic_ns()
            s = await c.submit("noop", STAMP + b"%d" % t, notify="final")
            await c.wait(s.task_id, timeout=10)
            out.append((time.monotonic_ns() - t) / 1e6)

        n = int(rate * seconds)
        t0 = time.monotonic() + 0.05
        pending = []
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(one()))
        await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), seconds + 30)
    return sorted(out)


def run_conveyor(a: argparse.Namespace, inline: bool) -> Dict[str, object]:
    data = tempfile.mkdtemp(prefix="conveyor-bench-")
    broker, eps = start_broker(a.bin, data)
    files = [os.path.join(data, f"lat-{i}.txt") for i in range(a.workers)]
    workers = [subprocess.Popen([sys.executable, __file__, "--conveyor-worker", eps["workers"], "--concurrency",
                                 str(a.concurrency), "--out", f, *(["--inline"] if inline else [])],
                                stdin=subprocess.DEVNULL) for f in files]
    res: Dict[str, object] = {}
    try:
        with conveyor.Client(eps["clients"], timeout=30) as c:
            deadline = time.monotonic() + 15
            while c.stats()["workers_connected"] < a.workers:
                if time.monotonic() > deadline:
                    raise SystemExit("workers did not register")
                time.sleep(0.05)
            conveyor_throughput(c, min(2000, a.tasks), 10, a.chunk)  # warm-up
            procs = {"broker": [broker], "workers": workers}
            before = cpu_snapshot(procs)
            done, dt = conveyor_throughput(c, a.tasks, a.max_seconds, a.chunk)
            res["cpu"] = cpu_per_task(before, cpu_snapshot(procs), done)
            res["throughput"] = done / dt
            res["done"] = done
        res["finished_ms"] = asyncio.run(conveyor_latency(eps["clients"], a.rate, a.seconds))
    finally:
        stop_all(workers)
        stop_all([broker])
    res["start_ms"] = read_latencies(files)
    res["batches"] = read_worker_stats(files)
    shutil.rmtree(data, ignore_errors=True)
    return res


# ----- beanstalkd -----------------------------------------------------------------------


def run_beanstalkd(a: argparse.Namespace) -> Dict[str, object]:
    import greenstalk

    exe = shutil.which("beanstalkd")
    if exe is None:
        raise SystemExit("beanstalkd is not installed (apt-get install -y beanstalkd), or pass --no-beanstalkd")
    port = free_port()
    server = subprocess.Popen([exe, "-l", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp(prefix="beanstalk-bench-")
    files = [os.path.join(tmp, f"lat-{i}.txt") for i in range(a.workers)]
    workers: List[subprocess.Popen] = []
    res: Dict[str, object] = {}
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = greenstalk.Client(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("beanstalkd did not start")
                time.sleep(0.05)
        limit = 3 * a.max_seconds + a.seconds + 60
        workers = [subprocess.Popen([sys.executable, __file__, "--beanstalk-worker", str(port), "--out", f,
                                     "--limit", str(limit)], stdin=subprocess.DEVNULL) for f in files]

        def deletes() -> int:
            return int(c.stats()["cmd-delete"])

        def throughput(n: int) -> Tuple[int, float]:
            base = deletes()
            t0 = time.monotonic()
            put = 0
            for _ in range(n):
                if time.monotonic() - t0 > a.max_seconds:
                    break
                c.put(b"x")
                put += 1
            end = time.monotonic() + a.max_seconds
            while deletes() < base + put and time.monotonic() < end:
                time.sleep(0.005)
            return deletes() - base, time.monotonic() - t0

        time.sleep(0.2)  # the workers connect and block in reserve (no event to await in beanstalkd)
        throughput(min(2000, a.tasks))  # warm-up
        procs = {"beanstalkd": [server], "workers": workers}
        before = cpu_snapshot(procs)
        done, dt = throughput(a.tasks)
        res["cpu"] = cpu_per_task(before, cpu_snapshot(procs), done)
        res["throughput"] = done / dt
        res["done"] = done
        n = int(a.rate * a.seconds)
        t0 = time.monotonic() + 0.05
        for i in range(n):
            delay = t0 + i / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c.put(STAMP + b"%d" % time.monotonic_ns())
        for _ in workers:
            c.put(b"STOP", priority=2**31)  # after everything else (a larger number is less urgent)
        for p in workers:
            p.wait(30)
        c.close()
    finally:
        stop_all(workers)
        stop_all([server])
    res["start_ms"] = read_latencies(files)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


# ----- report ---------------------------------------------------------------------------


def row(name: str, r: Optional[Dict[str, object]]) -> str:
    if r is None:
        return f"| {name} | – | – | – | – | – |"
    s = r["start_ms"]
    f = r.get("finished_ms")
    fin = f"{pct(f, .5):.2f} / {pct(f, .99):.2f}" if f else "n/a"
    return (f"| {name} | {r['throughput']:,.0f} ({r['done']}) | {pct(s, .5):.3f} | {pct(s, .99):.3f} | "
            f"{s[-1] if s else float('nan'):.2f} | {fin} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = HERE.parents[2]
    default_bin = os.environ.get("CONVEYOR_BIN") or next(
        (str(p) for p in (repo / ".build" / "release" / "conveyor", repo / ".build" / "debug" / "conveyor")
         if p.exists()), "conveyor")
    ap.add_argument("--bin", default=default_bin, help="broker binary (default: $CONVEYOR_BIN, else the release "
                                                       "build, else the debug build)")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=5000, help="items per submit_many call (1000 per SUBMIT_BATCH)")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="bound of each throughput round")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the latency phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4, help="capacity of each Conveyor worker process")
    ap.add_argument("--no-beanstalkd", action="store_true", help="measure Conveyor only")
    ap.add_argument("--modes", default="threads,inline",
                    help="Conveyor handler modes to measure: threads (the default Worker), inline "
                         "(@w.handler(..., inline=True)); comma-separated")
    ap.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--conveyor-worker", metavar="ENDPOINT", help=argparse.SUPPRESS)
    ap.add_argument("--beanstalk-worker", metavar="PORT", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, default=120.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.conveyor_worker:
        return conveyor_worker_main(a.conveyor_worker, a.concurrency, a.out, a.inline)
    if a.beanstalk_worker:
        return beanstalk_worker_main(a.beanstalk_worker, a.out, a.limit)

    print(f"broker: {describe_binary(a.bin)}; {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    cvs = {m: run_conveyor(a, m == "inline") for m in modes}
    bs = None if a.no_beanstalkd else run_beanstalkd(a)
    print()
    print(f"{a.tasks} no-op tasks, 1 producer, {a.workers} worker processes; latency at {a.rate:g} tasks/s "
          f"for {a.seconds:g} s")
    print()
    print("| system | tasks/s (handled) | submit→handler p50 ms | p99 ms | max ms | submit→FINISHED p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    label = {"threads": "handler threads", "inline": "inline=True"}
    for m, cv in cvs.items():
        print(row(f"Conveyor (submit_many; {a.workers}× Worker(concurrency={a.concurrency}), "
                  f"{label.get(m, m)})", cv))
    if bs is not None:
        print(row(f"beanstalkd + greenstalk (put; {a.workers}× reserve/delete)", bs))
        print()
        for m, cv in cvs.items():
            print(f"Conveyor ({label.get(m, m)}) / beanstalkd throughput: {cv['throughput'] / bs['throughput']:.2f}×")
    print()
    for m, cv in cvs.items():
        print(f"CPU µs per task in the throughput phase — Conveyor ({label.get(m, m)}): {cv['cpu']}")
        print(f"    workers: {cv['batches']}")
    if bs is not None:
        print(f"CPU µs per task in the throughput phase — beanstalkd: {bs['cpu']}")


if __name__ == "__main__":
    main()
