"""Several broker endpoints (active/standby, issue 12) against scripted brokers:
clients follow ``not_leader`` (to the named leader, or to the next endpoint after
0.25 s), move on after ``failover_after`` of silence and resend what is unanswered
with the same request ids and idempotency keys; workers move to the next endpoint at
once on silence or DISCONNECT and wait the backoff only after a whole round. The
real broker has no standby mode yet, so only fakes here."""
from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import List

import pytest
import zmq

import conveyor
from conftest import wait_until
from test_fake_broker import C, TID, W, FakeBroker, task
from test_fake_broker_11 import TID2, in_thread, joined, parse_batch

HEX_KEY = re.compile(rb"^idempotency_key=[0-9a-f]{32}$")


@pytest.fixture
def fakes():
    made: List[FakeBroker] = []

    def make(n: int) -> List[FakeBroker]:
        made.extend(FakeBroker() for _ in range(n))
        return made[-n:]

    yield make
    for f in made:
        f.close()


def keys_of(submit: List[bytes]) -> List[bytes]:
    return [o for o in submit[7:-1] if o.startswith(b"idempotency_key=")]


def accepted(fake: FakeBroker, ident: bytes, f: List[bytes], tid: bytes = TID, duplicate: bytes = b"0") -> None:
    fake.send(ident, C, b"ACCEPTED", f[2], tid, b"0", duplicate, b"queued")


# ----- the sync client -------------------------------------------------------------


def test_not_leader_moves_to_the_named_leader_and_resends_the_same_submit(fakes):
    standby, active = fakes(2)
    with conveyor.Client([standby.endpoint, active.endpoint], timeout=5) as c:
        assert c.endpoint == standby.endpoint and c.endpoints == (standby.endpoint, active.endpoint)
        out = in_thread(c.submit, "t", b"x")
        sident, first = standby.expect(b"SUBMIT")
        (key,) = keys_of(first)
        assert HEX_KEY.match(key)  # several endpoints: a random 128-bit hex key, not auto-…
        standby.send(sident, C, b"REJECTED", first[2], b"not_leader",
                     b"standby broker; the active broker is " + active.endpoint.encode(), active.endpoint.encode())
        aident, again = active.expect(b"SUBMIT")
        assert again == first  # same request id, same key, same everything
        accepted(active, aident, again)
        s = joined(out)
        assert (s.task_id, s.idempotency_key, s.resent) == (TID.decode(), key[16:].decode(), True)
        assert c.endpoint == active.endpoint
        # later calls go straight to the active broker
        out = in_thread(c.ping)
        _, ping = active.expect(b"PING")
        active.send(aident, C, b"PONG", ping[2])
        assert joined(out) < 5
        assert not standby.sock.poll(100)


def test_not_leader_without_a_leader_tries_the_next_endpoint_after_250_ms(fakes):
    s1, s2, active = fakes(3)
    with conveyor.Client(",".join(f.endpoint for f in (s1, s2, active)), timeout=5) as c:
        out = in_thread(c.stats)
        i1, f1 = s1.expect(b"STATS")
        t0 = time.monotonic()
        s1.send(i1, C, b"ERROR", f1[2], b"not_leader", b"standby broker; the active broker is unknown", b"")
        i2, f2 = s2.expect(b"STATS")
        t1 = time.monotonic()
        s2.send(i2, C, b"ERROR", f2[2], b"not_leader", b"no leader frame at all")  # frame 5 is optional
        i3, f3 = active.expect(b"STATS")
        t2 = time.monotonic()
        assert f1 == f2 == f3
        assert 0.24 <= t1 - t0 < 1.5 and 0.24 <= t2 - t1 < 1.5
        active.send(i3, C, b"STATS", f3[2], b'{"queued": 7}')
        assert joined(out) == {"queued": 7}
        assert c.endpoint == active.endpoint and c._core.failovers == 2


def test_silence_moves_on_after_failover_after_and_resends_what_is_unanswered(fakes):
    silent, active = fakes(2)
    with conveyor.Client([silent.endpoint, active.endpoint], timeout=2.5, failover_after=0.3) as c:
        sub = in_thread(c.submit, "t", b"x", idempotency_key="mine")
        _, f_sub = silent.expect(b"SUBMIT")
        st = in_thread(c.status, TID.decode())
        _, f_st = silent.expect(b"STATUS")
        cancel = in_thread(c.cancel, TID2.decode())
        _, f_cancel = silent.expect(b"CANCEL")
        t_sent = time.monotonic()
        ident, g_sub = active.expect(b"SUBMIT", timeout=3)
        assert time.monotonic() - t_sent >= 0.25  # failover_after, from the first send
        _, g_st = active.expect(b"STATUS")
        assert (g_sub, g_st) == (f_sub, f_st) and keys_of(g_sub) == [b"idempotency_key=mine"]
        accepted(active, ident, g_sub, duplicate=b"1")  # the silent one had journaled it
        active.send(ident, C, b"STATUS", g_st[2], b'{"id": "%s", "state": "queued"}' % TID)
        s = joined(sub)
        assert (s.duplicate, s.resent, s.idempotency_key) == (True, True, "mine")
        assert joined(st).state == "queued"
        # CANCEL is not safe to repeat: in doubt, it ends at its deadline and is not resent
        with pytest.raises(conveyor.BrokerUnavailable):
            joined(cancel, 5)
        assert f_cancel[1] == b"CANCEL" and not active.sock.poll(0)


def test_submit_many_is_resent_as_it_was_after_silence(fakes):
    silent, active = fakes(2)
    with conveyor.Client([silent.endpoint, active.endpoint], timeout=3, failover_after=0.3) as c:
        out = in_thread(c.submit_many, [("t", b"1"), conveyor.Submission("t", b"2", idempotency_key="k2"),
                                        conveyor.Submission("t", b"3", idempotency_key=False)])
        _, first = silent.expect(b"SUBMIT_BATCH")
        opts = [s["options"] for s in parse_batch(first)]
        assert HEX_KEY.match(opts[0][0]) and opts[1][0] == b"idempotency_key=k2" and HEX_KEY.match(opts[2][0])
        assert len({o[0] for o in opts}) == 3
        ident, again = active.expect(b"SUBMIT_BATCH", timeout=3)
        assert again == first
        active.send(ident, C, b"SUBMITTED", again[2], b"ACCEPTED", TID, b"0", b"0", b"queued",
                    b"ACCEPTED", TID2, b"1", b"0", b"queued", b"REJECTED", b"queue_full", b"full", b"", b"")
        r = joined(out)
        assert [x.task_id for x in r[:2]] == [TID.decode(), TID2.decode()] and all(x.resent for x in r[:2])
        assert isinstance(r[2], conveyor.QueueFull)


def test_keyed_submit_nobody_answers_ends_with_broker_unavailable_at_the_timeout(fakes):
    a, b = fakes(2)
    with conveyor.Client([a.endpoint, b.endpoint], timeout=1.0, failover_after=0.3) as c:
        t0 = time.monotonic()
        out = in_thread(c.submit, "t", b"x", idempotency_key="k")
        _, fa = a.expect(b"SUBMIT")
        _, fb = b.expect(b"SUBMIT")
        assert fa == fb
        with pytest.raises(conveyor.BrokerUnavailable) as ei:
            joined(out, 5)
        assert 0.95 <= time.monotonic() - t0 < 2.5
        assert "within 1s" in str(ei.value) and "last tried" in str(ei.value)


def test_standbys_naming_each_other_end_with_the_last_leader_hint(fakes):
    a, b = fakes(2)
    other = {a: b, b: a}
    stop = threading.Event()
    hints: List[bytes] = []

    def serve():
        while not stop.is_set():
            for f in (a, b):
                if f.sock.poll(20):
                    ident, frames = f.recv()
                    hint = other[f].endpoint.encode()
                    hints.append(hint)
                    f.send(ident, C, b"ERROR", frames[2], b"not_leader", b"standby", hint)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with conveyor.Client([a.endpoint, b.endpoint], timeout=1.0) as c:
            t0 = time.monotonic()
            with pytest.raises(conveyor.BrokerUnavailable) as ei:
                c.ping()
            assert time.monotonic() - t0 < 2.5
            msg = str(ei.value)
            hint = r"last leader hint: tcp://127\.0\.0\.1:(%d|%d);" % (a.port, b.port)
            assert "not_leader" in msg and re.search(hint, msg), msg
            # the hint loop is paced (at most one move per 0.25 s), not a busy loop
            assert 2 <= c._core.failovers <= 6 and len(hints) <= 7
    finally:
        stop.set()
        th.join(5)


def test_a_malformed_leader_hint_is_skipped_for_the_next_endpoint(fakes):
    standby, active = fakes(2)
    with conveyor.Client([standby.endpoint, active.endpoint], timeout=5) as c:
        out = in_thread(c.ping)
        ident, f = standby.expect(b"PING")
        standby.send(ident, C, b"ERROR", f[2], b"not_leader", b"standby", b"not an endpoint")
        aident, g = active.expect(b"PING")
        assert g == f
        active.send(aident, C, b"PONG", g[2])
        joined(out)
        assert c.endpoint == active.endpoint


def test_keys_are_added_only_with_several_endpoints(fakes):
    one, two_a, _ = fakes(3)
    with conveyor.Client(one.endpoint, timeout=5, auto_idempotency=False) as c:
        out = in_thread(c.submit, "t", b"x")
        ident, f = one.expect(b"SUBMIT")
        assert keys_of(f) == [] and f[7:] == [b"notify=all"]
        accepted(one, ident, f)
        assert joined(out).idempotency_key is None
        out = in_thread(c.submit_many, [("t", b"1"), ("t", b"2")])
        ident, f = one.expect(b"SUBMIT_BATCH")
        assert [s["options"] for s in parse_batch(f)] == [[b"notify=all"]] * 2
        one.send(ident, C, b"SUBMITTED", f[2], b"ACCEPTED", TID, b"0", b"0", b"queued",
                 b"ACCEPTED", TID2, b"1", b"0", b"queued")
        assert [s.idempotency_key for s in joined(out)] == [None, None]
        # one endpoint: not_leader is an error like any other, no move
        out = in_thread(c.ping)
        ident, f = one.expect(b"PING")
        one.send(ident, C, b"ERROR", f[2], b"not_leader", b"standby", two_a.endpoint.encode())
        with pytest.raises(conveyor.Rejected) as ei:
            joined(out)
        assert ei.value.code == "not_leader" and c.endpoint == one.endpoint and not two_a.sock.poll(100)
    # with two endpoints even auto_idempotency=False and idempotency_key=False get one
    with conveyor.Client([two_a.endpoint, one.endpoint], timeout=5, auto_idempotency=False) as c:
        out = in_thread(c.submit, "t", b"x", idempotency_key=False)
        ident, f = two_a.expect(b"SUBMIT")
        (key,) = keys_of(f)
        assert HEX_KEY.match(key)
        accepted(two_a, ident, f)
        assert joined(out).idempotency_key == key[16:].decode()


def test_endpoint_lists_are_checked():
    with pytest.raises(ValueError):
        conveyor.Client("tcp://127.0.0.1:1,", timeout=1)
    with pytest.raises(TypeError):
        conveyor.Client(["tcp://127.0.0.1:1", 5], timeout=1)
    with pytest.raises(ValueError):
        conveyor.Client(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], failover_after=0)
    with pytest.raises(ValueError):
        conveyor.Worker([])
    w = conveyor.Worker(" tcp://127.0.0.1:1 , tcp://127.0.0.1:2")
    assert w.endpoints == ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2") and w.endpoint == "tcp://127.0.0.1:1"


# ----- the asyncio client ------------------------------------------------------------


def test_async_client_follows_not_leader_for_submit_many_and_fails_over_on_silence(fakes):
    standby, active = fakes(2)

    async def main():
        async with conveyor.AsyncClient([standby.endpoint, active.endpoint], timeout=4, failover_after=0.3) as c:
            job = asyncio.ensure_future(c.submit_many([("t", b"1"), ("t", b"2")]))
            sident, first = await asyncio.to_thread(standby.expect, b"SUBMIT_BATCH")
            assert all(HEX_KEY.match(s["options"][0]) for s in parse_batch(first))
            standby.send(sident, C, b"REJECTED", first[2], b"not_leader", b"standby", active.endpoint.encode())
            aident, again = await asyncio.to_thread(active.expect, b"SUBMIT_BATCH")
            assert again == first
            active.send(aident, C, b"SUBMITTED", again[2], b"ACCEPTED", TID, b"0", b"0", b"queued",
                        b"ACCEPTED", TID2, b"1", b"0", b"queued")
            r = await asyncio.wait_for(job, 5)
            assert [(s.task_id, s.resent) for s in r] == [(TID.decode(), True), (TID2.decode(), True)]
            assert c.endpoint == active.endpoint
            # the active one goes silent: after failover_after the next endpoint (the
            # old standby, now active) gets the same submit
            one = asyncio.ensure_future(c.submit("t", b"3"))
            _, f = await asyncio.to_thread(active.expect, b"SUBMIT")
            t0 = time.monotonic()
            ident, g = await asyncio.to_thread(standby.expect, b"SUBMIT")
            assert g == f and time.monotonic() - t0 >= 0.2
            accepted(standby, ident, g, tid=b"0190f3c2a1b20003")
            s = await asyncio.wait_for(one, 5)
            assert s.task_id == "0190f3c2a1b20003" and s.resent and c.endpoint == standby.endpoint

    asyncio.run(main())


# ----- the worker ------------------------------------------------------------------------


def test_worker_moves_from_a_silent_broker_to_the_live_one_at_once(fakes):
    silent, live = fakes(2)
    w = conveyor.Worker([silent.endpoint, live.endpoint], name="fw", heartbeat_interval=0.1, liveness=2)
    w.add_handler("t", lambda t, ctx: b"done-" + t.payload)
    w.start()
    try:
        _, r1 = silent.expect(b"READY")
        t0 = time.monotonic()
        ident, r2 = live.expect(b"READY", timeout=3)
        assert time.monotonic() - t0 < 0.9  # 0.2 s of silence, no backoff
        assert r1 == r2 == [W, b"READY", b"fw", b"t", b"1", b"batch=1"]
        live.send(ident, W, b"WELCOME", b"1000", b"3")
        wait_until(lambda: w.registered.is_set() and w.heartbeat_interval == 1.0, 3, what="WELCOME")
        assert w.endpoint == live.endpoint
        task(live, ident, payload=b"x")
        assert live.expect(b"DONE")[1] == [W, b"DONE", TID, b"1", b"done-x"]
        assert w.stats["reconnects"] == 1
    finally:
        w.stop(grace=0)


def test_worker_moves_to_the_next_broker_after_disconnect_abandoning_its_tasks(fakes):
    first, second = fakes(2)
    release = threading.Event()
    reasons: List[str] = []

    def h(t, ctx):
        if t.payload == b"old":
            release.wait(5)
            reasons.append(ctx.cancel_reason)
        return b"r-" + t.payload

    w = conveyor.Worker([first.endpoint, second.endpoint], heartbeat_interval=1.0)
    w.add_handler("t", h)
    w.start()
    try:
        i1, _ = first.expect(b"READY")
        first.send(i1, W, b"WELCOME", b"1000", b"3")
        wait_until(w.registered.is_set, 3, what="registration on the first broker")
        task(first, i1, payload=b"old")
        wait_until(lambda: w.stats["tasks"] == 1, 3, what="the task to start")
        t0 = time.monotonic()
        first.send(i1, W, b"DISCONNECT")
        i2, ready = second.expect(b"READY", timeout=3)
        assert time.monotonic() - t0 < 0.9 and ready[1] == b"READY"  # at once, no backoff
        release.set()
        wait_until(lambda: reasons, 3, what="the abandoned handler to return")
        assert reasons == ["connection_lost"] and w.stats["abandoned"] == 1
        second.send(i2, W, b"WELCOME", b"1000", b"3")
        task(second, i2, payload=b"new", tid=TID2)
        assert second.expect(b"DONE")[1] == [W, b"DONE", TID2, b"1", b"r-new"]
        assert w.endpoint == second.endpoint
        assert not any(fr[1] == b"DONE" for fr in drain(first))  # nothing for the old attempt
    finally:
        w.stop(grace=0)


def test_worker_waits_the_backoff_only_after_a_whole_round(fakes):
    a, b = fakes(2)
    w = conveyor.Worker([a.endpoint, b.endpoint], heartbeat_interval=0.1, liveness=2)
    w.add_handler("t", lambda t, ctx: b"")
    w.start()
    try:
        times = []
        for f in (a, b, a):
            f.expect(b"READY", timeout=4)
            times.append(time.monotonic())
        gaps = [y - x for x, y in zip(times, times[1:])]
        assert gaps[0] < 0.9 and 1.1 <= gaps[1] < 2.5, gaps  # a→b at once; b→a after 0.2 s + 1 s
    finally:
        w.stop(grace=0)


def drain(f: FakeBroker) -> List[List[bytes]]:
    out = []
    while f.sock.poll(0):
        out.append(f.sock.recv_multipart()[1:])
    return out


# ----- events ------------------------------------------------------------------------------


def test_subscribe_connects_to_every_event_endpoint():
    ctx = zmq.Context.instance()
    pubs = [ctx.socket(zmq.PUB) for _ in range(2)]
    try:
        eps = [f"tcp://127.0.0.1:{p.bind_to_random_port('tcp://127.0.0.1')}" for p in pubs]
        with conveyor.subscribe(eps, "stats") as sub:
            assert sub.endpoints == tuple(eps)
            for i, p in enumerate(pubs):
                def got(p=p, i=i):  # publish until the subscription has reached this PUB
                    p.send_multipart([b"stats", b'{"from": %d}' % i])
                    return sub.next(0.05)

                assert wait_until(got, 3, what=f"an event from publisher {i}") == ("stats", {"from": i})
    finally:
        for p in pubs:
            p.close(0)
