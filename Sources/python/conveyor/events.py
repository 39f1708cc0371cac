"""The broker's event stream (§7): ``[topic, json]`` over PUB/SUB."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Union

import zmq

from ._common import DEFAULT_EVENTS_ENDPOINT, EndpointsLike, parse_endpoints
from ._curve import PathLike, apply_curve, load_curve_keys
from ._errors import WaitTimeout

__all__ = ["subscribe", "Subscription"]


class Subscription:
    """An iterator of ``(topic, event)`` pairs from a SUB socket; ``event`` is the
    decoded JSON object. Subscriptions are topic prefixes (``"task."`` gets every task
    event, ``""`` everything). Delivery is best effort and events published before the
    subscription reached the broker are lost (§7.1); malformed messages are skipped.

    ``timeout``: raise :class:`WaitTimeout` after that many seconds without an event
    (None: wait forever). Close it (or use ``with``) to release the socket.

    ``endpoint`` may list several brokers' event endpoints (a comma-separated string
    or a list): the SUB socket connects to all of them, and only the active broker
    publishes.
    """

    def __init__(self, endpoint: EndpointsLike = DEFAULT_EVENTS_ENDPOINT,
                 topics: Union[str, Iterable[str]] = ("stats",), *, timeout: Optional[float] = None,
                 curve_key: Optional[PathLike] = None, curve_server_key: Optional[PathLike] = None,
                 context: Optional[zmq.Context] = None):
        if isinstance(topics, str):
            topics = (topics,)
        self.topics = tuple(topics)
        self.timeout = timeout
        ctx = context or zmq.Context.instance()
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        apply_curve(self._sock, load_curve_keys(curve_key, curve_server_key))
        for t in self.topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        self.endpoints = tuple(parse_endpoints(endpoint))
        try:
            for ep in self.endpoints:
                self._sock.connect(ep)
        except zmq.ZMQError:
            self._sock.close(0)
            raise

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Tuple[str, Dict[str, Any]]:
        item = self.next(self.timeout)
        if item is None:
            raise WaitTimeout(f"no event within {self.timeout:g}s")
        return item

    def next(self, timeout: Optional[float] = None) -> Optional[Tuple[str, Dict[str, Any]]]:
        """The next event, or None after ``timeout`` seconds (None: wait forever)."""
        if self._sock.closed:
            raise StopIteration
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                ms = -1
            else:
                ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            if not self._sock.poll(ms):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            frames = self._sock.recv_multipart()
            if len(frames) != 2 or not frames[0]:
                continue
            try:
                obj = json.loads(frames[1])
                topic = frames[0].decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                return topic, obj

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def subscribe(endpoint: EndpointsLike = DEFAULT_EVENTS_ENDPOINT, topics: Union[str, Iterable[str]] = ("stats",), *,
              timeout: Optional[float] = None, curve_key: Optional[PathLike] = None,
              curve_server_key: Optional[PathLike] = None) -> Subscription:
    """``for topic, event in conveyor.subscribe("tcp://127.0.0.1:5557", ["stats", "task."]): ...``

    ``endpoint`` may be several event endpoints (active/standby brokers): a list or a
    comma-separated string; the subscription connects to every one."""
    return Subscription(endpoint, topics, timeout=timeout, curve_key=curve_key, curve_server_key=curve_server_key)
