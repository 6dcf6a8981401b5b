#!/usr/bin/env bash
# Throughput of `ifw serve`'s job API (issue 7): N files posted to /v1/jobs (all in one request,
# or --per-request K at a time), waited for until every job has ended:
# bench/jobs_throughput.sh [--model DIR|ID] [--ifw BIN] [--files 50] [--per-request K]
#                          [--audio FILE] [-- extra serve options]
# Prints a Markdown row: files, audio seconds, wall time from the upload to the last job's end,
# audio seconds per second, the server's RSS once loaded and its peak, and checks every job is
# done and its upload removed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
model=${IFW_MODEL:-$here/../../shared/golden/models/tiny-random-v3}
ifw=$here/../build/release/ifw
audio=$here/../../shared/data/openai-whisper/jfk.flac
files=50
per_request=0
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --ifw) ifw=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --per-request) per_request=$2; shift 2 ;;
    --audio) audio=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--model M] [--ifw BIN] [--files N] [--per-request K] [--audio FILE] [-- SERVE OPTIONS]" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null || { echo "$0: curl is missing" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
[ -x "$ifw" ] || { echo "$0: $ifw is not built (cmake --build --preset release)" >&2; exit 1; }

work=$(mktemp -d)
log=$work/serve.log
"$ifw" serve --model "$model" --port 0 --data-dir "$work/data" "${extra[@]}" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do grep -q "ready:" "$log" && break; sleep 0.1; done
grep -q "ready:" "$log" || { cat "$log" >&2; exit 1; }
port=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f3)
base=http://127.0.0.1:$port/v1/jobs
seconds=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$audio" 2>/dev/null || echo 0)
rss_loaded=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")

[ "$per_request" -gt 0 ] || per_request=$files
now() { date +%s.%N; }
start=$(now)
for first in $(seq 1 "$per_request" "$files"); do
  form=()
  for i in $(seq "$first" $((first + per_request - 1))); do
    [ "$i" -le "$files" ] && form+=(-F "file=@$audio;filename=file-$i-${audio##*/}")
  done
  curl -sf -o "$work/created.json" "${form[@]}" "$base"
done
while :; do
  curl -sf -o "$work/jobs.json" "$base"
  open=$({ grep -o '"status":"\(queued\|running\)"' "$work/jobs.json" || true; } | wc -l)
  [ "$open" -eq 0 ] && break
  sleep 0.2
done
wall=$(calc "$(now) - $start")
done_count=$({ grep -o '"status":"done"' "$work/jobs.json" || true; } | wc -l)
[ "$done_count" -eq "$files" ] || { echo "$0: only $done_count of $files jobs are done" >&2; exit 1; }
[ -z "$(ls -A "$work/data/uploads")" ] || { echo "$0: uploads left behind" >&2; exit 1; }
peak=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
audio_total=$(calc "$seconds * $files")
printf '| files | per request | audio | wall | audio s/s | RSS loaded | RSS peak |\n|---|---|---|---|---|---|---|\n'
printf '| %d | %d | %.0f s | %.2f s | %.1f | %d MiB | %d MiB |\n' "$files" "$per_request" "$audio_total" "$wall" \
  "$(calc "$audio_total / $wall")" $((rss_loaded / 1024)) $((peak / 1024))
echo "all $files jobs done; every upload removed"
