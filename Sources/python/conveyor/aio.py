"""The asyncio client: the same calls as ``Client``, as coroutines, on one DEALER."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Tuple, Union

import zmq

from ._common import (
    ALWAYS_KEY,
    DEFAULT_CLIENT_ENDPOINT,
    DEFAULT_FAILOVER_AFTER,
    EVENT_DOWN,
    EVENT_UP,
    Chunk,
    EndpointsLike,
    Spec,
    build_spec,
    close_dealer,
    make_dealer,
    parse_endpoints,
    read_monitor_event,
    plan_batches,
    recv_messages,
    send_frames,
    tasks_limit,
)
from ._core import (
    END,
    ClientCore,
    Request,
    decode_accepted,
    decode_json,
    decode_submitted,
    expect,
    outcome_result,
)
from ._curve import PathLike, load_curve_keys
from ._errors import BrokerUnavailable, ConveyorError, Rejected, WaitTimeout
from ._protocol import PriorityLike, Submission, Submitted, TaskStatus, check_task_id, text

__all__ = ["AsyncClient"]


class AsyncClient:
    """Asyncio Conveyor client over one ZeroMQ DEALER connection.

    Same arguments and semantics as :class:`conveyor.Client`; every call is a
    coroutine and ``progress()`` is an async iterator. The socket is opened on first
    use in the running event loop (so the object may be created before the loop, e.g.
    at import time of a web app) and then belongs to that loop: use the client from
    that loop only. It is driven by ``loop.add_reader`` on the socket's file
    descriptor: no extra thread (a loop with ``add_reader``, i.e. not Windows'
    Proactor loop, is needed). Close it with ``await client.aclose()`` or
    ``async with``. Several endpoints (active/standby brokers) and
    ``failover_after`` work as in :class:`conveyor.Client`.
    """

    def __init__(self, endpoint: EndpointsLike = DEFAULT_CLIENT_ENDPOINT, *, curve_key: Optional[PathLike] = None,
                 curve_server_key: Optional[PathLike] = None, timeout: float = 10.0,
                 auto_idempotency: bool = True, failover_after: float = DEFAULT_FAILOVER_AFTER,
                 context: Optional[zmq.Context] = None):
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not failover_after > 0:
            raise ValueError("failover_after must be positive")
        self._keys = load_curve_keys(curve_key, curve_server_key)
        self.endpoints: Tuple[str, ...] = tuple(parse_endpoints(endpoint))
        self.timeout = float(timeout)
        self.failover_after = float(failover_after)
        self.auto_idempotency = auto_idempotency
        self._zctx = context
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._core: Optional[ClientCore] = None
        self._sock: Optional[zmq.Socket] = None
        self._mon: Optional[zmq.Socket] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = 0.0
        self._check_scheduled = False
        self._closed = False

    # ----- lifecycle --------------------------------------------------------------

    def _ensure(self) -> ClientCore:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ConveyorError("the client is closed")
        if self._loop is None:
            self._loop = loop
            self._core = ClientCore(loop.create_future, self.timeout, list(self.endpoints), self.failover_after)
            ctx = self._zctx or zmq.Context.instance()
            self._sock, self._mon = make_dealer(ctx, self.endpoints[0], self._keys)
            loop.add_reader(self._mon.FD, self._on_readable)
            loop.add_reader(self._sock.FD, self._on_readable)
            self._arm(force=True)
        elif loop is not self._loop:
            raise RuntimeError("this AsyncClient belongs to another event loop")
        assert self._core is not None
        return self._core

    async def connect(self) -> "AsyncClient":
        """Open the socket now (otherwise the first call does)."""
        self._ensure()
        return self

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; pending calls end with ConveyorError. Idempotent.
        Call it from the client's loop (or after that loop has stopped)."""
        if self._closed:
            return
        self._closed = True
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        for s in (self._sock, self._mon):
            if s is not None:
                try:
                    if not self._loop.is_closed():
                        self._loop.remove_reader(s.FD)
                except Exception:
                    pass
        if self._core is not None:
            self._core.close()
        close_dealer(self._sock, self._mon)

    async def __aenter__(self) -> "AsyncClient":
        self._ensure()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._core is not None and self._core.connected

    @property
    def endpoint(self) -> str:
        """The broker endpoint in use (with several: the one the client is at now)."""
        return self.endpoints[0] if self._core is None else self._core.endpoint

    def _auto_key(self) -> Any:
        return ALWAYS_KEY if len(self.endpoints) > 1 else self.auto_idempotency

    # ----- driving the socket -------------------------------------------------------

    def _on_readable(self) -> None:
        self._check_scheduled = False
        if self._closed:
            return
        core, sock, mon = self._core, self._sock, self._mon
        assert core is not None and sock is not None and mon is not None
        try:
            while mon.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                ev = read_monitor_event(mon)
                if ev == EVENT_DOWN:
                    core.on_disconnected()
                elif ev == EVENT_UP:
                    for req in core.on_connected():
                        self._send(req)
            batch = recv_messages(sock)
            if batch:
                for req in core.on_messages(batch):
                    self._send(req)
            # Reading EVENTS also re-arms the edge-triggered descriptor; anything that
            # arrived meanwhile is read on the next turn of the loop.
            if len(batch) >= 10_000 or sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._schedule_check()
        except zmq.ZMQError:
            if self._closed:
                return
            raise
        if core.switch_to is not None:
            self._switch()
        self._arm()

    def _switch(self) -> None:
        """Move to the endpoint the core chose, if that move is due (several endpoints)."""
        core, loop = self._core, self._loop
        assert core is not None and loop is not None
        while True:
            ep = core.take_switch()
            if ep is None:
                return
            try:
                sock, mon = make_dealer(self._zctx or zmq.Context.instance(), ep, self._keys)
            except zmq.ZMQError:
                core.switch_failed(ep)
                continue
            for s in (self._sock, self._mon):
                if s is not None:
                    loop.remove_reader(s.FD)
            close_dealer(self._sock, self._mon)
            self._sock, self._mon = sock, mon
            loop.add_reader(mon.FD, self._on_readable)
            loop.add_reader(sock.FD, self._on_readable)
            for req in core.switched(ep):
                self._send(req)
            self._schedule_check()

    def _schedule_check(self) -> None:
        if not self._check_scheduled and self._loop is not None:
            self._check_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _send(self, req: Request) -> None:
        assert self._sock is not None and self._core is not None
        if self._core.switch_to is not None:
            self._core.hold(req)  # sent on the next endpoint's socket
            return
        try:
            send_frames(self._sock, self._core.wire(req))
        except zmq.Again:
            self._core.send_failed(req, "the client's send queue is full (broker unreachable?)")
            return
        self._core.sent(req)
        # A send can consume the descriptor's edge: look for input once more.
        self._schedule_check()

    def _arm(self, force: bool = False) -> None:
        if self._closed or self._loop is None or self._core is None:
            return
        nxt = self._core.next_deadline()
        now = time.monotonic()
        # Also wake once a second: a safety net for a missed descriptor edge.
        at = min(nxt, now + 1.0) if nxt is not None else now + 1.0
        if self._timer is not None and not force and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._core is None:
            return
        for req in self._core.tick():
            self._send(req)
        self._on_readable()  # also makes a move that is due
        self._arm(force=True)

    def _start(self, command: bytes, fields: List[bytes], resendable: bool,
               levels: Optional[List[bytes]] = None) -> Request:
        core = self._ensure()
        req = core.request(command, fields, resendable, levels=levels)
        self._send(req)
        return req

    async def _call(self, command: bytes, fields: List[bytes], resendable: bool) -> Tuple[List[bytes], bool]:
        req = self._start(command, fields, resendable)
        self._arm()
        # The core fails the future with BrokerUnavailable at its deadline.
        return await req.future

    def _submit_spec(self, spec: Spec) -> Request:
        return self._start(b"SUBMIT", spec.submit_fields(), spec.key is not None, [spec.notify])

    def _accepted(self, spec: Spec, frames: List[bytes], resent: bool) -> Submitted:
        sub = decode_accepted(expect(frames, b"ACCEPTED"), resent, spec.delayed, spec.key)
        if spec.key is not None and not spec.automatic and len(frames) < 7:
            assert self._core is not None
            self._core.disown(frames[3])  # a 1.0 broker: maybe a duplicate (see Client)
        return sub

    # ----- calls (see Client for the full documentation) ----------------------------

    async def submit(self, type: str, payload: Union[bytes, str] = b"", *, priority: PriorityLike = "normal",
                     timeout: Optional[float] = None, idempotency_key: Union[str, bytes, None, bool] = None,
                     delay: Optional[float] = None, max_attempts: Optional[int] = None,
                     notify: str = "all") -> Submitted:
        """As :meth:`Client.submit`."""
        spec = build_spec(type, payload, priority, timeout, idempotency_key, delay, max_attempts,
                          self._auto_key(), notify)
        req = self._submit_spec(spec)
        self._arm()
        frames, resent = await req.future
        return self._accepted(spec, frames, resent)

    async def submit_many(self, items: Iterable[Union[Submission, Dict[str, Any], Tuple[str, Union[bytes, str]]]],
                          *, notify: str = "all") -> List[Union[Submitted, ConveyorError]]:
        """As :meth:`Client.submit_many`: one entry per item, a :class:`Submitted`
        or the (unraised) exception for that item."""
        n, chunks = plan_batches(items, notify, self._auto_key())
        core = self._ensure()
        results: List[Any] = [None] * n
        inflight: List[Tuple[Chunk, Optional[Request], List[Request]]] = []
        for chunk in chunks:
            if core.batch_supported():
                inflight.append((chunk, self._start(b"SUBMIT_BATCH", chunk.batch_fields(), chunk.resendable,
                                                    chunk.levels()), []))
            else:
                inflight.append((chunk, None, [self._submit_spec(sp) for sp in chunk.specs]))
        self._arm()
        for chunk, breq, singles in inflight:
            end = chunk.start + len(chunk.specs)
            if breq is not None:
                try:
                    frames, resent = await breq.future
                    results[chunk.start:end] = decode_submitted(expect(frames, b"SUBMITTED"), resent, chunk.specs)
                    continue
                except Rejected as e:
                    if e.code != "unknown_command":
                        results[chunk.start:end] = [e] * len(chunk.specs)
                        continue
                    core.batch_unsupported()  # a 1.0 broker (§5.13): one by one
                    singles = [self._submit_spec(sp) for sp in chunk.specs]
                    self._arm()
                except BrokerUnavailable as e:
                    results[chunk.start:end] = [e] * len(chunk.specs)
                    continue
            for i, (spec, req) in enumerate(zip(chunk.specs, singles)):
                try:
                    frames, resent = await req.future
                    results[chunk.start + i] = self._accepted(spec, frames, resent)
                except (Rejected, BrokerUnavailable) as e:
                    results[chunk.start + i] = e
        return results

    async def status(self, task_id: str) -> TaskStatus:
        frames, _ = await self._call(b"STATUS", [check_task_id(task_id)], True)
        return TaskStatus.from_json(decode_json(expect(frames, b"STATUS")))

    async def cancel(self, task_id: str) -> str:
        frames, _ = await self._call(b"CANCEL", [check_task_id(task_id)], False)
        return text(expect(frames, b"CANCELLED")[4])

    async def stats(self) -> Dict[str, Any]:
        frames, _ = await self._call(b"STATS", [], True)
        return decode_json(expect(frames, b"STATS"))

    async def tasks(self, limit: int = 100) -> Dict[str, Any]:
        frames, _ = await self._call(b"TASKS", [tasks_limit(limit)], True)
        return decode_json(expect(frames, b"TASKS"))

    async def ping(self) -> float:
        t0 = time.monotonic()
        frames, _ = await self._call(b"PING", [], True)
        expect(frames, b"PONG")
        return time.monotonic() - t0

    async def wait(self, task_id: str, timeout: Optional[float] = None) -> bytes:
        """As :meth:`Client.wait`."""
        core = self._ensure()
        tid = check_task_id(task_id)
        assert self._loop is not None
        fut = self._loop.create_future()
        core.watch(tid, future=fut)
        self._arm()
        try:
            if timeout is None:
                outcome = await fut
            else:
                outcome = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"task {task_id} not finished within {timeout:g}s") from None
        finally:
            core.unwatch(tid, future=fut)
        return outcome_result(tid.decode(), outcome)

    async def progress(self, task_id: str, timeout: Optional[float] = None
                       ) -> AsyncIterator[Tuple[Optional[int], str]]:
        """As :meth:`Client.progress`: ``async for percent, message in ...``; ends
        (no final item) once the task is final."""
        core = self._ensure()
        tid = check_task_id(task_id)
        q: "asyncio.Queue[Any]" = asyncio.Queue()
        core.watch(tid, sub=q)
        self._arm()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    if deadline is None:
                        item = await q.get()
                    else:
                        item = await asyncio.wait_for(q.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    raise WaitTimeout(f"task {task_id} not finished within {timeout:g}s") from None
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            core.unwatch(tid, sub=q)
