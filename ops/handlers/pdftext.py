"""PDF text extraction with poppler's pdfinfo and pdftotext (poppler-utils).

Shared by pdf.py and document.py (a PDF uploaded to /analyze-document).
"""

import math
import os
import re
import shutil
import subprocess
import tempfile

from analysis import HandlerError

CHUNKS = 8  # pdftotext runs at most this many times, for progress on long documents


def is_pdf(data):
    """A PDF starts with %PDF- (the specification allows up to 1 KiB of junk before it)."""
    return b"%PDF-" in data[:1024]


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise HandlerError("%s not found on PATH: install poppler-utils (apt-get install poppler-utils)" % name)
    return path


def _first_line(stderr):
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def pdf_info(path):
    """pdfinfo's fields as a dict (Pages, Title, Encrypted, …)."""
    proc = subprocess.run([_tool("pdfinfo"), "-enc", "UTF-8", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        msg = _first_line(proc.stderr)
        if "password" in msg.lower():
            raise HandlerError("the PDF is encrypted and needs a password")
        raise HandlerError("not a readable PDF: %s" % (msg or "pdfinfo exited with status %d" % proc.returncode))
    info = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def pdf_to_text(data, progress=None, span=(20, 50), layout=False):
    """Returns (text, pages, title): the text of every page (pages separated by
    form feeds, which analysis turns into paragraph breaks), the page count and
    the document's Title metadata (or None).

    Raises HandlerError for a PDF without a text layer ("no extractable text:
    the PDF has N pages but no text layer (scanned?)"), an encrypted or broken
    PDF, and a missing poppler-utils.
    """
    lo, hi = span
    pdftotext = _tool("pdftotext")
    fd, path = tempfile.mkstemp(prefix="conveyor-", suffix=".pdf")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        info = pdf_info(path)
        try:
            pages = int(info.get("Pages", "0"))
        except ValueError:
            pages = 0
        title = info.get("Title") or None
        if progress:
            progress(lo, "PDF with %d page%s" % (pages, "" if pages == 1 else "s"))
        chunk = max(1, math.ceil(pages / CHUNKS)) if pages else 0
        texts = []
        ranges = [(a, min(pages, a + chunk - 1)) for a in range(1, pages + 1, chunk)] if pages else [(None, None)]
        for i, (first, last) in enumerate(ranges):
            argv = [pdftotext, "-enc", "UTF-8"]
            if layout:
                argv.append("-layout")
            if first is not None:
                argv += ["-f", str(first), "-l", str(last)]
            argv += [path, "-"]
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                msg = _first_line(proc.stderr)
                if "password" in msg.lower():
                    raise HandlerError("the PDF is encrypted and needs a password")
                raise HandlerError("pdftotext failed: %s" % (msg or "exit status %d" % proc.returncode))
            texts.append(proc.stdout.decode("utf-8", "replace"))
            if progress and first is not None:
                progress(lo + (hi - lo) * (i + 1) / len(ranges), "extracted text of pages %d-%d of %d" % (first, last, pages))
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    text = "".join(texts)
    # Words hyphenated at a line end: "conti-\nnuing" → "continuing".
    text = re.sub(r"(\w)-\n(?=[a-z])", r"\1", text)
    if not re.search(r"[^\W_]", text):
        raise HandlerError("no extractable text: the PDF has %d page%s but no text layer (scanned?)"
                           % (pages, "" if pages == 1 else "s"))
    return text, pages, title
