#!/bin/sh
# A transcript command for youtube.py built on yt-dlp (pip install yt-dlp, or apt-get
# install yt-dlp), which needs network access to YouTube:
#   CONVEYOR_YOUTUBE_TRANSCRIPT_CMD='/usr/local/lib/conveyor/handlers/transcript-ytdlp.sh "$1"'
# Prints the WebVTT subtitles of video $1 (uploaded ones if there are, else automatic
# captions) in the first language of CONVEYOR_YOUTUBE_SUB_LANGS that exists
# (yt-dlp --sub-langs syntax, default "en.*,en"); youtube.py strips the timings.
set -eu
id=${1:?usage: transcript-ytdlp.sh VIDEO_ID}
url=${VIDEO_URL:-https://www.youtube.com/watch?v=$id}
command -v yt-dlp >/dev/null 2>&1 || { echo "transcript-ytdlp.sh: yt-dlp not found on PATH (pip install yt-dlp)" >&2; exit 127; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-transcript.XXXXXX")
trap 'rm -rf "$dir"' EXIT
trap 'exit 143' TERM INT
yt-dlp --quiet --no-warnings --no-playlist --skip-download --write-subs --write-auto-subs \
       --sub-langs "${CONVEYOR_YOUTUBE_SUB_LANGS:-en.*,en}" --sub-format vtt \
       --output "$dir/%(id)s.%(ext)s" -- "$url" >&2
for f in "$dir"/*.vtt; do
  [ -f "$f" ] || break
  cat "$f"
  exit 0
done
echo "transcript-ytdlp.sh: video $id has no subtitles in ${CONVEYOR_YOUTUBE_SUB_LANGS:-en.*,en}" >&2
exit 1
