#!/usr/bin/env python3
"""Conveyor handler for `youtube` tasks: a video's transcript, analysed like a document.

    CONVEYOR_YOUTUBE_TRANSCRIPT_CMD='...' conveyor worker --types youtube --exec "python3 ops/handlers/youtube.py"

Payload (stdin): {"url": "https://www.youtube.com/watch?v=ID"} as POST /summarize sends it
(also youtu.be/ID, /shorts/ID, /embed/ID, /live/ID; or {"video_id": ID}), or the URL alone as
plain text; optionally title, sentences (default 3), keywords (default 10), language, include_text.

The transcript comes from CONVEYOR_YOUTUBE_TRANSCRIPT_CMD, run through /bin/sh with the video
id as $1 and in VIDEO_ID, the canonical URL in VIDEO_URL; its stdout is the transcript (plain
text, WebVTT or SRT; timings and markup are stripped). Without it the task fails, naming the
variable. A command that exits with status 75 (rate limited; a stderr line "retry-after S"
may say for how long) makes this handler exit 75 too: the worker answers RETRY_LATER and
the broker holds youtube tasks for a while instead of failing them.
Result: the document result with stats.video_id, video_id and url.
"""

import html
import os
import re
import signal
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import analysis  # noqa: E402
from analysis import HandlerError  # noqa: E402

ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")
HOSTS = {
    "youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com",
    "youtube-nocookie.com", "www.youtube-nocookie.com",
}
SHORT_HOSTS = {"youtu.be", "www.youtu.be"}
PATH_FORMS = re.compile(r"/(?:shorts|embed|live|v|e)/([^/]+)/?")
FORMS = "youtube.com/watch?v=ID, youtu.be/ID, youtube.com/shorts/ID or youtube.com/embed/ID"
DEFAULT_TIMEOUT_S = 300


def video_id(url):
    """The 11-character video id of a YouTube URL; HandlerError if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise HandlerError("url must be a non-empty string")
    u = url.strip()
    if "://" not in u:
        u = "https://" + u
    try:
        parts = urllib.parse.urlsplit(u)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise HandlerError("invalid YouTube URL %r: expected %s" % (url[:200], FORMS))
    if parts.scheme.lower() not in ("http", "https"):
        raise HandlerError("invalid YouTube URL %r: the scheme must be http or https" % url[:200])
    candidate = None
    if host in SHORT_HOSTS:
        candidate = parts.path.strip("/")
    elif host in HOSTS:
        if parts.path.rstrip("/") == "/watch":
            candidate = (urllib.parse.parse_qs(parts.query).get("v") or [""])[0]
        else:
            m = PATH_FORMS.fullmatch(parts.path)
            candidate = m.group(1) if m else None
    else:
        raise HandlerError("invalid YouTube URL %r: %s is not a YouTube host; expected %s"
                           % (url[:200], host or "no host", FORMS))
    if not candidate:
        raise HandlerError("invalid YouTube URL %r: no video id; expected %s" % (url[:200], FORMS))
    if not ID_RE.fullmatch(candidate):
        raise HandlerError("invalid YouTube URL %r: video id %r is not 11 characters of A-Z a-z 0-9 _ -"
                           % (url[:200], candidate[:40]))
    return candidate


def canonical_url(vid):
    return "https://www.youtube.com/watch?v=" + vid


_TIMING = re.compile(r"^\s*(?:\d+:)?\d{1,2}:\d{2}[.,]\d{3}\s+-->\s+(?:\d+:)?\d{1,2}:\d{2}[.,]\d{3}")


def clean_transcript(text):
    """Plain text from a transcript: WebVTT and SRT lose their header, cue
    numbers, timings, NOTE/STYLE blocks and inline tags; lines repeated by
    rolling captions appear once. Plain text is returned as it is."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    is_vtt = text.startswith("WEBVTT")
    if not is_vtt and not any(_TIMING.match(line) for line in text.split("\n")[:50]):
        return text
    out = []
    skipping_block = is_vtt  # the WEBVTT header block runs to the first blank line
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            skipping_block = False
            continue
        if skipping_block:
            continue
        if s.startswith(("NOTE", "STYLE", "REGION")) and is_vtt:
            skipping_block = True
            continue
        if _TIMING.match(s) or s.isdigit():
            continue
        s = re.sub(r"<[^>]*>", "", s)  # <c>, <00:00:01.000>, <i>, <v Speaker>
        s = " ".join(html.unescape(s).split())
        if s and (not out or out[-1] != s):
            out.append(s)
    return "\n".join(out)


def run_command(argv, env, timeout):
    """Runs the transcript command in a process group of its own, so that a
    timeout, or a SIGTERM to this handler (the worker cancelling the task),
    stops everything it started. Returns (status or None on timeout, stdout, stderr)."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=os.setpgrp)

    def stop(sig=None, frame=None):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(2.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the group
        except OSError:
            pass
        if sig is not None:
            os._exit(128 + sig)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        out, err = proc.communicate(timeout=timeout if timeout > 0 else None)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        stop()
        proc.communicate()
        return None, b"", b""
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def transcript(vid, progress):
    cmd = os.environ.get("CONVEYOR_YOUTUBE_TRANSCRIPT_CMD", "").strip()
    if not cmd:
        raise HandlerError("no transcript source: set CONVEYOR_YOUTUBE_TRANSCRIPT_CMD to a command that prints "
                           "the transcript of video $1 (see ops/handlers/README.md)")
    try:
        timeout = float(os.environ.get("CONVEYOR_YOUTUBE_TRANSCRIPT_TIMEOUT", str(DEFAULT_TIMEOUT_S)))
    except ValueError:
        raise HandlerError("CONVEYOR_YOUTUBE_TRANSCRIPT_TIMEOUT must be a number of seconds")
    env = dict(os.environ, VIDEO_ID=vid, VIDEO_URL=canonical_url(vid))
    progress(15, "fetching the transcript of %s" % vid)
    returncode, out, err = run_command(["/bin/sh", "-c", cmd, "conveyor-transcript", vid], env, timeout)
    if returncode is None:
        raise HandlerError("the transcript command did not finish within %g s (CONVEYOR_YOUTUBE_TRANSCRIPT_TIMEOUT)" % timeout)
    if returncode != 0:
        lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        detail = lines[-1] if lines else "no message on stderr"
        if returncode == analysis.RETRY_LATER_STATUS:
            after = None
            for line in lines:
                m = re.fullmatch(r"retry-after\s+(\d+(?:\.\d+)?)", line)
                if m:
                    after = float(m.group(1))
            raise analysis.RetryLater("the transcript source is rate limited (status 75) for video %s: %s"
                                      % (vid, detail), after)
        status = "signal %d" % -returncode if returncode < 0 else "status %d" % returncode
        raise HandlerError("the transcript command failed with %s for video %s: %s" % (status, vid, detail))
    try:
        text = out.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = out.decode("utf-8", "replace")
    text = clean_transcript(text)
    if not analysis.WORD_RE.search(text):
        raise HandlerError("no transcript: CONVEYOR_YOUTUBE_TRANSCRIPT_CMD printed nothing for video %s" % vid)
    progress(50, "transcript of %d characters" % len(text))
    return text


def main(raw, progress):
    progress(5, "reading the payload")
    obj, raw = analysis.parse_payload(raw)
    opts = analysis.analysis_options(obj)
    if obj is None:
        url = analysis.decode_text(raw).strip()
        vid = video_id(url)
    elif obj.get("url") is not None:
        vid = video_id(analysis.str_option(obj, "url"))
    elif obj.get("video_id") is not None:
        vid = analysis.str_option(obj, "video_id").strip()
        if not ID_RE.fullmatch(vid):
            raise HandlerError("video_id %r is not 11 characters of A-Z a-z 0-9 _ -" % vid[:40])
    elif obj.get("text") is not None:
        vid = video_id(obj["text"])  # a JSON string payload: the URL
    else:
        raise HandlerError("the payload has no url: send {\"url\": \"https://www.youtube.com/watch?v=...\"}")
    progress(10, "video %s" % vid)
    text = transcript(vid, progress)
    result = analysis.analyze(
        text,
        sentences=opts["sentences"],
        keywords=opts["keywords"],
        title=opts["title"],
        language=opts["language"],
        include_text=opts["include_text"],
        line_sentences=True,
        progress=progress,
        span=(55, 95),
    )
    result["format"] = "transcript"
    result["source"] = "youtube"
    result["video_id"] = vid
    result["url"] = canonical_url(vid)
    result["stats"]["video_id"] = vid
    progress(100, "done")
    return result


if __name__ == "__main__":
    sys.exit(analysis.run_handler("youtube", main))
