"""conveyor.subscribe over the broker's event stream, and the stats subscriber example."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import conveyor
from conftest import PKG


def _wait_subscribed(sub):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ev = sub.next(timeout=max(0.01, deadline - time.monotonic()))
        if ev and ev[0] == "stats":
            return ev[1]
    raise AssertionError("no stats event within 5 s")


def test_task_events_in_order(broker, client, make_worker):
    make_worker({"ev": lambda task, ctx: ctx.progress(50, "half") or b"done"})
    with conveyor.subscribe(broker.events, topics=("stats", "task."), timeout=5) as sub:
        stats = _wait_subscribed(sub)
        assert {"queue_size", "queue_by_priority", "workers_connected"} <= set(stats)
        t = client.submit("ev", priority="urgent")
        seen = []
        deadline = time.monotonic() + 10
        while "task.succeeded" not in seen and time.monotonic() < deadline:
            topic, ev = next(sub)
            if ev.get("task_id") == t.task_id:
                assert ev["priority"] == "URGENT" and ev["event"] == topic[len("task."):]
                seen.append(topic)
        assert seen == ["task.queued", "task.started", "task.progress", "task.succeeded"]


def test_subscription_timeout(broker):
    with conveyor.subscribe(broker.events, topics="no.such.topic.", timeout=0.3) as sub:
        t0 = time.monotonic()
        with pytest.raises(conveyor.WaitTimeout):
            next(sub)
        assert time.monotonic() - t0 < 2


def test_stats_subscriber_example(broker):
    p = subprocess.Popen([sys.executable, str(PKG / "examples" / "stats_subscriber.py"), broker.events],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(PKG)})
    try:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=10), "no output within 10 s"
        line = p.stdout.readline().decode()
        assert line.startswith("queued ") and "workers 0" in line
    finally:
        p.kill()
        p.wait(10)
