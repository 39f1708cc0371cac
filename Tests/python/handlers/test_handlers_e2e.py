"""End to end: a real broker, real `conveyor worker --exec` processes running the handlers, and
`conveyor submit --wait` printing the JSON result. Loopback only, ephemeral ports, bounded waits."""

import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handler_support import FIXTURES, HANDLERS, REPO

import make_fixtures

BIN = Path(os.environ.get("CONVEYOR_BIN") or REPO / ".build" / "debug" / "conveyor")


def wait_for_binary(limit=90):
    # The binary may be rebuilt under us now and then: give it a moment to come back.
    deadline = time.monotonic() + limit
    while not (BIN.is_file() and os.access(BIN, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.skip("no conveyor binary at %s (set CONVEYOR_BIN, or build it with swift build)" % BIN)
        time.sleep(2)


def read_line(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError("no line from %s within %s s" % (proc.args[:2], timeout))
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("%s exited (%s) before printing its ready line" % (proc.args[:2], proc.poll()))
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0].decode()


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def cluster(tmp_path):
    wait_for_binary()
    procs = []
    logs = []

    def start(args, env=None, name="proc"):
        log = open(tmp_path / ("%s.log" % name), "wb")
        logs.append(log)
        p = subprocess.Popen([str(BIN)] + args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, **(env or {})))
        procs.append(p)
        return p

    broker = start(["broker", "--clients", "tcp://127.0.0.1:*", "--workers", "tcp://127.0.0.1:*",
                    "--events", "tcp://127.0.0.1:*", "--durability", "none", "--data-dir", str(tmp_path / "data")],
                   name="broker")
    line = read_line(broker, 30)
    m = re.fullmatch(r"conveyor broker ready clients=(\S+) workers=(\S+) events=(\S+)", line)
    assert m, line
    clients, workers = m.group(1), m.group(2)
    assert clients.startswith("tcp://127.0.0.1:") and workers.startswith("tcp://127.0.0.1:")

    python = shlex.quote(sys.executable)
    transcript = "sh %s \"$1\"" % shlex.quote(str(FIXTURES / "fake_transcript.sh"))
    for kind in ("document", "pdf", "youtube"):
        start(["worker", "--broker", workers, "--types", kind, "--name", "test-%s" % kind,
               "--exec", "%s %s" % (python, shlex.quote(str(HANDLERS / ("%s.py" % kind))))],
              env={"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": transcript}, name="worker-%s" % kind)

    def submit(kind, payload, tmp_name):
        f = tmp_path / tmp_name
        f.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        return subprocess.run([str(BIN), "submit", "--broker", clients, "--type", kind, "--payload-file", str(f),
                               "--timeout", "60", "--wait"], capture_output=True, timeout=90, stdin=subprocess.DEVNULL)

    try:
        yield submit
    finally:
        for p in reversed(procs):  # workers first, then the broker
            stop(p)
        for p in procs:
            p.stdout.close()
        for log in logs:
            log.close()


def test_document_task_through_broker_and_worker(cluster):
    payload = {"text": (FIXTURES / "sample.txt").read_text(), "sentences": 2, "keywords": 5}
    proc = cluster("document", payload, "doc.json")
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)  # only the result is on stdout
    assert result["stats"]["words"] == 49 and result["stats"]["sentences"] == 6
    assert len(result["summary_sentences"]) == 2 and len(result["keywords"]) == 5
    assert result["keywords"][:3] == ["task", "tasks", "broker"]
    err = proc.stderr.decode()
    assert re.match(r"[0-9a-f]{16}\n", err), err  # the task id goes to stderr
    assert "progress 100% done" in err, err  # fd 3 progress relayed by the worker and the broker


def test_pdf_and_youtube_tasks(cluster):
    pdf = make_fixtures.text_pdf(make_fixtures.SAMPLE_PDF_PAGES, title="Broker notes")
    proc = cluster("pdf", pdf, "doc.pdf")  # raw PDF bytes as the payload
    assert proc.returncode == 0, proc.stderr.decode()
    r = json.loads(proc.stdout)
    assert r["stats"]["pages"] == 2 and r["stats"]["words"] == 57 and r["title"] == "Broker notes"

    proc = cluster("youtube", {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}, "yt.json")
    assert proc.returncode == 0, proc.stderr.decode()
    r = json.loads(proc.stdout)
    assert r["stats"]["video_id"] == "dQw4w9WgXcQ" and r["stats"]["words"] == 42


def test_handler_errors_become_failed_tasks(cluster):
    proc = cluster("document", {"url": "ftp://example.invalid/report.txt"}, "bad.json")
    assert proc.returncode == 1 and proc.stdout == b""
    assert "failed document: url must be an http or https URL" in proc.stderr.decode()
    proc = cluster("pdf", make_fixtures.image_only_pdf(3), "scan.pdf")
    assert proc.returncode == 1
    assert "failed pdf: no extractable text: the PDF has 3 pages but no text layer (scanned?)" in proc.stderr.decode()
