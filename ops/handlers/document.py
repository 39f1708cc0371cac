#!/usr/bin/env python3
"""Conveyor handler for `document` tasks: statistics, keywords and an extractive summary.

    conveyor worker --types document --exec "python3 ops/handlers/document.py"

Payload (stdin): a JSON object with one of
  text | content    the document as a string (plain text, Markdown or HTML: see format)
  html | markdown   the document as a string in that format
  content_base64    an upload ({"filename","content_type","title","size","content_base64"},
                    as POST /analyze-document sends it): .txt, .md, .html, .docx or .pdf
  path              a file under CONVEYOR_DOCUMENT_ROOT on the worker's host
  url               an http(s) URL to fetch (CONVEYOR_FETCH_URLS=0 turns this off)
and optionally format (text|markdown|html|docx|pdf), title, sentences (default 3),
keywords (default 10), language (en|de|fr|es|none), include_text (false).
Anything that is not a JSON object is the document itself (UTF-8 text, or a .docx/.pdf file).

Result (stdout): one JSON object {"summary", "summary_sentences", "keywords", "keyword_counts",
"stats", "title", "language", "format", "filename"}. See ops/handlers/README.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import analysis  # noqa: E402
from analysis import HandlerError  # noqa: E402

TEXT_MEMBERS = (("text", None), ("content", None), ("html", "html"), ("markdown", "markdown"))


def load(obj, raw, progress):
    """Returns (data: bytes or str, explicit format or None, filename, content type, source)."""
    if obj is None:
        return raw, None, None, None, "raw payload"
    explicit = analysis.str_option(obj, "format")
    for member, fmt in TEXT_MEMBERS:
        if obj.get(member) is not None:
            value = obj[member]
            if not isinstance(value, str):
                raise HandlerError("%s must be a string" % member)
            if not value.strip():
                raise HandlerError("%s is empty" % member)
            return value, explicit or fmt, analysis.str_option(obj, "filename"), None, member
    if obj.get("content_base64") is not None:
        data = analysis.decode_base64(obj)
        name = analysis.str_option(obj, "filename")
        progress(10, "upload %s (%d bytes)" % (name or "without a filename", len(data)))
        return data, explicit, name, analysis.str_option(obj, "content_type"), "upload"
    if obj.get("path") is not None:
        data, name = analysis.read_path(obj["path"])
        progress(10, "read %s (%d bytes)" % (name, len(data)))
        return data, explicit, name, None, "path"
    if obj.get("url") is not None:
        progress(8, "fetching %s" % analysis.display_url(obj["url"]))
        data, ctype, name = analysis.fetch_url(obj["url"])
        progress(15, "fetched %d bytes" % len(data))
        return data, explicit, name, ctype, "url"
    raise HandlerError("the payload has no document: give text, content, content_base64 (an upload), path or url")


def main(raw, progress):
    progress(5, "reading the payload")
    obj, raw = analysis.parse_payload(raw)
    opts = analysis.analysis_options(obj)
    data, explicit, filename, ctype, source = load(obj, raw, progress)

    title = None
    pages = None
    if isinstance(data, str):
        fmt = analysis.detect_format(data, filename, ctype, explicit)
        if fmt in ("docx", "pdf"):
            raise HandlerError("format %s needs the file itself: send it as content_base64" % fmt)
        progress(20, "extracting text (%s)" % fmt)
        text, title = analysis.text_to_plain(data, fmt)
    else:
        fmt = analysis.detect_format(data, filename, ctype, explicit)
        progress(20, "extracting text (%s)" % fmt)
        if fmt == "pdf":
            import pdftext

            text, pages, title = pdftext.pdf_to_text(data, progress, span=(20, 45))
        else:
            text, title = analysis.extract_text(data, fmt)
    if not analysis.WORD_RE.search(text):
        raise HandlerError("no text: the %s document contains no words" % fmt)
    progress(50, "analysing %d characters" % len(text))

    result = analysis.analyze(
        text,
        sentences=opts["sentences"],
        keywords=opts["keywords"],
        title=opts["title"] or title,
        language=opts["language"],
        include_text=opts["include_text"],
        progress=progress,
        span=(55, 95),
    )
    result["format"] = fmt
    result["source"] = source
    if filename:
        result["filename"] = filename
    if pages is not None:
        result["stats"]["pages"] = pages
    progress(100, "done")
    return result


if __name__ == "__main__":
    sys.exit(analysis.run_handler("document", main))
