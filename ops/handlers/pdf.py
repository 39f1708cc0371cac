#!/usr/bin/env python3
"""Conveyor handler for `pdf` tasks: the text layer of a PDF, analysed like a document.

    conveyor worker --types pdf --exec "python3 ops/handlers/pdf.py"

Needs poppler-utils (pdftotext, pdfinfo) on PATH.

Payload (stdin): the PDF itself (raw bytes starting with %PDF), or a JSON object with one of
  content_base64    an upload ({"filename","content_type","title","size","content_base64"},
                    as POST /analyze-pdf sends it)
  path              a file under CONVEYOR_DOCUMENT_ROOT on the worker's host
  url               an http(s) URL to fetch (CONVEYOR_FETCH_URLS=0 turns this off)
and optionally title, sentences (default 3), keywords (default 10), language, include_text,
layout (false: pdftotext's reading order; true: -layout).

Result (stdout): the document result (see document.py) with stats.pages and format "pdf".
A PDF without a text layer fails: "no extractable text: the PDF has N pages but no text
layer (scanned?)".
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import analysis  # noqa: E402
import pdftext  # noqa: E402
from analysis import HandlerError  # noqa: E402


def load(obj, raw, progress):
    """Returns (pdf bytes, filename, source)."""
    if obj is None:
        if not pdftext.is_pdf(raw):
            raise HandlerError("not a PDF: the payload is neither a JSON object nor a PDF file (no %PDF header)")
        return raw, None, "raw payload"
    if obj.get("content_base64") is not None:
        data = analysis.decode_base64(obj)
        name = analysis.str_option(obj, "filename")
        progress(10, "upload %s (%d bytes)" % (name or "without a filename", len(data)))
        return data, name, "upload"
    if obj.get("path") is not None:
        data, name = analysis.read_path(obj["path"])
        progress(10, "read %s (%d bytes)" % (name, len(data)))
        return data, name, "path"
    if obj.get("url") is not None:
        progress(8, "fetching %s" % analysis.display_url(obj["url"]))
        data, _, name = analysis.fetch_url(obj["url"])
        progress(15, "fetched %d bytes" % len(data))
        return data, name, "url"
    if obj.get("text") is not None or obj.get("content") is not None:
        raise HandlerError("a pdf task needs the PDF itself (content_base64, path or url); send text to a document task")
    raise HandlerError("the payload has no PDF: give content_base64 (an upload), path or url, or send the PDF bytes")


def main(raw, progress):
    progress(5, "reading the payload")
    obj, raw = analysis.parse_payload(raw)
    opts = analysis.analysis_options(obj)
    layout = analysis.bool_option(obj, "layout")
    data, filename, source = load(obj, raw, progress)
    if not pdftext.is_pdf(data):
        raise HandlerError("not a PDF: %s does not start with %%PDF" % (filename or "the content"))
    text, pages, meta_title = pdftext.pdf_to_text(data, progress, span=(20, 50), layout=layout)
    progress(50, "analysing %d characters from %d page%s" % (len(text), pages, "" if pages == 1 else "s"))
    result = analysis.analyze(
        text,
        sentences=opts["sentences"],
        keywords=opts["keywords"],
        title=opts["title"] or meta_title,
        language=opts["language"],
        include_text=opts["include_text"],
        progress=progress,
        span=(55, 95),
    )
    result["format"] = "pdf"
    result["source"] = source
    if filename:
        result["filename"] = filename
    result["stats"]["pages"] = pages
    progress(100, "done")
    return result


if __name__ == "__main__":
    sys.exit(analysis.run_handler("pdf", main))
