"""A throwaway PostgreSQL server for tests: ``ops/pg-throwaway`` in a fresh temp dir.

    from pgserver import postgres_server, pg_server   # pg_server: a session fixture

    def test_something(pg_server):          # shared by the session: do not restart it
        ... pg_server.url, pg_server.password ...

    def test_restarts():
        with postgres_server() as pg:       # its own server: restart or kill at will
            pg.restart()

The server listens on a free loopback port only, with the superuser ``conveyor``
(password ``conveyor-test``) and the database ``conveyor``. It is stopped by its
PID when the context exits (``ops/pg-throwaway stop``: SIGINT, SIGKILL after a bound)
and its directory removed. When no PostgreSQL server binaries are installed the
script exits with status 3 and the test is skipped with its message; any other
failure fails the test.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ops" / "pg-throwaway"
NO_SERVER = 3  # ops/pg-throwaway's exit status when no server binaries exist
START_TIMEOUT = 120.0  # initdb plus a 30 s readiness bound, on a loaded machine
STOP_TIMEOUT = 60.0


class PgThrowawayError(RuntimeError):
    pass


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _parse(stdout: str) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


class PostgresServer:
    """One throwaway server: ``url`` (``postgres://conveyor@127.0.0.1:PORT/conveyor``,
    no password in it), ``password``, ``pid`` (the postmaster), ``port``, ``dir``."""

    def __init__(self, directory: Path, ssl: bool = False):
        self.dir = directory
        self.ssl = ssl
        self.url = ""
        self.password = ""
        self.pid = 0
        self.port = 0

    def _start(self, *args: str) -> "PostgresServer":
        p = _run(*args, timeout=START_TIMEOUT)
        if p.returncode == NO_SERVER:
            pytest.skip(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "PostgreSQL server binaries not found")
        if p.returncode != 0:
            raise PgThrowawayError(f"ops/pg-throwaway {' '.join(args)} exited with {p.returncode}:\n{p.stderr}")
        v = _parse(p.stdout)
        try:
            self.url, self.password, self.pid = v["url"], v["password"], int(v["pid"])
        except (KeyError, ValueError):
            raise PgThrowawayError(f"ops/pg-throwaway printed no url/password/pid:\n{p.stdout}{p.stderr}") from None
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def start(self) -> "PostgresServer":
        """Start (or, if it runs, just describe) the server; a stopped one keeps its port if free."""
        return self._start("start", str(self.dir), *(["--ssl"] if self.ssl else []))

    def restart(self) -> "PostgresServer":
        """Fast shutdown and start again on the same data and port (also after ``kill``)."""
        return self._start("restart", str(self.dir))

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); ``restart()`` brings it back with crash recovery."""
        p = _run("kill", str(self.dir), timeout=STOP_TIMEOUT)
        if p.returncode != 0:
            raise PgThrowawayError(f"ops/pg-throwaway kill exited with {p.returncode}:\n{p.stderr}")

    def stop(self) -> None:
        """Stop by PID (SIGINT, SIGKILL after a bound); a no-op when it is not running."""
        try:
            p = _run("stop", str(self.dir), timeout=STOP_TIMEOUT)
            ok = p.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok and self.pid and running(self.pid):  # the script failed: this PID, nothing else
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def env(self) -> Dict[str, str]:
        """The environment for a client of this server (``PGPASSWORD`` set)."""
        return {**os.environ, "PGPASSWORD": self.password}

    @property
    def log(self) -> str:
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def psql_binary() -> str:
    """``psql``: on PATH, else next to the server binaries."""
    found = shutil.which("psql")
    if found:
        return found
    p = _run("bindir", timeout=30)
    if p.returncode == 0 and (Path(p.stdout.strip()) / "psql").exists():
        return str(Path(p.stdout.strip()) / "psql")
    pytest.skip("psql not found (install Debian's postgresql-client package)")


def psql(server: PostgresServer, sql: str, timeout: float = 30.0) -> str:
    """Run ``sql`` over TCP with the password; return its unaligned, tuples-only output."""
    p = subprocess.run([psql_binary(), "-X", "-w", "-tA", "-v", "ON_ERROR_STOP=1", server.url, "-c", sql],
                       capture_output=True, text=True, timeout=timeout, env=server.env(), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"psql {sql!r} exited with {p.returncode}: {p.stderr.strip()}\nserver log:\n{server.log}")
    return p.stdout.strip()


@contextlib.contextmanager
def postgres_server(ssl: bool = False) -> Iterator[PostgresServer]:
    """A new server in a new temp dir, stopped by PID and removed on exit; with ``ssl``,
    TLS with a throwaway CA (``dir / "ca.pem"``) and a certificate for localhost/127.0.0.1."""
    directory = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    server = PostgresServer(directory, ssl=ssl)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One server for the session, shared by the tests that ask for it (import the
    fixture into the test module; each module that imports it gets its own)."""
    with postgres_server() as server:
        yield server

