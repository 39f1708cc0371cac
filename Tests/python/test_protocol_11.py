"""Protocol 1.1 end to end against the real broker: the long ACCEPTED (duplicate and
the real state), notify, submit_many over SUBMIT_BATCH (a queue_full boundary, a
malformed batch), TASK_BATCH/DONE_BATCH and WELCOME's heartbeat settings."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import List, Optional

import pytest
import zmq

import conveyor
from conftest import BrokerProcess, wait_until

C = b"CVYC01"


class Raw:
    """A bare DEALER on the clients endpoint, for frames the package never sends."""

    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.seen: List[List[bytes]] = []  # every message received, in order

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart([C, *frames])

    def reply(self, rid: bytes, timeout: float = 5.0) -> List[bytes]:
        """The reply carrying ``rid``; pushes received meanwhile are kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise AssertionError(f"no reply to {rid!r} within {timeout:g}s")
            m = self.sock.recv_multipart()
            self.seen.append(m)
            if m[1] not in (b"PROGRESS", b"FINISHED") and m[2] == rid:
                return m

    def status_until_final(self, tid: bytes, timeout: float = 10.0) -> bytes:
        """Ask STATUS until the task is final; every push the broker sent before
        that final answer is then in ``seen`` (one connection delivers in order)."""
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            rid = b"st%d" % n
            self.send(b"STATUS", rid, tid)
            body = self.reply(rid)[3]
            if any(f'"state":"{s}"'.encode() in body for s in ("succeeded", "failed", "timed_out", "cancelled")):
                return body
            time.sleep(0.02)
        raise AssertionError("task not final")

    def pushes(self, tid: bytes) -> List[bytes]:
        return [m[1] for m in self.seen if m[1] in (b"PROGRESS", b"FINISHED") and m[2] == tid]

    def close(self) -> None:
        self.sock.close(0)


def test_duplicate_submissions_report_duplicate_and_the_real_state(client, make_worker):
    started, release = threading.Event(), threading.Event()

    def h(task, ctx):
        started.set()
        release.wait(10)
        return b"once"

    make_worker({"dup": h})
    first = client.submit("dup", b"x", idempotency_key="order-17")
    assert (first.duplicate, first.state) == (False, "queued")
    assert started.wait(10)
    running = client.submit("dup", b"x", idempotency_key="order-17")
    assert (running.task_id, running.duplicate, running.state) == (first.task_id, True, "running")
    release.set()
    assert client.wait(first.task_id, timeout=10) == b"once"
    done = client.submit("dup", b"x", idempotency_key="order-17")
    assert (done.task_id, done.duplicate, done.state) == (first.task_id, True, "succeeded")
    # from another connection too (pushes stay with the first submitter, §5.9)
    with conveyor.Client(client.endpoint, timeout=5) as other:
        again = other.submit("dup", b"x", idempotency_key="order-17")
        assert (again.task_id, again.duplicate, again.state) == (first.task_id, True, "succeeded")
        assert other.wait(again.task_id, timeout=5) == b"once"  # by STATUS
    assert client.status(first.task_id).attempt == 1  # it ran once


def test_notify_levels_decide_the_pushes(broker, make_worker):
    def h(task, ctx):
        ctx.progress(50, "half")
        return b"R"

    make_worker({"n": h})
    raw = Raw(broker.clients)
    try:
        tids = {}
        for level in (b"all", b"final", b"none"):
            rid = b"s-" + level
            raw.send(b"SUBMIT", rid, b"n", b"1", b"", b"", b"notify=" + level)
            acc = raw.reply(rid)
            assert acc[1] == b"ACCEPTED" and len(acc) == 7 and acc[5:] in ([b"0", b"queued"], [b"0", b"running"])
            tids[level] = acc[3]
        for level, tid in tids.items():
            raw.status_until_final(tid)
        assert raw.pushes(tids[b"all"]) == [b"PROGRESS", b"FINISHED"]
        assert raw.pushes(tids[b"final"]) == [b"FINISHED"]
        assert raw.pushes(tids[b"none"]) == []
        # without notify: the 1.0 ACCEPTED, five frames
        raw.send(b"SUBMIT", b"old", b"n", b"1", b"", b"")
        assert len(raw.reply(b"old")) == 5
        raw.send(b"SUBMIT", b"bad", b"n", b"1", b"", b"", b"notify=some")
        rej = raw.reply(b"bad")
        assert rej[1:4] == [b"REJECTED", b"bad", b"bad_request"]
    finally:
        raw.close()


def test_wait_and_progress_work_with_notify_none_and_final(client, make_worker):
    make_worker({"q": lambda task, ctx: (ctx.progress(30, "thirty"), b"quiet")[1]})
    s = client.submit("q", notify="none")
    assert not client._core.push_expected(s.task_id.encode())  # no push will come: STATUS instead
    assert client.wait(s.task_id, timeout=10) == b"quiet"
    f = client.submit("q", notify="final")
    assert client.wait(f.task_id, timeout=10) == b"quiet"  # by FINISHED
    p = client.submit("q", notify="final")
    assert list(client.progress(p.task_id, timeout=10)) in ([], [(30, "thirty")])  # STATUS polls: may miss it
    assert client.status(p.task_id).progress == (30, "thirty")


def test_submit_many_across_a_full_queue_loses_nothing(make_broker, make_worker):
    b = make_broker("--max-queue", "5", "--max-running", "8")
    with conveyor.Client(b.clients, timeout=5) as c:
        res = c.submit_many([conveyor.Submission("qf", b"%d" % i, priority="high") for i in range(8)],
                            notify="final")
        accepted = [r for r in res if isinstance(r, conveyor.Submitted)]
        assert [type(r) for r in res] == [conveyor.Submitted] * 5 + [conveyor.QueueFull] * 3
        assert [r.queue_position for r in accepted] == [0, 1, 2, 3, 4]
        assert len({r.task_id for r in accepted}) == 5 and all(r.state == "queued" for r in accepted)
        st = c.stats()
        assert st["queue_size"] == 5 and st["submissions_rejected"] >= 3
        seen = []
        make_worker({"qf": lambda task, ctx: (seen.append(task.payload), task.payload)[1]}, endpoint=b.workers,
                    concurrency=4)
        assert [c.wait(r.task_id, timeout=10) for r in accepted] == [b"%d" % i for i in range(5)]
        # the rejected ones can simply be submitted again, now that there is room
        again = c.submit_many([conveyor.Submission("qf", b"%d" % i) for i in range(5, 8)])
        assert [c.wait(r.task_id, timeout=10) for r in again] == [b"5", b"6", b"7"]
        assert sorted(seen) == sorted(b"%d" % i for i in range(8))  # each ran once


def test_a_malformed_batch_is_rejected_whole(broker, client):
    raw = Raw(broker.clients)
    try:
        before = client.stats()
        good = [b"t", b"1", b"", b"ok", b"0"]
        raw.send(b"SUBMIT_BATCH", b"m1", b"3", *good, b"t", b"7", b"", b"bad priority", b"0", *good)
        rej = raw.reply(b"m1")
        assert rej[1:4] == [b"REJECTED", b"m1", b"bad_request"] and len(rej) == 5
        assert b"1" in rej[4]  # names the submission, counting from 0
        raw.send(b"SUBMIT_BATCH", b"m2", b"3", *good, *good)  # count does not match
        assert raw.reply(b"m2")[1:4] == [b"REJECTED", b"m2", b"bad_request"]
        raw.send(b"SUBMIT_BATCH", b"m3", b"1", b"t", b"1", b"", b"x", b"1", b"colour=blue")
        assert raw.reply(b"m3")[1:4] == [b"REJECTED", b"m3", b"bad_request"]
        after = client.stats()
        assert after["queue_size"] == before["queue_size"] == 0
        assert after["tasks_submitted"] == before["tasks_submitted"]  # nothing of them was enqueued
        # the well-formed batch is answered SUBMITTED, five frames per submission
        raw.send(b"SUBMIT_BATCH", b"ok", b"2", *good, *good)
        ok = raw.reply(b"ok")
        assert ok[1] == b"SUBMITTED" and len(ok) == 3 + 2 * 5 and ok[3] == ok[8] == b"ACCEPTED"
    finally:
        raw.close()


def test_worker_gets_task_batches_and_answers_with_done_batches(broker, client, make_worker):
    # Queued before the worker registers: its four free slots are filled at once.
    subs = client.submit_many([("bt", b"%d" % i) for i in range(40)], notify="final")
    assert all(isinstance(s, conveyor.Submitted) for s in subs)
    # inline handlers finish together within one round: their results leave together
    w = make_worker({}, concurrency=4, start=False)
    w.add_handler("bt", lambda task, ctx: task.payload + b"!", inline=True)
    w.start()
    assert w.registered.wait(10) and w.welcomed and w.batching
    assert [client.wait(s.task_id, timeout=10) for s in subs] == [b"%d!" % i for i in range(40)]
    assert w.stats["task_batches"] >= 1 and w.stats["done_batches"] >= 1
    assert w.stats["succeeded"] == 40
    st = client.stats()
    assert st["malformed_messages"] == 0 and st["stale_results"] == 0  # the broker took every DONE_BATCH


@pytest.fixture
def roomy(make_broker) -> BrokerProcess:
    return make_broker("--max-running", "16", "--max-queue", "100000")


def test_threaded_and_async_handlers_with_batches_finish_everything(roomy, make_worker):
    async def ah(task, ctx):
        await asyncio.sleep(0)
        return b"a" + task.payload

    w = make_worker({"th": lambda task, ctx: b"t" + task.payload, "as": ah}, concurrency=8, endpoint=roomy.workers)
    with conveyor.Client(roomy.clients, timeout=5) as client:
        subs = client.submit_many([("th" if i % 2 else "as", b"%d" % i) for i in range(2000)], notify="final")
        out = [client.wait(s.task_id, timeout=30) for s in subs]
        assert out == [(b"t" if i % 2 else b"a") + b"%d" % i for i in range(2000)]
        st = client.stats()
        assert st["stale_results"] == 0 and st["malformed_messages"] == 0
    assert w.stats["succeeded"] == 2000 and w.stats["task_batches"] >= 1


def test_async_client_submit_many(roomy, make_worker):
    make_worker({"e": lambda task, ctx: task.payload}, endpoint=roomy.workers, concurrency=4)
    broker = roomy

    async def main():
        async with conveyor.AsyncClient(broker.clients, timeout=5) as c:
            res = await c.submit_many([("e", b"%d" % i) for i in range(1500)], notify="final")
            assert len(res) == 1500 and all(isinstance(r, conveyor.Submitted) for r in res)
            got = await asyncio.gather(*(c.wait(r.task_id, timeout=20) for r in res[::100]))
            assert got == [b"%d" % i for i in range(0, 1500, 100)]
            dup = await c.submit("e", b"x", idempotency_key="ak")
            dup2 = await c.submit("e", b"x", idempotency_key="ak")
            assert dup2.task_id == dup.task_id and dup2.duplicate and not dup.duplicate

    asyncio.run(main())


def test_worker_adopts_the_brokers_heartbeat_from_welcome(tmp_path):
    """A worker configured at 1000 ms x 3 against a broker at 5000 ms: without WELCOME
    it would declare the broker dead after 3 s of silence and reconnect, twice in 12 s."""
    b = BrokerProcess(tmp_path / "slow-hb", heartbeat_ms=5000).start()
    w: Optional[conveyor.Worker] = None
    try:
        w = conveyor.Worker(b.workers, heartbeat_interval=1.0, liveness=3, grace=1.0)
        w.add_handler("hb", lambda task, ctx: b"")
        w.start()
        assert w.registered.wait(10) and w.welcomed
        assert (w.heartbeat_interval, w.liveness) == (5.0, 3)
        deadline = time.monotonic() + 12.0
        with conveyor.Client(b.clients, timeout=5) as c:
            while time.monotonic() < deadline:  # a steady state checked for 12 s, not a wait for an event
                assert w.stats["reconnects"] == 0 and w.registered.is_set()
                time.sleep(0.5)
            assert c.stats()["workers_connected"] == 1
            assert c.wait(c.submit("hb").task_id, timeout=10) == b""  # and it still works
        assert w.stats["reconnects"] == 0
    finally:
        if w is not None:
            w.stop(grace=0.5, timeout=10)
        b.stop()
