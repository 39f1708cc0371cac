"""Python workers as processes: kill -9 mid-task, SIGTERM drain, broker restarts."""
from __future__ import annotations

import time

import pytest

import conveyor
from conftest import wait_until


def _events_ready(sub: conveyor.Subscription) -> None:
    """Wait (bounded) until the subscription reaches the broker: a stats event arrives."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ev = sub.next(timeout=max(0.01, deadline - time.monotonic()))
        if ev and ev[0] == "stats":
            return
    raise AssertionError("no stats event within 5 s")


def test_kill_9_worker_mid_task_completes_elsewhere_once(broker, client, spawn_worker):
    with conveyor.subscribe(broker.events, ["stats", "task."], timeout=10) as sub:
        _events_ready(sub)
        a = spawn_worker(broker.workers, "victim")
        a.wait_line("ready")
        t = client.submit("first-hangs", b"", priority="high")
        assert a.wait_line(f"start {t.task_id} 1")
        a.kill9()
        b = spawn_worker(broker.workers, "rescuer")
        assert client.wait(t.task_id, timeout=20) == b"done by rescuer attempt 2"
        st = client.status(t.task_id)
        assert (st.state, st.attempt) == ("succeeded", 2)

        # Exactly one success reported: count the broker's task events until the stats
        # event after the success (events are in order on the one PUB stream).
        finals, reassigned, seen_success = [], [], False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            topic, ev = next(sub)
            if ev.get("task_id") == t.task_id and topic in ("task.succeeded", "task.failed", "task.timed_out"):
                finals.append(topic)
                seen_success = True
            elif ev.get("task_id") == t.task_id and topic == "task.reassigned":
                reassigned.append(ev["from_worker"])
            elif topic == "stats" and seen_success:
                assert ev["total_success"] == 1 and ev["tasks_reassigned"] == 1
                break
        assert finals == ["task.succeeded"] and reassigned == ["victim"]
    assert b.wait_line("start")  # the rescuer ran it (attempt 2), once
    assert [ln for ln in b.lines if ln.startswith("start")] == [f"start {t.task_id} 2"]


def test_sigterm_drains_then_returns_unfinished(broker, client, spawn_worker):
    w = spawn_worker(broker.workers, "drainer", "--concurrency", "2", "--grace", "0.5")
    w.wait_line("ready")
    quick = client.submit("slow", b"0.2")
    stuck = client.submit("slow", b"20")
    w.wait_line(f"start {stuck.task_id}")
    w.wait_line(f"start {quick.task_id}")
    w.proc.send_signal(15)
    assert w.proc.wait(15) == 0
    assert w.wait_line("stopped") == "stopped 1"  # one task given back (RETURN)
    assert client.wait(quick.task_id, timeout=5) == b"slow:drainer"
    st = wait_until(lambda: (s := client.status(stuck.task_id)).state == "queued" and s, 5,
                    what="the returned task to be queued again")
    assert st.attempt == 1  # RETURN is not a failed attempt
    client.cancel(stuck.task_id)


def test_worker_reconnects_after_broker_restart(make_broker, make_worker):
    b = make_broker(durability="fsync")
    w = conveyor.Worker(b.workers, heartbeat_interval=0.2, name="survivor", grace=1)
    w.add_handler("echo", lambda task, ctx: task.payload)
    w.start()
    try:
        assert w.registered.wait(10)
        with conveyor.Client(b.clients, timeout=5) as c:
            assert c.wait(c.submit("echo", b"before").task_id, timeout=10) == b"before"
        b.restart()  # SIGTERM: the broker tells the worker DISCONNECT, then comes back
        with conveyor.Client(b.clients, timeout=5) as c:
            t = c.submit("echo", b"after")
            assert c.wait(t.task_id, timeout=15) == b"after"
            assert c.stats()["workers_connected"] == 1
        assert w.stats["reconnects"] >= 1
    finally:
        w.stop(grace=0.5)


def test_stop_gives_back_tasks_of_a_stuck_sync_handler(client, make_worker):
    def stuck(task, ctx):
        ctx.cancelled.wait(10)
        return b"ignored"

    w = make_worker({"stuck": stuck}, grace=0.3)
    t = client.submit("stuck")
    wait_until(lambda: client.status(t.task_id).state == "running", 5, what="running")
    t0 = time.monotonic()
    w.stop(grace=0.3)
    assert time.monotonic() - t0 < 3
    assert w.stats["returned"] == 1
    st = wait_until(lambda: (s := client.status(t.task_id)).state == "queued" and s, 5, what="requeued")
    assert st.attempt == 1
