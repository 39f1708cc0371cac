#!/usr/bin/env python3
"""Minimal Conveyor client (CVY/1), written from proto/conveyor-protocol.md.

  client.py [--broker EP] [--timeout S] submit --type T [--priority N] [--payload TEXT]
            [--timeout-ms MS] [--opt KEY=VALUE ...] [--wait]
  client.py [--broker EP] status TASK_ID | cancel TASK_ID | stats | ping

Exit status: 0 on success (with --wait: the task succeeded), 1 otherwise, 2 on usage errors.
Needs only the standard library and pyzmq.
"""
import argparse
import base64
import json
import os
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

HDR = b"CVYC01"
REPLIES = {b"ACCEPTED", b"REJECTED", b"STATUS", b"CANCELLED", b"STATS", b"TASKS", b"PONG", b"ERROR"}
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}
STATUS_POLL_S = 2.0  # FINISHED is pushed, but is lost if our connection drops: poll too


class Failure(Exception):
    pass


class Client:
    def __init__(self, endpoint, timeout_s, curve=None):
        self.ctx = zmq.Context()
        self.curve = curve
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        apply_curve(self.sock, self.curve)
        self.sock.connect(endpoint)
        self.deadline = time.monotonic() + timeout_s
        self.prefix = os.urandom(4).hex().encode()
        self.seq = 0
        self.finished = {}  # task_id -> (state, body)

    def close(self):
        self.sock.close(0)
        self.ctx.term()

    def send(self, command, *fields):
        """Send a request; return its request_id."""
        self.seq += 1
        rid = b"%s-%d" % (self.prefix, self.seq)
        self.sock.send_multipart([HDR, command, rid, *fields])
        return rid

    def recv(self, until):
        """One well-formed-looking message before `until`, or None. Unsolicited ones are absorbed."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                return None
            msg = self.sock.recv_multipart()
            if len(msg) < 3 or msg[0] != HDR:
                continue  # not CVY/1: ignore
            if msg[1] == b"FINISHED" and len(msg) == 5:
                self.finished[msg[2]] = (msg[3].decode("ascii", "replace"), msg[4])
            elif msg[1] == b"PROGRESS" and len(msg) == 5:
                pct = msg[3].decode("ascii", "replace") + "%" if msg[3] else "?"
                print(f"progress {msg[2].decode()}: {pct} {msg[4].decode('utf-8', 'replace')}", file=sys.stderr)
            elif msg[1] in REPLIES:
                return msg

    def call(self, command, *fields):
        """Send a request and wait (bounded) for its reply; raise Failure on ERROR/REJECTED."""
        rid = self.send(command, *fields)
        while True:
            msg = self.recv(self.deadline)
            if msg is None:
                raise Failure(f"no reply to {command.decode()} within the timeout")
            if msg[2] != rid:
                continue  # reply to an earlier, abandoned request
            if msg[1] in (b"ERROR", b"REJECTED") and len(msg) == 5:
                kind = msg[1].decode().lower()
                raise Failure(f"{kind}: {msg[3].decode('utf-8', 'replace')}: {msg[4].decode('utf-8', 'replace')}")
            return msg

    def wait(self, task_id):
        """Wait for FINISHED (or a final STATUS); return (state, body)."""
        polls, next_poll = set(), time.monotonic() + STATUS_POLL_S
        while task_id not in self.finished:
            now = time.monotonic()
            if now >= self.deadline:
                raise Failure(f"task {task_id.decode()} not finished within the timeout")
            if now >= next_poll:
                polls.add(self.send(b"STATUS", task_id))
                next_poll = now + STATUS_POLL_S
            msg = self.recv(min(self.deadline, next_poll))
            if msg is None or msg[2] not in polls:
                continue
            if msg[1] == b"ERROR" and len(msg) == 5:
                raise Failure(f"status: {msg[3].decode()}: {msg[4].decode('utf-8', 'replace')}")
            if msg[1] == b"STATUS" and len(msg) == 4:
                st = json.loads(msg[3])
                if st.get("state") in FINAL:
                    if "result_base64" in st:
                        body = base64.b64decode(st["result_base64"])
                    else:
                        body = (st.get("result") if st["state"] == "succeeded" else st.get("error")) or ""
                        body = body.encode()
                    self.finished[task_id] = (st["state"], body)
        return self.finished[task_id]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Conveyor CVY/1 example client")
    ap.add_argument("--broker", default="tcp://127.0.0.1:5555", help="client endpoint of the broker")
    ap.add_argument("--timeout", type=float, default=30.0, help="overall time limit in seconds (default 30)")
    ap.add_argument("--curve-key", help="this peer's NAME.key_secret (CURVE, spec §13)")
    ap.add_argument("--curve-server-key", help="the broker's broker.key (CURVE, spec §13)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="submit a task; print its task id")
    s.add_argument("--type", required=True)
    s.add_argument("--priority", type=int, choices=range(4), default=1, help="0=LOW 1=NORMAL 2=HIGH 3=URGENT")
    s.add_argument("--payload", default="", help="payload text (sent as UTF-8)")
    s.add_argument("--timeout-ms", default="", help="task timeout; empty = broker default")
    s.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="submit option, e.g. max_attempts=3 (repeatable)")
    s.add_argument("--wait", action="store_true", help="wait for the outcome; print the result")
    for name in ("status", "cancel"):
        sub.add_parser(name).add_argument("task_id")
    sub.add_parser("stats", help="print the stats JSON")
    sub.add_parser("ping")
    a = ap.parse_args(argv)

    c = Client(a.broker, a.timeout, load_curve(a))
    try:
        if a.cmd == "submit":
            opts = [o.encode() for o in a.opt]
            r = c.call(b"SUBMIT", a.type.encode(), str(a.priority).encode(), a.timeout_ms.encode(),
                       a.payload.encode(), *opts)
            if r[1] != b"ACCEPTED" or len(r) != 5:
                raise Failure(f"unexpected reply {r[1].decode('ascii', 'replace')}")
            task_id = r[3]
            print(task_id.decode(), flush=True)
            if not a.wait:
                return 0
            state, body = c.wait(task_id)
            if state == "succeeded":
                sys.stdout.buffer.write(body + b"\n")
                sys.stdout.flush()
                return 0
            print(f"{state}: {body.decode('utf-8', 'replace')}", file=sys.stderr)
            return 1
        if a.cmd in ("status", "cancel"):
            r = c.call(a.cmd.upper().encode(), a.task_id.encode())
            print(r[3].decode("utf-8", "replace") if a.cmd == "status" else f"cancelled (was {r[4].decode('ascii', 'replace')})")
            return 0
        if a.cmd == "stats":
            print(c.call(b"STATS")[3].decode("utf-8", "replace"))
            return 0
        c.call(b"PING")
        print("pong")
        return 0
    except Failure as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
