"""The client protocol without I/O: request ids, replies, pushes, watches, resends.

``Client`` (a socket thread) and ``AsyncClient`` (an asyncio reader) both drive one
``ClientCore``: they hand it every message their DEALER receives and every
connection event of its monitor, send what it returns, and call ``tick()`` when
``next_deadline()`` comes. Waiters are futures made by the driver's factory
(``concurrent.futures.Future`` or ``loop.create_future``); progress subscribers are
queues with ``put_nowait``.

Connections. libzmq reconnects a DEALER by itself; to the broker every reconnection
is a new peer (§2). The core numbers connections: ``gen`` is the connection that a
message sent now travels on. When the monitor reports a disconnection, requests sent
on the lost connection may have been lost with it ("in doubt"). When the next
handshake succeeds, the in-doubt requests that are safe to repeat (SUBMITs with an
idempotency key, STATUS, STATS, TASKS, PING) are sent again; the others (CANCEL,
SUBMIT without a key) are not, and end with ``BrokerUnavailable`` at their deadline
unless their reply still arrives. Pushes (PROGRESS, FINISHED) go to the connection
that submitted a task, so tasks of a lost connection, and tasks submitted elsewhere,
are followed by polling STATUS instead.

Protocol 1.1 (§5.2, §5.13). Every SUBMIT carries ``notify=LEVEL`` as its last frame,
which also asks for the long ACCEPTED (``duplicate``, ``state``). A 1.0 broker
rejects the option (REJECTED bad_request naming ``notify``): the core then marks the
connection as 1.0 and sends that SUBMIT again, and every later one on the same
connection, without the frame (``wire``). SUBMIT_BATCH answered ERROR
``unknown_command`` marks the connection as one without batches
(``batch_supported``); the drivers then submit the items one by one. Both marks are
forgotten on a reconnection, because the broker may have been upgraded meanwhile.
Only tasks whose pushes the broker will send are followed by push: ``notify=all``
ones for PROGRESS and FINISHED, ``notify=final`` ones for FINISHED only;
``notify=none`` tasks, and progress of ``final`` ones, are followed by STATUS polls.

Several endpoints (active/standby brokers, issue 12; the zguide's Binary Star for
clients). The core talks to one endpoint at a time and decides when to move; the
driver does the move (``take_switch``: open a socket to that endpoint, close the old
one, send what ``switched`` returns). A reply ``not_leader`` (REJECTED or ERROR, with
the active broker's endpoint in frame 5, or empty) keeps its request pending and
moves to that endpoint at once, or to the next one in the list after
NOT_LEADER_RETRY when the leader is unknown. A request unanswered on the current
endpoint for ``failover_after`` seconds moves to the next one. On a move every
request not yet answered is sent again on the new socket, except those that are not
safe to repeat (CANCEL): they stay in doubt as after a disconnection. Requests made
while a move is pending wait for it (``hold``). The calls' deadlines bound all of
it. With one endpoint none of this happens: ``not_leader`` is an error like any
other.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._errors import (
    BrokerUnavailable,
    ConveyorError,
    NotCancellable,
    NotFound,
    QueueFull,
    Rejected,
    TaskCancelled,
    TaskFailed,
    TaskTimedOut,
)
from ._protocol import (
    CLIENT_HEADER,
    FINAL_STATES,
    STATES,
    Submitted,
    TaskStatus,
    decode_result,
    is_task_id,
    parse_number,
    parse_percent,
    text,
)

# How often a waiter polls STATUS when no FINISHED push can be expected (the task was
# submitted by another connection, or by a connection that has since been lost).
POLL_INTERVAL = 0.25
# How often it polls anyway when a push is expected: pushes can be dropped (§13).
SAFETY_POLL_INTERVAL = 5.0
FINISHED_CACHE_ENTRIES = 10_000
FINISHED_CACHE_BYTES = 64 * 1024 * 1024
OWN_TASKS_MAX = 200_000
PROGRESS_BUFFER = 256
# not_leader without a leader: wait this long before trying the next endpoint. Also
# the least time between two moves that follow leader hints (two standbys naming
# each other must not make a busy loop).
NOT_LEADER_RETRY = 0.25

REPLY_COMMANDS = {
    b"ACCEPTED": 5,
    b"REJECTED": 5,
    b"STATUS": 4,
    b"CANCELLED": 5,
    b"STATS": 4,
    b"TASKS": 4,
    b"DEAD": 4,
    b"PONG": 3,
    b"ERROR": 5,
    b"SUBMITTED": 8,
}

END = object()  # end of a progress stream

Outcome = Tuple[str, bytes]  # (final state, result bytes or error text)


def error_from(code: str, message: str) -> Rejected:
    cls = {"queue_full": QueueFull, "not_found": NotFound, "not_cancellable": NotCancellable}.get(code)
    return cls(code, message) if cls else Rejected(code, message)


def outcome_result(task_id: str, outcome: Outcome) -> bytes:
    """The result of a succeeded task; the matching TaskError otherwise."""
    state, body = outcome
    if state == "succeeded":
        return body
    err = text(body)
    if state == "failed":
        raise TaskFailed(task_id, err)
    if state == "timed_out":
        raise TaskTimedOut(task_id, err)
    raise TaskCancelled(task_id, err)


class Request:
    __slots__ = ("rid", "frames", "resendable", "sent_gen", "in_doubt", "resent", "future", "callback", "deadline",
                 "levels", "stripped", "sent_ep", "sent_at", "held", "not_leader")

    def __init__(self, rid: bytes, frames: List[bytes], resendable: bool, future: Any, callback: Any, deadline: float,
                 levels: Optional[List[bytes]] = None):
        self.rid = rid
        self.frames = frames
        self.resendable = resendable
        self.sent_gen: Optional[int] = None
        self.in_doubt = False
        self.resent = False
        self.future = future
        self.callback = callback  # internal requests: callback(frames or None on expiry)
        self.deadline = deadline
        # SUBMIT: [notify level] (its last frame is notify=…); SUBMIT_BATCH: one per item.
        self.levels = levels
        self.stripped = False  # sent without its notify frame (to a 1.0 broker)
        # Several endpoints: where and when it was last sent, whether it waits for a
        # move to another endpoint, whether a standby answered it not_leader.
        self.sent_ep = -1
        self.sent_at = 0.0
        self.held = False
        self.not_leader = False


class _Watch:
    __slots__ = ("futures", "subs", "next_poll", "polling", "last_progress")

    def __init__(self) -> None:
        self.futures: List[Any] = []
        self.subs: List[Any] = []
        self.next_poll = 0.0
        self.polling = False
        self.last_progress: Optional[Tuple[Optional[int], str]] = None


class ClientCore:
    def __init__(self, future_factory: Callable[[], Any], timeout: float, endpoints: Optional[List[str]] = None,
                 failover_after: float = 2.0):
        self.lock = threading.Lock()
        self.new_future = future_factory
        self.timeout = float(timeout)
        self.endpoints = list(endpoints or [""])
        self.multi = len(self.endpoints) > 1
        self.endpoint = self.endpoints[0]  # the one in use (may be a leader hint outside the list)
        self.index = 0  # position in the list of the last list endpoint used
        self.failover_after = min(float(failover_after), self.timeout)
        self.ep_seq = 0  # counts the moves to another endpoint
        self.switch_to: Optional[str] = None  # a move is pending: to this endpoint…
        self.switch_at = 0.0  # …at this time
        self.last_hint_move = float("-inf")
        self.last_leader: Optional[str] = None  # the last not_leader's leader frame ("" = unknown)
        self.failovers = 0
        self.prefix = os.urandom(4).hex().encode() + b"-"
        self.seq = itertools.count(1)
        self.pending: Dict[bytes, Request] = {}
        self.gen = 0
        self.connected = False
        self.closed = False
        # task_id -> (connection it was submitted on, PROGRESS pushed too), for tasks
        # whose FINISHED push we expect.
        self.own: "OrderedDict[bytes, Tuple[int, bool]]" = OrderedDict()
        # Connections found to be 1.0 brokers: for notify (SUBMIT) and for SUBMIT_BATCH.
        self.v10_submit_gen = -1
        self.v10_batch_gen = -1
        self._again: List[Request] = []  # to send again now (the notify fallback)
        self.progress_buf: Dict[bytes, List[Tuple[Optional[int], str]]] = {}
        # task_id -> (outcome, progress items) for tasks that finished by push.
        self.finished: "OrderedDict[bytes, Tuple[Outcome, List[Tuple[Optional[int], str]]]]" = OrderedDict()
        self.finished_bytes = 0
        self.watches: Dict[bytes, _Watch] = {}
        # (when, seq, kind, key); kind 0=request deadline, 1=poll, 2=failover silence, 3=pending move
        self.timers: List[Tuple[float, int, int, bytes]] = []
        self.tseq = itertools.count()
        self.ignored = 0  # messages that failed validation (§3.4: ignored)
        self.resends = 0
        self._later: List[Tuple[Any, Any, bool]] = []

    # ----- helpers (lock held) -------------------------------------------------

    def _settle(self, target: Any, value: Any, error: bool) -> None:
        self._later.append((target, value, error))

    def _flush(self) -> None:
        """Resolve futures and feed queues outside the lock."""
        later, self._later = self._later, []
        for target, value, error in later:
            if hasattr(target, "set_result"):
                if target.done():
                    continue
                try:
                    target.set_exception(value) if error else target.set_result(value)
                except Exception:  # cancelled meanwhile (InvalidStateError)
                    pass
            else:
                target.put_nowait(value)

    def _timer(self, when: float, kind: int, key: bytes) -> None:
        heapq.heappush(self.timers, (when, next(self.tseq), kind, key))

    def push_expected(self, task_id: bytes, w: Optional[_Watch] = None) -> bool:
        """FINISHED will come by push (and PROGRESS too if ``w`` has subscribers)."""
        g = self.own.get(task_id)
        return (g is not None and g[0] == self.gen and self.connected
                and (g[1] or w is None or not w.subs))

    def wire(self, req: Request) -> List[bytes]:
        """The frames to send for ``req`` now: a SUBMIT without its notify frame on
        a connection that turned out to be a 1.0 broker's."""
        if self.v10_submit_gen == self.gen and req.levels is not None and req.frames[1] == b"SUBMIT":
            req.stripped = True
            return req.frames[:-1]
        req.stripped = False
        return req.frames

    def batch_supported(self) -> bool:
        return self.v10_batch_gen != self.gen

    def batch_unsupported(self) -> None:
        """SUBMIT_BATCH was answered unknown_command on this connection."""
        with self.lock:
            self.v10_batch_gen = self.gen

    # ----- requests -------------------------------------------------------------

    def request(self, command: bytes, fields: List[bytes], resendable: bool, *,
                callback: Any = None, timeout: Optional[float] = None,
                levels: Optional[List[bytes]] = None) -> Request:
        """A new request; the driver sends ``req.frames`` and calls ``sent(req)``."""
        with self.lock:
            if self.closed:
                raise ConveyorError("the client is closed")
            rid = self.prefix + str(next(self.seq)).encode()
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            req = Request(rid, [CLIENT_HEADER, command, rid, *fields], resendable,
                          None if callback else self.new_future(), callback, deadline, levels)
            self.pending[rid] = req
            self._timer(deadline, 0, rid)
            return req

    def sent(self, req: Request) -> None:
        """Called by the driver right after it handed ``req`` to its socket."""
        req.sent_gen = self.gen
        if self.multi:
            with self.lock:
                req.sent_ep = self.ep_seq
                req.sent_at = now = time.monotonic()
                self._timer(now + self.failover_after, 2, req.rid)

    def send_failed(self, req: Request, why: str) -> None:
        with self.lock:
            if self.pending.pop(req.rid, None) is not None:
                self._fail_request(req, BrokerUnavailable(why))
        self._flush()

    def abandon(self, rid: bytes) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def _fail_request(self, req: Request, exc: BaseException) -> None:
        if req.future is not None:
            self._settle(req.future, exc, True)
        elif req.callback is not None:
            req.callback(None)

    # ----- incoming -------------------------------------------------------------

    def on_message(self, frames: List[bytes]) -> List[Request]:
        return self.on_messages([frames])

    def on_messages(self, batch: List[List[bytes]]) -> List[Request]:
        """Handle received messages; returns the requests to send again at once."""
        with self.lock:
            for frames in batch:
                self._on_message(frames)
            again, self._again = self._again, []
        self._flush()
        return again

    def _on_message(self, frames: List[bytes]) -> None:
        if len(frames) < 3 or frames[0] != CLIENT_HEADER:
            self.ignored += 1
            return
        cmd = frames[1]
        if cmd == b"FINISHED":
            if len(frames) != 5 or not is_task_id(frames[2]) or text(frames[3]) not in FINAL_STATES:
                self.ignored += 1
                return
            self._finished(frames[2], (text(frames[3]), frames[4]))
            return
        if cmd == b"PROGRESS":
            ok, pct = parse_percent(frames[3]) if len(frames) == 5 else (False, None)
            if not ok or not is_task_id(frames[2]):
                self.ignored += 1
                return
            self._progress(frames[2], (pct, text(frames[4])))
            return
        need = REPLY_COMMANDS.get(cmd)
        if need is None or len(frames) < need or len(frames[2]) > 64:
            self.ignored += 1
            return
        if cmd == b"ACCEPTED" and not valid_accepted(frames, 3):
            self.ignored += 1
            return
        if cmd == b"SUBMITTED" and not valid_submitted(frames):
            self.ignored += 1
            return
        req = self.pending.pop(frames[2], None)
        if req is None:
            return  # a reply to an abandoned or already answered request
        if self.multi and (cmd == b"REJECTED" or cmd == b"ERROR") and frames[3] == b"not_leader":
            # A standby (issue 12): it did nothing with the request, so it is safe to
            # send again, whatever it is. Pending until the active broker answers.
            req.not_leader = True
            self.pending[req.rid] = req
            if req.sent_ep == self.ep_seq:
                self._follow(text(frames[5]) if len(frames) > 5 else "")
            return
        if req.callback is not None:
            req.callback(frames)
            return
        if cmd == b"REJECTED" or cmd == b"ERROR":
            code = frames[3]
            if (cmd == b"REJECTED" and code == b"bad_request" and b"notify" in frames[4] and req.levels is not None
                    and req.frames[1] == b"SUBMIT" and not req.stripped):
                # A 1.0 broker (§5.2): say it again without the option, on this connection.
                if req.sent_gen == self.gen:
                    self.v10_submit_gen = self.gen
                self.pending[req.rid] = req
                self._again.append(req)
                return
            self._settle(req.future, error_from(text(code), text(frames[4])), True)
            return
        if self.connected:
            if cmd == b"ACCEPTED":
                self._own_accepted(frames, 3, req.levels[0] if req.levels else b"all", req.resent)
            elif cmd == b"SUBMITTED" and req.levels:
                for i, level in enumerate(req.levels):
                    j = 3 + 5 * i
                    if frames[j] == b"ACCEPTED":
                        self._own_accepted(frames, j + 1, level, req.resent)
        self._settle(req.future, (frames, req.resent), False)

    def _own_accepted(self, frames: List[bytes], j: int, level: bytes, resent: bool) -> None:
        """After an ACCEPTED whose task_id is frames[j]: follow it by push if the
        broker will push it to us."""
        long_form = len(frames) > j + 2 and frames[j + 2] in (b"0", b"1")
        if long_form:
            if frames[j + 2] == b"1" or level == b"none":
                return  # a duplicate: pushes go to the first submitter (§5.9)
            self._own(frames[j], level == b"all")
        elif not resent:  # a 1.0 broker: notify ignored, everything is pushed
            self._own(frames[j], True)

    def _own(self, task_id: bytes, progress: bool = True) -> None:
        self.own[task_id] = (self.gen, progress)
        if len(self.own) > OWN_TASKS_MAX:
            old, _ = self.own.popitem(last=False)
            self.progress_buf.pop(old, None)

    def disown(self, task_id: bytes) -> None:
        """Not our push any more (e.g. ACCEPTED turned out to be a duplicate)."""
        with self.lock:
            self.own.pop(task_id, None)

    def _progress(self, task_id: bytes, item: Tuple[Optional[int], str]) -> None:
        g = self.own.get(task_id)
        if g is not None and g[1]:
            buf = self.progress_buf.setdefault(task_id, [])
            if len(buf) < PROGRESS_BUFFER:
                buf.append(item)
        w = self.watches.get(task_id)
        if w is not None:
            w.last_progress = item
            for q in w.subs:
                self._settle(q, item, False)

    def _finished(self, task_id: bytes, outcome: Outcome) -> None:
        self.own.pop(task_id, None)
        items = self.progress_buf.pop(task_id, [])
        if task_id not in self.finished:
            self.finished[task_id] = (outcome, items)
            self.finished_bytes += len(outcome[1])
            while self.finished and (len(self.finished) > FINISHED_CACHE_ENTRIES
                                     or self.finished_bytes > FINISHED_CACHE_BYTES):
                _, ((_, body), _) = self.finished.popitem(last=False)
                self.finished_bytes -= len(body)
        self._resolve(task_id, outcome, None)

    def _resolve(self, task_id: bytes, outcome: Optional[Outcome], exc: Optional[BaseException]) -> None:
        w = self.watches.pop(task_id, None)
        if w is None:
            return
        for f in w.futures:
            self._settle(f, exc if exc is not None else outcome, exc is not None)
        for q in w.subs:
            self._settle(q, exc if exc is not None else END, False)

    # ----- connection events ----------------------------------------------------

    def on_disconnected(self) -> None:
        with self.lock:
            lost = self.gen
            self.gen += 1
            self.connected = False
            for req in self.pending.values():
                if req.sent_gen == lost:
                    req.in_doubt = True
            self._reschedule_watches()

    def on_connected(self) -> List[Request]:
        """Handshake succeeded: returns the in-doubt requests to send again."""
        with self.lock:
            self.connected = True
            again = []
            for req in self.pending.values():
                if req.in_doubt and req.resendable:
                    req.in_doubt = False
                    req.resent = True
                    again.append(req)
            self.resends += len(again)
            self._reschedule_watches()
            return again

    def _reschedule_watches(self) -> None:
        now = time.monotonic()
        for tid, w in self.watches.items():
            if not self.push_expected(tid, w) and not w.polling:
                w.next_poll = now
                self._timer(now, 1, tid)

    # ----- several endpoints (lock held unless said otherwise) --------------------

    def _next_endpoint(self) -> str:
        return self.endpoints[(self.index + 1) % len(self.endpoints)]

    def _follow(self, leader: str) -> None:
        """A not_leader from the current endpoint."""
        self.last_leader = leader
        now = time.monotonic()
        if leader and leader != self.endpoint:
            at = max(now, self.last_hint_move + NOT_LEADER_RETRY)
            self.last_hint_move = at
            self._move(leader, at)
        else:
            self._move(self._next_endpoint(), now + NOT_LEADER_RETRY)

    def _move(self, endpoint: str, at: float) -> None:
        if self.switch_to is not None or self.closed:
            return  # a move is already pending: the first reason wins
        self.switch_to, self.switch_at = endpoint, at
        self._timer(at, 3, b"")

    def hold(self, req: Request) -> None:
        """The driver did not send ``req`` because a move is pending (``switch_to``
        is set): ``switched`` returns it. (Driver thread only, as ``switched``.)"""
        req.held = True

    def take_switch(self, now: Optional[float] = None) -> Optional[str]:
        """The endpoint to move to now, if a move is due (unlocked)."""
        ep = self.switch_to
        if ep is None or self.switch_at > (time.monotonic() if now is None else now):
            return None
        return ep

    def switched(self, endpoint: str) -> List[Request]:
        """The driver now talks to ``endpoint`` on a new socket: returns the requests
        to send on it, in the order they were made."""
        with self.lock:
            self.switch_to = None
            self.endpoint = endpoint
            if endpoint in self.endpoints:
                self.index = self.endpoints.index(endpoint)
            self.ep_seq += 1
            self.gen += 1
            self.connected = False
            self.failovers += 1
            again = []
            for req in self.pending.values():
                if req.held:
                    req.held = False
                    again.append(req)
                elif req.sent_gen is not None:
                    if req.resendable or req.not_leader:
                        req.in_doubt = False
                        req.resent = True
                        again.append(req)
                        self.resends += 1
                    else:
                        req.in_doubt = True  # like a lost connection: ends at its deadline
            n = len(self.prefix)
            again.sort(key=lambda r: int(r.rid[n:]))  # ids are <prefix><number>
            self._reschedule_watches()
            return again

    def switch_failed(self, endpoint: str) -> None:
        """The driver could not open a socket to ``endpoint`` (a malformed leader
        hint, say): try the next endpoint of the list after NOT_LEADER_RETRY."""
        with self.lock:
            self.switch_to = None
            if endpoint in self.endpoints:
                self.index = self.endpoints.index(endpoint)
            self._move(self._next_endpoint(), time.monotonic() + NOT_LEADER_RETRY)

    def _silent(self, req: Request, now: float) -> None:
        """A failover timer of ``req`` is due."""
        if (req.sent_ep == self.ep_seq and req.sent_at + self.failover_after <= now and req.sent_gen is not None
                and not req.held):
            self._move(self._next_endpoint(), now)

    def _unavailable(self, req: Request) -> str:
        why = "no reply from the broker within %gs" % self.timeout
        if not self.multi:
            return why
        if req.not_leader:
            hint = self.last_leader or "unknown"
            return f"{why}: the brokers answered not_leader (last leader hint: {hint}; last tried {self.endpoint})"
        return f"{why} (endpoints {', '.join(self.endpoints)}; last tried {self.endpoint})"

    # ----- watches (wait and progress) ------------------------------------------

    def watch(self, task_id: bytes, future: Any = None, sub: Any = None) -> None:
        """Follow a task until its final state: ``future`` gets the Outcome (or an
        exception such as NotFound), ``sub`` gets progress items, then END."""
        with self.lock:
            if self.closed:
                raise ConveyorError("the client is closed")
            done = self.finished.get(task_id)
            if done is not None:
                outcome, items = done
                if future is not None:
                    self._settle(future, outcome, False)
                if sub is not None:
                    for it in items:
                        self._settle(sub, it, False)
                    self._settle(sub, END, False)
            else:
                w = self.watches.get(task_id)
                if w is None:
                    w = self.watches[task_id] = _Watch()
                    now = time.monotonic()
                    w.next_poll = now + SAFETY_POLL_INTERVAL if self.push_expected(task_id) else now
                    self._timer(w.next_poll, 1, task_id)
                if future is not None:
                    w.futures.append(future)
                if sub is not None:
                    w.subs.append(sub)
                    for it in self.progress_buf.get(task_id, ()):
                        self._settle(sub, it, False)
                    if task_id in self.progress_buf and self.progress_buf[task_id]:
                        w.last_progress = self.progress_buf[task_id][-1]
                    now = time.monotonic()
                    if not w.polling and w.next_poll > now + POLL_INTERVAL and not self.push_expected(task_id, w):
                        w.next_poll = now  # progress of a notify=final task: from STATUS
                        self._timer(now, 1, task_id)
        self._flush()

    def unwatch(self, task_id: bytes, future: Any = None, sub: Any = None) -> None:
        with self.lock:
            w = self.watches.get(task_id)
            if w is None:
                return
            if future is not None and future in w.futures:
                w.futures.remove(future)
            if sub is not None and sub in w.subs:
                w.subs.remove(sub)
            if not w.futures and not w.subs:
                del self.watches[task_id]

    def _poll_reply(self, task_id: bytes) -> Callable[[Optional[List[bytes]]], None]:
        def done(frames: Optional[List[bytes]]) -> None:  # lock held (called from _on_message/tick)
            w = self.watches.get(task_id)
            if w is None:
                return
            w.polling = False
            now = time.monotonic()
            if frames is not None and frames[1] == b"STATUS":
                try:
                    st = TaskStatus.from_json(frames[3])
                except (ValueError, TypeError):
                    st = None
                if st is not None and st.state in STATES:
                    if st.progress is not None and st.progress != w.last_progress:
                        w.last_progress = st.progress
                        for q in w.subs:
                            self._settle(q, st.progress, False)
                    if st.state in FINAL_STATES:
                        body = (decode_result(st.raw) or b"") if st.state == "succeeded" else (st.error or "").encode()
                        self.own.pop(task_id, None)
                        self._resolve(task_id, (st.state, body), None)
                        return
            elif frames is not None and frames[1] == b"ERROR" and text(frames[3]) == "not_found":
                self._resolve(task_id, None, NotFound("not_found", text(frames[4])))
                return
            interval = SAFETY_POLL_INTERVAL if self.push_expected(task_id, w) else POLL_INTERVAL
            w.next_poll = now + interval
            self._timer(w.next_poll, 1, task_id)

        return done

    # ----- timers ---------------------------------------------------------------

    def next_deadline(self) -> Optional[float]:
        with self.lock:
            return self.timers[0][0] if self.timers else None

    def tick(self, now: Optional[float] = None) -> List[Request]:
        """Expire requests, start due polls; returns requests to send."""
        now = time.monotonic() if now is None else now
        out: List[Request] = []
        with self.lock:
            while self.timers and self.timers[0][0] <= now:
                _, _, kind, key = heapq.heappop(self.timers)
                if kind == 0:
                    req = self.pending.get(key)
                    if req is not None and req.deadline <= now:
                        del self.pending[key]
                        why = self._unavailable(req) if req.callback is None else ""
                        self._fail_request(req, BrokerUnavailable(why))
                elif kind == 2:
                    req = self.pending.get(key)
                    if req is not None:
                        self._silent(req, now)
                elif kind == 3:
                    continue  # a pending move is due: the driver asks take_switch()
                else:
                    w = self.watches.get(key)
                    if w is None or w.polling or w.next_poll > now or self.closed:
                        continue
                    w.polling = True
                    rid = self.prefix + str(next(self.seq)).encode()
                    req = Request(rid, [CLIENT_HEADER, b"STATUS", rid, key], True, None, self._poll_reply(key),
                                  now + max(self.timeout, 1.0))
                    self.pending[rid] = req
                    self._timer(req.deadline, 0, rid)
                    out.append(req)
        self._flush()
        return out

    def close(self, why: str = "the client is closed") -> None:
        with self.lock:
            self.closed = True
            for req in self.pending.values():
                if req.future is not None:
                    self._settle(req.future, ConveyorError(why), True)
            self.pending.clear()
            for tid in list(self.watches):
                self._resolve(tid, None, ConveyorError(why))
            self.timers.clear()
        self._flush()


# ----- building requests and decoding replies (shared by both clients) ---------


def valid_accepted(frames: List[bytes], j: int) -> bool:
    """frames[j:j+2] are an ACCEPTED's task_id and position (and frames[j+2:j+4]
    its 1.1 duplicate and state, when present)."""
    if not is_task_id(frames[j]) or parse_number(frames[j + 1]) is None:
        return False
    if j == 3 and len(frames) == 5:
        return True
    return len(frames) > j + 3 and frames[j + 2] in (b"0", b"1") and text(frames[j + 3]) in STATES


def valid_submitted(frames: List[bytes]) -> bool:
    n = len(frames) - 3
    if n < 5 or n % 5:
        return False
    for j in range(3, len(frames), 5):
        if frames[j] == b"ACCEPTED":
            if not valid_accepted(frames, j + 1):
                return False
        elif frames[j] != b"REJECTED":
            return False
    return True


def decode_accepted(frames: List[bytes], resent: bool, delayed: bool, key: Optional[str], j: int = 3) -> Submitted:
    """An ACCEPTED (j=3) or one SUBMITTED outcome (j = its task_id's index)."""
    if len(frames) > j + 3 and frames[j + 2] in (b"0", b"1"):
        duplicate = frames[j + 2] == b"1"
        state = text(frames[j + 3])
        if state not in STATES:
            state = "delayed" if delayed else "queued"
    else:  # the 1.0 ACCEPTED
        duplicate = False
        state = "delayed" if delayed else "queued"
    # Submitted is a frozen dataclass: filling __dict__ skips its per-field frozen
    # __setattr__ (a third of decoding a SUBMITTED).
    sub = _new(Submitted)
    sub.__dict__.update(task_id=frames[j].decode("ascii"), queue_position=int(frames[j + 1]), duplicate=duplicate,
                        state=state, idempotency_key=key, resent=resent)
    return sub


_new = object.__new__


def decode_submitted(frames: List[bytes], resent: bool, specs: List[Any]) -> List[Any]:
    """SUBMITTED → one Submitted or Rejected per submission, in order."""
    if (len(frames) - 3) // 5 != len(specs):
        raise ConveyorError(f"the broker answered {(len(frames) - 3) // 5} outcomes to a batch of {len(specs)}")
    out: List[Any] = []
    j = 3
    for spec in specs:
        if frames[j] == b"ACCEPTED":
            out.append(decode_accepted(frames, resent, spec.delayed, spec.key, j + 1))
        else:
            out.append(error_from(text(frames[j + 1]), text(frames[j + 2])))
        j += 5
    return out


def decode_json(frames: List[bytes]) -> Dict[str, Any]:
    try:
        obj = json.loads(frames[3])
    except ValueError as e:
        raise ConveyorError(f"the broker sent invalid JSON in {text(frames[1])}: {e}") from None
    if not isinstance(obj, dict):
        raise ConveyorError(f"the broker sent a JSON {type(obj).__name__} in {text(frames[1])}, not an object")
    return obj


def expect(frames: List[bytes], command: bytes) -> List[bytes]:
    if frames[1] != command:
        raise ConveyorError(f"unexpected reply {text(frames[1])} (wanted {text(command)})")
    return frames
