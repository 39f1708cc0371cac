"""Broker crashes and restarts: keyed submits are resent, never lost nor doubled."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import conveyor
from conftest import wait_until


def _queued_ids(c: conveyor.Client):
    listing = c.tasks(limit=10_000)
    return [t["task_id"] for t in listing["queued"]] + [t["task_id"] for t in listing["running"]]


def test_submit_while_broker_is_down_is_delivered_when_it_returns(make_broker):
    b = make_broker(durability="fsync")
    with conveyor.Client(b.clients, timeout=20) as c:
        c.ping()
        b.stop()
        wait_until(lambda: not c.connected, 5, what="the client to notice the broker is gone")
        result = {}
        th = threading.Thread(target=lambda: result.update(t=c.submit("later", b"x", idempotency_key="k-down")))
        th.start()
        time.sleep(0.3)  # the SUBMIT is now waiting in the client's queue
        assert th.is_alive()
        b.start()
        th.join(20)
        t = result["t"]
        assert _queued_ids(c) == [t.task_id]
        assert c.status(t.task_id).state == "queued"


def test_submit_lost_in_a_crash_is_resent_once(make_broker):
    b = make_broker(durability="fsync")
    with conveyor.Client(b.clients, timeout=20) as c:
        before = c.submit("x", b"before")
        os.kill(b.proc.pid, signal.SIGSTOP)  # frozen: reads nothing, answers nothing
        result = {}
        th = threading.Thread(target=lambda: result.update(t=c.submit("x", b"in flight")))
        th.start()
        time.sleep(0.3)  # sent into the frozen broker's socket buffer
        b.kill()  # kill -9: the SUBMIT is lost with it
        b.start()
        th.join(20)
        t = result["t"]
        assert t.resent is True and t.idempotency_key.startswith("auto-")
        ids = _queued_ids(c)
        assert sorted(ids) == sorted([before.task_id, t.task_id])


def test_crash_during_a_burst_of_keyed_submits(make_broker):
    b = make_broker(durability="fsync")
    n_threads, per_thread = 4, 25
    accepted = {}
    resent = []
    errors = []
    lock = threading.Lock()
    with conveyor.Client(b.clients, timeout=30) as c:

        def producer(k):
            for i in range(per_thread):
                key = f"burst-{k}-{i}"
                try:
                    t = c.submit("burst", key, idempotency_key=key)
                except Exception as e:  # pragma: no cover - asserted below
                    errors.append(e)
                    return
                with lock:
                    accepted[key] = t.task_id
                    resent.append(t.resent)

        threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
        for th in threads:
            th.start()
        wait_until(lambda: len(accepted) >= 20, 10, what="the first acceptances")
        b.kill()  # kill -9 in the middle of the burst
        time.sleep(0.2)
        b.start()
        for th in threads:
            th.join(40)
        assert not errors
        assert len(accepted) == n_threads * per_thread
        ids = _queued_ids(c)
        # every key has exactly one task, and the broker holds exactly those
        assert len(set(accepted.values())) == len(accepted)
        assert sorted(ids) == sorted(accepted.values())
        assert any(resent)  # the producers' in-flight submits went again after the restart


def test_unkeyed_submit_is_not_resent(make_broker):
    b = make_broker(durability="fsync")
    with conveyor.Client(b.clients, timeout=2, auto_idempotency=False) as c:
        c.ping()
        os.kill(b.proc.pid, signal.SIGSTOP)
        result = {}

        def submit():
            try:
                c.submit("x", b"no key")
            except conveyor.BrokerUnavailable as e:
                result["error"] = e

        th = threading.Thread(target=submit)
        th.start()
        time.sleep(0.3)
        b.kill()
        b.start()
        th.join(10)
        assert isinstance(result.get("error"), conveyor.BrokerUnavailable)
        assert _queued_ids(c) == []  # the lost SUBMIT was not sent again


def test_wait_survives_a_broker_restart(make_broker, tmp_path):
    b = make_broker(durability="fsync")
    with conveyor.Client(b.clients, timeout=10) as c:
        t = c.submit("after-restart", b"v")
        b.kill()
        b.start()
        # The FINISHED push would have gone to the old connection: wait() polls STATUS now.
        w = conveyor.Worker(b.workers, heartbeat_interval=0.2)
        w.add_handler("after-restart", lambda task, ctx: task.payload + b"!")
        w.start()
        try:
            assert c.wait(t.task_id, timeout=15) == b"v!"
        finally:
            w.stop(grace=0.5)
