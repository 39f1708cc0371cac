"""ops/handlers/document.py: the documented results for the fixtures, options, progress, errors.

The expected numbers are counted by hand from the fixtures (see ops/handlers/README.md for the
definitions: words, sentences, paragraphs, characters).
"""

import http.server
import json
import os
import re
import subprocess
import sys
import threading

import pytest

from handler_support import FIXTURES, HANDLERS, collapse, upload
from handler_support import docx_bytes, pdf_files, run_handler  # noqa: F401  (fixtures)

import analysis

TXT = (FIXTURES / "sample.txt").read_text()
MD = (FIXTURES / "sample.md").read_text()
HTML = (FIXTURES / "sample.html").read_text()
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def ok(run):
    assert run.rc == 0, run
    return run.result


def fails(run, *fragments):
    assert run.rc != 0, run
    assert run.stdout == b"", run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, "the error must be one line: %r" % run.stderr
    assert lines[0].startswith(("document: ", "pdf: ", "youtube: ")), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def assert_summary_from(result, source_text, n):
    sents = result["summary_sentences"]
    assert len(sents) == n
    assert result["summary"] == " ".join(sents)
    flat = collapse(source_text)
    positions = [flat.index(s) for s in sents]  # each is a sentence of the input ...
    assert positions == sorted(positions)  # ... in document order
    for s in sents:
        assert re.search(r"[.!?]$", s) or s in [collapse(p) for p in source_text.split("\n\n")], s


# --------------------------------------------------------------------------- plain text


def test_plain_text_stats_keywords_summary(run_handler):
    r = ok(run_handler("document", {"text": TXT}))
    st = r["stats"]
    assert st["words"] == 49
    assert st["sentences"] == 6
    assert st["paragraphs"] == 3
    assert st["characters_no_spaces"] == len(re.sub(r"\s", "", TXT)) == 232
    assert st["characters"] == len("\n\n".join(collapse(p) for p in TXT.split("\n\n"))) == 282
    assert st["reading_time_minutes"] == 0.2  # 49 / 200 = 0.245
    assert st["unique_words"] == 34
    assert r["format"] == "text" and r["language"] == "en" and r["title"] is None
    assert len(r["keywords"]) == 10
    assert r["keywords"][:3] == ["task", "tasks", "broker"]  # by frequency (4, 4, 3), ties by first use
    assert r["keyword_counts"]["broker"] == 3
    assert not set(r["keywords"]) & {"the", "a", "is", "and", "before", "from"}  # stopwords
    assert_summary_from(r, TXT, 3)


def test_raw_payload_is_the_text_and_content_is_an_alias(run_handler):
    by_text = ok(run_handler("document", {"text": TXT}))
    raw = ok(run_handler("document", TXT))
    content = ok(run_handler("document", {"content": TXT}))
    json_string = ok(run_handler("document", json.dumps(TXT)))  # a JSON string payload
    for r in (raw, content, json_string):
        assert r["stats"] == by_text["stats"]
        assert r["summary"] == by_text["summary"]
        assert r["keywords"] == by_text["keywords"]
    assert raw["source"] == "raw payload" and content["source"] == "content"


def test_sentences_and_keywords_options(run_handler):
    r = ok(run_handler("document", {"text": TXT, "sentences": 1, "keywords": 2}))
    assert len(r["summary_sentences"]) == 1
    assert r["keywords"] == ["task", "tasks"]
    everything = ok(run_handler("document", {"text": TXT, "sentences": 50}))
    assert len(everything["summary_sentences"]) == 6  # never more than the document has
    assert_summary_from(everything, TXT, 6)
    text = ok(run_handler("document", {"text": TXT, "include_text": True}))["text"]
    assert text == "\n\n".join(collapse(p) for p in TXT.split("\n\n"))


@pytest.mark.parametrize("member,value,message", [
    ("sentences", 0, "sentences must be an integer 1-100"),
    ("sentences", "three", "sentences must be an integer 1-100"),
    ("sentences", 2.5, "sentences must be an integer 1-100"),
    ("keywords", 101, "keywords must be an integer 0-100"),
    ("keywords", True, "keywords must be an integer 0-100"),
    ("title", 7, "title must be a string"),
    ("language", "tlh", "language must be one of"),
    ("include_text", "yes", "include_text must be true or false"),
])
def test_bad_options(run_handler, member, value, message):
    fails(run_handler("document", {"text": TXT, member: value}), message)


def test_progress_lines_on_fd3(run_handler):
    run = run_handler("document", {"text": TXT})
    assert run.rc == 0
    percents = [p for p, _ in run.progress]
    assert len(percents) >= 5, run.progress
    assert percents == sorted(percents) and all(0 <= p <= 100 for p in percents)
    assert percents[0] <= 10 and run.progress[-1] == (100, "done")
    assert any("49 words" in m for _, m in run.progress), run.progress
    assert all(m for _, m in run.progress)


def test_without_fd3_progress_is_skipped(run_handler):
    run = run_handler("document", {"text": TXT}, fd3=False)
    assert run.rc == 0 and run.result["stats"]["words"] == 49 and run.stderr == ""


def test_fd3_open_read_only_is_left_alone():
    # A shell run by hand can have fd 3 open for reading (e.g. a script): no progress goes there.
    with open(FIXTURES / "sample.txt", "rb") as f:
        proc = subprocess.run(["/bin/sh", "-c", 'exec "$@" 3<"$0"', str(FIXTURES / "sample.txt"), sys.executable,
                               str(HANDLERS / "document.py")], input=TXT.encode(), capture_output=True, timeout=60)
        assert f.read() == TXT.encode()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stats"]["words"] == 49


def test_progress_fd_from_environment(tmp_path):
    out = tmp_path / "progress"
    proc = subprocess.run(["/bin/sh", "-c", 'exec "$@" 7>"$0"', str(out), sys.executable, str(HANDLERS / "document.py")],
                          input=TXT.encode(), capture_output=True, timeout=60, env=dict(os.environ, CONVEYOR_PROGRESS_FD="7"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[-1] == "100 done"


def test_executable_with_shebang():
    for name in ("document", "pdf", "youtube"):
        path = HANDLERS / ("%s.py" % name)
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
    proc = subprocess.run([str(HANDLERS / "document.py")], input=b"One sentence here.", capture_output=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["stats"]["sentences"] == 1


# --------------------------------------------------------------------------- markdown, html, docx


def test_markdown_syntax_is_stripped(run_handler):
    r = ok(run_handler("document", {"text": MD, "include_text": True}))
    assert r["format"] == "markdown"
    assert r["title"] == "Release notes"
    st = r["stats"]
    assert (st["words"], st["sentences"], st["paragraphs"]) == (41, 11, 9)
    text = r["text"]
    for junk in ("**", "](", "`", "|", "---", "# ", "> ", "https://example.invalid", "hidden-code-block", "front matter"):
        assert junk not in text, junk
    assert "Conveyor 2.0 ships a new dashboard. The dashboard shows the queue live." in text
    assert "A journal in SQLite keeps tasks safe." in text
    assert "Retries with exponential backoff." in text
    assert "dashboard" in r["keywords"][:2]
    assert_summary_from(r, text, 3)


def test_markdown_by_member_filename_and_format(run_handler):
    ref = ok(run_handler("document", {"text": MD}))
    for payload in ({"markdown": MD}, {"text": MD, "format": "markdown"},
                    upload(MD.encode(), "notes.md", "application/octet-stream"),
                    upload(MD.encode(), "notes", "text/markdown"), MD):
        r = ok(run_handler("document", payload))
        assert r["format"] == "markdown" and r["stats"] == ref["stats"], payload if isinstance(payload, str) else payload.get("filename")
    as_text = ok(run_handler("document", {"text": MD, "format": "text"}))
    assert as_text["format"] == "text" and as_text["stats"]["words"] > 41  # the markup is kept as words


def test_html_is_stripped(run_handler):
    r = ok(run_handler("document", {"text": HTML, "include_text": True}))
    assert r["format"] == "html"
    assert r["title"] == "Quarterly report"
    st = r["stats"]
    assert (st["words"], st["sentences"], st["paragraphs"]) == (32, 7, 5)
    text = r["text"]
    assert "hidden" not in text and "color" not in text and "<" not in text
    assert "Revenue grew by 12 percent in the third quarter. Costs fell & margins improved." in text
    assert "The board approved the budget. Hiring continues next year." in text
    assert {"sales", "fell"} <= set(r["keywords"][:2])
    assert_summary_from(r, text, 3)
    by_upload = ok(run_handler("document", upload(HTML.encode(), "report.html", "text/html", title="Q3")))
    assert by_upload["stats"] == st and by_upload["title"] == "Q3" and by_upload["filename"] == "report.html"


def test_docx_upload(run_handler, docx_bytes):
    for payload in (upload(docx_bytes, "notes.docx"), upload(docx_bytes, "blob", DOCX_TYPE), upload(docx_bytes, "")):
        r = ok(run_handler("document", dict(payload, include_text=True)))
        assert r["format"] == "docx"
        assert r["title"] == "Notes of the meeting"  # docProps/core.xml
        st = r["stats"]
        assert (st["words"], st["sentences"], st["paragraphs"]) == (22, 6, 5)
        assert r["text"].split("\n\n") == ["Meeting notes", "The team agreed to ship the release on Friday. "
                                          "Testing starts on Monday.", "Owner", "Task", "Nobody objected to the plan."]
        assert "DELETED" not in r["text"]
    raw = ok(run_handler("document", docx_bytes))  # the .docx file itself as the payload
    assert raw["format"] == "docx" and raw["stats"]["words"] == 22


def test_pdf_upload_to_the_document_handler(run_handler, pdf_files):
    r = ok(run_handler("document", upload(pdf_files["sample"].read_bytes(), "notes.pdf", "application/pdf")))
    assert r["format"] == "pdf" and r["stats"]["pages"] == 2 and r["stats"]["words"] == 57


# --------------------------------------------------------------------------- language independence


def test_german_text_uses_german_stopwords(run_handler):
    text = ("Der Broker verteilt die Aufgaben an die Worker. Die Worker melden den Fortschritt. "
            "Und der Broker speichert jede Aufgabe im Journal.")
    r = ok(run_handler("document", {"text": text}))
    assert r["language"] == "de"
    assert r["keywords"][:2] == ["broker", "worker"]
    assert not {"der", "die", "und", "den", "im"} & set(r["keywords"])
    assert r["stats"]["words"] == 21 and r["stats"]["sentences"] == 3


def test_unknown_language_falls_back_to_long_tokens(run_handler):
    text = "Kucing itu tidur di atas meja. Kucing suka tidur lama. Ada ikan di dapur."
    r = ok(run_handler("document", {"text": text}))
    assert r["language"] == "und"
    assert r["keywords"][:2] == ["kucing", "tidur"]
    assert all(len(k) >= 4 for k in r["keywords"])
    assert r["stats"]["words"] == 14 and r["stats"]["sentences"] == 3
    forced = ok(run_handler("document", {"text": TXT, "language": "none"}))
    assert forced["language"] == "und" and all(len(k) >= 4 for k in forced["keywords"])


def test_cjk_sentence_marks(run_handler):
    r = ok(run_handler("document", {"text": "今日は晴れです。明日は雨ですか？はい。"}))
    assert r["stats"]["sentences"] == 3


# --------------------------------------------------------------------------- the analysis functions


def test_sentence_splitting_rules():
    s = analysis.split_sentences
    assert s("Dr. Smith met Mr. Jones. They talked.") == ["Dr. Smith met Mr. Jones.", "They talked."]
    assert s("Use a queue, e.g. this one. It works.") == ["Use a queue, e.g. this one.", "It works."]
    assert s("J. R. R. Tolkien wrote it. Pi is 3.14 or so!") == ["J. R. R. Tolkien wrote it.", "Pi is 3.14 or so!"]
    assert s('He said "stop." Then he left (quickly.) Done') == ['He said "stop."', "Then he left (quickly.)", "Done"]
    assert s("Wait... what happened? Apples, pears, etc. are fruit. We bought pears etc. Then we left.") == [
        "Wait... what happened?", "Apples, pears, etc. are fruit.", "We bought pears etc.", "Then we left."]


def test_word_rule_and_reading_time():
    assert analysis.words("Don't stop state-of-the-art queues: 3.14 and 10,000 tasks_2") == [
        "Don't", "stop", "state-of-the-art", "queues", "3.14", "and", "10,000", "tasks", "2"]
    assert [analysis.reading_time(n) for n in (0, 10, 49, 50, 200, 1234)] == [0.0, 0.1, 0.2, 0.3, 1.0, 6.2]


# --------------------------------------------------------------------------- path and url


def test_path_needs_a_document_root(run_handler, tmp_path):
    fails(run_handler("document", {"path": str(FIXTURES / "sample.txt")}), "CONVEYOR_DOCUMENT_ROOT")
    env = {"CONVEYOR_DOCUMENT_ROOT": str(FIXTURES)}
    r = ok(run_handler("document", {"path": "sample.md"}, env=env))
    assert r["format"] == "markdown" and r["filename"] == "sample.md" and r["stats"]["words"] == 41
    assert ok(run_handler("document", {"path": str(FIXTURES / "sample.txt")}, env=env))["stats"]["words"] == 49
    fails(run_handler("document", {"path": "../conftest.py"}, env=env), "not a file under CONVEYOR_DOCUMENT_ROOT")
    fails(run_handler("document", {"path": "/etc/passwd"}, env=env), "not a file under CONVEYOR_DOCUMENT_ROOT")
    link = tmp_path / "escape.txt"
    link.symlink_to("/etc/hostname")
    fails(run_handler("document", {"path": "escape.txt"}, env={"CONVEYOR_DOCUMENT_ROOT": str(tmp_path)}),
          "not a file under CONVEYOR_DOCUMENT_ROOT")


@pytest.fixture
def http_server():
    files = {"/notes.md": (MD.encode(), "text/plain"), "/page": (HTML.encode(), "text/html; charset=utf-8")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in files:
                self.send_error(404)
                return
            body, ctype = files[self.path]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_url_is_fetched(run_handler, http_server):
    md = ok(run_handler("document", {"url": http_server + "/notes.md"}))
    assert md["format"] == "markdown" and md["stats"]["words"] == 41 and md["source"] == "url"
    page = ok(run_handler("document", {"url": http_server + "/page"}))
    assert page["format"] == "html" and page["stats"]["words"] == 32
    fails(run_handler("document", {"url": http_server + "/missing"}), "HTTP 404")
    fails(run_handler("document", {"url": http_server + "/page"}, env={"CONVEYOR_FETCH_URLS": "0"}), "CONVEYOR_FETCH_URLS=0")
    fails(run_handler("document", {"url": http_server + "/page"}, env={"CONVEYOR_FETCH_MAX_BYTES": "100"}),
          "larger than CONVEYOR_FETCH_MAX_BYTES=100")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("payload,message", [
    (b"", "empty payload"),
    (b"  \n", "empty payload"),
    ({}, "the payload has no document"),
    ({"title": "x"}, "the payload has no document"),
    ({"text": 5}, "text must be a string"),
    ({"text": "   "}, "text is empty"),
    ({"text": "...  ---"}, "no text: the text document contains no words"),
    (b"caf\xe9 not utf-8 \xc3", "not UTF-8 text"),
    (b"abc\x00def\x00", "looks binary"),
    ({"content_base64": "***", "filename": "a.txt"}, "content_base64 is not valid base64"),
    ({"content_base64": "UEsDBAo=", "filename": "a.docx"}, "not a .docx file"),
    ({"url": "ftp://example.invalid/x"}, "url must be an http or https URL"),
    ({"text": "x", "format": "rtf"}, "format must be one of"),
    ({"text": "abc", "format": "docx"}, "needs the file itself"),
])
def test_errors(run_handler, payload, message):
    fails(run_handler("document", payload), message)


def test_docx_that_is_not_a_document(run_handler):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    fails(run_handler("document", upload(buf.getvalue(), "x.docx")), "no word/document.xml")


def test_url_secrets_stay_out_of_progress_and_errors(run_handler, http_server):
    for url in (http_server + "/missing?signature=s3cr3t", http_server.replace("//", "//user:hunter2@") + "/x?k=s3cr3t"):
        run = run_handler("document", {"url": url})
        line = fails(run, "cannot fetch http://127.0.0.1:")
        shown = " ".join(m for _, m in run.progress) + line
        assert "s3cr3t" not in shown and "hunter2" not in shown, shown
        assert "?…" in line
