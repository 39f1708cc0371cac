#!/usr/bin/env python3
"""Soak test: a broker under mixed, hostile load for N minutes (not part of the suite).

    python3 ops/soak.py --bin .build/release/conveyor --minutes 10

What it does, all on loopback, every loop bounded by the deadline:
  * one producer submits keyed tasks at all four priorities (resubmitting a key until
    it is answered, as a careful client does), and junk-typed tasks it cancels at once;
  * three `conveyor worker --builtin sleep:…` processes, one killed with SIGKILL and
    restarted at random every few seconds;
  * a hostile worker that RETURNs every `storm` task it gets (the broker must
    dead-letter them at --max-returns) and sprays malformed frames on both endpoints;
  * the broker itself is restarted every --restart-every seconds, alternating
    SIGTERM and SIGKILL, on the same journal and ports.

At the end the producer stops, the queue drains, and every acknowledged task is
looked up. It prints tasks acknowledged, completed (in a final state), lost (must be
0), duplicated finals (final events seen twice for one task; must be 0), and the
broker's RSS over time. Exit status 1 if anything was lost or duplicated.
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources", "python"))
import zmq  # noqa: E402
import conveyor  # noqa: E402

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix="conveyor-soak-")
        ports = [free_port() for _ in range(3)]
        self.clients, self.workers, self.events = (f"tcp://127.0.0.1:{p}" for p in ports)
        self.deadline = time.monotonic() + args.minutes * 60
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.broker = None
        self.worker_procs = {}
        self.acked = {}        # key -> task id
        self.unconfirmed = {}  # task id -> key: acknowledged, not yet seen in a final state
        self.confirmed = {}    # final state -> count
        self.junk = 0
        self.storm = []
        self.finals = {}       # task id -> final events seen
        self.rss = []          # (seconds, KiB)
        self.restarts = 0
        self.kills = 0
        self.malformed_sent = 0
        self.returns_sent = 0
        self.t0 = time.monotonic()

    # -- processes (started here, stopped here, by PID) -------------------------

    def start_broker(self):
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.broker = subprocess.Popen(
            [self.args.bin, "broker", "--clients", self.clients, "--workers", self.workers, "--events", self.events,
             "--data-dir", os.path.join(self.dir, "data"), "--max-queue", "100000", "--max-running", "12",
             "--max-returns", "20", "--heartbeat-interval", "500", "--result-ttl", str(self.args.result_ttl)],
            stdout=log, stderr=log)
        c = conveyor.Client(self.clients, timeout=15)
        try:
            c.stats()
        finally:
            c.close()

    def start_worker(self, i):
        log = open(os.path.join(self.dir, f"worker-{i}.log"), "ab")
        self.worker_procs[i] = subprocess.Popen(
            [self.args.bin, "worker", "--broker", self.workers, "--name", f"soak-{i}", "--concurrency", "4",
             "--types", "work", "--builtin", "sleep:15", "--heartbeat-interval", "500"],
            stdout=log, stderr=log)

    def stop_all(self):
        for p in list(self.worker_procs.values()) + [self.broker]:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(self.worker_procs.values()) + [self.broker]:
            if p:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # -- load ------------------------------------------------------------------

    def producer(self):
        c = conveyor.Client(self.clients, timeout=5)
        n = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            n += 1
            key = f"soak-{self.args.seed}-{n}"
            roll = self.rng.random()
            while not self.stop.is_set():
                try:
                    if roll < 0.05:   # junk type, cancelled at once
                        s = c.submit(f"junk-{n}-{self.rng.randrange(1 << 30)}", b"x", idempotency_key=key, notify="none")
                        try:
                            c.cancel(s.task_id)
                        except conveyor.Rejected:
                            pass
                        with self.lock:
                            self.acked[key] = s.task_id
                            self.unconfirmed[s.task_id] = key
                            self.junk += 1
                    elif roll < 0.06:  # goes to the hostile worker, which returns it
                        s = c.submit("storm", b"x", idempotency_key=key, notify="none")
                        with self.lock:
                            self.acked[key] = s.task_id
                            self.unconfirmed[s.task_id] = key
                            self.storm.append(s.task_id)
                    else:
                        s = c.submit("work", b"x", priority=self.rng.randrange(4), idempotency_key=key, notify="none",
                                     max_attempts=3)
                        with self.lock:
                            self.acked[key] = s.task_id
                            self.unconfirmed[s.task_id] = key
                    break
                except conveyor.QueueFull:
                    time.sleep(0.05)
                except conveyor.BrokerUnavailable:
                    time.sleep(0.2)  # same key again: never lost, never doubled
            time.sleep(1 / self.args.rate)
        c.close()

    def hostile(self):
        ctx = zmq.Context.instance()
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            w = ctx.socket(zmq.DEALER)
            w.setsockopt(zmq.LINGER, 0)
            w.connect(self.workers)
            w.send_multipart([b"CVYW01", b"READY", b"storm-worker", b"storm", b"4"])
            cl = ctx.socket(zmq.DEALER)
            cl.setsockopt(zmq.LINGER, 0)
            cl.connect(self.clients)
            end = time.monotonic() + 5
            while time.monotonic() < end and not self.stop.is_set():
                if w.poll(50):
                    m = w.recv_multipart()
                    if len(m) >= 4 and m[1] == b"TASK":
                        w.send_multipart([b"CVYW01", b"RETURN", m[2], m[3]])
                        self.returns_sent += 1
                    elif len(m) >= 2 and m[1] == b"DISCONNECT":
                        break
                    elif len(m) >= 2 and m[1] == b"HEARTBEAT":
                        w.send_multipart([b"CVYW01", b"HEARTBEAT"])
                for _ in range(5):
                    junk = [bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(12))) for _ in range(self.rng.randrange(1, 8))]
                    cl.send_multipart([b"CVYC01"] + junk)
                    self.malformed_sent += 1
            w.close()
            cl.close()

    def verifier(self):
        """Confirms acknowledged tasks as they reach a final state, before the
        result retention (--result-ttl) forgets them: memory stays at steady state."""
        c = conveyor.Client(self.clients, timeout=5)
        while not self.stop.is_set():
            with self.lock:
                batch = list(self.unconfirmed)[:2000]
            for tid in batch:
                try:
                    st = c.status(tid).state
                except conveyor.BrokerUnavailable:
                    break
                except conveyor.Rejected:
                    st = "not_found"
                if st in FINAL:
                    with self.lock:
                        self.unconfirmed.pop(tid, None)
                        self.confirmed[st] = self.confirmed.get(st, 0) + 1
            self.stop.wait(1)
        c.close()

    def events_listener(self):
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.connect(self.events)
        for t in (b"task.succeeded", b"task.failed", b"task.timed_out", b"task.cancelled"):
            sub.setsockopt(zmq.SUBSCRIBE, t)
        import json
        while not self.stop.is_set():
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                tid = json.loads(body).get("task_id")
                with self.lock:
                    self.finals[tid] = self.finals.get(tid, 0) + 1
        sub.close()

    def chaos(self):
        next_restart = time.monotonic() + self.args.restart_every
        clean = True
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            time.sleep(self.rng.uniform(2, 6))
            i = self.rng.randrange(3)
            self.worker_procs[i].kill()
            self.worker_procs[i].wait()
            self.kills += 1
            self.start_worker(i)
            if self.broker.poll() is None:
                try:
                    with open(f"/proc/{self.broker.pid}/status") as f:
                        kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
                    self.rss.append((int(time.monotonic() - self.t0), kib))
                except (OSError, StopIteration):
                    pass
            if time.monotonic() >= next_restart:
                self.broker.send_signal(signal.SIGTERM if clean else signal.SIGKILL)
                self.broker.wait()
                self.start_broker()
                self.restarts += 1
                clean = not clean
                next_restart = time.monotonic() + self.args.restart_every

    # -- verdict ---------------------------------------------------------------

    def run(self):
        self.start_broker()
        for i in range(3):
            self.start_worker(i)
        threads = [threading.Thread(target=f, daemon=True) for f in (self.producer, self.hostile, self.events_listener, self.chaos, self.verifier)]
        for t in threads:
            t.start()
        for t in (threads[0], threads[1], threads[3]):
            t.join()
        # Drain: everything acknowledged must reach a final state.
        c = conveyor.Client(self.clients, timeout=10)
        drain_end = time.monotonic() + 120
        while time.monotonic() < drain_end:
            st = c.stats()
            if st["queue_size"] == 0 and st["current_processing"] == 0 and st["delayed"] == 0:
                break
            time.sleep(0.5)
        self.stop.set()
        threads[4].join(timeout=60)
        lost = 0
        states = dict(self.confirmed)
        for tid in list(self.unconfirmed):
            try:
                s = c.status(tid).state
            except conveyor.Rejected:
                s = "not_found"
            states[s] = states.get(s, 0) + 1
            if s not in FINAL:
                lost += 1
        completed = sum(n for st, n in states.items() if st in FINAL)
        stats = c.stats()
        c.close()
        threads[2].join(timeout=5)
        dup = sum(1 for n in self.finals.values() if n > 1)
        self.stop_all()
        print(f"soak: {self.args.minutes} min, seed {self.args.seed}, journal in {self.dir}")
        print(f"  tasks acknowledged   {len(self.acked)} ({self.junk} junk-typed and cancelled, {len(self.storm)} for the RETURN storm)")
        print(f"  completed            {completed}   by state: {dict(sorted(states.items()))}")
        print(f"  lost                 {lost}")
        print(f"  duplicated finals    {dup}   (final events seen: {sum(self.finals.values())})")
        print(f"  broker restarts      {self.restarts} (alternating SIGTERM / SIGKILL), worker SIGKILLs {self.kills}")
        print(f"  hostile RETURNs      {self.returns_sent}, malformed messages sent {self.malformed_sent}, "
              f"returned_too_often {stats.get('tasks_returned_too_often', 'n/a')}")
        print("  broker RSS (s: MiB)  " + "  ".join(f"{s}:{k / 1024:.1f}" for s, k in self.rss[:: max(1, len(self.rss) // 12)]))
        ok = lost == 0 and dup == 0
        if ok and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the conveyor binary (a release build)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=300, help="submissions per second")
    ap.add_argument("--restart-every", type=float, default=60, help="seconds between broker restarts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the journal and logs even when nothing was lost")
    ap.add_argument("--result-ttl", type=int, default=120, help="the broker's result retention, seconds")
    sys.exit(Soak(ap.parse_args()).run())


if __name__ == "__main__":
    main()
