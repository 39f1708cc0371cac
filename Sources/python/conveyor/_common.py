"""What Client and AsyncClient share: argument checking and socket setup."""
from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import zmq

from ._curve import CurveKeys, apply_curve
from ._protocol import (
    MAX_DELAY_MS,
    MAX_KEY_BYTES,
    MAX_SUBMIT_BATCH,
    MAX_TIMEOUT_MS,
    PriorityLike,
    Submission,
    check_notify,
    check_type,
    parse_priority,
    seconds_to_ms,
    to_bytes,
)

DEFAULT_CLIENT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_WORKER_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_EVENTS_ENDPOINT = "tcp://127.0.0.1:5557"

# ZMTP heartbeats (libzmq >= 4.2) let libzmq notice a broker that went silent without
# closing the TCP connection (frozen, or the network gone); the broker's libzmq answers
# them by itself. The disconnection they cause is what triggers a resend.
ZMTP_HEARTBEAT_MS = 2000
ZMTP_HEARTBEAT_TIMEOUT_MS = 6000
MAX_MSG_SIZE = 256 * 1024 * 1024 + 64 * 1024
# Several endpoints (active/standby brokers, issue 12): a request unanswered this long
# (capped by the call's timeout) moves the client to the next broker.
DEFAULT_FAILOVER_AFTER = 2.0
BATCH_BYTES = 8 * 1024 * 1024  # payload bytes per SUBMIT_BATCH before a new chunk starts

_MONITOR_EVENTS = zmq.EVENT_DISCONNECTED | getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
EVENT_UP = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
EVENT_DOWN = zmq.EVENT_DISCONNECTED


try:  # the Cython/CFFI socket's send, without the sugar layer's per-frame flag arithmetic
    from zmq.backend import Socket as _BackendSocket

    _backend_send = _BackendSocket.send
except (ImportError, AttributeError):  # pragma: no cover - exotic pyzmq
    _backend_send = None

_MORE = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_COPY_BELOW = 64 * 1024  # zero-copy only pays off for large frames


def send_frames(sock: zmq.Socket, frames: List[bytes]) -> None:
    """Non-blocking multipart send (raises zmq.Again at the high-water mark). About
    three times cheaper than ``send_multipart`` for our small frames."""
    if _backend_send is None:
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        return
    last = len(frames) - 1
    for i, f in enumerate(frames):
        _backend_send(sock, f, _MORE if i < last else _LAST, len(f) < _COPY_BELOW, False)


try:
    _backend_recv = _BackendSocket.recv
except NameError:  # pragma: no cover - exotic pyzmq
    _backend_recv = None
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def recv_messages(sock: zmq.Socket, limit: int = 10_000) -> List[List[bytes]]:
    """Every message waiting on ``sock`` (at most ``limit``), without blocking.

    Frames are received as ``zmq.Frame`` and asked for ``.more``: twice as fast as
    ``recv_multipart``, which asks the socket for RCVMORE after each frame (an option
    lookup through an Enum). The frames of a multipart message arrive together, so
    only the first one can find nothing waiting."""
    out: List[List[bytes]] = []
    if _backend_recv is None:
        while len(out) < limit:
            try:
                out.append(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out
    rcv = _backend_recv
    get = _BackendSocket.get
    while len(out) < limit:
        # Asking EVENTS is a third of the price of the zmq.Again that ends the loop
        # otherwise; the first receive follows a poll, so it usually finds a message.
        if out and not get(sock, _EVENTS) & _POLLIN:
            break
        try:
            f = rcv(sock, _NOBLOCK, False, False)
        except zmq.Again:
            break
        msg = [f.bytes]
        while f.more:
            f = rcv(sock, 0, False, False)
            msg.append(f.bytes)
        out.append(msg)
    return out


EndpointsLike = Union[str, Sequence[str]]


def parse_endpoints(endpoint: EndpointsLike) -> List[str]:
    """One endpoint or several: ``"tcp://a:5555,tcp://b:5555"`` or a list/tuple of
    strings, in the order they are to be tried (spaces around commas are dropped)."""
    if isinstance(endpoint, str):
        items: Sequence[Any] = endpoint.split(",")
    elif isinstance(endpoint, (list, tuple)):
        items = endpoint
    else:
        raise TypeError(f"endpoint must be a string or a list of strings, not {type(endpoint).__name__}")
    out: List[str] = []
    for e in items:
        if not isinstance(e, str):
            raise TypeError(f"an endpoint is a string, not {type(e).__name__}")
        if not e.strip():
            raise ValueError(f"empty endpoint in {endpoint!r}")
        out.append(e.strip())
    if not out:
        raise ValueError("no endpoint given")
    return out


def make_dealer(ctx: zmq.Context, endpoint: str, keys: Optional[CurveKeys], monitor: bool = True
                ) -> Tuple[zmq.Socket, Optional[zmq.Socket]]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_SIZE)
    if hasattr(zmq, "HEARTBEAT_IVL"):
        sock.setsockopt(zmq.HEARTBEAT_IVL, ZMTP_HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ZMTP_HEARTBEAT_TIMEOUT_MS)
    apply_curve(sock, keys)
    mon = sock.get_monitor_socket(_MONITOR_EVENTS) if monitor else None
    try:
        sock.connect(endpoint)
    except zmq.ZMQError:  # a malformed endpoint (e.g. a leader hint): release both sockets
        close_dealer(sock, mon)
        raise
    return sock, mon


def close_dealer(sock: Optional[zmq.Socket], mon: Optional[zmq.Socket]) -> None:
    """Close a monitored socket safely. libzmq's I/O thread sends each monitor event
    with a blocking send on its internal PAIR: if our end of the monitor were closed
    while the socket can still raise an event (a reconnection, a failed CURVE
    handshake), that thread would block for good and every socket of the context with
    it. So stop the monitor first (under libzmq's monitor lock), then close both."""
    if sock is not None and mon is not None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
    for s in (mon, sock):
        if s is not None:
            try:
                s.close(0)
            except zmq.ZMQError:
                pass


def read_monitor_event(mon: zmq.Socket) -> Optional[int]:
    """One monitor event number, or None if none is waiting (non-blocking)."""
    try:
        frames = mon.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return None
    if not frames or len(frames[0]) < 2:
        return None
    return int.from_bytes(frames[0][:2], "little")


# Caches of values already checked: the same few types, priorities and notify levels
# come back in every submission.
_TYPES: dict = {}
_PRIORITIES: dict = {**{n: b"%d" % v for n, v in (("low", 0), ("normal", 1), ("high", 2), ("urgent", 3))},
                     **{v: b"%d" % v for v in range(4)}}
_NOTIFY = {"all": b"all", "final": b"final", "none": b"none"}


class _AutoKeys:
    """Automatic idempotency keys: a random prefix per process and a counter, about
    twenty times cheaper than a uuid4 per key and as unique (96 random bits). A forked
    child draws a prefix of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.prefix = "auto-" + os.urandom(12).hex() + "-"
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return self.prefix + str(next(self.counter))  # itertools.count is atomic under the GIL


auto_key_text = _AutoKeys()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=auto_key_text.reset)

# ``auto_key`` of build_spec/plan_batches for a client with several endpoints: every
# submission without a key gets a random 128-bit hex one, even with
# ``idempotency_key=False`` or ``auto_idempotency=False``, because a failover resends
# it to another broker and only the key keeps that from doubling the task.
ALWAYS_KEY = "always"


def failover_key_text() -> str:
    return os.urandom(16).hex()


class Spec:
    """One checked submission: what SUBMIT and a SUBMIT_BATCH group are built from."""

    __slots__ = ("head", "options", "notify", "key", "delayed", "automatic")

    def __init__(self, head: List[bytes], options: List[bytes], notify: bytes, key: Optional[str],
                 delayed: bool, automatic: bool):
        self.head = head  # type, priority, timeout_ms, payload
        self.options = options  # without notify
        self.notify = notify  # b"all" | b"final" | b"none"
        self.key = key  # the idempotency key sent, as text, or None
        self.delayed = delayed
        self.automatic = automatic  # the key is ours

    def submit_fields(self) -> List[bytes]:
        """SUBMIT frames 3…, with ``notify=`` as the last frame (a 1.0 broker gets
        them without it, see ClientCore.wire)."""
        return [*self.head, *self.options, b"notify=" + self.notify]

    def batch_fields(self) -> List[bytes]:
        return [*self.head, b"%d" % (len(self.options) + 1), *self.options, b"notify=" + self.notify]


def build_spec(task_type: Union[str, bytes], payload: Any, priority: PriorityLike, timeout: Optional[float],
               idempotency_key: Union[str, bytes, None, bool], delay: Optional[float],
               max_attempts: Optional[int], auto_key: Union[bool, str], notify: str = "all") -> Spec:
    """Check a submission's arguments (ValueError/TypeError) and encode them.
    ``auto_key``: False, True (an ``auto-…`` key unless ``idempotency_key=False``) or
    ALWAYS_KEY (a random hex key for every submission without one)."""
    t = _TYPES.get(task_type)
    if t is None:
        t = check_type(task_type)
        if len(_TYPES) < 1024 and isinstance(task_type, (str, bytes)):
            _TYPES[task_type] = t
    p = _PRIORITIES.get(priority) if type(priority) is not bool else None  # (True == 1)
    if p is None:
        p = b"%d" % parse_priority(priority)
    body = payload if type(payload) is bytes else to_bytes(payload)
    nb = _NOTIFY.get(notify) or check_notify(notify)
    timeout_ms = None if timeout is None else seconds_to_ms(timeout, "timeout", 1, MAX_TIMEOUT_MS)
    options: List[bytes] = []
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
            raise ValueError(f"max_attempts must be an integer 1..100, got {max_attempts!r}")
        options.append(b"max_attempts=%d" % max_attempts)
    key_text: Optional[str] = None
    automatic = False
    if idempotency_key is None and auto_key or idempotency_key is False and auto_key is ALWAYS_KEY:
        key_text = failover_key_text() if auto_key is ALWAYS_KEY else auto_key_text()
        automatic = True
        options.append(b"idempotency_key=" + key_text.encode())
    elif idempotency_key is not None and idempotency_key is not False:
        if idempotency_key is True:
            raise TypeError("idempotency_key must be str or bytes (or None/False)")
        kb = to_bytes(idempotency_key, "idempotency_key")
        if not 1 <= len(kb) <= MAX_KEY_BYTES:
            raise ValueError(f"idempotency_key must be 1-{MAX_KEY_BYTES} bytes, got {len(kb)}")
        key_text = kb.decode("utf-8", "replace")
        options.append(b"idempotency_key=" + kb)
    delayed = False
    if delay is not None:
        delay_ms = seconds_to_ms(delay, "delay", 0, MAX_DELAY_MS)
        options.append(b"delay_ms=%d" % delay_ms)
        delayed = delay_ms > 0
    head = [t, p, b"" if timeout_ms is None else b"%d" % timeout_ms, body]
    return Spec(head, options, nb, key_text, delayed, automatic)


_SUBMIT_ARGS = ("type", "payload", "priority", "timeout", "idempotency_key", "delay", "max_attempts", "notify")


def as_submission(item: Any) -> Submission:
    if isinstance(item, Submission):
        return item
    if type(item) is tuple and len(item) == 2:
        return _Pair(*item)  # type: ignore[return-value]
    if isinstance(item, dict):
        unknown = set(item) - set(_SUBMIT_ARGS)
        if unknown:
            raise TypeError(f"unknown submission keys: {', '.join(sorted(map(str, unknown)))}")
        if "type" not in item:
            raise TypeError("a submission dict needs a 'type'")
        return Submission(**item)
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 2:
        return Submission(*item)
    raise TypeError("submit_many() takes conveyor.Submission objects, dicts of submit() arguments "
                    f"or (type, payload) tuples, not {type(item).__name__}")


class _Pair:
    """A ``(type, payload)`` item: the defaults of Submission, without building one."""

    __slots__ = ("type", "payload")
    priority = "normal"
    timeout = None
    idempotency_key = None
    delay = None
    max_attempts = None
    notify = None

    def __init__(self, type: Any, payload: Any):
        self.type = type
        self.payload = payload


class Chunk:
    """Up to MAX_SUBMIT_BATCH submissions that go in one SUBMIT_BATCH."""

    __slots__ = ("start", "specs", "resendable")

    def __init__(self, start: int, specs: List[Spec]):
        self.start = start  # index of the first item in the caller's list
        self.specs = specs
        self.resendable = all(s.key is not None for s in specs)

    def batch_fields(self) -> List[bytes]:
        out: List[bytes] = [b"%d" % len(self.specs)]
        for s in self.specs:
            out += s.batch_fields()
        return out

    def levels(self) -> List[bytes]:
        return [s.notify for s in self.specs]


def plan_batches(items: Iterable[Any], notify: str, auto_key: Union[bool, str], max_items: int = MAX_SUBMIT_BATCH,
                 max_bytes: int = BATCH_BYTES) -> Tuple[int, List[Chunk]]:
    """Check every item (nothing is sent if one is invalid: ValueError/TypeError
    naming its index) and split them into chunks of at most ``max_items`` items and
    about ``max_bytes`` of payload."""
    check_notify(notify)
    chunks: List[Chunk] = []
    cur: List[Spec] = []
    size = 0
    n = 0
    for i, item in enumerate(items):
        try:
            s = as_submission(item)
            spec = build_spec(s.type, s.payload, s.priority, s.timeout, s.idempotency_key, s.delay,
                              s.max_attempts, auto_key, notify if s.notify is None else s.notify)
        except (TypeError, ValueError) as e:
            raise type(e)(f"submission {i}: {e}") from None
        plen = len(spec.head[3])
        if cur and (len(cur) >= max_items or size + plen > max_bytes):
            chunks.append(Chunk(n - len(cur), cur))
            cur, size = [], 0
        cur.append(spec)
        size += plen
        n += 1
    if cur:
        chunks.append(Chunk(n - len(cur), cur))
    return n, chunks


def tasks_limit(limit: int) -> bytes:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be 1..10000, got {limit!r}")
    return b"%d" % limit
