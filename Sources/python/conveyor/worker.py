"""The worker runtime: handlers on threads (or one asyncio loop), the socket on one thread."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import socket as _socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple, Union

import zmq

from ._common import DEFAULT_WORKER_ENDPOINT, MAX_MSG_SIZE, EndpointsLike, parse_endpoints, recv_messages, send_frames
from ._curve import CurveKeys, PathLike, apply_curve, load_curve_keys
from ._errors import RetryLater
from ._protocol import (
    MAX_DONE_BATCH,
    MAX_READY_BATCH,
    MAX_RETRY_AFTER_MS,
    MAX_TIMEOUT_MS,
    WORKER_HEADER as H,
    _TYPE_RE,
    Priority,
    check_type,
    is_task_id,
    parse_number,
    seconds_to_ms,
    text,
)

__all__ = ["Worker", "Task", "TaskContext"]

log = logging.getLogger("conveyor.worker")

MAX_ERROR_BYTES = 16 * 1024
BACKOFF_START = 1.0
BACKOFF_MAX = 32.0
_UNSET = object()
_new_task = object.__new__
_EVENT_LOCK = threading.Lock()

Handler = Callable[["Task", "TaskContext"], Any]


@dataclass(frozen=True)
class Task:
    """One attempt of a task, as the broker dispatched it (TASK, §6.3)."""

    id: str
    type: str
    priority: int  # 0=LOW 1=NORMAL 2=HIGH 3=URGENT
    attempt: int
    payload: bytes = field(repr=False)
    deadline: float  # time.monotonic() by which the broker times the attempt out
    timeout: float  # seconds the broker allowed, from dispatch

    @property
    def priority_name(self) -> str:
        return Priority(self.priority).name

    def remaining(self) -> float:
        """Seconds left before the broker times this attempt out."""
        return self.deadline - time.monotonic()


class TaskContext:
    """What a handler can do besides returning: report progress, notice
    cancellation, ask for a retry later, report a cost.

    ``cancelled`` is a ``threading.Event``, set when the broker sends CANCEL, when the
    attempt's deadline passes, when the connection is lost (the attempt is then
    abandoned, §8.3) and when a stopping worker gives the task back.
    ``cancel_reason`` then says which: ``"cancelled"``, ``"timed_out"``,
    ``"connection_lost"`` or ``"shutdown"``. Once it is set nothing more is sent for
    the attempt: progress and the return value are dropped.
    """

    __slots__ = ("_worker", "_key", "_event", "cancel_reason", "_retry_ms", "_cost")

    def __init__(self, worker: "Worker", key: Tuple[bytes, int]):
        self._worker = worker
        self._key = key
        self._event: Optional[threading.Event] = None  # made on first use: most tasks never look
        self.cancel_reason: Optional[str] = None
        self._retry_ms: Any = _UNSET
        self._cost: Optional[int] = None

    @property
    def cancelled(self) -> threading.Event:
        """Set when this attempt must stop (see the class documentation)."""
        ev = self._event
        if ev is None:
            with _EVENT_LOCK:
                ev = self._event
                if ev is None:
                    ev = self._event = threading.Event()
                    if self.cancel_reason is not None:
                        ev.set()
        return ev

    def _cancel(self, reason: str) -> None:
        with _EVENT_LOCK:
            if self.cancel_reason is None:
                self.cancel_reason = reason
                if self._event is not None:
                    self._event.set()

    def progress(self, percent: Optional[float] = None, message: str = "") -> None:
        """Send PROGRESS: ``percent`` 0–100 (None = indeterminate) and a message.
        Thread-safe; every call is one message, in order."""
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
                raise ValueError(f"percent must be 0..100 or None, got {percent!r}")
            pct = b"%d" % int(percent)
        else:
            pct = b""
        msg = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        if self.cancel_reason is None:
            self._worker._post(("progress", self, pct, msg))

    def retry_later(self, seconds: Optional[float] = None) -> None:
        """End this attempt with RETRY_LATER (e.g. the API answered 429): the broker
        runs the task again after ``seconds`` (None: the broker's default).

        Raises :class:`conveyor.RetryLater` to unwind the handler. The request stands
        even if the handler catches it: the handler's return value or exception is
        then ignored. Needs a broker that knows RETRY_LATER (protocol 1.1)."""
        if seconds is None:
            self._retry_ms = None
        else:
            self._retry_ms = seconds_to_ms(seconds, "retry_later seconds", 0, MAX_RETRY_AFTER_MS)
        raise RetryLater(seconds)

    def cost(self, units: int) -> None:
        """Add ``units`` (e.g. LLM tokens) to this attempt's cost; the total is sent
        as the option frame ``cost=N`` of DONE. Without a call no frame is sent."""
        if isinstance(units, bool) or not isinstance(units, (int, float)) or units < 0 or int(units) != units:
            raise ValueError(f"cost units must be a non-negative integer, got {units!r}")
        self._cost = (self._cost or 0) + int(units)


class _Running:
    __slots__ = ("task", "ctx", "attempt_frame", "future", "timed_out")

    def __init__(self, task: Task, ctx: TaskContext, attempt_frame: bytes):
        self.task = task
        self.ctx = ctx
        self.attempt_frame = attempt_frame
        self.future: Any = None
        self.timed_out = False


class _Pool:
    """Threads for sync handlers: grows when every thread is busy (an abandoned
    handler that ignores ``ctx.cancelled`` must not starve new tasks), shrinks back
    to ``keep`` threads after a minute idle.

    Wakes are chained rather than one per task. Whoever queues tasks wakes one
    parked thread (or starts one when none is parked); a thread that takes a task
    and sees more waiting wakes the next one *before* running its own, so every
    task still gets a thread of its own without waiting for another handler to end.
    But a thread that ends its task and finds another still waiting runs it at
    once: for tasks of microseconds most of a batch runs without a single thread
    wake (a futex round trip and a GIL hand-off each, the largest part of the
    handler-thread cost), and the socket thread makes one wake per round at most.
    Each parked thread blocks on a lock of its own, the most recently parked one
    is woken first (its stack and caches are warm)."""

    def __init__(self, keep: int):
        self._lock = threading.Lock()
        self._items: Deque[Tuple[Callable[..., None], Tuple[Any, ...]]] = deque()
        self._parked: List[Any] = []  # one held lock per parked thread; release() wakes it
        self._waking = 0  # threads woken or started that have not taken a task yet
        self._threads = 0
        self._keep = keep
        self._closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.submit_many(fn, [args])

    def submit_many(self, fn: Callable[..., None], calls: List[Tuple[Any, ...]]) -> None:
        """``fn(*args)`` for each args, each on a thread of its own if need be."""
        with self._lock:
            self._items.extend([(fn, args) for args in calls])
            wake = self._next_locked()
        if wake is not None:
            wake()

    def _next_locked(self) -> Optional[Callable[[], Any]]:
        """With tasks waiting and no thread on its way: the call that wakes (or
        starts) one; counted in ``_waking`` already."""
        if self._waking or not self._items:
            return None
        self._waking += 1
        if self._parked:
            return self._parked.pop().release
        self._threads += 1
        return threading.Thread(target=self._work, name="conveyor-handler", daemon=True).start

    def _work(self) -> None:
        park = threading.Lock()
        park.acquire()  # held while running; parked = blocked acquiring it again
        lock, items = self._lock, self._items
        with lock:
            self._waking -= 1  # started: on its way no more
        while True:
            with lock:
                while not items:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._parked.append(park)
                    lock.release()
                    try:
                        woken = park.acquire(timeout=60.0)
                    finally:
                        lock.acquire()
                    if not woken:
                        if park in self._parked:  # a minute without a task
                            self._parked.remove(park)
                            if self._threads > self._keep:
                                self._threads -= 1
                                return
                            continue
                        park.acquire()  # popped just as the wait timed out: its release is coming
                    self._waking -= 1  # woken: the waker counted us on our way
                fn, args = items.popleft()
                wake = self._next_locked()  # more waiting: the next thread, before we run ours
            if wake is not None:
                wake()
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - the runner reports; never kill the thread
                log.exception("handler runner failed")

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            parked, self._parked = self._parked, []
            self._waking += len(parked)
        for release in parked:
            release.release()


class Worker:
    """Runs handlers for the broker's tasks (worker protocol, §6).

    ``types``: the task types to advertise in READY; default: the types of the
    registered handlers, or any type (empty) when a catch-all handler
    (``@w.handler()``) is registered. ``concurrency``: the READY capacity, tasks run
    at once. ``heartbeat_interval``/``liveness`` are used until the broker answers
    READY with WELCOME (protocol 1.1), whose values then replace them; against a
    1.0 broker they must match its ``--heartbeat-interval`` (ms) and
    ``--heartbeat-liveness``. ``grace``: seconds ``stop()`` lets running tasks
    finish before giving them back (RETURN).

    Batching (protocol 1.1). READY carries ``batch=<concurrency>``, so the broker may
    send several tasks in one TASK_BATCH when several slots are free, and results
    that are ready at the same moment go back in one DONE_BATCH (each with its
    ``cost``), never waiting for more. FAIL, PROGRESS, RETURN and RETRY_LATER stay
    single messages. A 1.0 broker answers a READY with options by DISCONNECT: the
    worker then connects again at once with a plain READY, and uses single TASK and
    DONE on that connection (``batching`` tells which mode is in force).

    Handlers ``def h(task, ctx)`` run on a pool of threads; ``async def`` handlers on
    one asyncio loop thread (cancelled with ``Task.cancel()`` on CANCEL, besides
    ``ctx.cancelled``). They return ``bytes``, ``str`` (UTF-8), ``dict``/``list``
    (sent as JSON) or None (empty result); an exception becomes FAIL with its text.

    Several brokers (active/standby): ``endpoint`` may list their worker endpoints
    (``"tcp://a:5556,tcp://b:5556"`` or a list). The worker is connected to one at a
    time, the first at start (:attr:`endpoint`). When that broker goes silent for
    heartbeat interval × liveness, or sends DISCONNECT, the worker abandons its
    running tasks as on any reconnection and says READY to the next endpoint at
    once; it waits the reconnection backoff only before coming back to the endpoint
    where that round of the list began. A standby sends workers nothing, so the
    worker moves on until it finds the active broker.
    """

    def __init__(self, endpoint: EndpointsLike = DEFAULT_WORKER_ENDPOINT, *, name: Optional[str] = None,
                 concurrency: int = 1, curve_key: Optional[PathLike] = None,
                 curve_server_key: Optional[PathLike] = None, types: Optional[Iterable[str]] = None,
                 heartbeat_interval: float = 1.0, liveness: int = 3, grace: float = 30.0,
                 context: Optional[zmq.Context] = None):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
            raise ValueError("concurrency must be an integer 1..1024")
        if not heartbeat_interval > 0 or int(liveness) < 1:
            raise ValueError("heartbeat_interval must be positive and liveness at least 1")
        self.endpoints: Tuple[str, ...] = tuple(parse_endpoints(endpoint))
        self._index = 0  # the endpoint in use
        self._round_start = 0  # where the current round of failed connections began
        self.name = name or f"py-{_socket.gethostname()}-{os.getpid()}"
        if not 1 <= len(self.name.encode("utf-8")) <= 128:
            raise ValueError("worker name must be 1-128 bytes of UTF-8")
        self.concurrency = concurrency
        self.grace = float(grace)
        self._keys: Optional[CurveKeys] = load_curve_keys(curve_key, curve_server_key)
        self._types: Optional[List[str]] = None if types is None else [check_type(t).decode() for t in types]
        self._hb = float(heartbeat_interval)
        self._liveness = int(liveness)
        self._zctx = context
        self._handlers: Dict[str, Handler] = {}
        self._kinds: Dict[Any, str] = {}  # handler -> "sync" | "async" | "inline"
        self._ok_types: set = set()  # task types seen valid in TASKs
        self._starts: List[Any] = []  # tasks received this round, started after the round's sends
        self._fallback: Optional[Handler] = None
        self._running: Dict[Tuple[bytes, int], _Running] = {}
        self._outbox: Deque[Any] = deque()
        self._olock = threading.Lock()
        self._woken = False
        self._rfd = self._wfd = -1
        self._thread: Optional[threading.Thread] = None
        self._pool = _Pool(concurrency)
        self._aloop: Optional[asyncio.AbstractEventLoop] = None
        self._athread: Optional[threading.Thread] = None
        self._stop_requested = threading.Event()
        self._force = False
        self._stop_grace: Optional[float] = None
        self._finished = threading.Event()
        self._registered = threading.Event()
        self._ready_plain = False  # the broker turned out 1.0: READY without options
        self._ready_options = False  # this connection's READY carried options
        self._welcomed = False  # this connection got WELCOME (1.1): DONE_BATCH allowed
        self._error: Optional[BaseException] = None
        self.stats: Dict[str, int] = {
            "tasks": 0, "succeeded": 0, "failed": 0, "retry_later": 0, "returned": 0, "cancelled": 0,
            "abandoned": 0, "reconnects": 0, "task_batches": 0, "done_batches": 0,
        }

    # ----- registration ---------------------------------------------------------------

    def handler(self, *types: str, inline: bool = False) -> Callable[[Handler], Handler]:
        """Decorator: ``@w.handler("pdf", "document")``; ``@w.handler()`` for any type.

        ``inline=True`` (sync handlers only) runs the handler on the worker's socket
        thread, between receiving and sending, instead of on a handler thread: no
        thread hand-off, which is most of the cost of a task that takes
        microseconds (a lookup, a small computation, a fan-out). Inline tasks run
        one after the other, and while one runs the worker reads nothing and sends
        no heartbeat: use it only for handlers that return in well under a
        millisecond and never block on I/O."""

        def register(fn: Handler) -> Handler:
            if inline:
                if self._kind(fn) == "async":
                    raise ValueError("inline=True is for sync handlers; async ones already share one loop")
                self._kinds[fn] = "inline"
            if types:
                for t in types:
                    self._handlers[check_type(t).decode()] = fn
            else:
                self._fallback = fn
            return fn

        return register

    def add_handler(self, task_type: Optional[str], fn: Handler, *, inline: bool = False) -> None:
        """``w.add_handler("pdf", fn)``; ``None`` for any type."""
        (self.handler(task_type, inline=inline) if task_type else self.handler(inline=inline))(fn)

    @property
    def endpoint(self) -> str:
        """The broker endpoint in use (with several: the one the worker is at now)."""
        return self.endpoints[self._index]

    @property
    def heartbeat_interval(self) -> float:
        return self._hb

    @property
    def liveness(self) -> int:
        return self._liveness

    @property
    def registered(self) -> threading.Event:
        """Set once the broker has answered our READY with any message (WELCOME
        from a 1.1 broker; a 1.0 broker's first HEARTBEAT or TASK), cleared while
        reconnecting."""
        return self._registered

    @property
    def welcomed(self) -> bool:
        """True when the current connection's READY was answered by WELCOME."""
        return self._welcomed

    @property
    def batching(self) -> bool:
        """True when the current connection asked for TASK_BATCH (READY ``batch=N``)
        and got WELCOME, so it sends DONE_BATCH."""
        return self._ready_options and self._welcomed

    def _advertised(self) -> str:
        if self._types is not None:
            return ",".join(self._types)
        if self._fallback is not None:
            return ""
        return ",".join(sorted(self._handlers))

    # ----- lifecycle --------------------------------------------------------------------

    def start(self) -> "Worker":
        """Connect and serve in background threads; returns at once."""
        if self._thread is not None:
            raise RuntimeError("the worker is already started")
        if not self._handlers and self._fallback is None:
            raise ValueError("register at least one handler before starting the worker")
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(target=self._main, name=f"conveyor-worker-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Serve until :meth:`stop` (or, on the main thread, SIGTERM/SIGINT: a first
        signal drains gracefully, a second gives running tasks back at once)."""
        on_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if on_main:
            def on_signal(signum: int, frame: Any) -> None:
                self.stop(wait=False, grace=0.0 if self._stop_requested.is_set() else None)

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            while not self._finished.wait(0.5):
                pass
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
        if self._error is not None:
            raise self._error

    def stop(self, grace: Optional[float] = None, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Drain: send DRAIN, let running tasks finish within ``grace`` seconds
        (default: the constructor's), RETURN the others, send DISCONNECT, close.
        ``wait``: block until done (at most ``timeout``, default grace + 10 s)."""
        if grace is not None:
            self._stop_grace = max(0.0, float(grace))
            if self._stop_requested.is_set():
                self._force = self._stop_grace == 0.0
        self._stop_requested.set()
        if self._thread is None:
            self._finished.set()
            return
        self._post(None)
        if wait and threading.current_thread() is not self._thread:
            g = self.grace if self._stop_grace is None else self._stop_grace
            self._finished.wait(g + 10.0 if timeout is None else timeout)

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----- handler side -------------------------------------------------------------------

    def _post(self, item: Any) -> None:
        with self._olock:
            if self._wfd < 0:
                return  # the socket thread is gone: nobody to tell (a late handler)
            self._outbox.append(item)
            if self._woken:
                return
            self._woken = True
            # Written under the lock so that the pipe cannot be closed in between
            # (a closed descriptor number may already belong to someone else).
            try:
                os.write(self._wfd, b"x")
            except OSError:
                pass

    def _outcome(self, ctx: TaskContext, value: Any, exc: Optional[BaseException]) -> Tuple[bytes, List[bytes]]:
        """(command, fields after task_id and attempt)."""
        if ctx._retry_ms is not _UNSET:
            return b"RETRY_LATER", [b"" if ctx._retry_ms is None else b"%d" % ctx._retry_ms]
        if exc is None:
            try:
                if value is None:
                    result = b""
                elif isinstance(value, (bytes, bytearray, memoryview)):
                    result = bytes(value)
                elif isinstance(value, str):
                    result = value.encode("utf-8")
                elif isinstance(value, (dict, list)):
                    result = json.dumps(value).encode("utf-8")
                else:
                    raise TypeError(f"a handler returns bytes, str, dict, list or None, not {type(value).__name__}")
            except Exception as e:  # noqa: BLE001
                exc = e
            else:
                fields = [result]
                if ctx._cost is not None:
                    fields.append(b"cost=%d" % ctx._cost)
                return b"DONE", fields
        err = str(exc) or type(exc).__name__
        return b"FAIL", [err.encode("utf-8", "replace")[:MAX_ERROR_BYTES]]

    def _run_sync(self, fn: Handler, task: Task, ctx: TaskContext) -> None:
        try:
            value = fn(task, ctx)
            if inspect.isawaitable(value):  # a sync function returning a coroutine
                value = asyncio.run_coroutine_threadsafe(_await(value), self._async_loop()).result()
            out = self._outcome(ctx, value, None)
        except BaseException as e:  # noqa: BLE001 - report everything as FAIL
            out = self._outcome(ctx, None, e)
        self._post(("end", ctx, out))

    async def _run_async(self, fn: Handler, task: Task, ctx: TaskContext) -> None:
        try:
            value = await fn(task, ctx)
            out = self._outcome(ctx, value, None)
        except asyncio.CancelledError:
            if ctx.cancel_reason is not None:
                return  # we cancelled it: nothing more may be sent for this attempt
            out = self._outcome(ctx, None, RuntimeError("handler was cancelled"))
        except BaseException as e:  # noqa: BLE001
            out = self._outcome(ctx, None, e)
        self._post(("end", ctx, out))

    def _async_loop(self) -> asyncio.AbstractEventLoop:
        with self._olock:
            if self._aloop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="conveyor-async-handlers", daemon=True)
                t.start()
                self._aloop, self._athread = loop, t
            return self._aloop

    # ----- the socket thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001
            log.exception("worker socket thread failed")
            self._error = e
        finally:
            self._pool.shutdown()
            if self._aloop is not None:
                self._aloop.call_soon_threadsafe(self._aloop.stop)
            with self._olock:
                fds, self._rfd, self._wfd = (self._rfd, self._wfd), -1, -1
                self._outbox.clear()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._registered.clear()
            self._finished.set()

    def _send(self, *frames: bytes) -> None:
        try:
            send_frames(self._sock, [H, *frames])
        except zmq.Again:
            log.warning("send queue full; dropped %s", text(frames[0]))
        self._last_tx = time.monotonic()

    def _connect(self) -> None:
        ctx = self._zctx or zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
        apply_curve(s, self._keys)
        s.connect(self.endpoints[self._index])
        self._sock = s
        self._poller = zmq.Poller()
        self._poller.register(s, zmq.POLLIN)
        self._poller.register(self._rfd, zmq.POLLIN)
        ready = [b"READY", self.name.encode("utf-8"), self._advertised().encode(), b"%d" % self.concurrency]
        self._ready_options = not self._ready_plain
        if self._ready_options:
            ready.append(b"batch=%d" % min(self.concurrency, MAX_READY_BATCH))
        self._welcomed = False
        self._send(*ready)
        self._last_rx = time.monotonic()
        self._draining = False

    def _abandon_all(self, reason: str) -> None:
        self._starts.clear()  # received but not started: never started
        for r in self._running.values():
            r.ctx._cancel(reason)
            if r.future is not None:
                r.future.cancel()
            if reason == "connection_lost":
                self.stats["abandoned"] += 1
        self._running.clear()

    def _wait_backoff(self) -> bool:
        """Sleep the current backoff, waking for stop(); False when stopping."""
        until = time.monotonic() + self._backoff
        while not self._stop_requested.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return True
            p = zmq.Poller()
            p.register(self._rfd, zmq.POLLIN)
            if p.poll(int(left * 1000) + 1):
                self._take_outbox()  # results of abandoned attempts: dropped
        return False

    def _reconnect(self, why: str) -> bool:
        if why == "the broker sent DISCONNECT" and self._ready_options and not self._registered.is_set():
            # DISCONNECT and no WELCOME in answer to a READY with options: a 1.0
            # broker (§6.2). Say READY again, without options, at once.
            log.info("the broker answered READY batch=N with DISCONNECT (protocol 1.0): plain READY")
            self._ready_plain = True
            self._sock.close(0)
            self._connect()
            return True
        # Several endpoints: the next one at once, and the backoff only before
        # coming back to where this round of failures began (with one: every time).
        nxt = (self._index + 1) % len(self.endpoints)
        if nxt == self._round_start:
            log.warning("%s; reconnecting in %g s", why, self._backoff)
        else:
            log.warning("%s; moving to %s", why, self.endpoints[nxt])
        self._registered.clear()
        self._abandon_all("connection_lost")
        self._sock.close(0)
        self.stats["reconnects"] += 1
        if nxt == self._round_start:
            if not self._wait_backoff():
                return False
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._index = nxt
        self._connect()
        return True

    def _take_outbox(self) -> List[Any]:
        if not self._woken:  # nothing was posted since the last time (read without the lock: a hint)
            return []
        try:
            os.read(self._rfd, 4096)
        except BlockingIOError:
            pass
        with self._olock:
            self._woken = False
            items = list(self._outbox)
            self._outbox.clear()
        return items

    def _serve(self) -> None:
        self._backoff = BACKOFF_START
        self._connect()
        drain_deadline = 0.0
        while True:
            now = time.monotonic()
            if self._stop_requested.is_set() and not self._draining:
                self._draining = True
                self._send(b"DRAIN")
                grace = self.grace if self._stop_grace is None else self._stop_grace
                drain_deadline = now + grace
            if self._draining and (not self._running or now >= drain_deadline or self._force):
                self._leave()
                return
            dead_after = self._hb * self._liveness
            if now - self._last_rx > dead_after:
                if self._draining:  # nobody to give the tasks back to: just go
                    self._close_abandoning()
                    return
                if not self._reconnect(f"no message from the broker for {dead_after:g} s"):
                    return
                continue
            if now - self._last_tx >= self._hb:
                self._send(b"HEARTBEAT")
            wake = min(self._last_tx + self._hb, self._last_rx + dead_after)
            for r in self._running.values():
                if not r.timed_out:
                    if r.task.deadline <= now:
                        r.timed_out = True
                        r.ctx._cancel("timed_out")  # the broker sends CANCEL too; stop early
                    else:
                        wake = min(wake, r.task.deadline)
            if self._draining:
                wake = min(wake, drain_deadline)
            timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
            events = dict(self._poller.poll(timeout_ms))
            if self._sock in events:
                for msg in recv_messages(self._sock):
                    if not self._handle(msg):
                        if self._stop_requested.is_set():
                            self._close_abandoning()
                            return
                        if not self._reconnect("the broker sent DISCONNECT"):
                            return
                        break
            if self._rfd in events:
                self._flush_outbox()
            if self._starts:
                self._start_handlers()

    def _start_handlers(self) -> None:
        """Hand the tasks received in this round to their handlers, once the round's
        sends are done: a handler thread woken earlier would take the GIL from the
        socket thread at each of its frame sends (pyzmq releases it around every
        frame), which made the hand-off several times dearer."""
        starts, self._starts = self._starts, []
        sync = []
        inline = []
        kind = self._kind
        for fn, task, ctx, r in starts:
            k = kind(fn)
            if k == "sync":
                sync.append((fn, task, ctx))
            elif k == "inline":
                inline.append((fn, task, ctx))
            else:
                r.future = asyncio.run_coroutine_threadsafe(self._run_async(fn, task, ctx), self._async_loop())
        if sync:
            self._pool.submit_many(self._run_sync, sync)
        if inline:
            ends = []
            for fn, task, ctx in inline:
                try:
                    value = fn(task, ctx)
                    out = self._outcome(ctx, value, None)
                except BaseException as e:  # noqa: BLE001 - report everything as FAIL
                    out = self._outcome(ctx, None, e)
                ends.append(("end", ctx, out))
            self._flush_outbox(ends)  # their PROGRESS (in the outbox) first, then the results

    def _flush_outbox(self, more: Optional[List[Any]] = None) -> None:
        dones: List[bytes] = []  # DONE_BATCH groups: task_id, attempt, result, cost
        running = self._running
        stats = self.stats
        items = self._take_outbox()
        if more:
            items += more
        for item in items:
            if item is None:
                continue
            kind, ctx = item[0], item[1]
            r = running.get(ctx._key)
            if r is None or r.ctx is not ctx or ctx.cancel_reason is not None and kind == "progress":
                continue  # cancelled, timed out and cancelled, abandoned or returned
            if kind == "progress":
                self._send(b"PROGRESS", ctx._key[0], r.attempt_frame, item[2], item[3])
                continue
            cmd, fields = item[2]
            del running[ctx._key]
            if cmd == b"DONE":
                stats["succeeded"] += 1
                dones += (ctx._key[0], r.attempt_frame, fields[0], b"" if ctx._cost is None else b"%d" % ctx._cost)
                continue
            stats["failed" if cmd == b"FAIL" else "retry_later"] += 1
            self._send(cmd, ctx._key[0], r.attempt_frame, *fields)
        if dones:
            self._send_dones(dones)

    def _send_dones(self, dones: List[bytes]) -> None:
        """The results ready now: one DONE_BATCH if there are several and the broker
        said WELCOME (§6.4), else one DONE each (with ``cost=`` only when set)."""
        if len(dones) > 4 and self._welcomed:
            step = 4 * MAX_DONE_BATCH
            for i in range(0, len(dones), step):
                self._send(b"DONE_BATCH", *dones[i:i + step])
                self.stats["done_batches"] += 1
            return
        for i in range(0, len(dones), 4):
            tid, attempt, result, cost = dones[i:i + 4]
            if cost:
                self._send(b"DONE", tid, attempt, result, b"cost=" + cost)
            else:
                self._send(b"DONE", tid, attempt, result)

    def _handle(self, msg: List[bytes]) -> bool:
        """Handle one message; False on DISCONNECT."""
        if len(msg) < 2 or msg[0] != H:
            return True  # not for us (§3.4): ignore
        cmd = msg[1]
        self._last_rx = time.monotonic()
        if cmd == b"DISCONNECT" and len(msg) == 2:
            return False
        self._backoff = BACKOFF_START  # any other message: our READY was accepted (§8.3)
        self._round_start = self._index
        if not self._registered.is_set():
            self._registered.set()
        if cmd == b"TASK" and len(msg) == 8:
            if self._valid_task(msg, 2):
                self._on_task(msg, 2)
        elif cmd == b"TASK_BATCH":
            n = len(msg) - 2
            if n >= 12 and n % 6 == 0 and all(self._valid_task(msg, j) for j in range(2, len(msg), 6)):
                self.stats["task_batches"] += 1
                for j in range(2, len(msg), 6):
                    self._on_task(msg, j)
            # else malformed: the whole message is ignored (§3.4)
        elif cmd == b"CANCEL" and len(msg) == 5:
            attempt = parse_number(msg[3], 1)
            r = self._running.get((msg[2], attempt)) if attempt is not None else None
            if r is not None and msg[4] in (b"cancelled", b"timed_out"):
                del self._running[(msg[2], attempt)]
                r.ctx._cancel(text(msg[4]))
                if r.future is not None:
                    r.future.cancel()
                self.stats["cancelled"] += 1
        elif cmd == b"WELCOME" and len(msg) == 4:
            hb = parse_number(msg[2], 1, 3_600_000)
            lv = parse_number(msg[3], 1, 100)
            if hb is not None and lv is not None:
                self._hb, self._liveness = hb / 1000.0, lv
                self._welcomed = True
                self._ready_plain = False  # a 1.1 broker: options again on the next connection
                log.info("broker WELCOME: heartbeat %d ms x %d", hb, lv)
        # HEARTBEAT, and commands we do not know: only a sign of life
        return True

    def _valid_task(self, msg: List[bytes], j: int) -> bool:
        """msg[j:j+6] are valid TASK fields (§6.3). (bytes.isdigit is ASCII-only.)"""
        attempt, ttype, prio, tmo = msg[j + 1], msg[j + 2], msg[j + 3], msg[j + 4]
        if not (attempt.isdigit() and tmo.isdigit() and len(prio) == 1 and prio in b"0123"
                and int(attempt) >= 1 and 1 <= int(tmo) <= MAX_TIMEOUT_MS and is_task_id(msg[j])):
            return False
        if ttype not in self._ok_types:
            if _TYPE_OK(ttype) is None:
                return False
            if len(self._ok_types) < 1024:
                self._ok_types.add(ttype)
        return True

    def _on_task(self, msg: List[bytes], j: int) -> None:
        tid, attempt_b, ttype, prio, tmo, payload = msg[j:j + 6]
        attempt = int(attempt_b)
        timeout_ms = int(tmo)
        type_s = ttype.decode()
        key = (tid, attempt)
        if key in self._running:
            return
        if self._draining:
            self._send(b"RETURN", tid, attempt_b)
            self.stats["returned"] += 1
            return
        timeout = timeout_ms / 1000.0
        # Task is a frozen dataclass; filling its __dict__ skips the frozen __setattr__
        # of each field, a quarter of the per-task overhead of dispatching.
        task = _new_task(Task)
        task.__dict__.update(id=tid.decode(), type=type_s, priority=prio[0] - 48, attempt=attempt, payload=payload,
                             deadline=time.monotonic() + timeout, timeout=timeout)
        ctx = TaskContext(self, key)
        r = _Running(task, ctx, attempt_b)
        self._running[key] = r
        self.stats["tasks"] += 1
        fn = self._handlers.get(type_s, self._fallback)
        if fn is None:
            self._post(("end", ctx, (b"FAIL", [f"this worker has no handler for task type {type_s!r}".encode()])))
        else:
            self._starts.append((fn, task, ctx, r))

    def _kind(self, fn: Handler) -> str:
        """"sync" (handler threads), "async" (the loop thread) or "inline"."""
        known = self._kinds.get(fn)
        if known is None:
            is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
            known = self._kinds[fn] = "async" if is_async else "sync"
        return known

    def _close_abandoning(self) -> None:
        self._abandon_all("connection_lost")
        self._sock.close(0)

    def _leave(self) -> None:
        self._flush_outbox()
        for (tid, _), r in list(self._running.items()):
            self._send(b"RETURN", tid, r.attempt_frame)
            self.stats["returned"] += 1
        self._abandon_all("shutdown")
        self._send(b"DISCONNECT")
        self._sock.close(linger=1000)  # let RETURN/DISCONNECT leave


_TYPE_OK = _TYPE_RE.match


async def _await(aw: Any) -> Any:
    return await aw
