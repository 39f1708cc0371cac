"""Helpers of the handler tests: run ops/handlers/*.py as a worker would.

`run_handler(name, payload, env=...)` starts `python3 ops/handlers/NAME.py` with the payload
on stdin and the write end of a pipe as fd 3 (exactly what `conveyor worker --exec` does),
and returns a Run with rc, stdout, stderr, the parsed JSON result and the progress lines.
"""

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HANDLERS = REPO / "ops" / "handlers"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

sys.path.insert(0, str(FIXTURES))  # make_fixtures
sys.path.insert(0, str(HANDLERS))  # analysis, pdftext, youtube


class Run:
    def __init__(self, rc, stdout, stderr, progress):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr.decode("utf-8", "replace")
        self.progress = progress  # [(percent, message)] of the PERCENT MESSAGE lines on fd 3
        self.fd3_lines = []  # every fd-3 line as written
        self.result = None
        if rc == 0:
            self.result = json.loads(stdout.decode("utf-8"))

    def __repr__(self):
        return "Run(rc=%r, stderr=%r, stdout=%r)" % (self.rc, self.stderr, self.stdout[:300])


def _as_bytes(payload):
    if isinstance(payload, (dict, list)):
        return json.dumps(payload).encode()
    if isinstance(payload, str):
        return payload.encode()
    return payload


LAUNCHER = ("import os, sys\n"
            "w = int(sys.argv[1])\n"
            "os.dup2(w, 3)\n"
            "if w != 3: os.close(w)\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")


def run_handler_process(name, payload, env=None, fd3=True, timeout=60):
    argv = [sys.executable, str(HANDLERS / ("%s.py" % name))]
    full_env = dict(os.environ)
    full_env.pop("CONVEYOR_YOUTUBE_TRANSCRIPT_CMD", None)
    full_env.pop("CONVEYOR_DOCUMENT_ROOT", None)
    full_env.update(env or {})
    data = _as_bytes(payload)
    if not fd3:
        proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                              timeout=timeout, close_fds=True)
        return Run(proc.returncode, proc.stdout, proc.stderr, [])
    r, w = os.pipe()
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 65536), b"")), daemon=True)
    try:
        # A tiny launcher puts the pipe on fd 3 and execs the handler, as the worker's child has it.
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(w)] + argv,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=full_env, pass_fds=(w,))
    finally:
        os.close(w)
    reader.start()
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        reader.join(10)
        os.close(r)
    lines = b"".join(chunks).decode("utf-8").splitlines()
    progress = []
    for line in lines:
        pct, _, msg = line.partition(" ")
        if pct.isdigit():
            progress.append((int(pct), msg))
    run = Run(proc.returncode, out, err, progress)
    run.fd3_lines = lines
    return run


def upload(data, filename, content_type="application/octet-stream", title=None):
    """The payload POST /analyze-pdf and /analyze-document make of a multipart upload."""
    return {"filename": filename, "content_type": content_type, "title": title, "size": len(data),
            "content_base64": base64.b64encode(data).decode()}


def collapse(text):
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Fixtures. They live here, not in a conftest.py: Tests/python/test_*.py import names from
# Tests/python/conftest.py as the module `conftest`, which a second conftest.py would shadow.
# Test modules import them: `from handler_support import run_handler, pdf_files, docx_bytes`.

import pytest  # noqa: E402

import make_fixtures  # noqa: E402


@pytest.fixture
def run_handler():
    return run_handler_process


@pytest.fixture(scope="session")
def pdf_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pdf")
    sample = d / "sample.pdf"
    sample.write_bytes(make_fixtures.text_pdf(make_fixtures.SAMPLE_PDF_PAGES, title="Broker notes"))
    scanned = d / "scanned.pdf"
    scanned.write_bytes(make_fixtures.image_only_pdf(2))
    return {"sample": sample, "scanned": scanned}


@pytest.fixture(scope="session")
def docx_bytes():
    return make_fixtures.docx(make_fixtures.SAMPLE_DOCX, title="Notes of the meeting")
