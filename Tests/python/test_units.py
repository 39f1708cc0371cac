"""Pure unit tests: argument checking, frame building, reply decoding, the core's
bookkeeping, the worker's result encoding, packaging. No broker needed."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys
import zipfile

import pytest

import conveyor
from conftest import PKG
from conveyor import _common, _core
from conveyor._protocol import TaskStatus, parse_priority, seconds_to_ms

TID = b"0190f3c2a1b20001"


def test_priority_parsing():
    assert [parse_priority(v) for v in (0, 1, 2, 3)] == list(conveyor.Priority)
    assert parse_priority("urgent") is conveyor.Priority.URGENT
    assert parse_priority("High") is conveyor.Priority.HIGH and parse_priority(" low ") == 0
    assert parse_priority("2") == 2 and conveyor.Priority.parse("normal") == 1
    for bad in (4, -1, "02", "medium", True, None, 1.0):
        with pytest.raises(ValueError):
            parse_priority(bad)


def test_seconds_to_ms_rounds_up_and_checks_range():
    assert seconds_to_ms(1.5, "t", 1, 10_000) == 1500
    assert seconds_to_ms(0.0001, "t", 1, 10_000) == 1  # never 0 for a timeout
    assert seconds_to_ms(0, "delay", 0, 10) == 0
    with pytest.raises(ValueError):
        seconds_to_ms(11, "t", 1, 10_000 // 1000)
    with pytest.raises(ValueError):
        seconds_to_ms(-1, "t", 0, 10)
    with pytest.raises(TypeError):
        seconds_to_ms("1", "t", 0, 10)


def _submit(*args, **kw):
    spec = _common.build_spec(*args, **kw)
    return spec.submit_fields(), spec.key, spec.delayed, spec.automatic


def test_build_submit_frames():
    fields, key, delayed, auto = _submit("render.page", "ü", "high", 2.0001, "k", 0, 5, True)
    assert fields == [b"render.page", b"2", b"2001", "ü".encode(), b"max_attempts=5", b"idempotency_key=k",
                      b"delay_ms=0", b"notify=all"]
    assert (key, delayed, auto) == ("k", False, False)
    fields, key, delayed, auto = _submit("t", b"", 0, None, None, None, None, True)
    assert fields[:4] == [b"t", b"0", b"", b""] and auto and key.startswith("auto-") and len(fields) == 6
    fields, key, _, auto = _submit("t", b"", 0, None, None, None, None, False, "none")
    assert fields == [b"t", b"0", b"", b"", b"notify=none"] and key is None and not auto
    fields, key, _, _ = _submit("t", b"", 0, None, False, 3, None, True, "final")
    assert key is None and fields[4:] == [b"delay_ms=3000", b"notify=final"]
    for bad in [dict(task_type=""), dict(task_type="a b"), dict(task_type="x" * 65), dict(max_attempts=0),
                dict(max_attempts=101), dict(idempotency_key="k" * 129), dict(timeout=0), dict(timeout=604801),
                dict(delay=-1), dict(notify="some")]:
        args = dict(task_type="t", payload=b"", priority=1, timeout=None, idempotency_key=None, delay=None,
                    max_attempts=None, auto_key=True)
        args.update(bad)
        with pytest.raises(ValueError):
            _common.build_spec(**args)


def test_batch_planning_frames_chunks_and_item_forms():
    items = [conveyor.Submission("a", b"1", priority="high", max_attempts=2, idempotency_key="k", notify="none"),
             {"type": "b", "payload": "2", "delay": 1}, ("c", b"3"), ("d",)]
    n, chunks = _common.plan_batches(items, "final", False)
    assert n == 4 and len(chunks) == 1 and chunks[0].start == 0 and not chunks[0].resendable
    assert chunks[0].batch_fields() == [
        b"4",
        b"a", b"2", b"", b"1", b"3", b"max_attempts=2", b"idempotency_key=k", b"notify=none",
        b"b", b"1", b"", b"2", b"2", b"delay_ms=1000", b"notify=final",
        b"c", b"1", b"", b"3", b"1", b"notify=final",
        b"d", b"1", b"", b"", b"1", b"notify=final"]
    assert chunks[0].levels() == [b"none", b"final", b"final", b"final"]
    n, chunks = _common.plan_batches(({"type": "t"} for _ in range(2500)), "all", True)
    assert n == 2500 and [(c.start, len(c.specs)) for c in chunks] == [(0, 1000), (1000, 1000), (2000, 500)]
    assert all(c.resendable for c in chunks)
    _, chunks = _common.plan_batches([("t", b"x" * 600), ("t", b"x" * 600), ("t", b"x")], "all", True,
                                     max_bytes=1000)
    assert [len(c.specs) for c in chunks] == [1, 2]  # by payload bytes too
    for bad, exc in [([("t",), ("bad type",)], ValueError), ([("t",), 7], TypeError),
                     ([{"type": "t", "colour": 1}], TypeError), ([{"payload": b""}], TypeError)]:
        with pytest.raises(exc) as ei:
            _common.plan_batches(bad, "all", True)
        assert "submission" in str(ei.value)
    with pytest.raises(ValueError):
        _common.plan_batches([("t",)], "sometimes", True)


def test_submitted_decoding():
    f = [b"CVYC01", b"SUBMITTED", b"r", b"ACCEPTED", TID, b"0", b"0", b"queued",
         b"REJECTED", b"queue_full", b"full", b"", b"",
         b"ACCEPTED", TID, b"0", b"1", b"running"]
    assert _core.valid_submitted(f)
    _, chunks = _common.plan_batches([("t",)] * 3, "all", True)
    out = _core.decode_submitted(f, False, chunks[0].specs)
    assert (out[0].duplicate, out[0].state) == (False, "queued")
    assert type(out[1]) is conveyor.QueueFull and out[1].message == "full"
    assert (out[2].duplicate, out[2].state, out[2].task_id) == (True, "running", TID.decode())
    assert not _core.valid_submitted(f[:-1])
    assert not _core.valid_submitted(f[:3])
    assert not _core.valid_submitted(f[:3] + [b"MAYBE", TID, b"0", b"0", b"queued"])
    assert not _core.valid_submitted(f[:3] + [b"ACCEPTED", TID, b"0", b"2", b"queued"])


def test_status_decoding():
    st = TaskStatus.from_json(json.dumps({
        "task_id": TID.decode(), "type": "pdf", "priority": "HIGH", "priority_level": 2, "state": "succeeded",
        "attempt": 1, "max_attempts": 3, "progress": {"percent": None, "message": "m"},
        "created_at": "2024-07-15T09:30:00.123Z", "started_at": None, "finished_at": "2024-07-15T09:30:01.410Z",
        "timeout_ms": 300000, "result_base64": base64.b64encode(b"\xff\x00").decode(), "dead": False,
        "unknown_member": [1, 2]}).encode())
    assert st.result == b"\xff\x00" and st.progress == (None, "m") and st.started_at is None
    assert st.finished and st.raw["unknown_member"] == [1, 2] and st.queue_position is None
    q = TaskStatus.from_json({"task_id": "x", "state": "queued", "priority": "LOW", "queue_position": 4,
                              "progress": None, "worker": None})
    assert (q.priority_level, q.queue_position, q.progress, q.result, q.worker) == (0, 4, None, None, None)


def test_accepted_decoding():
    f = [b"CVYC01", b"ACCEPTED", b"r", TID, b"3"]
    s = _core.decode_accepted(f, False, False, None)
    assert (s.task_id, s.queue_position, s.duplicate, s.state) == (TID.decode(), 3, False, "queued")
    assert _core.decode_accepted(f, False, True, None).state == "delayed"
    s = _core.decode_accepted(f + [b"1", b"succeeded"], True, False, "k")
    assert (s.duplicate, s.state, s.resent, s.idempotency_key) == (True, "succeeded", True, "k")


def test_error_mapping_and_task_errors():
    assert type(_core.error_from("queue_full", "m")) is conveyor.QueueFull
    assert type(_core.error_from("not_found", "m")) is conveyor.NotFound
    e = _core.error_from("something_new", "m")
    assert type(e) is conveyor.Rejected and (e.code, e.message) == ("something_new", "m")
    assert issubclass(conveyor.QueueFull, conveyor.Rejected) and issubclass(conveyor.Rejected, conveyor.ConveyorError)
    assert issubclass(conveyor.WaitTimeout, TimeoutError)
    for state, exc in [("failed", conveyor.TaskFailed), ("timed_out", conveyor.TaskTimedOut),
                       ("cancelled", conveyor.TaskCancelled)]:
        with pytest.raises(exc) as ei:
            _core.outcome_result("t1", (state, b"why"))
        assert (ei.value.task_id, ei.value.error) == ("t1", "why")
    assert _core.outcome_result("t1", ("succeeded", b"r")) == b"r"


def test_core_caches_pushes_for_late_waiters_and_ignores_malformed():
    core = _core.ClientCore(concurrent.futures.Future, 5)
    core.connected = True
    req = core.request(b"SUBMIT", [b"t", b"1", b"", b""], True)
    rid = req.frames[2]
    core.on_message([b"CVYC01", b"ACCEPTED", rid, TID, b"0"])
    assert req.future.result(0)[0][3] == TID and core.push_expected(TID)
    core.on_messages([
        [b"CVYC01", b"PROGRESS", TID, b"5", b"a"],
        [b"CVYC01", b"PROGRESS", TID, b"x", b"bad"],
        [b"CVYC02", b"FINISHED", TID, b"succeeded", b"wrong header"],
        [b"CVYC01", b"FINISHED", TID, b"exploded", b"bad state"],
        [b"CVYC01", b"FINISHED", TID, b"succeeded", b"R"],
        [b"CVYC01", b"FINISHED", TID, b"failed", b"a second FINISHED is ignored"],
    ])
    assert core.ignored == 3
    f = concurrent.futures.Future()
    core.watch(TID, future=f)
    assert f.result(0) == ("succeeded", b"R")
    q = __import__("queue").SimpleQueue()
    core.watch(TID, sub=q)
    assert [q.get_nowait(), q.get_nowait()] == [(5, "a"), _core.END]


def test_core_marks_in_doubt_and_resends_only_safe_requests():
    core = _core.ClientCore(concurrent.futures.Future, 5)
    core.connected = True
    keyed = core.request(b"SUBMIT", [], True)
    cancel = core.request(b"CANCEL", [TID], False)
    for r in (keyed, cancel):
        core.sent(r)
    core.on_disconnected()
    during = core.request(b"PING", [], True)
    core.sent(during)  # queued for the next connection: not in doubt
    assert core.on_connected() == [keyed] and keyed.resent and not cancel.resent
    assert not during.resent
    # expiry: the core fails what is unanswered at its deadline
    core.tick(now=keyed.deadline + 1)
    for r in (keyed, cancel, during):
        with pytest.raises(conveyor.BrokerUnavailable):
            r.future.result(0)


def test_worker_result_encoding_and_context_checks():
    w = conveyor.Worker("tcp://127.0.0.1:1")
    ctx = conveyor.TaskContext(w, (TID, 1))
    assert w._outcome(ctx, {"a": [1]}, None) == (b"DONE", [b'{"a": [1]}'])
    assert w._outcome(ctx, bytearray(b"x"), None) == (b"DONE", [b"x"])
    assert w._outcome(ctx, None, None) == (b"DONE", [b""])
    cmd, fields = w._outcome(ctx, 3.5, None)
    assert cmd == b"FAIL" and b"float" in fields[0]
    assert w._outcome(ctx, None, KeyError()) == (b"FAIL", [b"KeyError"])
    assert w._outcome(ctx, None, RuntimeError("x" * 20000))[1][0] == b"x" * 16384
    ctx.cost(7)
    assert w._outcome(ctx, b"r", None) == (b"DONE", [b"r", b"cost=7"])
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError):
            ctx.cost(bad)
    for bad in (101, -1, "50"):
        with pytest.raises(ValueError):
            ctx.progress(bad, "m")
    with pytest.raises(conveyor.RetryLater):
        ctx.retry_later(1)
    assert w._outcome(ctx, b"ignored", None) == (b"RETRY_LATER", [b"1000"])


def test_worker_arguments():
    with pytest.raises(ValueError):
        conveyor.Worker(concurrency=0)
    with pytest.raises(ValueError):
        conveyor.Worker(name="x" * 129)
    with pytest.raises(ValueError):
        conveyor.Worker(types=["bad type"])
    with pytest.raises(ValueError):
        conveyor.Worker().start()  # no handler
    w = conveyor.Worker(types=["b", "a"])
    w.add_handler(None, lambda t, c: b"")
    assert w._advertised() == "b,a"
    w2 = conveyor.Worker()
    w2.handler("y", "x")(lambda t, c: b"")
    assert w2._advertised() == "x,y"
    t = conveyor.Task(id="i", type="t", priority=3, attempt=1, payload=b"", deadline=0.0, timeout=1.0)
    assert t.priority_name == "URGENT" and t.remaining() < 0


def test_wheel_builds_offline(tmp_path):
    """`pip install --no-build-isolation ./Sources/python` needs only the setuptools
    already installed (no network). Built from a copy: setuptools may write build/ and
    *.egg-info next to the sources."""
    import shutil

    import setuptools

    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (61, 0):
        pytest.skip(f"setuptools {setuptools.__version__} predates PEP 621 support (the build needs >= 61)")
    src = tmp_path / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "-q", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("conveyor_queue-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "conveyor/__init__.py" in names and "conveyor/worker.py" in names and "conveyor/py.typed" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Name: conveyor-queue" in text and "Requires-Dist: pyzmq" in text and "Requires-Python: >=3.9" in text
    assert not any(n.startswith(("examples/", "tests/")) for n in names)


def test_automatic_keys_are_unique_and_differ_after_fork():
    import os

    keys = {_common.auto_key_text() for _ in range(10_000)}
    assert len(keys) == 10_000 and all(k.startswith("auto-") and len(k) <= 128 for k in keys)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a prefix of its own
        os.write(w, _common.auto_key_text().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 200).decode()
    os.close(r)
    os.close(w)
    mine = _common.auto_key_text()
    assert child.rsplit("-", 1)[0] != mine.rsplit("-", 1)[0]
