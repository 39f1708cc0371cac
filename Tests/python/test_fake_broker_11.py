"""Protocol 1.1 against a scripted broker: batching frames (SUBMIT_BATCH/SUBMITTED,
READY batch=N, TASK_BATCH, DONE_BATCH), notify and the pushes it asks for, and every
fallback to a 1.0 broker (§12), which a real 1.1 broker cannot show."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List

import pytest

import conveyor
from conftest import wait_until
from test_fake_broker import C, TID, W, FakeBroker, fake, start_worker  # noqa: F401 (fixture)

TID2 = b"0190f3c2a1b20002"
TID3 = b"0190f3c2a1b20003"


def in_thread(fn, *args, **kw) -> Dict[str, Any]:
    """Run fn in a thread; the dict gets "result" or "error", and "thread"."""
    out: Dict[str, Any] = {}

    def run():
        try:
            out["result"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    out["thread"] = th
    return out


def joined(out: Dict[str, Any], timeout: float = 5.0) -> Any:
    out["thread"].join(timeout)
    assert not out["thread"].is_alive(), "the call did not return"
    if "error" in out:
        raise out["error"]
    return out["result"]


def groups(frames: List[bytes], start: int, size: int) -> List[List[bytes]]:
    return [frames[i:i + size] for i in range(start, len(frames), size)]


def parse_batch(f: List[bytes]) -> List[Dict[str, Any]]:
    """A SUBMIT_BATCH's submissions, checked against §5.13's framing."""
    assert f[1] == b"SUBMIT_BATCH"
    count, i, subs = int(f[3]), 4, []
    for _ in range(count):
        head = f[i:i + 4]
        k = int(f[i + 4])
        subs.append({"head": head, "options": f[i + 5:i + 5 + k]})
        i += 5 + k
    assert i == len(f), "frames left after the last submission"
    return subs


# ----- client: notify and the long ACCEPTED ------------------------------------------


def test_notify_levels_are_sent_and_checked(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        for level in ("all", "final", "none"):
            out = in_thread(c.submit, "t", b"", notify=level)
            ident, f = fake.expect(b"SUBMIT")
            assert f[-1] == b"notify=" + level.encode()
            fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0", b"0", b"queued")
            assert joined(out).state == "queued"
        with pytest.raises(ValueError):
            c.submit("t", notify="sometimes")


def test_submit_falls_back_to_1_0_when_notify_is_unknown(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = in_thread(c.submit, "t", b"x", idempotency_key="k")
        ident, f = fake.expect(b"SUBMIT")
        assert f[-1] == b"notify=all"
        fake.send(ident, C, b"REJECTED", f[2], b"bad_request", b"unknown option 'notify'")
        _, again = fake.expect(b"SUBMIT")
        assert again == f[:-1]  # the same request, without the option
        fake.send(ident, C, b"ACCEPTED", f[2], TID, b"3")  # the 1.0 ACCEPTED
        s = joined(out)
        assert (s.task_id, s.queue_position, s.duplicate, s.state) == (TID.decode(), 3, False, "queued")
        # the rest of this connection speaks 1.0 at once
        out = in_thread(c.submit, "t", b"y", idempotency_key=False)
        _, f2 = fake.expect(b"SUBMIT")
        assert not any(x.startswith(b"notify=") for x in f2[7:])
        fake.send(ident, C, b"ACCEPTED", f2[2], TID2, b"0")
        assert joined(out).task_id == TID2.decode()
        # a bad_request about something else is an error, not a fallback
        out = in_thread(c.submit, "t")
        _, f3 = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"REJECTED", f3[2], b"bad_request", b"max_attempts out of range")
        with pytest.raises(conveyor.Rejected) as ei:
            joined(out)
        assert ei.value.code == "bad_request"


def test_notify_none_is_followed_by_status_and_final_has_no_progress_pushes(fake):
    status = (b'{"task_id":"%s","type":"t","priority":"NORMAL","priority_level":1,"state":"%s","attempt":1,'
              b'"max_attempts":1,"progress":%s,"created_at":"2024-07-15T09:30:00.123Z","started_at":null,'
              b'"finished_at":null,"timeout_ms":1000,"dead":false%s}')
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = in_thread(c.submit, "t", notify="none")
        ident, f = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0", b"0", b"queued")
        joined(out)
        # no push will come: wait() asks STATUS at once
        out = in_thread(c.wait, TID.decode(), timeout=5)
        _, st = fake.expect(b"STATUS", timeout=1)
        assert st[3] == TID
        fake.send(ident, C, b"STATUS", st[2], status % (TID, b"succeeded", b"null", b',"result":"R"'))
        assert joined(out) == b"R"

        out = in_thread(c.submit, "t", notify="final")
        _, f = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"ACCEPTED", f[2], TID2, b"0", b"0", b"queued")
        joined(out)
        # wait() alone relies on FINISHED: no STATUS request within a second
        w = in_thread(c.wait, TID2.decode(), timeout=5)
        with pytest.raises(AssertionError):
            fake.expect(b"STATUS", timeout=1)
        # progress() of a notify=final task reads progress from STATUS
        p = in_thread(lambda: list(c.progress(TID2.decode(), timeout=5)))
        _, st = fake.expect(b"STATUS", timeout=2)
        fake.send(ident, C, b"STATUS", st[2], status % (TID2, b"running", b'{"percent":40,"message":"m"}', b""))
        fake.send(ident, C, b"FINISHED", TID2, b"succeeded", b"ok")
        assert joined(w) == b"ok" and joined(p) == [(40, "m")]


def test_duplicate_reported_by_the_long_accepted_is_not_followed_by_push(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = in_thread(c.submit, "t", idempotency_key="k")
        ident, f = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0", b"1", b"running")
        s = joined(out)
        assert (s.duplicate, s.state) == (True, "running")
        assert not c._core.push_expected(TID)  # FINISHED goes to the first submitter (§5.9)
        out = in_thread(c.submit, "t", idempotency_key="k2")
        _, f = fake.expect(b"SUBMIT")
        fake.send(ident, C, b"ACCEPTED", f[2], TID2, b"0", b"0", b"queued")
        joined(out)
        assert c._core.push_expected(TID2)


# ----- client: submit_many ------------------------------------------------------------


def test_submit_many_frames_and_outcomes(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        items = [conveyor.Submission("a", b"1", priority="urgent", timeout=2, max_attempts=2,
                                     idempotency_key="ka", notify="none"),
                 {"type": "b", "payload": "2", "delay": 0.5},
                 ("c", b"3")]
        out = in_thread(c.submit_many, items, notify="final")
        ident, f = fake.expect(b"SUBMIT_BATCH")
        subs = parse_batch(f)
        assert [s["head"] for s in subs] == [[b"a", b"3", b"2000", b"1"], [b"b", b"1", b"", b"2"],
                                             [b"c", b"1", b"", b"3"]]
        assert subs[0]["options"] == [b"max_attempts=2", b"idempotency_key=ka", b"notify=none"]
        assert subs[1]["options"][0].startswith(b"idempotency_key=auto-")
        assert subs[1]["options"][1:] == [b"delay_ms=500", b"notify=final"]
        assert subs[2]["options"][-1] == b"notify=final"
        fake.send(ident, C, b"SUBMITTED", f[2],
                  b"ACCEPTED", TID, b"0", b"1", b"succeeded",
                  b"ACCEPTED", TID2, b"0", b"0", b"delayed",
                  b"REJECTED", b"queue_full", b"the queue is full", b"", b"")
        r = joined(out)
        assert (r[0].task_id, r[0].duplicate, r[0].state, r[0].idempotency_key) == (
            TID.decode(), True, "succeeded", "ka")
        assert (r[1].task_id, r[1].duplicate, r[1].state) == (TID2.decode(), False, "delayed")
        assert type(r[2]) is conveyor.QueueFull and r[2].message == "the queue is full"
        assert not c._core.push_expected(TID) and c._core.push_expected(TID2)
        # the whole batch refused (malformed): every item carries the refusal
        out = in_thread(c.submit_many, [("t",), ("t",)])
        _, f = fake.expect(b"SUBMIT_BATCH")
        fake.send(ident, C, b"REJECTED", f[2], b"bad_request", b"submission 1: bad priority")
        r = joined(out)
        assert [type(x) for x in r] == [conveyor.Rejected] * 2 and r[0].code == "bad_request"
        # a reply with the wrong shape is ignored (§3.4): the right one then answers
        out = in_thread(c.submit_many, [("t",)])
        _, f = fake.expect(b"SUBMIT_BATCH")
        fake.send(ident, C, b"SUBMITTED", f[2], b"ACCEPTED", TID3, b"0", b"0")
        fake.send(ident, C, b"SUBMITTED", f[2], b"ACCEPTED", TID3, b"0", b"0", b"queued")
        assert joined(out)[0].task_id == TID3.decode()
        with pytest.raises(ValueError) as ei:
            c.submit_many([("t",), ("no spaces allowed",)])
        assert "submission 1" in str(ei.value)
        assert not fake.sock.poll(200)  # nothing was sent for the invalid list


def test_submit_many_chunks_of_at_most_1000_all_in_flight(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = in_thread(c.submit_many, [("t", b"%d" % i) for i in range(2300)], notify="none")
        got = [fake.expect(b"SUBMIT_BATCH") for _ in range(3)]  # all three before any answer
        counts = [int(f[3]) for _, f in got]
        assert counts == [1000, 1000, 300]
        for n, (ident, f) in enumerate(got):
            outcomes = []
            for k in range(counts[n]):
                outcomes += [b"ACCEPTED", b"%016x" % (n * 1000 + k + 1), b"%d" % k, b"0", b"queued"]
            fake.send(ident, C, b"SUBMITTED", f[2], *outcomes)
        r = joined(out)
        assert [int(s.task_id, 16) for s in r] == list(range(1, 2301))
        assert r[1234].queue_position == 234


def test_submit_many_against_a_1_0_broker_uses_pipelined_submits(fake):
    with conveyor.Client(fake.endpoint, timeout=5) as c:
        out = in_thread(c.submit_many, [("t", b"%d" % i) for i in range(3)])
        ident, f = fake.expect(b"SUBMIT_BATCH")
        fake.send(ident, C, b"ERROR", f[2], b"unknown_command", b"unknown command SUBMIT_BATCH")
        subs = [fake.expect(b"SUBMIT")[1] for _ in range(3)]  # all three before any answer
        assert [s[6] for s in subs] == [b"0", b"1", b"2"]
        # …and a 1.0 broker does not know notify either
        for s in subs:
            fake.send(ident, C, b"REJECTED", s[2], b"bad_request", b"unknown option 'notify'")
        again = [fake.expect(b"SUBMIT")[1] for _ in range(3)]
        assert sorted(a[6] for a in again) == [b"0", b"1", b"2"]
        assert all(not x.startswith(b"notify=") for a in again for x in a[7:])
        for a in again:
            if a[6] == b"2":
                fake.send(ident, C, b"REJECTED", a[2], b"queue_full", b"full")
            else:
                fake.send(ident, C, b"ACCEPTED", a[2], b"%016x" % (int(a[6]) + 1), a[6])
        r = joined(out)
        assert [s.task_id for s in r[:2]] == ["0000000000000001", "0000000000000002"]
        assert r[0].duplicate is False and r[1].state == "queued" and isinstance(r[2], conveyor.QueueFull)
        # the connection is known to be 1.0 now: no SUBMIT_BATCH, no notify
        out = in_thread(c.submit_many, [("t", b"x")])
        _, f = fake.expect(b"SUBMIT")
        assert not any(x.startswith(b"notify=") for x in f[7:])
        fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0")
        assert joined(out)[0].task_id == TID.decode()


def test_submit_many_resends_a_keyed_batch_after_a_reconnection():
    fake1 = FakeBroker()
    port = fake1.port
    with conveyor.Client(fake1.endpoint, timeout=10) as c:
        out = in_thread(c.submit_many, [("t", b"1"), ("t", b"2")])
        _, first = fake1.expect(b"SUBMIT_BATCH")
        fake1.close()  # the broker dies without answering
        wait_until(lambda: not c.connected, 5, what="the disconnection")
        fake2 = FakeBroker(port)
        try:
            ident, again = fake2.expect(b"SUBMIT_BATCH", timeout=5)
            assert again == first  # same request id, same automatic keys
            fake2.send(ident, C, b"SUBMITTED", again[2], b"ACCEPTED", TID, b"0", b"1", b"queued",
                       b"ACCEPTED", TID2, b"0", b"0", b"queued")
            r = joined(out)
            assert [(s.task_id, s.duplicate, s.resent) for s in r] == [
                (TID.decode(), True, True), (TID2.decode(), False, True)]
        finally:
            fake2.close()


def test_async_submit_many_and_fallback(fake):
    async def main():
        async with conveyor.AsyncClient(fake.endpoint, timeout=5) as c:
            task = asyncio.ensure_future(c.submit_many([("t", b"a"), ("t", b"b")], notify="none"))
            ident, f = await asyncio.to_thread(fake.expect, b"SUBMIT_BATCH")
            assert [s["options"][-1] for s in parse_batch(f)] == [b"notify=none"] * 2
            fake.send(ident, C, b"ERROR", f[2], b"unknown_command", b"?")
            subs = [(await asyncio.to_thread(fake.expect, b"SUBMIT"))[1] for _ in range(2)]
            for i, s in enumerate(subs):
                fake.send(ident, C, b"ACCEPTED", s[2], b"%016x" % (i + 1), b"0", b"0", b"queued")
            r = await asyncio.wait_for(task, 5)
            assert [s.task_id for s in r] == ["0000000000000001", "0000000000000002"]
            one = asyncio.ensure_future(c.submit("t", notify="final"))
            _, f = await asyncio.to_thread(fake.expect, b"SUBMIT")
            assert f[-1] == b"notify=final"
            fake.send(ident, C, b"REJECTED", f[2], b"bad_request", b"unknown option 'notify'")
            _, f2 = await asyncio.to_thread(fake.expect, b"SUBMIT")
            assert f2 == f[:-1]
            fake.send(ident, C, b"ACCEPTED", f[2], TID, b"0")
            assert (await asyncio.wait_for(one, 5)).task_id == TID.decode()

    asyncio.run(main())


# ----- worker ---------------------------------------------------------------------------


def test_worker_takes_task_batch_and_answers_with_done_batch(fake):
    gate: Dict[str, Any] = {}

    async def h(t, ctx):
        if t.payload == b"cost":
            ctx.cost(5)
        await gate["event"].wait()  # all finish in the same loop iteration
        return b"r-" + t.payload

    w = start_worker(fake.endpoint, {"t": h}, concurrency=8, name="bw")
    try:
        ident, ready = fake.expect(b"READY")
        assert ready == [W, b"READY", b"bw", b"t", b"8", b"batch=8"]
        fake.send(ident, W, b"WELCOME", b"500", b"3")
        wait_until(lambda: w.welcomed, 5, what="WELCOME")
        assert w.batching and w.registered.is_set()
        batches = 0
        for rnd in range(10):  # results that are ready together go in one DONE_BATCH
            loop = w._async_loop()
            gate["event"] = asyncio.run_coroutine_threadsafe(_make_event(), loop).result(5)
            tids = [b"%015x%d" % (rnd, i) for i in range(8)]
            frames = []
            for i, tid in enumerate(tids):
                frames += [tid, b"%d" % (rnd + 1), b"t", b"1", b"60000", b"cost" if i == 0 else b"%d" % i]
            fake.send(ident, W, b"TASK_BATCH", *frames)
            wait_until(lambda: w.stats["tasks"] == 8 * (rnd + 1), 5, what="the batch's tasks to start")
            loop.call_soon_threadsafe(gate["event"].set)
            got: Dict[bytes, List[bytes]] = {}
            while len(got) < 8:
                _, f = fake.recv()
                if f[1] == b"HEARTBEAT":
                    continue
                if f[1] == b"DONE_BATCH":
                    assert (len(f) - 2) % 4 == 0 and len(f) >= 6
                    batches += 1
                    for g in groups(f, 2, 4):
                        got[g[0]] = g[1:]
                else:
                    assert f[1] == b"DONE" and len(f) in (5, 6)
                    got[f[2]] = [f[3], f[4], f[5][5:] if len(f) == 6 else b""]
            assert sorted(got) == sorted(tids)  # each exactly once
            for i, tid in enumerate(tids):
                assert got[tid] == [b"%d" % (rnd + 1), b"r-cost" if i == 0 else b"r-%d" % i,
                                    b"5" if i == 0 else b""]
            if batches >= 2:
                break
        assert batches >= 2 and w.stats["task_batches"] == rnd + 1
        wait_until(lambda: w.stats["done_batches"] == batches, 2, what="the worker's count of DONE_BATCHes")
    finally:
        w.stop(grace=0)


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


def test_worker_ignores_a_malformed_task_batch(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b"ok"}, concurrency=4)
    try:
        ident, _ = fake.expect(b"READY")
        fake.send(ident, W, b"WELCOME", b"500", b"3")
        good = [TID, b"1", b"t", b"1", b"1000", b"x"]
        fake.send(ident, W, b"TASK_BATCH", *good)  # k = 1: must be a TASK
        fake.send(ident, W, b"TASK_BATCH", *good, TID2, b"1", b"t", b"9", b"1000", b"x")  # bad priority
        fake.send(ident, W, b"TASK_BATCH", *good, TID2, b"1", b"t", b"1", b"1000")  # frame missing
        fake.send(ident, W, b"TASK_BATCH", TID3, b"1", b"t", b"1", b"1000", b"x",
                  TID2, b"1", b"t", b"1", b"1000", b"y")
        seen = set()
        while len(seen) < 2:
            _, f = fake.recv()
            if f[1] == b"DONE":
                seen.add(f[2])
            elif f[1] == b"DONE_BATCH":
                seen.update(g[0] for g in groups(f, 2, 4))
        assert seen == {TID2, TID3} and w.stats["tasks"] == 2 and w.stats["task_batches"] == 1
    finally:
        w.stop(grace=0)


def test_worker_falls_back_to_plain_ready_against_a_1_0_broker(fake):
    w = start_worker(fake.endpoint, {"t": lambda t, c: b"ok"}, concurrency=4)
    try:
        ident, ready = fake.expect(b"READY")
        assert ready[-1] == b"batch=4"
        t0 = time.monotonic()
        fake.send(ident, W, b"DISCONNECT")  # a 1.0 broker: READY with options is malformed
        ident2, ready2 = fake.expect(b"READY", timeout=3)
        assert time.monotonic() - t0 < 0.8  # at once, not after the 1 s backoff
        assert ident2 != ident and ready2 == [W, b"READY", w.name.encode(), b"t", b"4"]
        fake.send(ident2, W, b"HEARTBEAT")  # 1.0: no WELCOME
        wait_until(lambda: w.registered.is_set(), 5, what="registration")
        assert not w.welcomed and not w.batching
        for i in range(4):  # results together, but no WELCOME: single DONEs only
            fake.send(ident2, W, b"TASK", b"%016x" % (i + 1), b"1", b"t", b"1", b"60000", b"")
        done = []
        while len(done) < 4:
            _, f = fake.recv()
            assert f[1] in (b"DONE", b"HEARTBEAT")
            if f[1] == b"DONE":
                done.append(f[2])
        assert sorted(done) == [b"%016x" % (i + 1) for i in range(4)]
        # a DISCONNECT after registration is an ordinary reconnection (with backoff) …
        t0 = time.monotonic()
        fake.send(ident2, W, b"DISCONNECT")
        ident3, ready3 = fake.expect(b"READY", timeout=5)
        assert time.monotonic() - t0 >= 0.9 and ready3[-1] == b"4"  # still plain: the broker is 1.0
        # … and a WELCOME (the broker was upgraded) brings the option back next time
        fake.send(ident3, W, b"WELCOME", b"200", b"3")
        wait_until(lambda: w.welcomed, 5, what="WELCOME")
        assert not w.batching
        fake.send(ident3, W, b"DISCONNECT")
        _, ready4 = fake.expect(b"READY", timeout=5)
        assert ready4[-1] == b"batch=4"
    finally:
        w.stop(grace=0)
