"""Conveyor: a Python client, worker and event subscriber for the Conveyor task queue.

Speaks CVY/1 revision 1.1 (proto/conveyor-protocol.md) over ZeroMQ with pyzmq, and
falls back to 1.0 by itself against an older broker::

    import conveyor

    with conveyor.Client("tcp://127.0.0.1:5555") as c:
        t = c.submit("pdf", b"report.pdf", priority="high")
        print(c.wait(t.task_id, timeout=60))
        c.submit_many([conveyor.Submission("pdf", f"doc-{i}") for i in range(5000)], notify="none")

    w = conveyor.Worker("tcp://127.0.0.1:5556", concurrency=2)

    @w.handler("pdf")
    def analyse(task, ctx):
        ctx.progress(50, "halfway")
        return {"pages": 3}

    w.run()
"""
from ._curve import load_curve_keys
from ._errors import (
    BrokerUnavailable,
    ConveyorError,
    NotCancellable,
    NotFound,
    QueueFull,
    Rejected,
    RetryLater,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskTimedOut,
    WaitTimeout,
)
from ._protocol import Priority, Submission, Submitted, TaskStatus
from .aio import AsyncClient
from .client import Client
from .events import Subscription, subscribe
from .worker import Task, TaskContext, Worker

__version__ = "0.1.0"
PROTOCOL = "CVY/1"

__all__ = [
    "AsyncClient",
    "BrokerUnavailable",
    "Client",
    "ConveyorError",
    "NotCancellable",
    "NotFound",
    "Priority",
    "QueueFull",
    "Rejected",
    "RetryLater",
    "Submission",
    "Submitted",
    "Subscription",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskStatus",
    "TaskTimedOut",
    "WaitTimeout",
    "Worker",
    "load_curve_keys",
    "subscribe",
]
