#!/usr/bin/env bash
# Makes long recordings of speech and silence for memory and throughput measurements:
#   bench/make_long_audio.sh OUT_DIR SECONDS...   ->  OUT_DIR/speech_<SECONDS>s.opus
# One 40 s unit (espeak-ng speech, then silence) is encoded once as Opus and repeated by stream
# copy, so that three hours take seconds to make and a few megabytes on disk.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR SECONDS..." >&2
  exit 2
fi
out=$1
shift
for tool in espeak-ng ffmpeg; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unit_seconds=40
text="Welcome to the weekly meeting. First, the budget for next year: we spent less on travel \
and more on equipment, and the new servers arrived on time. Second, the schedule. The release \
moves to the end of March, because testing found problems with long recordings. Third, questions \
from the team. Please send them before Friday, and we will answer them in the next meeting."
espeak-ng -v en-us -s 150 -w "$work/speech.wav" "$text"
# Speech, then silence up to the unit's length; Opus at 16 kHz mono, as meetings are often kept.
ffmpeg -hide_banner -loglevel error -i "$work/speech.wav" \
  -af "aresample=16000,apad=whole_dur=${unit_seconds}" -ac 1 -c:a libopus -b:a 24k \
  "$work/unit.opus"

for seconds in "$@"; do
  case $seconds in '' | *[!0-9]*) echo "$0: not a number of seconds: $seconds" >&2; exit 2 ;; esac
  loops=$(((seconds + unit_seconds - 1) / unit_seconds))
  target="$out/speech_${seconds}s.opus"
  ffmpeg -hide_banner -loglevel error -y -stream_loop $((loops - 1)) -i "$work/unit.opus" \
    -t "$seconds" -c copy "$target.tmp.opus"
  mv "$target.tmp.opus" "$target"
  echo "$target"
done
