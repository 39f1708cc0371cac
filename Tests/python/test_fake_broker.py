"""The package against a scripted broker (a pyzmq ROUTER in the test): exact frames,
the protocol-1.1 additions (WELCOME, TASK_BATCH, DONE_BATCH, RETRY_LATER, DONE's cost
option, notify and the long ACCEPTED, SUBMIT_BATCH/SUBMITTED) and the fallbacks to a
1.0 broker, which the real 1.1 broker cannot show."""
from __future__ import annotations

import threading
import time
from typing import List, Optional, Tuple

import pytest
import zmq
import zmq.auth

import conveyor
from conftest import wait_until

W = b"CVYW01"
C = b"CVYC01"
TID = b"0190f3c2a1b20001"


class FakeBroker:
    def __init__(self, port: int = 0, curve_secret: Optional[bytes] = None):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_secret:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret
        if port:
            # A ZeroMQ close is asynchronous: the previous fake's listener on this port
            # is torn down by its I/O thread a moment later. Rebinding retries on
            # EADDRINUSE only, for a bounded time.
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    self.sock.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError as e:
                    if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        else:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def recv(self, timeout: float = 5.0) -> Tuple[bytes, List[bytes]]:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"fake broker: nothing received within {timeout:g}s")
        ident, *frames = self.sock.recv_multipart()
        return ident, frames

    def expect(self, command: bytes, timeout: float = 5.0, skip=(b"HEARTBEAT",)) -> Tuple[bytes, List[bytes]]:
        deadline = time.monotonic() + timeout
        while True:
            ident, frames = self.recv(max(0.01, deadline - time.monotonic()))
            if frames[1] == command:
                return ident, frames
            if frames[1] not in skip:
                raise AssertionError(f"fake broker: wanted {command!r}, got {frames!r}")

    def send(self, ident: bytes, *frames: bytes) -> None:
        self.sock.send_multipart([ident, *frames])

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def fake():
    f = FakeBroker()
    yield f
    f.close()


def start_worker(endpoint, handlers, **kw):
    kw.setdefault("heartbeat_interval", 0.5)
    w = conveyor.Worker(endpoint, **kw)
    for t, fn in handlers.items():
        w.add_handler(t, fn)
    return w.start()


def task(ident_fake, ident, attempt=b"1", ttype=b"t", prio=b"2", timeout=b"60000", payload=b"p", tid=TID):
    ident_fake.send(ident, W, b"TASK", tid, attempt, ttype, prio, timeout, payload)


# ----- worker ----------------------------------------------------------------------


def test_ready_done_progress_frames_and_attempt_echo(fake):
    def h(t, ctx):
        assert (t.id, t.type, t.priority, t.attempt, t.payload, t.priority_name) == (
            TID.decode(), "t", 2, 7, b"p", "HIGH")
        assert 59 < t.remaining() <= 60
        ctx.progress(50, "half")
        ctx.progress(None, "")
        return b"R"

    w = start_worker(fake.endpoint, {"t": h, "b": h}, name="w-1", concurrency=3)
    try:
        ident, ready = fake.expect(b"READY")
        assert ready == [W, b"READY", b"w-1", b"b,t", b"3", b"batch=3"]
        task(fake, ident, attempt=b"007")
        assert fake.expect(b"PROGRESS")[1] == [W, b"PROGRESS", TID, b"007", b"50", b"half"]
        assert fake.expect(b"PROGRESS")[1] == [W, b"PROGRESS", TID, b"007", b"", b""]
        assert fake.expect(b"DONE")[1] == [W, b"DONE", TID, b"007", b"R"]  # no cost frame
    finally:
        w.stop(grace=0)


def test_catch_all_handler_advertises_any_type_and_fail_text(fake):
    def h(t, ctx):
        raise ValueError("bad input: ünïcode")

    w = start_worker(fake.endpoint, {None: h})
    try:
        ident, ready = fake.expect(b"READY")
        assert ready[3] == b""
        task(fake, ident, ttype=b"anything")
        assert fake.expect(b"FAIL")[1] == [W, b"FAIL", TID, b"1", "bad input: ünïcode".encode()]
    finally:
        w.stop(grace=0)


def test_done_carries_cost_option_only_when_set(fake):
    def h(t, ctx):
        ctx.cost(120)
        ctx.cost(30)
        return {"tokens": 150}

    w = start_worker(fake.endpoint, {"llm": h})
    try:
        ident, _ = fake.expect(b"READY")
        task(fake, ident, ttype=b"llm")
        assert fake.expect(b"DONE")[1] == [W, b"DONE", TID, b"1", b'{"tokens": 150}', b"cost=150"]
    finally:
        w.stop(grace=0)


def test_retry_later_frames(fake):
    def h(t, ctx):
        if t.payload == b"default":
            ctx.retry_later()
        try:
            ctx.retry_later(2.5)
        except conveyor.RetryLater:
            pass  # swallowed: the request stands, the return value is ignored
        return b"ignored"

    async def ah(t, ctx):
        ctx.retry_later(0.001)

    w = start_worker(fake.endpoint, {"api": h, "aapi": ah}, concurrency=2)
    try:
        ident, _ = fake.expect(b"READY")
        task(fake, ident, ttype=b"api", payload=b"x")
        assert fake.expect(b"RETRY_LATER")[1] == [W, b"RETRY_LATER", TID, b"1", b"2500"]
        task(fake, ident, ttype=b"api", payload=b"default", attempt=b"2")
        assert fake.expect(b"RETRY_LATER")[1] == [W, b"RETRY_LATER", TID, b"2", b""]
        task(fake, ident, ttype=b"aapi", attempt=b"3")
        assert fake.expect(b"RETRY_LATER")[1] == [W, b"RETRY_LATER", TID, b"3", b"1"]
        assert w.stats["retry_later"] == 3
    finally:
        w.stop(grace=0)
    with pytest.raises(ValueError):
        conveyor.TaskContext(w, (TID, 1)).retry_later(86_400.001)


def test_welcome_sets_heartbeat(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b""}, heartbeat_interval=5.0)
    try:
        ident, _ = fake.expect(b"READY")
        fake.send(ident, W, b"WELCOME", b"100", b"7")
        wait_until(lambda: w.heartbeat_interval == 0.1, 5, what="WELCOME to be adopted")
        assert w.liveness == 7
        t0 = time.monotonic()
        for _ in range(3):
            assert fake.expect(b"HEARTBEAT", timeout=2)[1] == [W, b"HEARTBEAT"]
        assert time.monotonic() - t0 < 1.5  # every 100 ms, not every 5 s
    finally:
        w.stop(grace=0)


def test_cancel_stops_the_attempt_and_nothing_more_is_sent(fake):
    seen = []

    def h(t, ctx):
        ctx.cancelled.wait(5)
        seen.append(ctx.cancel_reason)
        ctx.progress(99, "too late")
        return b"too late"

    w = start_worker(fake.endpoint, {"t": h})
    try:
        ident, _ = fake.expect(b"READY")
        task(fake, ident)
        fake.send(ident, W, b"CANCEL", TID, b"2", b"cancelled")  # another attempt: ignored
        time.sleep(0.1)
        assert seen == []
        fake.send(ident, W, b"CANCEL", TID, b"1", b"timed_out")
        wait_until(lambda: seen, 5, what="the handler to see the cancellation")
        assert seen == ["timed_out"]
        with pytest.raises(AssertionError):
            fake.expect(b"DONE", timeout=0.4)  # only heartbeats follow
    finally:
        w.stop(grace=0)


def test_malformed_broker_messages_are_ignored(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b"ok"})
    try:
        ident, _ = fake.expect(b"READY")
        fake.send(ident, b"CVYW02", b"TASK", TID, b"1", b"t", b"1", b"100", b"x")
        fake.send(ident, W, b"TASK", b"NOT-A-TASK-ID", b"1", b"t", b"1", b"100", b"x")
        fake.send(ident, W, b"TASK", TID, b"0", b"t", b"1", b"100", b"x")  # attempt >= 1
        fake.send(ident, W, b"TASK", TID, b"1", b"t", b"02", b"100", b"x")  # priority is one digit
        fake.send(ident, W, b"TASK", TID, b"1", b"t", b"1", b"100")  # frame missing
        fake.send(ident, W, b"FROBNICATE")
        task(fake, ident, attempt=b"9")
        assert fake.expect(b"DONE")[1] == [W, b"DONE", TID, b"9", b"ok"]
        assert w.stats["tasks"] == 1
    finally:
        w.stop(grace=0)


def test_disconnect_abandons_tasks_and_reconnects_on_a_new_socket(fake):
    release = threading.Event()
    reasons = []

    def h(t, ctx):
        release.wait(5)
        reasons.append(ctx.cancel_reason)
        return b"from the old connection"

    w = start_worker(fake.endpoint, {"t": h})
    try:
        ident1, _ = fake.expect(b"READY")
        task(fake, ident1)
        time.sleep(0.1)
        t0 = time.monotonic()
        fake.send(ident1, W, b"DISCONNECT")
        ident2, ready = fake.expect(b"READY", timeout=5)
        waited = time.monotonic() - t0
        assert ident2 != ident1 and ready[2] == w.name.encode()
        assert 0.9 <= waited < 2.5  # backoff starts at 1 s
        release.set()
        wait_until(lambda: reasons, 5, what="the old handler to return")
        assert reasons == ["connection_lost"]
        with pytest.raises(AssertionError):
            fake.expect(b"DONE", timeout=0.5)  # never reported on the new connection
        assert w.stats["abandoned"] == 1 and w.stats["reconnects"] == 1
    finally:
        w.stop(grace=0)


def test_backoff_doubles_while_silent_and_resets_on_a_message(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b""}, heartbeat_interval=0.1, liveness=2)
    try:
        times = []
        for _ in range(3):
            _, _ = fake.expect(b"READY", timeout=6)
            times.append(time.monotonic())
        gaps = [b - a for a, b in zip(times, times[1:])]
        # silence for 0.2 s (interval x liveness), then the backoff: 1 s, then 2 s
        assert 1.1 <= gaps[0] < 2.0 and 2.1 <= gaps[1] < 3.2 and gaps[1] - gaps[0] > 0.6, gaps
    finally:
        w.stop(grace=0)


def test_backoff_resets_after_a_successful_ready(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b""}, heartbeat_interval=0.1, liveness=2)
    try:
        fake.expect(b"READY")
        ident, _ = fake.expect(b"READY", timeout=3)  # second connection (after 1 s)
        fake.send(ident, W, b"HEARTBEAT")  # READY accepted: backoff back to 1 s
        wait_until(lambda: w.registered.is_set(), 2, what="registration")
        t0 = time.monotonic()
        fake.expect(b"READY", timeout=4)
        assert time.monotonic() - t0 < 2.0  # 0.2 s silence + 1 s, not 0.2 s + 2 s
    finally:
        w.stop(grace=0)


def test_stop_drains_returns_and_disconnects(fake):
    release = threading.Event()

    def h(t, ctx):
        release.wait(5)
        return b"finished in the grace period" if t.payload == b"quick" else b"late"

    w = start_worker(fake.endpoint, {"t": h}, concurrency=2)
    ident, _ = fake.expect(b"READY")
    task(fake, ident, payload=b"quick", tid=b"0000000000000001")
    task(fake, ident, payload=b"stuck", tid=b"0000000000000002")
    time.sleep(0.1)
    stopper = threading.Thread(target=w.stop, kwargs={"grace": 0.5})
    stopper.start()
    assert fake.expect(b"DRAIN")[1] == [W, b"DRAIN"]
    task(fake, ident, tid=b"0000000000000003")  # arrives after DRAIN: given back at once
    assert fake.expect(b"RETURN")[1] == [W, b"RETURN", b"0000000000000003", b"1"]
    stopper.join(5)
    rest = []
    while fake.sock.poll(500):
        rest.append(fake.sock.recv_multipart()[1:])
    commands = [f[1] for f in rest if f[1] != b"HEARTBEAT"]
    assert commands == [b"RETURN", b"RETURN", b"DISCONNECT"]
    assert sorted(f[2] for f in rest if f[1] == b"RETURN") == [b"0000000000000001", b"0000000000000002"]
    release.set()


# ----- client ----------------------------------------------------------------------


def test_client_frames_and_protocol_1_1_accepted(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = {}
        th = threading.Thread(target=lambda: out.update(s=c.submit(
            "pdf", b"data", priority="urgent", timeout=1.5, delay=0.25, max_attempts=3, idempotency_key="k1")))
        th.start()
        ident, f = fake.expect(b"SUBMIT")
        assert f[:3] == [C, b"SUBMIT", f[2]] and f[3:7] == [b"pdf", b"3", b"1500", b"data"]
        assert f[-1] == b"notify=all"  # last, so that a 1.0 broker can get the SUBMIT without it
        assert sorted(f[7:-1]) == [b"delay_ms=250", b"idempotency_key=k1", b"max_attempts=3"]
        fake.send(ident, C, b"ACCEPTED", f[2], b"0190f3c2a1b20009", b"4", b"1", b"running")
        th.join(5)
        s = out["s"]
        assert (s.task_id, s.queue_position, s.duplicate, s.state, s.resent) == (
            "0190f3c2a1b20009", 4, True, "running", False)

        th = threading.Thread(target=lambda: out.update(s=c.submit("pdf", b"", delay=2)))
        th.start()
        ident, f = fake.expect(b"SUBMIT")
        assert f[4:6] == [b"1", b""] and b"delay_ms=2000" in f[7:]
        assert any(o.startswith(b"idempotency_key=auto-") for o in f[7:])
        # malformed replies are ignored (§3.4); the valid one then answers
        fake.send(ident, C, b"ACCEPTED", f[2], b"XYZ", b"0")
        fake.send(ident, C, b"ACCEPTED", f[2], b"0190f3c2a1b2000a", b"-1")
        fake.send(ident, C, b"ACCEPTED", f[2], b"0190f3c2a1b2000a", b"0")
        th.join(5)
        assert (out["s"].task_id, out["s"].state, out["s"].duplicate) == ("0190f3c2a1b2000a", "delayed", False)


def test_client_uses_pushes_for_its_own_tasks(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = {}
        th = threading.Thread(target=lambda: out.update(s=c.submit("t", b"")))
        th.start()
        ident, f = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0")
        th.join(5)
        fake.send(ident, C, b"PROGRESS", TID, b"10", b"a")
        fake.send(ident, C, b"PROGRESS", TID, b"101", b"bad percent: ignored")
        fake.send(ident, C, b"PROGRESS", TID, b"", b"b")
        fake.send(ident, C, b"FINISHED", TID, b"succeeded", bytes(range(256)))
        assert c.wait(TID.decode(), timeout=5) == bytes(range(256))
        assert list(c.progress(TID.decode(), timeout=5)) == [(10, "a"), (None, "b")]
        assert not fake.sock.poll(300)  # no STATUS poll was needed


def test_client_resends_keyed_submit_after_reconnect():
    fake = FakeBroker()
    port = fake.port
    with conveyor.Client(fake.endpoint, timeout=10) as c:
        out = {}
        th = threading.Thread(target=lambda: out.update(s=c.submit("t", b"x", idempotency_key="same")))
        th.start()
        _, first = fake.expect(b"SUBMIT")
        fake.close()  # the broker "crashes" without answering
        wait_until(lambda: not c.connected, 5, what="the disconnection")
        fake = FakeBroker(port)  # …and comes back on the same port
        try:
            ident, again = fake.expect(b"SUBMIT", timeout=5)
            assert again == first  # same request id, same key
            fake.send(ident, C, b"ACCEPTED", again[2], TID, b"0")
            th.join(5)
            assert out["s"].task_id == TID.decode() and out["s"].resent is True
        finally:
            fake.close()


def test_client_error_replies_map_to_exceptions(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        cases = [
            (lambda: c.submit("t"), b"SUBMIT", [b"REJECTED", b"queue_full", b"full"], conveyor.QueueFull),
            (lambda: c.submit("t"), b"SUBMIT", [b"REJECTED", b"teapot", b"?"], conveyor.Rejected),
            (lambda: c.status(TID.decode()), b"STATUS", [b"ERROR", b"not_found", b"no"], conveyor.NotFound),
            (lambda: c.cancel(TID.decode()), b"CANCEL", [b"ERROR", b"not_cancellable", b"done"],
             conveyor.NotCancellable),
            (lambda: c.stats(), b"STATS", [b"ERROR", b"shutting_down", b"bye"], conveyor.Rejected),
        ]
        for call, cmd, reply, exc in cases:
            err = {}

            def run():
                try:
                    call()
                except Exception as e:
                    err["e"] = e

            th = threading.Thread(target=run)
            th.start()
            ident, f = fake.expect(cmd)
            fake.send(ident, C, reply[0], f[2], *reply[1:])
            th.join(5)
            assert type(err["e"]) is exc and err["e"].code == reply[1].decode()


# ----- CURVE ---------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    zmq.auth.create_certificates(str(d), "broker")
    zmq.auth.create_certificates(str(d), "client")
    zmq.auth.create_certificates(str(d), "stranger")
    return d


def test_curve_key_loading(certs):
    keys = conveyor.load_curve_keys(certs / "client.key_secret", certs / "broker.key")
    pub, sec = zmq.auth.load_certificate(str(certs / "client.key_secret"))
    bpub, _ = zmq.auth.load_certificate(str(certs / "broker.key"))
    assert (keys.public, keys.secret, keys.server_public) == (pub, sec, bpub)
    assert conveyor.load_curve_keys(None, None) is None
    with pytest.raises(ValueError):
        conveyor.load_curve_keys(certs / "client.key", certs / "broker.key")  # public only
    with pytest.raises(ValueError):
        conveyor.load_curve_keys(certs / "client.key_secret", None)
    with pytest.raises(OSError):
        conveyor.load_curve_keys(certs / "missing.key_secret", certs / "broker.key")


def test_curve_client_and_worker_talk_to_a_curve_server(certs):
    _, bsec = zmq.auth.load_certificate(str(certs / "broker.key_secret"))
    fake = FakeBroker(curve_secret=bsec)
    try:
        with conveyor.Client(fake.endpoint, timeout=5, curve_key=certs / "client.key_secret",
                             curve_server_key=certs / "broker.key") as c:
            out = {}
            th = threading.Thread(target=lambda: out.update(rtt=c.ping()))
            th.start()
            ident, f = fake.expect(b"PING")
            fake.send(ident, C, b"PONG", f[2])
            th.join(5)
            assert out["rtt"] < 5
        w = start_worker(fake.endpoint, {"t": lambda t, c: b""}, curve_key=certs / "client.key_secret",
                         curve_server_key=certs / "broker.key")
        try:
            assert fake.expect(b"READY")[1][1] == b"READY"
        finally:
            w.stop(grace=0)
        # the wrong server key: the handshake fails, nothing gets through
        with conveyor.Client(fake.endpoint, timeout=0.5, curve_key=certs / "client.key_secret",
                             curve_server_key=certs / "stranger.key") as c:
            with pytest.raises(conveyor.BrokerUnavailable):
                c.ping()
        received = []
        while fake.sock.poll(200):
            received.append(fake.sock.recv_multipart()[2])
        assert b"PING" not in received  # only the worker's last HEARTBEAT/DRAIN/DISCONNECT
    finally:
        fake.close()


def test_closing_clients_whose_handshake_keeps_failing_does_not_freeze_zeromq(certs):
    """Regression: closing the monitor before the socket let libzmq's I/O thread block
    on its next monitor event (here: a failed CURVE handshake every ~100 ms), which
    froze every socket of the process."""
    _, bsec = zmq.auth.load_certificate(str(certs / "broker.key_secret"))
    curve, plain = FakeBroker(curve_secret=bsec), FakeBroker()
    try:
        for _ in range(30):
            with conveyor.Client(curve.endpoint, timeout=0.1, curve_key=certs / "client.key_secret",
                                 curve_server_key=certs / "stranger.key") as c:
                with pytest.raises(conveyor.BrokerUnavailable):
                    c.ping()
        with conveyor.Client(plain.endpoint, timeout=3) as ok:
            out = {}
            th = threading.Thread(target=lambda: out.update(rtt=ok.ping()))
            th.start()
            ident, f = plain.expect(b"PING", timeout=3)
            plain.send(ident, C, b"PONG", f[2])
            th.join(5)
            assert "rtt" in out
    finally:
        curve.close()
        plain.close()
