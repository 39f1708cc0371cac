#!/usr/bin/env python3
"""Minimal Conveyor worker (CVY/1), written from proto/conveyor-protocol.md.

  worker.py [--broker EP] [--name N] [--types a,b] [--capacity C] [--max-tasks N]
            [--work-ms MS] [--heartbeat-ms MS] [--liveness L] [--give-up S]

Handler: reports PROGRESS 50, waits --work-ms, then DONE with payload.upper(), or FAIL
if the payload is b"fail". Honours CANCEL. Heartbeats; reconnects on DISCONNECT or
broker silence with backoff 1 s doubling to 32 s. With --max-tasks N it takes N tasks,
then DRAINs, finishes them, sends DISCONNECT and exits 0. SIGINT/SIGTERM: RETURN the
running tasks, DISCONNECT, exit 0. Exits 1 if it hears nothing from the broker for
--give-up seconds. Needs only the standard library and pyzmq.
"""
import argparse
import signal
import socket
import sys
import time

import zmq


def load_curve(args):
    """(public, secret, server public) from zcert files, or None for plaintext."""
    if not args.curve_key:
        return None
    import zmq.auth
    public, secret = zmq.auth.load_certificate(args.curve_key)
    server, _ = zmq.auth.load_certificate(args.curve_server_key)
    if secret is None:
        raise SystemExit(f"{args.curve_key}: no secret key (give the .key_secret file)")
    return public, secret, server


def apply_curve(sock, curve):
    """CURVE client options; set before connect."""
    if curve:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve

HDR = b"CVYW01"


def log(*args):
    print("worker:", *args, file=sys.stderr, flush=True)


def txt(b):
    return b.decode("utf-8", "replace")


class Worker:
    def __init__(self, a):
        self.a = a
        self.hb = a.heartbeat_ms / 1000.0
        self.curve = load_curve(a)
        self.ctx = zmq.Context()
        self.sock = None
        self.tasks = {}  # (task_id, attempt) -> [due time, payload]
        self.taken = 0  # tasks accepted, for --max-tasks
        self.draining = False
        self.backoff = 1.0
        self.stopping = False
        self.heard = time.monotonic()  # last message from the broker, for --give-up

    def send(self, *frames):
        try:
            self.sock.send_multipart([HDR, *frames], zmq.NOBLOCK)
        except zmq.Again:
            pass  # high-water mark or no peer: heartbeating will sort it out
        self.last_tx = time.monotonic()

    def connect(self):
        if self.tasks:
            log(f"abandoning {len(self.tasks)} task(s) of the old connection")
            self.taken -= len(self.tasks)
            self.tasks.clear()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        apply_curve(self.sock, self.curve)
        self.sock.connect(self.a.broker)
        self.send(b"READY", self.a.name.encode(), self.a.types.encode(), str(self.a.capacity).encode())
        self.draining = bool(self.a.max_tasks) and self.taken >= self.a.max_tasks
        if self.draining:
            self.send(b"DRAIN")
        self.last_rx = time.monotonic()

    def reconnect(self, why):
        log(f"{why}; reconnecting in {self.backoff:g} s")
        self.sock.close(0)
        until = time.monotonic() + self.backoff
        while time.monotonic() < until and not self.stopping:
            time.sleep(0.1)
        self.backoff = min(self.backoff * 2, 32.0)
        self.connect()

    def handle(self, msg):
        if len(msg) < 2 or msg[0] != HDR:
            return  # not CVY/1 worker protocol: ignore
        now = self.last_rx = self.heard = time.monotonic()
        cmd = msg[1]
        if cmd == b"DISCONNECT" and len(msg) == 2:
            self.reconnect("broker sent DISCONNECT")
            return
        self.backoff = 1.0  # any other message: our READY was accepted
        if cmd == b"TASK" and len(msg) == 8 and msg[3].isdigit():
            task_id, attempt, payload = msg[2], msg[3], msg[7]
            if self.a.max_tasks and self.taken >= self.a.max_tasks:
                self.send(b"RETURN", task_id, attempt)  # arrived before our DRAIN took effect
                return
            self.taken += 1
            log(f"task {txt(task_id)} attempt {txt(attempt)} type {txt(msg[4])}")
            self.tasks[(task_id, attempt)] = [now + self.a.work_ms / 1000.0, payload]
            self.send(b"PROGRESS", task_id, attempt, b"50", b"working")
            if self.a.max_tasks and self.taken >= self.a.max_tasks and not self.draining:
                self.draining = True
                self.send(b"DRAIN")
        elif cmd == b"CANCEL" and len(msg) == 5:
            if self.tasks.pop((msg[2], msg[3]), None) is not None:
                log(f"task {txt(msg[2])} attempt {txt(msg[3])} cancelled ({txt(msg[4])})")
        # HEARTBEAT (and anything unknown) needs no action beyond last_rx

    def finish_due(self):
        now = time.monotonic()
        for key, (due, payload) in list(self.tasks.items()):
            if due <= now:
                del self.tasks[key]
                if payload == b"fail":
                    self.send(b"FAIL", *key, b"payload was 'fail'")
                else:
                    self.send(b"DONE", *key, payload.upper())

    def leave(self):
        for task_id, attempt in self.tasks:
            self.send(b"RETURN", task_id, attempt)
        self.send(b"DISCONNECT")
        self.sock.close(linger=1000)  # give DISCONNECT a chance to leave
        self.ctx.term()

    def run(self):
        self.connect()
        dead_after = self.hb * self.a.liveness
        while True:
            if self.stopping or (self.a.max_tasks and self.taken >= self.a.max_tasks and not self.tasks):
                self.leave()
                return 0
            now = time.monotonic()
            if self.a.give_up and now - self.heard > self.a.give_up:
                log(f"no word from the broker for {self.a.give_up:g} s; giving up")
                self.sock.close(0)
                self.ctx.term()
                return 1
            if now - self.last_rx > dead_after:
                self.reconnect("broker silent")
                continue
            if now - self.last_tx >= self.hb:
                self.send(b"HEARTBEAT")
            wake = min([self.last_tx + self.hb, self.last_rx + dead_after] + [d for d, _ in self.tasks.values()])
            if self.sock.poll(max(0, int((wake - time.monotonic()) * 1000)) + 1):
                while self.sock.poll(0) and not self.stopping:
                    self.handle(self.sock.recv_multipart())
            self.finish_due()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Conveyor CVY/1 example worker")
    ap.add_argument("--broker", default="tcp://127.0.0.1:5556", help="worker endpoint of the broker")
    ap.add_argument("--name", default=f"pyworker-{socket.gethostname()}")
    ap.add_argument("--types", default="", help="comma-separated task types; empty = any")
    ap.add_argument("--capacity", type=int, default=1)
    ap.add_argument("--max-tasks", type=int, default=0, help="exit after this many tasks (0 = never)")
    ap.add_argument("--work-ms", type=int, default=0, help="simulated work time per task")
    ap.add_argument("--heartbeat-ms", type=int, default=1000, help="must match the broker")
    ap.add_argument("--liveness", type=int, default=3, help="must match the broker")
    ap.add_argument("--give-up", type=float, default=60.0, help="exit 1 after this long without a message from the broker (0 = never)")
    ap.add_argument("--curve-key", help="this peer's NAME.key_secret (CURVE, spec §13)")
    ap.add_argument("--curve-server-key", help="the broker's broker.key (CURVE, spec §13)")
    a = ap.parse_args(argv)
    if not 1 <= a.capacity <= 1024 or not 1 <= len(a.name.encode()) <= 128 or a.heartbeat_ms < 1 or a.liveness < 1:
        ap.error("capacity must be 1..1024, name 1..128 bytes, heartbeat and liveness positive")
    w = Worker(a)

    def stop(*_):
        w.stopping = True
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return w.run()


if __name__ == "__main__":
    sys.exit(main())
