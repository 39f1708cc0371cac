"""ops/handlers/pdf.py on PDFs written at test time (fixtures/make_fixtures.py), with poppler-utils."""

import shutil
import sys

import pytest

from handler_support import collapse, upload
from handler_support import pdf_files, run_handler  # noqa: F401  (fixtures)

import make_fixtures

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None,
                                reason="poppler-utils (pdftotext, pdfinfo) is not installed: ops/install-deps installs it")


def fails_with(run, message):
    assert run.rc == 1, run
    assert run.stdout == b""
    assert run.stderr.strip().splitlines() == [message], run.stderr


def test_raw_pdf(run_handler, pdf_files):
    run = run_handler("pdf", pdf_files["sample"].read_bytes())
    assert run.rc == 0, run
    r = run.result
    st = r["stats"]
    assert st["pages"] == 2
    assert (st["words"], st["sentences"], st["paragraphs"]) == (57, 6, 3)
    assert st["reading_time_minutes"] == 0.3
    assert r["format"] == "pdf" and r["title"] == "Broker notes"  # the PDF's Title metadata
    assert r["keywords"][0] == "broker"
    assert {"tasks", "workers", "task"} <= set(r["keywords"][:4])
    lines = [line for page in make_fixtures.SAMPLE_PDF_PAGES for para in page for line in para]
    source = collapse(" ".join(lines))
    assert len(r["summary_sentences"]) == 3
    for s in r["summary_sentences"]:
        assert s in source and s.endswith(".")
    positions = [source.index(s) for s in r["summary_sentences"]]
    assert positions == sorted(positions)
    # progress: the page count, then the text page by page, then the analysis
    messages = [m for _, m in run.progress]
    assert "PDF with 2 pages" in messages
    assert "extracted text of pages 1-1 of 2" in messages and "extracted text of pages 2-2 of 2" in messages
    assert run.progress[-1] == (100, "done")
    percents = [p for p, _ in run.progress]
    assert percents == sorted(percents)


def test_upload_as_analyze_pdf_sends_it(run_handler, pdf_files):
    payload = upload(pdf_files["sample"].read_bytes(), "notes.pdf", "application/pdf", title="Q3 notes")
    r = run_handler("pdf", dict(payload, sentences=2, keywords=3, include_text=True)).result
    assert r["title"] == "Q3 notes" and r["filename"] == "notes.pdf" and r["source"] == "upload"
    assert len(r["summary_sentences"]) == 2 and len(r["keywords"]) == 3
    assert r["stats"]["pages"] == 2
    assert "Every accepted task is written to the journal before the client hears about it." in r["text"]


def test_layout_mode(run_handler, pdf_files):
    payload = upload(pdf_files["sample"].read_bytes(), "notes.pdf")
    r = run_handler("pdf", dict(payload, layout=True)).result
    assert r["stats"]["words"] == 57 and r["stats"]["sentences"] == 6


def test_hyphenated_line_ends_are_joined(run_handler, tmp_path):
    pdf = make_fixtures.text_pdf([[["The queue keeps every conti-", "nuing task in order."]]])
    r = run_handler("pdf", pdf).result
    assert r["stats"]["words"] == 8
    assert r["summary"] == "The queue keeps every continuing task in order."


def test_many_pages_report_progress_in_chunks(run_handler):
    pages = [[["Page %d talks about the broker and its queue." % (i + 1)]] for i in range(20)]
    run = run_handler("pdf", make_fixtures.text_pdf(pages))
    assert run.rc == 0, run
    assert run.result["stats"]["pages"] == 20
    assert run.result["stats"]["paragraphs"] == 20  # a page break is a paragraph break
    chunks = [m for _, m in run.progress if m.startswith("extracted text of pages")]
    assert chunks == ["extracted text of pages %d-%d of 20" % (a, min(20, a + 2)) for a in range(1, 21, 3)]


def test_scanned_pdf_fails_clearly(run_handler, pdf_files):
    fails_with(run_handler("pdf", pdf_files["scanned"].read_bytes()),
               "pdf: no extractable text: the PDF has 2 pages but no text layer (scanned?)")
    one = make_fixtures.image_only_pdf(1)
    fails_with(run_handler("pdf", upload(one, "scan.pdf")),
               "pdf: no extractable text: the PDF has 1 page but no text layer (scanned?)")


def test_not_a_pdf(run_handler):
    fails_with(run_handler("pdf", "just some text"),
               "pdf: not a PDF: the payload is neither a JSON object nor a PDF file (no %PDF header)")
    fails_with(run_handler("pdf", upload(b"hello", "x.pdf")), "pdf: not a PDF: x.pdf does not start with %PDF")
    run = run_handler("pdf", b"%PDF-1.4\nthis is not really a pdf\n")
    assert run.rc == 1 and run.stderr.startswith("pdf: not a readable PDF: "), run
    fails_with(run_handler("pdf", {"text": "hello"}),
               "pdf: a pdf task needs the PDF itself (content_base64, path or url); send text to a document task")
    fails_with(run_handler("pdf", {"title": "x"}),
               "pdf: the payload has no PDF: give content_base64 (an upload), path or url, or send the PDF bytes")


def test_missing_poppler_names_the_package(run_handler, pdf_files, tmp_path):
    run = run_handler("pdf", pdf_files["sample"].read_bytes(), env={"PATH": str(tmp_path)})
    fails_with(run, "pdf: pdftotext not found on PATH: install poppler-utils (apt-get install poppler-utils)")
    (tmp_path / "pdftotext").symlink_to(shutil.which("pdftotext"))
    run = run_handler("pdf", pdf_files["sample"].read_bytes(), env={"PATH": str(tmp_path)})
    fails_with(run, "pdf: pdfinfo not found on PATH: install poppler-utils (apt-get install poppler-utils)")


def test_pdf_by_path(run_handler, pdf_files):
    env = {"CONVEYOR_DOCUMENT_ROOT": str(pdf_files["sample"].parent)}
    r = run_handler("pdf", {"path": "sample.pdf"}, env=env).result
    assert r["stats"]["pages"] == 2 and r["filename"] == "sample.pdf"


def test_python_version_is_supported():
    assert sys.version_info >= (3, 9)


def test_sigterm_removes_the_temporary_pdf(pdf_files, tmp_path):
    # A cancel or timeout SIGTERMs the handler's process group: the handler exits 143 and
    # leaves no temporary file behind. A slow pdftotext stands in for a long PDF.
    import os
    import signal
    import subprocess
    import time

    from handler_support import HANDLERS

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pdfinfo").symlink_to(shutil.which("pdfinfo"))
    (bindir / "pdftotext").write_text("#!/bin/sh\ntouch \"$MARK\"\nexec sleep 30\n")
    (bindir / "pdftotext").chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    mark = tmp_path / "started"
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % bindir, TMPDIR=str(scratch), MARK=str(mark))
    proc = subprocess.Popen([sys.executable, str(HANDLERS / "pdf.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        proc.stdin.write(pdf_files["sample"].read_bytes())
        proc.stdin.close()
        deadline = time.monotonic() + 15
        while not mark.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        assert list(scratch.iterdir())  # the PDF is on disk while pdftotext runs
        os.killpg(proc.pid, signal.SIGTERM)  # what the worker does
        assert proc.wait(10) == 143
        assert proc.stderr.read().decode().strip() == "pdf: stopped by SIGTERM"
        assert list(scratch.iterdir()) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
