"""conveyor.Client and conveyor.Worker against a real broker."""
from __future__ import annotations

import json
import threading
import time

import pytest

import conveyor
from conftest import wait_until


def test_submit_wait_status_roundtrip(client, make_worker):
    make_worker({"echo": lambda task, ctx: task.payload.upper()})
    t = client.submit("echo", "hello", priority="high")
    assert isinstance(t, conveyor.Submitted)
    assert len(t.task_id) == 16 and t.queue_position >= 0
    assert (t.duplicate, t.state) == (False, "queued")
    assert client.wait(t.task_id, timeout=10) == b"HELLO"
    st = client.status(t.task_id)
    assert st.state == "succeeded" and st.finished
    assert (st.task_id, st.type, st.priority, st.priority_level, st.attempt) == (t.task_id, "echo", "HIGH", 2, 1)
    assert st.result == b"HELLO" and st.error is None and st.dead is False
    assert st.created_at.endswith("Z") and st.started_at and st.finished_at
    assert st.raw["state"] == "succeeded"


def test_binary_safe_payload_and_result(client, make_worker):
    everything = bytes(range(256))
    seen = []

    def h(task, ctx):
        seen.append(task.payload)
        return task.payload[::-1] + task.payload

    make_worker({"bin": h})
    t = client.submit("bin", everything)
    want = everything[::-1] + everything
    assert client.wait(t.task_id, timeout=10) == want
    assert seen == [everything]
    assert client.status(t.task_id).result == want  # decoded from result_base64
    # A result that is valid UTF-8 comes back through "result".
    assert client.wait(client.submit("bin", "é").task_id, timeout=10) == "é".encode()[::-1] + "é".encode()


def test_handler_return_types(client, make_worker):
    make_worker({"dict": lambda t, c: {"pages": 3, "ok": True}, "str": lambda t, c: "ünï",
                 "none": lambda t, c: None})
    assert json.loads(client.wait(client.submit("dict").task_id, timeout=10)) == {"pages": 3, "ok": True}
    assert client.wait(client.submit("str").task_id, timeout=10) == "ünï".encode()
    assert client.wait(client.submit("none").task_id, timeout=10) == b""


def test_progress_iterator_yields_reports_then_ends(client, make_worker):
    def h(task, ctx):
        ctx.progress(10, "downloading")
        ctx.progress(None, "thinking")
        ctx.progress(90.7, "writing")
        return b"ok"

    make_worker({"p": h})
    t = client.submit("p")
    items = list(client.progress(t.task_id, timeout=10))
    assert items == [(10, "downloading"), (None, "thinking"), (90, "writing")]
    assert client.wait(t.task_id, timeout=1) == b"ok"  # the outcome is already there
    assert client.status(t.task_id).progress == (90, "writing")


def test_progress_live_while_running(client, make_worker):
    step = threading.Event()

    def h(task, ctx):
        ctx.progress(25, "a")
        step.wait(10)
        ctx.progress(75, "b")
        return b"done"

    make_worker({"live": h})
    t = client.submit("live")
    it = client.progress(t.task_id, timeout=10)
    assert next(it) == (25, "a")
    step.set()
    assert next(it) == (75, "b")
    assert list(it) == []  # ends after the final state, no final item


def test_progress_of_a_task_submitted_elsewhere_is_polled(broker, client, make_worker):
    step = threading.Event()

    def h(task, ctx):
        ctx.progress(40, "polled")
        step.wait(10)
        return b"x"

    make_worker({"pp": h})
    t = client.submit("pp")
    with conveyor.Client(broker.clients, timeout=5) as other:  # no pushes for it: STATUS polls
        it = other.progress(t.task_id, timeout=10)
        assert next(it) == (40, "polled")
        step.set()
        assert list(it) == []
        assert other.wait(t.task_id, timeout=10) == b"x"


def test_failure_raises_task_failed(client, make_worker):
    def h(task, ctx):
        raise RuntimeError("pdf is encrypted")

    make_worker({"bad": h})
    t = client.submit("bad")
    with pytest.raises(conveyor.TaskFailed) as e:
        client.wait(t.task_id, timeout=10)
    assert e.value.task_id == t.task_id and e.value.error == "pdf is encrypted"
    st = client.status(t.task_id)
    assert st.state == "failed" and st.error == "pdf is encrypted" and st.dead is True


def test_cancel_queued_task(client):
    t = client.submit("nobody-handles-this", b"x")
    assert client.status(t.task_id).state == "queued"
    assert client.cancel(t.task_id) == "queued"
    with pytest.raises(conveyor.TaskCancelled) as e:
        client.wait(t.task_id, timeout=5)
    assert e.value.task_id == t.task_id
    assert client.status(t.task_id).state == "cancelled"
    with pytest.raises(conveyor.NotCancellable) as e2:
        client.cancel(t.task_id)
    assert e2.value.code == "not_cancellable" and isinstance(e2.value, conveyor.Rejected)


def test_cancel_running_task_sets_ctx_cancelled(client, make_worker):
    started, saw_cancel = threading.Event(), threading.Event()
    reasons = []

    def h(task, ctx):
        started.set()
        if ctx.cancelled.wait(10):
            reasons.append(ctx.cancel_reason)
            saw_cancel.set()
        return b"too late"

    make_worker({"long": h})
    t = client.submit("long")
    assert started.wait(10)
    assert client.cancel(t.task_id) == "running"
    with pytest.raises(conveyor.TaskCancelled):
        client.wait(t.task_id, timeout=5)
    assert saw_cancel.wait(5) and reasons == ["cancelled"]
    time.sleep(0.1)  # the handler's late return must not change anything
    assert client.status(t.task_id).state == "cancelled"


def test_task_timeout_raises_task_timed_out(client, make_worker):
    reasons = []

    def h(task, ctx):
        assert 0 < task.timeout <= 0.3 and task.deadline > time.monotonic() - 1
        ctx.cancelled.wait(5)
        reasons.append(ctx.cancel_reason)
        return b"never"

    make_worker({"hang": h})
    t = client.submit("hang", timeout=0.3)
    with pytest.raises(conveyor.TaskTimedOut) as e:
        client.wait(t.task_id, timeout=10)
    assert e.value.task_id == t.task_id
    assert client.status(t.task_id).state == "timed_out"
    wait_until(lambda: reasons, 5, what="handler to see the cancellation")
    assert reasons[0] in ("timed_out", "cancelled")


def test_wait_timeout_is_not_task_timeout(client):
    t = client.submit("nobody-handles-this")
    t0 = time.monotonic()
    with pytest.raises(conveyor.WaitTimeout):
        client.wait(t.task_id, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3
    assert client.status(t.task_id).state == "queued"


def test_idempotency_key_duplicates(broker, client, make_worker):
    runs = []
    make_worker({"once": lambda task, ctx: runs.append(task.id) or b"r"})
    a = client.submit("once", b"1", idempotency_key="invoice-42")
    b = client.submit("once", b"1", idempotency_key="invoice-42")
    with conveyor.Client(broker.clients, timeout=5) as other:
        c = other.submit("once", b"1", idempotency_key="invoice-42")
        assert other.wait(c.task_id, timeout=10) == b"r"  # followed by STATUS: the push went to `client`
    assert a.task_id == b.task_id == c.task_id
    assert a.idempotency_key == "invoice-42"
    assert client.wait(a.task_id, timeout=10) == b"r"
    assert runs == [a.task_id]
    assert client.stats()["tasks_submitted"] == 1


def test_automatic_idempotency_keys_are_distinct(client):
    a = client.submit("nobody-handles-this")
    b = client.submit("nobody-handles-this")
    assert a.task_id != b.task_id
    assert a.idempotency_key.startswith("auto-") and a.idempotency_key != b.idempotency_key
    n = client.submit("nobody-handles-this", idempotency_key=False)
    assert n.idempotency_key is None


def test_delay_and_max_attempts(client, make_worker):
    attempts = []

    def h(task, ctx):
        attempts.append(task.attempt)
        if task.attempt == 1:
            raise ValueError("transient")
        return b"second time lucky"

    make_worker({"retry": h})
    d = client.submit("nobody-handles-this", delay=30)
    assert d.state == "delayed" and client.status(d.task_id).state == "delayed"
    # backoff is the broker's default (1 s base, equal jitter): the retry comes within ~1 s
    t = client.submit("retry", max_attempts=2)
    assert client.wait(t.task_id, timeout=10) == b"second time lucky"
    assert attempts == [1, 2]


def test_not_found_and_bad_arguments(client):
    with pytest.raises(conveyor.NotFound) as e:
        client.status("ffffffffffffffff")
    assert e.value.code == "not_found" and isinstance(e.value, LookupError)
    with pytest.raises(conveyor.NotFound):
        client.wait("ffffffffffffffff", timeout=5)
    with pytest.raises(conveyor.NotFound):
        client.cancel("ffffffffffffffff")
    with pytest.raises(ValueError):
        client.status("not-a-task-id")
    with pytest.raises(ValueError):
        client.submit("bad type!", b"")
    with pytest.raises(ValueError):
        client.submit("ok", b"", priority=7)
    with pytest.raises(TypeError):
        client.submit("ok", 42)


def test_rejected_by_broker_types(make_broker):
    b = make_broker("--types", "pdf,youtube", "--max-payload", "1000")
    with conveyor.Client(b.clients, timeout=5) as c:
        with pytest.raises(conveyor.Rejected) as e:
            c.submit("video", b"")
        assert e.value.code == "unknown_type" and not isinstance(e.value, conveyor.QueueFull)
        with pytest.raises(conveyor.Rejected) as e:
            c.submit("pdf", b"x" * 1001)
        assert e.value.code == "payload_too_large"
        assert c.submit("pdf", b"x" * 1000).task_id


def test_queue_full(make_broker):
    b = make_broker("--max-queue", "2")
    with conveyor.Client(b.clients, timeout=5) as c:
        c.submit("t", b"1")
        c.submit("t", b"2")
        with pytest.raises(conveyor.QueueFull) as e:
            c.submit("t", b"3")
        assert isinstance(e.value, conveyor.Rejected) and e.value.code == "queue_full" and e.value.message
        # delayed tasks do not count against the bound
        assert c.submit("t", b"4", delay=60).state == "delayed"
        stats = c.stats()
        assert stats["queue_size"] == 2 and stats["max_queue_size"] == 2 and stats["submissions_rejected"] == 1


def test_stats_tasks_ping(client):
    assert client.ping() < 5
    a = client.submit("nobody-handles-this", priority="low")
    b = client.submit("nobody-handles-this", priority="urgent")
    listing = client.tasks(limit=10)
    assert [t["task_id"] for t in listing["queued"]] == [b.task_id, a.task_id]
    assert listing["running"] == []
    s = client.stats()
    assert s["queue_by_priority"] == {"urgent": 1, "high": 0, "normal": 0, "low": 1}
    assert s["is_running"] is True and s["workers_connected"] == 0


def test_broker_unavailable():
    # Nothing listens on this port: requests are queued by libzmq and never answered.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with conveyor.Client(f"tcp://127.0.0.1:{port}", timeout=0.4) as c:
        t0 = time.monotonic()
        with pytest.raises(conveyor.BrokerUnavailable):
            c.ping()
        with pytest.raises(conveyor.BrokerUnavailable):
            c.submit("x", b"")
        assert time.monotonic() - t0 < 3


def test_many_threads_share_one_client(client, make_worker):
    make_worker({"sq": lambda task, ctx: str(int(task.payload) ** 2)}, concurrency=4)
    results = {}
    errors = []

    def run(i):
        try:
            t = client.submit("sq", str(i))
            results[i] = int(client.wait(t.task_id, timeout=20))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors and results == {i: i * i for i in range(40)}
