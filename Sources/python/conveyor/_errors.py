"""Exceptions raised by the Conveyor client, worker and event helpers."""
from __future__ import annotations

from typing import Optional

__all__ = [
    "ConveyorError",
    "BrokerUnavailable",
    "Rejected",
    "QueueFull",
    "NotFound",
    "NotCancellable",
    "TaskError",
    "TaskFailed",
    "TaskTimedOut",
    "TaskCancelled",
    "WaitTimeout",
    "RetryLater",
]


class ConveyorError(Exception):
    """Base class of every exception this package raises on purpose."""


class BrokerUnavailable(ConveyorError):
    """No reply from the broker within the client's ``timeout``.

    For a SUBMIT this means the outcome is unknown: the task may or may not have been
    accepted. Submissions with an idempotency key (the default, see ``Client``) are
    resent automatically when the connection comes back, so this is raised for them
    only once the call's timeout has passed.
    """


class Rejected(ConveyorError):
    """The broker refused a request: REJECTED for a SUBMIT, ERROR for anything else.

    ``code`` is the protocol's error code (``queue_full``, ``bad_request``,
    ``unknown_type``, ``payload_too_large``, ``shutting_down``, ``not_found``,
    ``not_cancellable``, …), ``message`` the broker's human-readable text.
    Unknown codes are kept as they are (spec §5.8: a generic failure).
    """

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class QueueFull(Rejected):
    """REJECTED ``queue_full``: the broker's queue is at its bound; retry later."""

    def __init__(self, code: str = "queue_full", message: str = ""):
        super().__init__(code, message)


class NotFound(Rejected, LookupError):
    """ERROR ``not_found``: the broker does not know the task (or it expired)."""

    def __init__(self, code: str = "not_found", message: str = ""):
        super().__init__(code, message)


class NotCancellable(Rejected):
    """ERROR ``not_cancellable``: the task is already in a final state."""

    def __init__(self, code: str = "not_cancellable", message: str = ""):
        super().__init__(code, message)


class TaskError(ConveyorError):
    """A task ended without a result. ``task_id`` and ``error`` (the broker's text)."""

    state = ""

    def __init__(self, task_id: str, error: Optional[str] = ""):
        self.task_id = task_id
        self.error = error or ""
        super().__init__(f"task {task_id} {self.state}" + (f": {self.error}" if self.error else ""))


class TaskFailed(TaskError):
    """The task ended ``failed`` (handler raised, or ``worker_lost``)."""

    state = "failed"


class TaskTimedOut(TaskError):
    """The task ended ``timed_out``: its last attempt outlived its timeout."""

    state = "timed_out"


class TaskCancelled(TaskError):
    """The task ended ``cancelled``."""

    state = "cancelled"


class WaitTimeout(ConveyorError, TimeoutError):
    """``wait()``/``progress()``/``subscribe()`` gave up after their own ``timeout``.

    The task itself is unaffected (it may still be queued or running); this is not
    :class:`TaskTimedOut`, which is the task's final state.
    """


class RetryLater(ConveyorError):
    """Raised by ``ctx.retry_later(seconds)`` inside a handler to unwind it.

    The worker then sends RETRY_LATER for the attempt instead of DONE/FAIL. The request
    stands even if the handler catches this exception: whatever the handler returns
    or raises afterwards is ignored.
    """

    def __init__(self, seconds: Optional[float]):
        super().__init__("retry later" + (f" in {seconds:g} s" if seconds is not None else ""))
        self.seconds = seconds
