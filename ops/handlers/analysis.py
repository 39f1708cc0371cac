"""Shared code of the Conveyor task handlers (document.py, pdf.py, youtube.py).

Python 3.9+ standard library only. Everything here is offline and
deterministic: the same input always gives the same result.

* Payload handling: read stdin, parse a JSON object or take the raw bytes,
  read the common options (`sentences`, `keywords`, `title`, `language`,
  `include_text`), fetch `url` / read `path` sources.
* Text extraction: plain text, Markdown (syntax stripped), HTML (tags,
  scripts and styles stripped), .docx (zipfile + XML).
* Analysis: statistics, keywords by term frequency, an extractive summary.
* Progress: `PERCENT MESSAGE` lines on the fd in CONVEYOR_PROGRESS_FD
  (default 3), silently skipped when that fd is not open for writing.
* `run_handler(name, main)`: the one place that turns exceptions into a
  one-line message on stderr and a non-zero exit status.

ops/handlers/README.md documents the payloads, the result and the errors.
"""

import base64
import binascii
import html
import html.parser
import io
import json
import math
import os
import re
import signal
import sys
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter

DEFAULT_SENTENCES = 3
DEFAULT_KEYWORDS = 10
MAX_SENTENCES = 100
MAX_KEYWORDS = 100
WORDS_PER_MINUTE = 200
FETCH_TIMEOUT_S = 30
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024
MAX_DOCX_XML_BYTES = 64 * 1024 * 1024


class HandlerError(Exception):
    """A failure the caller should see: one line on stderr, exit status 1."""


class RetryLater(HandlerError):
    """The service behind the handler said "rate limited": exit status 75
    (EX_TEMPFAIL), which the worker answers with RETRY_LATER so the broker holds
    the task type; `after` seconds, if known, go to fd 3 as `retry-after S`."""

    def __init__(self, message, after=None):
        super().__init__(message)
        self.after = after


RETRY_LATER_STATUS = 75


# --------------------------------------------------------------------------
# Progress on fd 3


class Progress:
    """Writes `PERCENT MESSAGE` lines to the worker's progress fd.

    The fd is CONVEYOR_PROGRESS_FD (the worker sets it to 3) or 3. It is used
    only when it is open for writing, so a handler run by hand (no fd 3, or an
    fd 3 a shell opened read-only) skips progress silently. A closed pipe
    disables progress instead of failing the task.
    """

    def __init__(self, fd=None):
        if fd is None:
            try:
                fd = int(os.environ.get("CONVEYOR_PROGRESS_FD", "3"))
            except ValueError:
                fd = 3
        self.fd = fd if _writable_fd(fd) else None
        self.last = -1

    @property
    def enabled(self):
        return self.fd is not None

    def line(self, text):
        """A raw fd-3 line (`cost N`, `retry-after S`)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, (" ".join(str(text).split()) + "\n").encode("utf-8", "replace"))
        except OSError:
            self.fd = None

    def __call__(self, percent, message=""):
        if self.fd is None:
            return
        percent = max(0, min(100, int(percent)))
        percent = max(percent, self.last)  # never go backwards
        self.last = percent
        text = " ".join(str(message).split())  # one line
        try:
            os.write(self.fd, ("%d %s\n" % (percent, text)).encode("utf-8", "replace"))
        except OSError:
            self.fd = None


def _writable_fd(fd):
    try:
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (OSError, ValueError, ImportError):
        return False
    return (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


# --------------------------------------------------------------------------
# Running a handler


class _Terminated(BaseException):
    """SIGTERM (a cancel, a timeout, a worker shutting down): unwind, so that
    temporary files are removed, then exit 128 + 15."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def run_handler(name, main):
    """Runs main(payload_bytes, progress) -> dict and prints the result as JSON.

    HandlerError → `NAME: message` on stderr, exit 1; RetryLater → the same
    with exit 75 (and `retry-after S` on fd 3); anything unexpected →
    `NAME: internal error: Type: message`, exit 70.
    """
    progress = Progress()  # before anything else opens a file as fd 3
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        payload = sys.stdin.buffer.read()
        result = main(payload, progress)
        out = json.dumps(result, ensure_ascii=False, sort_keys=False) + "\n"
        sys.stdout.buffer.write(out.encode("utf-8"))
        sys.stdout.buffer.flush()
        return 0
    except RetryLater as e:
        if e.after is not None:
            progress.line("retry-after %g" % e.after)
        _fail(name, str(e))
        return RETRY_LATER_STATUS
    except HandlerError as e:
        _fail(name, str(e))
        return 1
    except _Terminated:
        _fail(name, "stopped by SIGTERM")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _fail(name, "interrupted")
        return 130
    except Exception as e:  # pragma: no cover - a bug, reported on one line
        _fail(name, "internal error: %s: %s" % (type(e).__name__, e))
        return 70


def _fail(name, message):
    line = " ".join(str(message).split()) or "failed"
    sys.stderr.write("%s: %s\n" % (name, line))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Payloads


def parse_payload(raw):
    """Returns (object, raw): object is the payload's JSON object, or None.

    A JSON string payload (e.g. a string sent through POST /api/tasks as JSON
    text) becomes {"text": that string}. Anything else that is not a JSON
    object is returned as (None, raw): the handler decides what raw bytes mean.
    """
    if not raw or not raw.strip():
        raise HandlerError("empty payload: send a JSON object or the document itself")
    head = raw.lstrip()[:1]
    if head in (b"{", b'"'):
        try:
            value = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            value = None
        if isinstance(value, dict):
            return value, raw
        if isinstance(value, str):
            return {"text": value}, raw
    return None, raw


def int_option(obj, name, default, lo, hi):
    """An optional integer member in [lo, hi]."""
    if obj is None or obj.get(name) is None:
        return default
    v = obj.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise HandlerError("%s must be an integer %d-%d" % (name, lo, hi))
    try:
        n = int(v) if not isinstance(v, float) or v.is_integer() else None
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise HandlerError("%s must be an integer %d-%d, got %s" % (name, lo, hi, json.dumps(v)[:40]))
    return n


def str_option(obj, name):
    if obj is None or obj.get(name) is None:
        return None
    v = obj.get(name)
    if not isinstance(v, str):
        raise HandlerError("%s must be a string" % name)
    return v


def bool_option(obj, name, default=False):
    if obj is None or obj.get(name) is None:
        return default
    v = obj.get(name)
    if not isinstance(v, bool):
        raise HandlerError("%s must be true or false" % name)
    return v


def analysis_options(obj):
    """The options every handler reads: sentences, keywords, title, language, include_text."""
    lang = str_option(obj, "language")
    if lang is not None:
        lang = lang.strip().lower()
        if lang not in STOPWORDS and lang not in ("none", "und", "auto", ""):
            raise HandlerError("language must be one of %s, or none" % ", ".join(sorted(STOPWORDS)))
        if lang in ("auto", ""):
            lang = None
    return {
        "sentences": int_option(obj, "sentences", DEFAULT_SENTENCES, 1, MAX_SENTENCES),
        "keywords": int_option(obj, "keywords", DEFAULT_KEYWORDS, 0, MAX_KEYWORDS),
        "title": str_option(obj, "title"),
        "language": lang,
        "include_text": bool_option(obj, "include_text"),
    }


def decode_base64(obj, name="content_base64"):
    v = obj.get(name)
    if not isinstance(v, str):
        raise HandlerError("%s must be a base64 string" % name)
    try:
        return base64.b64decode("".join(v.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HandlerError("%s is not valid base64" % name)


def read_path(path):
    """Reads a `path` payload member: a file under CONVEYOR_DOCUMENT_ROOT, only.

    Without CONVEYOR_DOCUMENT_ROOT path payloads are refused: anyone who can
    submit a task could otherwise read any file the worker can.
    """
    roots = [r for r in os.environ.get("CONVEYOR_DOCUMENT_ROOT", "").split(":") if r]
    if not roots:
        raise HandlerError("path payloads are disabled: set CONVEYOR_DOCUMENT_ROOT to the directory "
                           "(or colon-separated directories) the worker may read")
    if not isinstance(path, str) or not path or "\0" in path:
        raise HandlerError("path must be a non-empty string")
    for root in roots:
        root_real = os.path.realpath(root)
        candidate = os.path.realpath(os.path.join(root_real, path))  # absolute paths replace root
        if os.path.commonpath([root_real, candidate]) == root_real:
            if not os.path.isfile(candidate):
                continue
            try:
                with open(candidate, "rb") as f:
                    return f.read(), os.path.basename(candidate)
            except OSError as e:
                raise HandlerError("cannot read path %s: %s" % (path, e.strerror))
    raise HandlerError("path %s is not a file under CONVEYOR_DOCUMENT_ROOT" % path)


def display_url(url):
    """A URL for messages: no user:password and no query string (which may hold a
    signature or token), since progress and errors reach the event stream."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        host = parts.hostname or ""
        if parts.port:
            host += ":%d" % parts.port
        tail = "?…" if parts.query else ""
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + tail
    except ValueError:
        return "the URL"


def fetch_url(url):
    """Fetches an http(s) URL: returns (bytes, content_type, filename).

    Off when CONVEYOR_FETCH_URLS=0; at most CONVEYOR_FETCH_MAX_BYTES bytes
    (default 20 MiB); 30 s timeout. file:// URLs are read as `path` members.
    """
    if not isinstance(url, str) or not url.strip():
        raise HandlerError("url must be a non-empty string")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme == "file":
        data, name = read_path(urllib.parse.unquote(parts.path))
        return data, None, name
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HandlerError("url must be an http or https URL")
    if os.environ.get("CONVEYOR_FETCH_URLS", "1").strip().lower() in ("0", "no", "false", "off"):
        raise HandlerError("url payloads are disabled on this worker (CONVEYOR_FETCH_URLS=0): upload the file instead")
    try:
        limit = int(os.environ.get("CONVEYOR_FETCH_MAX_BYTES", str(DEFAULT_FETCH_MAX_BYTES)))
    except ValueError:
        raise HandlerError("CONVEYOR_FETCH_MAX_BYTES must be an integer")
    shown = display_url(url)
    req = urllib.request.Request(url, headers={"User-Agent": "conveyor-handler/1", "Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as resp:
            data = resp.read(limit + 1)
            ctype = resp.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        raise HandlerError("cannot fetch %s: HTTP %d %s" % (shown, e.code, e.reason))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise HandlerError("cannot fetch %s: %s" % (shown, reason))
    if len(data) > limit:
        raise HandlerError("cannot fetch %s: larger than CONVEYOR_FETCH_MAX_BYTES=%d" % (shown, limit))
    name = os.path.basename(urllib.parse.unquote(parts.path)) or None
    return data, ctype, name


# --------------------------------------------------------------------------
# Decoding and format detection


DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_EXTENSIONS = {
    ".txt": "text", ".text": "text", ".log": "text", ".csv": "text",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".docx": "docx", ".pdf": "pdf",
}
_CONTENT_TYPES = {
    "text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown",
    "text/html": "html", "application/xhtml+xml": "html", DOCX_TYPE: "docx", "application/pdf": "pdf",
}
FORMATS = ("text", "markdown", "html", "docx", "pdf")


def detect_format(data, filename=None, content_type=None, explicit=None):
    """text | markdown | html | docx | pdf, from (in order) an explicit format,
    the bytes' signature (%PDF- in the first KiB, a zip archive), the
    filename's extension, the content type, and finally sniffing the text
    (HTML tags → html; headings, lists, links, emphasis → markdown; else text).
    `data` is bytes or an already decoded str."""
    if explicit:
        fmt = explicit.strip().lower()
        if fmt in ("md",):
            fmt = "markdown"
        if fmt in ("txt", "plain"):
            fmt = "text"
        if fmt not in FORMATS:
            raise HandlerError("format must be one of %s" % ", ".join(FORMATS))
        return fmt
    if isinstance(data, bytes):
        if b"%PDF-" in data[:1024]:
            return "pdf"
        if data[:4] == b"PK\x03\x04":
            return "docx"
    if filename:
        ext = os.path.splitext(filename.lower())[1]
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
    if content_type:
        ct = content_type.split(";")[0].strip().lower()
        if ct in _CONTENT_TYPES:
            return _CONTENT_TYPES[ct]
    return sniff_text_format(decode_text(data) if isinstance(data, bytes) else data)


_HTML_SNIFF = re.compile(r"<(?:!doctype\s+html|html|head|body|p|div|h[1-6]|article|section|br|ul|ol|table)\b", re.I)
_MD_SNIFF = re.compile(r"^(?:#{1,6}\s+\S|\s*[-*+]\s+\S|\s*\d+[.)]\s+\S|```|~~~|>\s)|\[[^\]\n]+\]\([^)\s]+\)|\*\*[^*\n]+\*\*", re.M)


def sniff_text_format(text):
    head = text[:4096]
    if _HTML_SNIFF.search(head):
        return "html"
    if _MD_SNIFF.search(text[:65536]):
        return "markdown"
    return "text"


def decode_text(data):
    """UTF-8 (a BOM is dropped); UTF-16 with a BOM. Refuses binary data."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise HandlerError("the document is not valid UTF-16 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HandlerError("the document is not UTF-8 text (invalid byte at offset %d); send UTF-8, "
                           "or a .docx or .pdf file with its filename" % e.start)
    if "\0" in text:
        raise HandlerError("the document looks binary (it contains NUL bytes); send text, a .docx or a .pdf")
    return text


# --------------------------------------------------------------------------
# Extraction to plain text: paragraphs separated by blank lines


def normalize_text(text):
    """Line endings to \\n, form feeds (page breaks) to paragraph breaks, and
    control characters other than \\n and \\t dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def plain_to_text(text):
    return normalize_text(text)


_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^\s{0,3}#{1,6}(?:\s+|$)(.*?)(?:\s+#+\s*)?$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_HR = re.compile(r"^\s{0,3}(?:(?:\*\s*){3,}|(?:-\s*){3,}|(?:_\s*){3,})$")
_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?")
_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S+")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")


def markdown_to_text(md):
    """Markdown → plain text: each heading, list item, table row, paragraph
    and block-quote paragraph becomes a paragraph; fenced code blocks, HTML
    comments, YAML front matter, reference definitions and rules are
    dropped; inline markup keeps its text (links → their text, images →
    their alt text, emphasis and code → the bare text)."""
    md = normalize_text(md)
    md = re.sub(r"<!--.*?-->", "", md, flags=re.S)
    lines = md.split("\n")
    if lines and lines[0].strip() == "---":  # YAML front matter
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                lines = lines[i + 1:]
                break
    blocks = []
    current = []
    fence = None

    def flush():
        if current:
            blocks.append("\n".join(current))
            current.clear()

    for line in lines:
        if fence:
            m = _FENCE.match(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            flush()
            fence = m.group(1)
            continue
        if not line.strip():
            flush()
            continue
        if _REFDEF.match(line):
            continue
        quote = _QUOTE.match(line)
        if quote:
            line = line[quote.end():]
            if not line.strip():
                flush()
                continue
        m = _ATX.match(line)
        if m:
            flush()
            blocks.append(m.group(1))
            continue
        if _SETEXT.match(line) and current:
            flush()  # the paragraph above was a heading
            continue
        if _HR.match(line):
            flush()
            continue
        if "|" in line and _TABLE_SEP.match(line):
            continue  # a table's header separator
        m = _LIST.match(line)
        if m:
            flush()
            current.append(line[m.end():])
            continue
        if "|" in line and line.strip().startswith("|"):
            flush()
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            blocks.append(" ".join(c for c in cells if c))
            continue
        current.append(line.strip())
    flush()
    return "\n\n".join(_markdown_inline(b) for b in blocks)


def _markdown_inline(s):
    kept = []

    def keep(text):  # code spans and escaped characters are not markup
        kept.append(text)
        return "\ue000%d\ue001" % (len(kept) - 1)

    s = re.sub(r"(`+)(.+?)\1", lambda m: keep(m.group(2).strip()), s, flags=re.S)
    s = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|>~<])", lambda m: keep(m.group(1)), s)
    s = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"!\[([^\]]*)\]\[[^\]]*\]", r"\1", s)
    s = re.sub(r"\[\^[^\]]+\]", "", s)  # footnote references
    s = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", s)
    s = re.sub(r"<((?:https?|mailto|ftp):[^>\s]+)>", r"\1", s)
    s = re.sub(r"</?[A-Za-z][^>\n]*>", "", s)  # inline HTML tags
    for _ in range(2):  # nested emphasis such as ***x***
        s = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", s)
        s = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", s)
        s = re.sub(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", r"\1", s)
    s = re.sub(r"~~(?=\S)(.+?)(?<=\S)~~", r"\1", s)
    s = html.unescape(s)
    return re.sub("\ue000(\\d+)\ue001", lambda m: kept[int(m.group(1))], s)


def markdown_title(md):
    """The text of a first-level heading on the first non-blank line (front matter skipped), if any."""
    body = re.sub(r"\A\s*---\n.*?\n(?:---|\.\.\.)\s*\n", "", normalize_text(md), flags=re.S)
    m = re.match(r"\s*#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*(?:\n|\Z)", body)
    if not m:
        return None
    return " ".join(_markdown_inline(m.group(1)).split()) or None


class _HTMLText(html.parser.HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg", "canvas", "iframe", "object"}
    BLOCK = {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "html", "legend", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
        "table", "tbody", "thead", "tfoot", "tr", "ul",
    }
    CELL = {"td", "th"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0
        self.in_title = False
        self.title = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = not self.skip
            return
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self.CELL:
            self.parts.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self.skip:
                self.parts.append(" %s " % alt)

    def handle_startendtag(self, tag, attrs):
        if tag in self.SKIP or tag == "title":
            return  # <script/> opens nothing
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
        elif tag in self.CELL:
            self.parts.append(" ")

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.parts.append(data)


def html_to_text(source):
    """HTML → (plain text, <title> or None). Block elements are paragraphs;
    script, style, head and similar content is dropped; entities decoded."""
    p = _HTMLText()
    p.feed(normalize_text(source))
    p.close()
    text = "".join(p.parts)
    title = " ".join("".join(p.title).split()) or None
    return text, title


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def docx_to_text(data):
    """A .docx (Office Open XML) → (plain text, title or None): one paragraph
    per w:p (tables included), w:tab → tab, w:br → line break; deleted text
    and field codes are left out."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise HandlerError("not a .docx file: the content is not a zip archive")
    with z:
        try:
            info = z.getinfo("word/document.xml")
        except KeyError:
            raise HandlerError("not a .docx file: the archive has no word/document.xml")
        if info.file_size > MAX_DOCX_XML_BYTES:
            raise HandlerError("the .docx document is too large (%d bytes of XML)" % info.file_size)
        xml_bytes = z.read(info)
        title = None
        if "docProps/core.xml" in z.namelist():
            try:
                core = _parse_xml(z.read("docProps/core.xml"))
                t = core.find("{http://purl.org/dc/elements/1.1/}title")
                if t is not None and t.text and t.text.strip():
                    title = t.text.strip()
            except HandlerError:
                pass
    root = _parse_xml(xml_bytes)
    paragraphs = []

    def paragraph(p):
        slot = len(paragraphs)
        paragraphs.append("")
        out = []

        def walk(el):
            for child in el:
                tag = child.tag
                if tag == _W + "p":
                    paragraph(child)  # a text box's paragraph: a paragraph of its own
                    continue
                if tag == _W + "t" and child.text:
                    out.append(child.text)
                elif tag == _W + "tab":
                    out.append("\t")
                elif tag in (_W + "br", _W + "cr"):
                    out.append("\n")
                elif tag == _W + "noBreakHyphen":
                    out.append("-")
                if tag not in (_W + "delText", _W + "instrText"):
                    walk(child)

        walk(p)
        paragraphs[slot] = "".join(out)

    def body(el):
        for child in el:
            if child.tag == _W + "p":
                paragraph(child)
            else:
                body(child)

    body(root)
    return "\n\n".join(paragraphs), title


def _parse_xml(data):
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data[:65536]:
        raise HandlerError("the .docx contains a DTD; refusing to parse it")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise HandlerError("the .docx XML is malformed: %s" % e)


def extract_text(data, fmt):
    """(text, title) for a text, markdown, html or docx document given as bytes."""
    if fmt == "docx":
        return docx_to_text(data)
    text = decode_text(data)
    return text_to_plain(text, fmt)


def text_to_plain(text, fmt):
    if fmt == "html":
        return html_to_text(text)
    if fmt == "markdown":
        return markdown_to_text(text), markdown_title(text)
    return plain_to_text(text), None


# --------------------------------------------------------------------------
# Tokens, paragraphs, sentences

# A word: letters and digits (no underscore), with inner apostrophes or
# hyphens ("don't", "state-of-the-art"); numbers keep their inner . and ,
# ("3.14", "10,000").
WORD_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’\-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[\"”’」』)]*")
_TITLES = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "fig", "figs", "vol",
    "vols", "pp", "ch", "dept", "approx", "gen", "gov", "sen", "rep", "lt", "col", "capt", "sgt",
    "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "al", "ca", "bzw", "usw", "sra", "etc",
}
_NO_BREAK_BEFORE_LOWER = {"etc"}  # "etc." ends a sentence only before a capital letter
_ALWAYS_ABBREVIATIONS = _TITLES - _NO_BREAK_BEFORE_LOWER
_NEXT_CHAR = re.compile(r"\s*(\S)")


def words(text):
    return WORD_RE.findall(text)


def split_sentences(paragraph):
    """Sentences of one paragraph: they end at . ! ? … (with closing quotes or
    brackets) before whitespace or the end, or at 。！？; a period after a
    known abbreviation (Mr., Dr., e.g., i.e., etc. before a lower-case word)
    or a single capital initial does not end one. The rest of a paragraph
    without a final mark (a heading, a list item) is a sentence too."""
    out = []
    start = 0
    for m in _SENTENCE_END.finditer(paragraph):
        mark = m.group().rstrip("\"'”’»)]")
        after = _NEXT_CHAR.match(paragraph, m.end())
        next_char = after.group(1) if after else ""
        if mark in ("...", "…") and next_char.islower():
            continue  # an ellipsis inside a sentence
        if mark == ".":
            j = m.start()
            while j > start and not paragraph[j - 1].isspace():
                j -= 1
            token = paragraph[j:m.start()].lstrip("(\"'“‘«[")
            low = token.lower()
            if low in _ALWAYS_ABBREVIATIONS:
                continue
            if low in _NO_BREAK_BEFORE_LOWER and next_char.islower():
                continue
            if re.fullmatch(r"[A-Z]", token) or re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", token):
                continue  # an initial ("J. Smith") or a dotted abbreviation ("e.g.", "U.S.")
        s = paragraph[start:m.end()].strip()
        if s:
            out.append(s)
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if WORD_RE.search(s)]


# --------------------------------------------------------------------------
# Stopwords and language

STOPWORDS = {
    "en": set("""
a about above after again against all also am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
during each either else ever every few for from further get gets got had hadn't has hasn't have haven't
having he he'd he'll he's her here here's hers herself him himself his how how's however i i'd i'll i'm
i've if in into is isn't it it's its itself just let's like may me might more most much must mustn't my
myself neither no nor not now of off often on once one only or other ought our ours ourselves out over
own per rather same shall shan't she she'd she'll she's should shouldn't since so some such than that
that's the their theirs them themselves then there there's these they they'd they'll they're they've
this those though through thus to too under until up upon us very via was wasn't we we'd we'll we're
we've were weren't what what's when when's where where's whether which while who who's whom whose why
why's will with within without won't would wouldn't yet you you'd you'll you're you've your yours
yourself yourselves also many well even still two three new use used using uses
""".split()),
    "de": set("""
aber alle allem allen aller alles als also am an ander andere anderen auch auf aus bei beim bin bis bist
da damit dann das dass dem den denn der des dich die dies diese diesem diesen dieser dieses dir doch dort
du durch ein eine einem einen einer eines er es etwas euch euer für gegen hat hatte haben hier hin ich
ihm ihn ihnen ihr ihre im in ins ist ja jede jedem jeden jeder jedes jetzt kann kein keine können man
mehr mein meine mich mir mit muss nach nicht nichts noch nur ob oder ohne sehr sein seine sich sie sind
so soll sollte sondern über um und uns unser unter vom von vor war waren warum was weil welche wenn wer
werden wie wir wird wo zu zum zur zwischen
""".split()),
    "fr": set("""
à a au aux avec avoir c ce ces cet cette comme dans de des du elle elles en est et être eu il ils j je
l la le les leur leurs lui m ma mais me même mes moi mon n ne nos notre nous on ont ou où par pas plus
pour qu que qui s sa sans se ses si son sont sur ta te tes toi ton tous tout très tu un une vos votre
vous y été était sont aussi car donc ni ou alors
""".split()),
    "es": set("""
a al algo algunos ante antes como con contra cual cuando de del desde donde durante e el ella ellas
ellos en entre era es esa esas ese eso esos esta estaba estas este esto estos está están fue fueron ha
han hay la las le les lo los más me mi mis mucho muy nada ni no nos nosotros o os otra otro para pero
poco por porque que quien se sea ser si sin sobre son su sus también tanto te tiene tu tus un una uno
unos y ya yo
""".split()),
}


def detect_language(tokens):
    """The language whose stopwords make up the largest share of the tokens,
    if that share is at least 10% (and 2 tokens); else None ("und")."""
    if not tokens:
        return None
    best, best_hits = None, 0
    for lang, stop in STOPWORDS.items():
        hits = sum(1 for t in tokens if t in stop)
        if hits > best_hits:
            best, best_hits = lang, hits
    if best_hits >= 2 and best_hits >= 0.10 * len(tokens):
        return best
    return None


def content_terms(tokens, language):
    """The keyword candidates of a token list (already case-folded): with a
    stopword list, tokens of 3+ characters that are not stopwords (English
    possessive 's dropped); without one (language-independent fallback),
    tokens of 4+ characters. Pure numbers never count."""
    stop = STOPWORDS.get(language)
    out = []
    for t in tokens:
        if language == "en" and (t.endswith("'s") or t.endswith("’s")):
            t = t[:-2]
        if not t or any(c.isdigit() for c in t) and not any(c.isalpha() for c in t):
            continue
        if stop is not None:
            if len(t) < 3 or t in stop:
                continue
        elif len(t) < 4:
            continue
        out.append(t)
    return out


# --------------------------------------------------------------------------
# Analysis


def analyze(text, sentences=DEFAULT_SENTENCES, keywords=DEFAULT_KEYWORDS, title=None, language=None,
            include_text=False, line_sentences=False, progress=None, span=(50, 95)):
    """The analysis of a plain text (paragraphs separated by blank lines).

    Returns {"title", "language", "summary", "summary_sentences", "keywords",
    "keyword_counts", "stats"} — see ops/handlers/README.md. `line_sentences`
    (transcripts, often unpunctuated): in a paragraph with fewer than one
    sentence mark per 50 words, each line counts as a sentence.
    """
    lo, hi = span

    def report(frac, msg):
        if progress is not None:
            progress(lo + (hi - lo) * frac, msg)

    blocks = [b for b in re.split(r"\n[ \t]*\n", text) if WORD_RE.search(b)]
    paragraphs = [" ".join(b.split()) for b in blocks]
    sents = []
    for block, p in zip(blocks, paragraphs):
        if line_sentences and len(_SENTENCE_END.findall(p)) * 50 < len(words(p)):
            sents.extend(" ".join(line.split()) for line in block.split("\n") if WORD_RE.search(line))
        else:
            sents.extend(split_sentences(p))
    clean = "\n\n".join(paragraphs)
    all_words = words(clean)
    folded = [w.casefold() for w in all_words]
    report(0.2, "counted %d words in %d sentences" % (len(all_words), len(sents)))

    lang = language if language in STOPWORDS else (None if language else detect_language(folded))
    terms = content_terms(folded, lang)
    counts = Counter(terms)
    first = {}
    for i, t in enumerate(terms):
        first.setdefault(t, i)
    ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
    top = ranked[:keywords]
    report(0.5, "keywords: %s" % ", ".join(top[:5]))

    summary_sents = summarize(sents, counts, lang, sentences, title)
    report(1.0, "summary of %d sentences" % len(summary_sents))

    stats = {
        "words": len(all_words),
        "unique_words": len(set(folded)),
        "sentences": len(sents),
        "paragraphs": len(paragraphs),
        "characters": len(clean),
        "characters_no_spaces": sum(1 for c in clean if not c.isspace()),
        "reading_time_minutes": reading_time(len(all_words)),
    }
    result = {
        "title": title,
        "language": lang or "und",
        "summary": " ".join(summary_sents),
        "summary_sentences": summary_sents,
        "keywords": top,
        "keyword_counts": {t: counts[t] for t in top},
        "stats": stats,
    }
    if include_text:
        result["text"] = clean
    return result


def reading_time(n_words):
    """Minutes at 200 words per minute, rounded half up to one decimal."""
    return math.floor(n_words * 10 / WORDS_PER_MINUTE + 0.5) / 10


def summarize(sents, counts, language, n, title=None):
    """The n best sentences in document order.

    A sentence's score is the sum, over its distinct keyword candidates, of
    their frequency relative to the most frequent one (doubled for words of
    the title), divided by the square root of its word count; ties go to the
    earlier sentence. Sentences of fewer than 4 words are candidates only when
    there are not n longer ones.
    """
    if not sents or n <= 0:
        return []
    if len(sents) <= n:
        return list(sents)
    top = max(counts.values()) if counts else 1
    title_terms = set(content_terms([w.casefold() for w in words(title or "")], language))
    scored = []
    for i, s in enumerate(sents):
        ws = [w.casefold() for w in words(s)]
        distinct = set(content_terms(ws, language))
        score = sum(counts.get(t, 0) / top * (2 if t in title_terms else 1) for t in distinct)
        score /= math.sqrt(max(1, len(ws)))
        scored.append((score, i, len(ws)))
    long_enough = [x for x in scored if x[2] >= 4]
    pool = long_enough if len(long_enough) >= n else scored
    best = sorted(pool, key=lambda x: (-x[0], x[1]))[:n]
    return [sents[i] for _, i, _ in sorted(best, key=lambda x: x[1])]
