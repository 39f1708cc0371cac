"""conveyor.AsyncClient and async handlers against a real broker."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

import conveyor


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_async_client_submit_wait_status_progress(broker, make_worker):
    def h(task, ctx):
        ctx.progress(30, "a")
        ctx.progress(60, "b")
        return task.payload * 2

    make_worker({"dbl": h})

    async def main():
        async with conveyor.AsyncClient(broker.clients, timeout=5) as c:
            assert await c.ping() < 5
            t = await c.submit("dbl", b"ab", priority=2)
            assert [p async for p in c.progress(t.task_id, timeout=10)] == [(30, "a"), (60, "b")]
            assert await c.wait(t.task_id, timeout=10) == b"abab"
            st = await c.status(t.task_id)
            assert st.state == "succeeded" and st.priority == "HIGH" and st.result == b"abab"
            s = await c.stats()
            assert s["total_success"] >= 1
            assert (await c.tasks())["queued"] == []

    run(main())


def test_async_client_pipelines_many_calls(broker, make_worker):
    make_worker({"n": lambda task, ctx: task.payload}, concurrency=4)

    async def main():
        async with conveyor.AsyncClient(broker.clients, timeout=10) as c:
            subs = await asyncio.gather(*[c.submit("n", b"%d" % i) for i in range(90)])
            assert len({s.task_id for s in subs}) == 90
            results = await asyncio.gather(*[c.wait(s.task_id, timeout=30) for s in subs])
            assert results == [b"%d" % i for i in range(90)]

    run(main(), 60)


def test_async_client_errors(make_broker):
    b = make_broker("--max-queue", "1")

    async def main():
        c = conveyor.AsyncClient(b.clients, timeout=5)  # created outside the call: opens on first use
        try:
            t = await c.submit("nobody-handles-this")
            with pytest.raises(conveyor.QueueFull):
                await c.submit("nobody-handles-this")
            assert await c.cancel(t.task_id) == "queued"
            with pytest.raises(conveyor.TaskCancelled):
                await c.wait(t.task_id, timeout=5)
            with pytest.raises(conveyor.NotFound):
                await c.status("0000000000000001")
            t2 = await c.submit("nobody-handles-this")
            with pytest.raises(conveyor.WaitTimeout):
                await c.wait(t2.task_id, timeout=0.2)
        finally:
            await c.aclose()

    run(main())


def test_async_client_broker_unavailable():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        async with conveyor.AsyncClient(f"tcp://127.0.0.1:{port}", timeout=0.3) as c:
            with pytest.raises(conveyor.BrokerUnavailable):
                await c.ping()

    run(main())


def test_async_handlers_run_concurrently_on_one_loop(client, make_worker):
    running, peak, loops = [0], [0], set()
    lock = threading.Lock()

    async def h(task, ctx):
        loops.add((threading.get_ident(), id(asyncio.get_running_loop())))
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        ctx.progress(50, "awaiting")
        await asyncio.sleep(0.3)
        with lock:
            running[0] -= 1
        return {"id": task.id}

    make_worker({"ai": h}, concurrency=3)
    ids = [client.submit("ai").task_id for _ in range(3)]
    for i in ids:
        assert client.wait(i, timeout=10) == ('{"id": "%s"}' % i).encode()
    assert peak[0] == 3 and len(loops) == 1  # all three awaited at once, on one loop thread
    assert list(client.progress(ids[0], timeout=5)) == [(50, "awaiting")]


def test_async_handler_is_cancelled_on_cancel(client, make_worker):
    started, cancelled = threading.Event(), threading.Event()

    async def h(task, ctx):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert ctx.cancelled.is_set() and ctx.cancel_reason == "cancelled"
            cancelled.set()
            raise
        return b"no"

    async def fails(task, ctx):
        raise KeyError("missing field")

    make_worker({"acancel": h, "afail": fails}, concurrency=2)
    t = client.submit("acancel")
    assert started.wait(10)
    assert client.cancel(t.task_id) == "running"
    assert cancelled.wait(5)
    with pytest.raises(conveyor.TaskCancelled):
        client.wait(t.task_id, timeout=5)
    with pytest.raises(conveyor.TaskFailed) as e:
        client.wait(client.submit("afail").task_id, timeout=10)
    assert "missing field" in e.value.error
