"""Fixtures for the Python package's tests: real broker processes on loopback.

The package is imported from Sources/python (inserted into sys.path here), so no
prior ``pip install`` is needed. The broker binary is ``$CONVEYOR_BIN`` or
``<repo>/.build/debug/conveyor``. Every broker and worker process started here is
stopped by PID at teardown (SIGTERM, then SIGKILL after a bound); every wait is
bounded.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "Sources" / "python"
HERE = Path(__file__).resolve().parent
if str(PKG) not in sys.path:
    sys.path.insert(0, str(PKG))

import conveyor  # noqa: E402

BIN = Path(os.environ.get("CONVEYOR_BIN") or REPO / ".build" / "debug" / "conveyor")
HEARTBEAT_MS = 200
BIN_WAIT_S = 120.0  # the binary may be rebuilt under us; wait for it to reappear


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``cond`` until it returns a true value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _binary() -> Path:
    """The broker binary, once it exists and has not changed for 2 s (a build may be
    writing it)."""
    deadline = time.monotonic() + BIN_WAIT_S
    while True:
        try:
            fresh = time.time() - BIN.stat().st_mtime < 2.0
            if os.access(BIN, os.X_OK) and not fresh:
                return BIN
        except OSError:
            pass
        if time.monotonic() >= deadline:
            pytest.fail(f"no broker binary at {BIN} (set CONVEYOR_BIN or build it with `swift build`)")
        time.sleep(0.5)


_help_cache: Dict[str, str] = {}


def broker_help() -> str:
    if "broker" not in _help_cache:
        out = subprocess.run([str(_binary()), "broker", "--help"], capture_output=True, text=True, timeout=30)
        _help_cache["broker"] = out.stdout + out.stderr
    return _help_cache["broker"]


def stop_process(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
    if p.poll() is not None:
        return p.returncode
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        return p.wait(1)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        return p.wait(10)


class _BinaryUnusable(Exception):
    pass


class BrokerProcess:
    """One `conveyor broker` process; `restart()` reuses its endpoints and data dir."""

    def __init__(self, tmp: Path, *args: str, durability: str = "none", heartbeat_ms: int = HEARTBEAT_MS):
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.durability = durability
        self.heartbeat_ms = heartbeat_ms
        self.proc: Optional[subprocess.Popen] = None
        self.clients = self.workers = self.events = ""
        self.log_path = tmp / "broker.log"
        self.starts = 0

    def _cmd(self) -> List[str]:
        eps = [self.clients, self.workers, self.events] if self.clients else ["tcp://127.0.0.1:*"] * 3
        return [str(_binary()), "broker", "--clients", eps[0], "--workers", eps[1], "--events", eps[2],
                "--durability", self.durability, "--data-dir", str(self.data_dir),
                "--heartbeat-interval", str(self.heartbeat_ms), "--log-level", "info", *self.args]

    def start(self, timeout: float = 30.0) -> "BrokerProcess":
        """Start and wait for the ready line. A binary that cannot even run (being
        rebuilt: exec errors, a crash by signal) is retried for a while; a broker that
        exits on its own (status 1: bad flags, bad journal) fails at once."""
        retry_until = time.monotonic() + BIN_WAIT_S
        while True:
            try:
                return self._start_once(timeout)
            except _BinaryUnusable as e:
                if time.monotonic() >= retry_until:
                    raise AssertionError(str(e)) from None
                time.sleep(1.0)

    def _start_once(self, timeout: float) -> "BrokerProcess":
        deadline = time.monotonic() + BIN_WAIT_S
        while True:
            try:
                log = open(self.log_path, "ab")
                self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
                log.close()
                break
            except OSError:  # ETXTBSY/ENOENT while the binary is being rebuilt
                log.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
        self.starts += 1
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        out = self.proc.stdout

        def pump() -> None:
            for raw in iter(out.readline, b""):
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        end = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"broker not ready within {timeout:g}s; log:\n{self.log()}")
            if line is None:
                status = self.proc.wait(5)
                if status < 0 or status in (126, 127):
                    raise _BinaryUnusable(f"broker binary unusable (status {status}); log:\n{self.log()}")
                raise AssertionError(f"broker exited with {status}; log:\n{self.log()}")
            if line.startswith("conveyor broker ready"):
                eps = dict(kv.split("=", 1) for kv in line.split()[3:])
                self.clients, self.workers, self.events = eps["clients"], eps["workers"], eps["events"]
                return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        return stop_process(self.proc, signal.SIGTERM, timeout) if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> "BrokerProcess":
        self.stop()
        return self.start()


def pytest_configure(config):
    # starlette's TestClient announces a future change of HTTP library; not ours to act on
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with")


@pytest.fixture
def make_broker(tmp_path: Path):
    made: List[BrokerProcess] = []

    def make(*args: str, durability: str = "none", start: bool = True, sub: str = "") -> BrokerProcess:
        b = BrokerProcess(tmp_path / (sub or f"broker{len(made)}"), *args, durability=durability)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(make_broker) -> BrokerProcess:
    return make_broker("--max-running", "8")


@pytest.fixture
def client(broker):
    c = conveyor.Client(broker.clients, timeout=5.0)
    yield c
    c.close()


@pytest.fixture
def make_worker(broker):
    """In-process workers on the fixture broker: ``make_worker(handlers={"t": fn}, ...)``."""
    workers: List[conveyor.Worker] = []

    def make(handlers: Dict[Optional[str], Callable], *, endpoint: Optional[str] = None, start: bool = True,
             **kw) -> conveyor.Worker:
        kw.setdefault("heartbeat_interval", HEARTBEAT_MS / 1000)
        kw.setdefault("grace", 2.0)
        w = conveyor.Worker(endpoint or broker.workers, **kw)
        for t, fn in handlers.items():
            w.add_handler(t, fn)
        workers.append(w)
        if start:
            w.start()
            assert w.registered.wait(10), "worker not registered within 10 s"
        return w

    yield make
    for w in workers:
        w.stop(grace=0.5, timeout=10)


class WorkerProcess:
    """Tests/python/pyworker.py in a subprocess; its stdout lines are collected."""

    def __init__(self, endpoint: str, name: str, *args: str):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "pyworker.py"), "--endpoint", endpoint, "--name", name,
             "--heartbeat-ms", str(HEARTBEAT_MS), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(PKG) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
        self.lines: List[str] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cv:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cv.notify_all()

    def wait_line(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        exited = False
        with self._cv:
            while True:
                for ln in self.lines:
                    if ln.startswith(prefix):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0 or exited:
                    raise AssertionError(f"worker {self.name}: no line {prefix!r} within {timeout:g}s "
                                         f"(exit status {self.proc.poll()}); output:\n" + "\n".join(self.lines[-40:]))
                exited = self.proc.poll() is not None  # one more round for the last lines
                self._cv.wait(min(left, 0.2))

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> Optional[int]:
        return stop_process(self.proc, signal.SIGTERM, 10.0)


@pytest.fixture
def spawn_worker():
    procs: List[WorkerProcess] = []

    def spawn(endpoint: str, name: str, *args: str) -> WorkerProcess:
        p = WorkerProcess(endpoint, name, *args)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        p.stop()
