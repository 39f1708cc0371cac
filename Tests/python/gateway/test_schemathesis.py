"""Schemathesis against proto/openapi.yaml, on a real broker and gateway on loopback.

Runs the CLI with every default check, the coverage and fuzzing phases, a bounded
number of examples per operation and a fixed seed (deterministic generation, no
example database), and fails on any failure or error it reports. The gateway's
intended deviations from what schemathesis can infer from a schema are filtered in
``schemathesis_hooks.py``, each one narrowly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import conftest

pytest.importorskip("schemathesis")

HERE = Path(__file__).resolve().parent
SPEC = conftest.REPO / "proto" / "openapi.yaml"
TOKEN = "schemathesis-token"
SEED = int(os.environ.get("CONVEYOR_SCHEMATHESIS_SEED", "20261201"))
MAX_EXAMPLES = int(os.environ.get("CONVEYOR_SCHEMATHESIS_EXAMPLES", "25"))
RUN_TIMEOUT_S = 150


class GatewayProcess:
    """`conveyor gateway` on an ephemeral loopback port in front of ``broker``."""

    def __init__(self, broker, log_path: Path, *args: str, tokens: str = TOKEN):
        env = dict(os.environ, CONVEYOR_API_TOKENS=tokens)
        cmd = [str(conftest._binary()), "gateway", "--host", "127.0.0.1", "--port", "0",
               "--broker", broker.clients, "--events", broker.events, *args]
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.lines: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "conveyor gateway ready" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30):
            conftest.stop_process(self.proc)
            raise AssertionError(f"gateway not ready in 30 s: {''.join(self.lines)}{log_path.read_text()}")
        line = next(l for l in self.lines if "conveyor gateway ready" in l)
        url = next(p for p in line.split() if p.startswith("http://"))
        self.url = url.rstrip("/")

    def stop(self) -> None:
        conftest.stop_process(self.proc)
        self.log.close()


@pytest.fixture
def gateway(make_broker, tmp_path):
    # A worker finishes what schemathesis submits, so that most task streams end by
    # themselves; the queue bound is out of the way (queue_full is not under test).
    broker = make_broker("--max-queue", "100000", "--max-running", "256")
    worker = subprocess.Popen(
        [str(conftest._binary()), "worker", "--broker", broker.workers, "--name", "st-echo",
         "--builtin", "echo", "--concurrency", "64"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "w"), stdin=subprocess.DEVNULL)
    gw = None
    try:
        gw = GatewayProcess(broker, tmp_path / "gateway.log")
        yield gw
    finally:
        if gw is not None:
            gw.stop()
        conftest.stop_process(worker)


def test_schemathesis_finds_nothing(gateway, tmp_path):
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "schemathesis_hooks"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", str(SPEC),
        "--url", gateway.url,
        "--header", f"Authorization: Bearer {TOKEN}",
        "--phases", "coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-deterministic",
        # One worker: CPython 3.11's ast.parse (used by hypothesis to describe
        # strategies) is not thread-safe and fails with "AST constructor recursion
        # depth mismatch" under several.
        "--workers", "1",
        # Also the most a task stream (of a delayed task, say) is read for.
        "--request-timeout", "3",
        "--no-color",
    ]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"schemathesis did not finish in {RUN_TIMEOUT_S} s:\n{e.stdout or ''}")
    took = time.monotonic() - started
    report = out.stdout + out.stderr
    assert gateway.proc.poll() is None, f"the gateway died during the run:\n{gateway.log_path.read_text()}"
    assert out.returncode == 0, f"schemathesis failed (exit {out.returncode}, {took:.0f} s):\n{report}"
    assert "Tested: 20" in report or "Tested:" in report, report
    print(f"schemathesis: {took:.1f} s\n{report[-1500:]}")
