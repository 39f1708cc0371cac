"""ops/handlers/youtube.py: URL validation, the transcript command, the analysis of transcripts."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from handler_support import FIXTURES, HANDLERS
from handler_support import run_handler  # noqa: F401  (fixtures)

import analysis
import youtube

FAKE = "sh %s \"$1\"" % shlex.quote(str(FIXTURES / "fake_transcript.sh"))
ENV = {"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": FAKE}
TRANSCRIPT_LINES = (FIXTURES / "transcript.txt").read_text().splitlines()


@pytest.mark.parametrize("url", [
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "http://youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    "https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ",
    "https://music.youtube.com/watch?v=dQw4w9WgXcQ&list=RDdQw4w9WgXcQ",
    "https://youtu.be/dQw4w9WgXcQ",
    "https://youtu.be/dQw4w9WgXcQ?si=abcdef&t=10",
    "https://www.youtube.com/shorts/dQw4w9WgXcQ",
    "https://www.youtube.com/embed/dQw4w9WgXcQ?start=3",
    "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
    "https://www.youtube.com/live/dQw4w9WgXcQ",
    "www.youtube.com/watch?v=dQw4w9WgXcQ",
    "  https://WWW.YouTube.com/watch?v=dQw4w9WgXcQ  ",
])
def test_video_id_from_url(url):
    assert youtube.video_id(url) == "dQw4w9WgXcQ"


@pytest.mark.parametrize("url,fragment", [
    ("https://vimeo.com/123456", "vimeo.com is not a YouTube host"),
    ("https://youtube.com.evil.example/watch?v=dQw4w9WgXcQ", "is not a YouTube host"),
    ("https://www.youtube.com/watch?v=short", "video id 'short' is not 11 characters"),
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQx", "is not 11 characters"),
    ("https://www.youtube.com/watch?v=dQw4w9WgX$Q", "is not 11 characters"),
    ("https://www.youtube.com/watch", "no video id"),
    ("https://www.youtube.com/channel/UCabcdefghijk", "no video id"),
    ("https://youtu.be/", "no video id"),
    ("ftp://www.youtube.com/watch?v=dQw4w9WgXcQ", "the scheme must be http or https"),
    ("", "url must be a non-empty string"),
])
def test_invalid_urls(url, fragment):
    with pytest.raises(analysis.HandlerError) as e:
        youtube.video_id(url)
    assert fragment in str(e.value)


def test_transcript_is_analysed(run_handler):
    run = run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=ENV)
    assert run.rc == 0, run
    r = run.result
    assert r["video_id"] == "dQw4w9WgXcQ" and r["stats"]["video_id"] == "dQw4w9WgXcQ"
    assert r["url"] == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert r["format"] == "transcript"
    st = r["stats"]
    # no punctuation: each caption line is a sentence
    assert (st["words"], st["sentences"], st["paragraphs"]) == (42, 7, 1)
    assert {"priority", "broker"} <= set(r["keywords"][:4])
    assert len(r["summary_sentences"]) == 3
    assert all(s in TRANSCRIPT_LINES for s in r["summary_sentences"])
    idx = [TRANSCRIPT_LINES.index(s) for s in r["summary_sentences"]]
    assert idx == sorted(idx)
    messages = [m for _, m in run.progress]
    assert "video dQw4w9WgXcQ" in messages and "fetching the transcript of dQw4w9WgXcQ" in messages
    assert run.progress[-1] == (100, "done")


def test_raw_url_payload_and_video_id_member(run_handler):
    a = run_handler("youtube", "https://www.youtube.com/shorts/dQw4w9WgXcQ\n", env=ENV)
    b = run_handler("youtube", {"video_id": "dQw4w9WgXcQ", "sentences": 1}, env=ENV)
    assert a.rc == 0 and b.rc == 0, (a, b)
    assert a.result["stats"]["words"] == 42 and len(b.result["summary_sentences"]) == 1


def test_webvtt_transcript_is_cleaned(run_handler):
    run = run_handler("youtube", {"url": "https://youtu.be/vttvttvtt01", "include_text": True}, env=ENV)
    assert run.rc == 0, run
    r = run.result
    assert r["text"] == "Hello and welcome. Today we look at queues. Queues & workers matter."
    assert (r["stats"]["words"], r["stats"]["sentences"]) == (11, 3)


def test_clean_srt():
    srt = "1\n00:00:01,000 --> 00:00:02,000\nFirst line\n\n2\n00:00:02,000 --> 00:00:03,000\n<i>Second</i> line\n"
    assert youtube.clean_transcript(srt) == "First line\nSecond line"
    assert youtube.clean_transcript("plain words\n42\n") == "plain words\n42\n"


def fails_with(run, *fragments):
    assert run.rc == 1, run
    assert run.stdout == b""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("youtube: "), run.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_without_a_transcript_command(run_handler):
    fails_with(run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}),
               "no transcript source: set CONVEYOR_YOUTUBE_TRANSCRIPT_CMD")


def test_failing_empty_and_missing_commands(run_handler):
    fails_with(run_handler("youtube", {"url": "https://youtu.be/failfail001"}, env=ENV),
               "the transcript command failed with status 3 for video failfail001: fake-transcript: video failfail001 is private")
    fails_with(run_handler("youtube", {"url": "https://youtu.be/emptyempt01"}, env=ENV),
               "no transcript: CONVEYOR_YOUTUBE_TRANSCRIPT_CMD printed nothing for video emptyempt01")
    fails_with(run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"},
                           env={"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": "no-such-transcript-tool \"$1\""}),
               "failed with status 127", "not found")


def test_invalid_url_does_not_run_the_command(run_handler, tmp_path):
    marker = tmp_path / "ran"
    env = {"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": "touch %s; echo words" % shlex.quote(str(marker))}
    fails_with(run_handler("youtube", {"url": "https://example.com/watch?v=dQw4w9WgXcQ"}, env=env),
               "invalid YouTube URL", "example.com is not a YouTube host")
    fails_with(run_handler("youtube", {"title": "no url"}, env=env), "the payload has no url")
    fails_with(run_handler("youtube", "not a url at all", env=env), "invalid YouTube URL")
    assert not marker.exists()


def test_transcript_timeout_stops_the_command_group(run_handler, tmp_path):
    pidfile = tmp_path / "pid"
    env = {"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": "sleep 30 & echo $! > %s; wait" % shlex.quote(str(pidfile)),
           "CONVEYOR_YOUTUBE_TRANSCRIPT_TIMEOUT": "1"}
    started = time.monotonic()
    fails_with(run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=env, timeout=20),
               "did not finish within 1 s (CONVEYOR_YOUTUBE_TRANSCRIPT_TIMEOUT)")
    assert time.monotonic() - started < 10
    assert_gone(int(pidfile.read_text()))


def test_sigterm_to_the_handler_stops_the_command(tmp_path):
    # The worker cancels a task with SIGTERM to the handler's process group; the transcript
    # command runs in a group of its own, so the handler must pass the signal on.
    pidfile = tmp_path / "pid"
    env = dict(os.environ, CONVEYOR_YOUTUBE_TRANSCRIPT_CMD="sleep 30 & echo $! > %s; wait" % shlex.quote(str(pidfile)))
    proc = subprocess.Popen([sys.executable, str(HANDLERS / "youtube.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b'{"url": "https://youtu.be/dQw4w9WgXcQ"}')
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        sleeper = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    assert_gone(sleeper)


def assert_gone(pid):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a zombie whose parent is gone is reaped by init soon; a live sleep is the failure
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the transcript command (pid %d) outlived the handler" % pid)


FAKE_YTDLP = r'''#!/bin/sh
# A stand-in for yt-dlp: writes the fixture's WebVTT where --output says, as yt-dlp would.
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out=$2; shift ;;
    --sub-langs) echo "$2" > "$FAKE_LOG" ;;
    --) url=$2; shift ;;
  esac
  shift
done
id=${url##*v=}
[ "$id" = "nosubsnosub" ] && exit 0
file=$(printf '%s' "$out" | sed "s/%(id)s/$id/; s/%(ext)s/en.vtt/")
cp "$FIXTURE_VTT" "$file"
'''


def test_ytdlp_wrapper_script(run_handler, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "yt-dlp").write_text(FAKE_YTDLP)
    (bindir / "yt-dlp").chmod(0o755)
    log = tmp_path / "langs"
    env = {"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": "sh %s \"$1\"" % shlex.quote(str(HANDLERS / "transcript-ytdlp.sh")),
           "PATH": "%s:%s" % (bindir, os.environ["PATH"]), "FIXTURE_VTT": str(FIXTURES / "transcript.vtt"),
           "FAKE_LOG": str(log), "TMPDIR": str(tmp_path), "CONVEYOR_YOUTUBE_SUB_LANGS": "de,en"}
    run = run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=env)
    assert run.rc == 0, run
    assert run.result["stats"]["words"] == 11 and run.result["stats"]["sentences"] == 3
    assert log.read_text().strip() == "de,en"
    assert not list(tmp_path.glob("conveyor-transcript.*"))  # the temporary directory is removed
    fails_with(run_handler("youtube", {"url": "https://youtu.be/nosubsnosub"}, env=env),
               "failed with status 1", "video nosubsnosub has no subtitles in de,en")
    env["PATH"] = str(tmp_path / "empty")
    env["CONVEYOR_YOUTUBE_TRANSCRIPT_CMD"] = "/bin/sh %s \"$1\"" % shlex.quote(str(HANDLERS / "transcript-ytdlp.sh"))
    fails_with(run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=env),
               "failed with status 127", "yt-dlp not found on PATH")


def test_rate_limited_transcript_source_exits_75(run_handler):
    env = {"CONVEYOR_YOUTUBE_TRANSCRIPT_CMD": "echo 'HTTP 429 Too Many Requests' >&2; echo 'retry-after 120' >&2; exit 75"}
    run = run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=env)
    assert run.rc == 75, run  # EX_TEMPFAIL: the worker answers RETRY_LATER and the broker holds the type
    assert run.stderr.strip() == ("youtube: the transcript source is rate limited (status 75) for video dQw4w9WgXcQ: "
                                  "retry-after 120")
    assert run.fd3_lines[-1] == "retry-after 120"
    env["CONVEYOR_YOUTUBE_TRANSCRIPT_CMD"] = "echo 'quota exceeded' >&2; exit 75"
    run = run_handler("youtube", {"url": "https://youtu.be/dQw4w9WgXcQ"}, env=env)
    assert run.rc == 75 and "quota exceeded" in run.stderr
    assert not any(line.startswith("retry-after") for line in run.fd3_lines)
