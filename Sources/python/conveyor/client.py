"""The blocking client: one DEALER connection, owned by one background thread."""
from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import time
from collections import deque
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

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

__all__ = ["Client"]

_CLOSE = object()


class Client:
    """A blocking Conveyor client over one ZeroMQ DEALER connection.

    Thread-safe: any number of threads may call its methods at once; all calls are
    multiplexed on one connection by request id (spec §5.1). The socket belongs to a
    background thread; calls hand it their request and wait for the reply, at most
    ``timeout`` seconds (then :class:`BrokerUnavailable`).

    ``curve_key``/``curve_server_key``: paths to our ``NAME.key_secret`` and the
    broker's ``broker.key`` (czmq zcert format) to encrypt the connection with CURVE.

    ``auto_idempotency`` (default True): a ``submit()`` without ``idempotency_key``
    gets a random one (``"auto-<uuid4 hex>"``), so that it can be resent safely if the
    connection drops before its ACCEPTED arrives. Pass ``idempotency_key=False`` to
    one call, or ``auto_idempotency=False`` to the client, to send no key; such a
    submit is never resent and ends with :class:`BrokerUnavailable` if unanswered.

    Several brokers (active/standby): ``endpoint`` may list them, as
    ``"tcp://a:5555,tcp://b:5555"`` or a list of strings. The client talks to one at
    a time, the first at start (:attr:`endpoint` is the one in use). A standby's
    ``not_leader`` answer moves it to the active broker the standby names (or, when
    it names none, to the next endpoint after 0.25 s); a request unanswered for
    ``failover_after`` seconds (at most ``timeout``) moves it to the next endpoint.
    Either way every request not yet answered is sent again there (CANCEL only if
    the broker it went to was a standby), so every submission gets an idempotency
    key: with several endpoints also those with ``idempotency_key=False`` or on a
    client with ``auto_idempotency=False`` (a random 128-bit hex key). ``timeout``
    still bounds every call; a call that met only standbys ends with
    :class:`BrokerUnavailable` naming the last leader they reported.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, endpoint: EndpointsLike = DEFAULT_CLIENT_ENDPOINT, *, curve_key: Optional[PathLike] = None,
                 curve_server_key: Optional[PathLike] = None, timeout: float = 10.0,
                 auto_idempotency: bool = True, failover_after: float = DEFAULT_FAILOVER_AFTER,
                 context: Optional[zmq.Context] = None):
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not failover_after > 0:
            raise ValueError("failover_after must be positive")
        endpoints = parse_endpoints(endpoint)
        self._keys = load_curve_keys(curve_key, curve_server_key)
        self.endpoints: Tuple[str, ...] = tuple(endpoints)
        self.timeout = float(timeout)
        self.failover_after = float(failover_after)
        self.auto_idempotency = auto_idempotency
        self._core = ClientCore(concurrent.futures.Future, self.timeout, endpoints, self.failover_after)
        self._ctx = context or zmq.Context.instance()
        self._sock, self._mon = make_dealer(self._ctx, endpoints[0], self._keys)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._outbox: deque = deque()
        self._olock = threading.Lock()
        self._woken = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="conveyor-client", daemon=True)
        self._thread.start()

    # ----- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; pending calls end with ConveyorError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._post(_CLOSE)
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True once the connection's handshake succeeded, until it drops."""
        return self._core.connected

    @property
    def endpoint(self) -> str:
        """The broker endpoint in use (with several: the one the client is at now)."""
        return self._core.endpoint

    def _auto_key(self) -> Any:
        return ALWAYS_KEY if len(self.endpoints) > 1 else self.auto_idempotency

    # ----- the socket thread --------------------------------------------------------

    def _post(self, item: Any) -> None:
        with self._olock:
            if self._wfd < 0:
                return  # the socket thread has ended (the core failed what was pending)
            self._outbox.append(item)
            if self._woken:
                return
            self._woken = True
            # Under the lock: the pipe must not be closed (and its number reused) in between.
            try:
                os.write(self._wfd, b"x")
            except OSError:
                pass

    def _send(self, req: Request) -> None:
        if self._core.switch_to is not None:
            self._core.hold(req)  # sent on the next endpoint's socket
            return
        try:
            send_frames(self._sock, self._core.wire(req))
        except zmq.Again:
            self._core.send_failed(req, "the client's send queue is full (broker unreachable?)")
            return
        self._core.sent(req)

    def _switch(self, poller: zmq.Poller) -> None:
        """Move to the endpoint the core chose, if that move is due (several endpoints)."""
        core = self._core
        while True:
            ep = core.take_switch()
            if ep is None:
                return
            try:
                sock, mon = make_dealer(self._ctx, ep, self._keys)
            except zmq.ZMQError:
                core.switch_failed(ep)
                continue
            for s in (self._sock, self._mon):
                poller.unregister(s)
            close_dealer(self._sock, self._mon)
            self._sock, self._mon = sock, mon
            poller.register(sock, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
            for req in core.switched(ep):
                self._send(req)

    def _run(self) -> None:
        core = self._core
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        why = "the client is closed"
        try:
            while True:
                for req in core.tick():
                    self._send(req)
                if core.switch_to is not None:
                    self._switch(poller)
                sock, mon = self._sock, self._mon
                nxt = core.next_deadline()
                ms = 1000 if nxt is None else min(1000, max(0, int((nxt - time.monotonic()) * 1000) + 1))
                poller.poll(ms)
                while True:  # connection events first: they decide what a reply means
                    ev = read_monitor_event(mon)
                    if ev is None:
                        break
                    if ev == EVENT_DOWN:
                        core.on_disconnected()
                    elif ev == EVENT_UP:
                        for req in core.on_connected():
                            self._send(req)
                batch = recv_messages(sock)
                if batch:
                    for req in core.on_messages(batch):
                        self._send(req)
                try:
                    os.read(self._rfd, 4096)
                except BlockingIOError:
                    pass
                with self._olock:
                    self._woken = False
                    items = list(self._outbox)
                    self._outbox.clear()
                for item in items:
                    if item is _CLOSE:
                        return
                    if item is not None:  # None only wakes us up to re-read the timers
                        self._send(item)
        except zmq.ContextTerminated:
            why = "the ZeroMQ context was terminated"
        except Exception as e:  # never leave callers hanging
            why = f"the client's socket thread failed: {e!r}"
            raise
        finally:
            core.close(why)
            close_dealer(self._sock, self._mon)
            with self._olock:
                fds, self._rfd, self._wfd = (self._rfd, self._wfd), -1, -1
                self._outbox.clear()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # ----- calls --------------------------------------------------------------------

    def _start(self, command: bytes, fields: List[bytes], resendable: bool,
               levels: Optional[List[bytes]] = None) -> Request:
        if self._closed:
            raise ConveyorError("the client is closed")
        req = self._core.request(command, fields, resendable, levels=levels)
        self._post(req)
        return req

    def _result(self, req: Request) -> Tuple[List[bytes], bool]:
        try:
            # The socket thread expires the request at its deadline; the margin only
            # guards against a dead thread.
            return req.future.result(max(0.0, req.deadline - time.monotonic()) + 5.0)
        except concurrent.futures.TimeoutError:
            self._core.abandon(req.rid)
            raise BrokerUnavailable(f"no reply from the broker within {self.timeout:g}s") from None

    def _call(self, command: bytes, fields: List[bytes], resendable: bool) -> Tuple[List[bytes], bool]:
        return self._result(self._start(command, fields, resendable))

    def _submit_spec(self, spec: Spec) -> Request:
        return self._start(b"SUBMIT", spec.submit_fields(), spec.key is not None, [spec.notify])

    def _accepted(self, spec: Spec, frames: List[bytes], resent: bool) -> Submitted:
        sub = decode_accepted(expect(frames, b"ACCEPTED"), resent, spec.delayed, spec.key)
        if spec.key is not None and not spec.automatic and len(frames) < 7:
            # A 1.0 broker does not say whether it was a duplicate, whose pushes go
            # to the first submitter (§5.9): follow this one by STATUS.
            self._core.disown(frames[3])
        return sub

    def submit(self, type: str, payload: Union[bytes, str] = b"", *, priority: PriorityLike = "normal",
               timeout: Optional[float] = None, idempotency_key: Union[str, bytes, None, bool] = None,
               delay: Optional[float] = None, max_attempts: Optional[int] = None, notify: str = "all") -> Submitted:
        """Queue a task. ``priority``: ``"low"|"normal"|"high"|"urgent"`` or 0–3.
        ``timeout``: per-attempt timeout in seconds (default: the broker's).
        ``delay``: seconds before it becomes dispatchable. ``max_attempts``: 1–100.

        ``notify`` (protocol 1.1): which pushes this connection gets for the task —
        ``"all"`` (PROGRESS and FINISHED, the default), ``"final"`` (FINISHED only)
        or ``"none"`` (fire and forget). :meth:`wait` and :meth:`progress` work
        whatever you choose: what is not pushed they learn by polling STATUS
        (every 0.25 s while they run). A 1.0 broker does not know the option; the
        client then resends without it and the broker pushes everything.

        Raises :class:`QueueFull`, :class:`Rejected` (``bad_request``,
        ``unknown_type``, ``payload_too_large``, ``shutting_down``),
        :class:`BrokerUnavailable`, ValueError/TypeError for bad arguments.
        """
        spec = build_spec(type, payload, priority, timeout, idempotency_key, delay, max_attempts,
                          self._auto_key(), notify)
        frames, resent = self._result(self._submit_spec(spec))
        return self._accepted(spec, frames, resent)

    def submit_many(self, items: Iterable[Union[Submission, Dict[str, Any], Tuple[str, Union[bytes, str]]]], *,
                    notify: str = "all") -> List[Union[Submitted, ConveyorError]]:
        """Queue many tasks with few messages: SUBMIT_BATCH (protocol 1.1) of up to
        1000 submissions each, all chunks in flight at once.

        ``items``: :class:`conveyor.Submission` objects, dicts of :meth:`submit`'s
        keyword arguments (with ``type`` and ``payload``), or ``(type, payload)``
        tuples. ``notify`` is the default of the items that do not set their own.

        Returns one entry per item, in order, like ``asyncio.gather(...,
        return_exceptions=True)``: a :class:`Submitted`, or — not raised — the
        exception that ``submit()`` would have raised for that item
        (:class:`QueueFull`, another :class:`Rejected`, or
        :class:`BrokerUnavailable` when its chunk got no answer in time). The broker
        handles the items in order, so across a full queue a prefix is accepted and
        the rest is ``QueueFull``; nothing is enqueued that is not reported
        accepted. Raises only before anything is sent: ValueError/TypeError naming
        the first invalid item.

        Against a 1.0 broker (SUBMIT_BATCH answered ``unknown_command``) the items
        are sent as pipelined SUBMITs instead, with the same result. Chunks whose
        items all have an idempotency key (the default) are resent after a
        reconnection, as single submits are.
        """
        n, chunks = plan_batches(items, notify, self._auto_key())
        results: List[Any] = [None] * n
        inflight: List[Tuple[Chunk, Optional[Request], List[Request]]] = []
        for chunk in chunks:
            if self._core.batch_supported():
                inflight.append((chunk, self._start(b"SUBMIT_BATCH", chunk.batch_fields(), chunk.resendable,
                                                    chunk.levels()), []))
            else:
                inflight.append((chunk, None, [self._submit_spec(sp) for sp in chunk.specs]))
        for chunk, breq, singles in inflight:
            if breq is not None:
                try:
                    frames, resent = self._result(breq)
                    results[chunk.start:chunk.start + len(chunk.specs)] = decode_submitted(
                        expect(frames, b"SUBMITTED"), resent, chunk.specs)
                    continue
                except Rejected as e:
                    if e.code != "unknown_command":
                        results[chunk.start:chunk.start + len(chunk.specs)] = [e] * len(chunk.specs)
                        continue
                    self._core.batch_unsupported()  # a 1.0 broker (§5.13): one by one
                    singles = [self._submit_spec(sp) for sp in chunk.specs]
                except BrokerUnavailable as e:
                    results[chunk.start:chunk.start + len(chunk.specs)] = [e] * len(chunk.specs)
                    continue
            for i, (spec, req) in enumerate(zip(chunk.specs, singles)):
                try:
                    frames, resent = self._result(req)
                    results[chunk.start + i] = self._accepted(spec, frames, resent)
                except (Rejected, BrokerUnavailable) as e:
                    results[chunk.start + i] = e
        return results

    def status(self, task_id: str) -> TaskStatus:
        """The task's status object (§5.3). Raises :class:`NotFound`."""
        frames, _ = self._call(b"STATUS", [check_task_id(task_id)], True)
        return TaskStatus.from_json(decode_json(expect(frames, b"STATUS")))

    def cancel(self, task_id: str) -> str:
        """Cancel a queued, delayed or running task; returns its previous state.
        Raises :class:`NotFound`, :class:`NotCancellable` (already final). Not resent
        after a reconnection (a second CANCEL could not report the previous state)."""
        frames, _ = self._call(b"CANCEL", [check_task_id(task_id)], False)
        return text(expect(frames, b"CANCELLED")[4])

    def stats(self) -> Dict[str, Any]:
        """The broker's stats object (§7.4) as a dict."""
        frames, _ = self._call(b"STATS", [], True)
        return decode_json(expect(frames, b"STATS"))

    def tasks(self, limit: int = 100) -> Dict[str, Any]:
        """``{"running": [...], "queued": [...]}`` status objects (§5.6), as dicts."""
        frames, _ = self._call(b"TASKS", [tasks_limit(limit)], True)
        return decode_json(expect(frames, b"TASKS"))

    def ping(self) -> float:
        """Round trip to the broker, in seconds. Raises :class:`BrokerUnavailable`."""
        t0 = time.monotonic()
        frames, _ = self._call(b"PING", [], True)
        expect(frames, b"PONG")
        return time.monotonic() - t0

    def wait(self, task_id: str, timeout: Optional[float] = None) -> bytes:
        """Block until the task is final; return its result bytes.

        Raises :class:`TaskFailed`, :class:`TaskTimedOut`, :class:`TaskCancelled`
        (``.task_id``, ``.error``), :class:`NotFound`, or :class:`WaitTimeout` when
        ``timeout`` seconds pass first (None: no limit). Uses the broker's FINISHED
        push for tasks submitted on this connection, STATUS polling otherwise. A
        broker that is down does not end the wait: it goes on until ``timeout``.
        """
        tid = check_task_id(task_id)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._core.watch(tid, future=fut)
        self._post(None)  # re-evaluate timers
        try:
            outcome = fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise WaitTimeout(f"task {task_id} not finished within {timeout:g}s") from None
        finally:
            self._core.unwatch(tid, future=fut)
        return outcome_result(tid.decode(), outcome)

    def progress(self, task_id: str, timeout: Optional[float] = None) -> Iterator[Tuple[Optional[int], str]]:
        """Iterate over ``(percent, message)`` progress reports (percent is None when
        the worker reported it indeterminate).

        The iterator ends, without a final item, once the task is in a final state;
        call :meth:`wait` or :meth:`status` for the outcome (``wait`` then returns at
        once). For a task submitted on this connection it yields every PROGRESS the
        broker pushed, including those sent before the iteration started; for other
        tasks it yields the progress seen by STATUS polls (changes only). Raises
        :class:`WaitTimeout` if the task is not final within ``timeout`` seconds,
        :class:`NotFound` for an unknown task.
        """
        tid = check_task_id(task_id)
        q: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._core.watch(tid, sub=q)
        self._post(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    item = q.get(timeout=left)
                except queue.Empty:
                    raise WaitTimeout(f"task {task_id} not finished within {timeout:g}s") from None
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._core.unwatch(tid, sub=q)
