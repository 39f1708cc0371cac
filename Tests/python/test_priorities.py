"""Strict priority, FIFO within a level, end to end through a Python worker."""
from __future__ import annotations

import random

import conveyor


def test_completion_order_is_urgent_high_normal_low_fifo_within_level(client, make_worker):
    # Submitted while no worker is connected: all of them wait in the queue.
    rng = random.Random(7)
    levels = ["low", "normal", "high", "urgent"] * 5
    rng.shuffle(levels)
    submitted = []
    for i, level in enumerate(levels):
        t = client.submit("order", f"{i}", priority=level)
        submitted.append((conveyor.Priority[level.upper()], i, t.task_id))
    assert client.stats()["queue_size"] == len(levels)

    done = []
    make_worker({"order": lambda task, ctx: done.append((task.priority, task.id)) or b""}, concurrency=1)
    for _, _, tid in submitted:
        client.wait(tid, timeout=20)

    expected = [(int(p), tid) for p, i, tid in sorted(submitted, key=lambda s: (-s[0], s[1]))]
    assert done == expected
    # and the priorities the handler saw are the ones submitted
    assert [p for p, _ in done] == sorted((int(p) for p, _, _ in submitted), reverse=True)


def test_numeric_priorities_and_names_are_the_same(client):
    ids = [client.submit("nobody-handles-this", priority=p).task_id for p in (0, "1", "HIGH", conveyor.Priority.URGENT)]
    names = [client.status(i).priority for i in ids]
    assert names == ["LOW", "NORMAL", "HIGH", "URGENT"]
