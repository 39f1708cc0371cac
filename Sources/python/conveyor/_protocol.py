"""CVY/1 constants, value validation and the decoded shapes (proto/conveyor-protocol.md)."""
from __future__ import annotations

import base64
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

CLIENT_HEADER = b"CVYC01"
WORKER_HEADER = b"CVYW01"

FINAL_STATES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
STATES = frozenset({"queued", "delayed", "running"}) | FINAL_STATES

MAX_TIMEOUT_MS = 604_800_000  # 7 days (§5.2)
MAX_DELAY_MS = 31_536_000_000  # 1 year
MAX_RETRY_AFTER_MS = 86_400_000  # RETRY_LATER (protocol 1.1)
MAX_KEY_BYTES = 128
MAX_REQUEST_ID = 64
MAX_SUBMIT_BATCH = 1000  # SUBMIT_BATCH count (§11)
MAX_DONE_BATCH = 1000  # DONE_BATCH results (§11)
MAX_READY_BATCH = 1024  # READY batch=N (§11)
NOTIFY_LEVELS = ("all", "final", "none")  # SUBMIT option notify (§5.2, 1.1)

_TYPE_RE = re.compile(rb"^[A-Za-z0-9_.:-]{1,64}$")
_TASK_ID_RE = re.compile(rb"^[0-9a-f]{16}$")
_DIGITS_RE = re.compile(rb"^[0-9]+$")


class Priority(enum.IntEnum):
    """The four levels; ``int(Priority.HIGH) == 2`` is the wire value."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3

    @classmethod
    def parse(cls, value: "PriorityLike") -> "Priority":
        """``Priority.parse("high") is Priority.HIGH``; also 0-3, "0"-"3", any case."""
        return parse_priority(value)


PriorityLike = Union[Priority, int, str]


def parse_priority(value: PriorityLike) -> Priority:
    """``"low"|"normal"|"high"|"urgent"`` (any case), ``0``–``3`` or ``"0"``–``"3"``."""
    if isinstance(value, bool):
        raise ValueError(f"priority must be 0-3 or low/normal/high/urgent, got {value!r}")
    if isinstance(value, int):
        if 0 <= value <= 3:
            return Priority(value)
    elif isinstance(value, str):
        v = value.strip()
        if len(v) == 1 and v in "0123":
            return Priority(int(v))
        try:
            return Priority[v.upper()]
        except KeyError:
            pass
    raise ValueError(f"priority must be 0-3 or low/normal/high/urgent, got {value!r}")


def check_type(task_type: Union[str, bytes]) -> bytes:
    b = task_type.encode() if isinstance(task_type, str) else bytes(task_type)
    if not _TYPE_RE.match(b):
        raise ValueError(f"task type must be 1-64 characters of [A-Za-z0-9_.:-], got {task_type!r}")
    return b


def is_task_id(b: bytes) -> bool:
    return bool(_TASK_ID_RE.match(b))


def check_task_id(task_id: Union[str, bytes]) -> bytes:
    b = task_id.encode() if isinstance(task_id, str) else bytes(task_id)
    if not is_task_id(b):
        raise ValueError(f"a task id is 16 lowercase hex digits, got {task_id!r}")
    return b


def parse_number(b: bytes, lo: int = 0, hi: int = 2**63 - 1) -> Optional[int]:
    """An ASCII decimal frame within [lo, hi], else None (§3.1)."""
    if not _DIGITS_RE.match(b):
        return None
    n = int(b)
    return n if lo <= n <= hi else None


def parse_percent(b: bytes) -> Tuple[bool, Optional[int]]:
    """(valid, percent): empty = indeterminate (None)."""
    if not b:
        return True, None
    n = parse_number(b, 0, 100)
    return (n is not None), n


def seconds_to_ms(seconds: float, what: str, lo: int, hi: int) -> int:
    """Seconds (float) to whole ms, rounded up, checked against [lo, hi]."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {seconds!r}")
    if seconds != seconds or seconds < 0 or (lo > 0 and seconds == 0):
        raise ValueError(f"{what} must be a {'positive' if lo > 0 else 'non-negative'} number of seconds, "
                         f"got {seconds!r}")
    ms = int(-(-seconds * 1000 // 1))  # ceil without importing math
    ms = max(ms, lo)
    if ms > hi:
        raise ValueError(f"{what} of {seconds!r} s is above the limit of {hi / 1000:g} s")
    return ms


def to_bytes(payload: Union[bytes, bytearray, memoryview, str], what: str = "payload") -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"{what} must be bytes or str, got {type(payload).__name__}")


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


@dataclass(frozen=True)
class Submitted:
    """What ``submit()`` returns.

    ``queue_position`` is the broker's ``position`` (0 = next); not meaningful for a
    delayed task or an idempotent duplicate (§5.2). ``duplicate`` and ``state`` come
    from the ACCEPTED frames 5 and 6 when the broker sends them (protocol 1.1);
    with a 1.0 broker ``duplicate`` is False and ``state`` is ``"queued"``, or
    ``"delayed"`` when a delay was given. ``resent`` is True when the client had to
    send the SUBMIT again after a reconnection (the broker may then report a
    duplicate of the first transmission). ``idempotency_key`` is the key that was
    sent (an automatic one unless you gave yours), or None.
    """

    task_id: str
    queue_position: int
    duplicate: bool = False
    state: str = "queued"
    idempotency_key: Optional[str] = None
    resent: bool = False


@dataclass(frozen=True)
class Submission:
    """One item of ``submit_many()``: the arguments of ``submit()`` as a value.

    ``notify=None`` takes the ``notify`` given to ``submit_many()`` (default ``"all"``).
    ``submit_many()`` also accepts plain dicts with these keys and ``(type, payload)``
    tuples.
    """

    type: str
    payload: Union[bytes, str] = b""
    priority: "PriorityLike" = "normal"
    timeout: Optional[float] = None
    idempotency_key: Union[str, bytes, None, bool] = None
    delay: Optional[float] = None
    max_attempts: Optional[int] = None
    notify: Optional[str] = None


def check_notify(notify: str) -> bytes:
    if notify not in NOTIFY_LEVELS:
        raise ValueError(f"notify must be 'all', 'final' or 'none', got {notify!r}")
    return notify.encode()


def decode_result(obj: Dict[str, Any]) -> Optional[bytes]:
    if isinstance(obj.get("result_base64"), str):
        return base64.b64decode(obj["result_base64"])
    if isinstance(obj.get("result"), str):
        return obj["result"].encode("utf-8")
    return None


@dataclass
class TaskStatus:
    """A STATUS reply (§5.3). ``raw`` is the whole JSON object as the broker sent it."""

    task_id: str
    type: str
    state: str
    priority: str
    priority_level: int
    attempt: int
    max_attempts: int
    progress: Optional[Tuple[Optional[int], str]]
    result: Optional[bytes]
    error: Optional[str]
    created_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    queue_position: Optional[int]
    worker: Optional[str]
    dead: bool
    timeout_ms: Optional[int]
    waiting_for: Optional[str] = None  # protocol 1.1: why a queued task is not running yet
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def finished(self) -> bool:
        """True in a final state (succeeded, failed, timed_out, cancelled)."""
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, data: Union[bytes, str, Dict[str, Any]]) -> "TaskStatus":
        obj = data if isinstance(data, dict) else json.loads(data)
        prog = obj.get("progress")
        progress = None
        if isinstance(prog, dict):
            pct = prog.get("percent")
            progress = (int(pct) if isinstance(pct, (int, float)) and not isinstance(pct, bool) else None,
                        str(prog.get("message") or ""))
        level = obj.get("priority_level")
        name = obj.get("priority")
        if not isinstance(level, int) and isinstance(name, str):
            try:
                level = int(Priority[name.upper()])
            except KeyError:
                level = None
        return cls(
            task_id=str(obj.get("task_id", "")),
            type=str(obj.get("type", "")),
            state=str(obj.get("state", "")),
            priority=str(name) if name is not None else "",
            priority_level=level if isinstance(level, int) else -1,
            attempt=int(obj.get("attempt") or 0),
            max_attempts=int(obj.get("max_attempts") or 1),
            progress=progress,
            result=decode_result(obj),
            error=obj.get("error") if isinstance(obj.get("error"), str) else None,
            created_at=obj.get("created_at"),
            started_at=obj.get("started_at"),
            finished_at=obj.get("finished_at"),
            queue_position=obj.get("queue_position") if isinstance(obj.get("queue_position"), int) else None,
            worker=obj.get("worker") if isinstance(obj.get("worker"), str) else None,
            dead=bool(obj.get("dead", False)),
            timeout_ms=obj.get("timeout_ms") if isinstance(obj.get("timeout_ms"), int) else None,
            waiting_for=obj.get("waiting_for") if isinstance(obj.get("waiting_for"), str) else None,
            raw=obj,
        )
