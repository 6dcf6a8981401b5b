#!/usr/bin/env bash
# Throughput of `ifw serve` with concurrent clients against the same requests sent one by one
# (issue 5): bench/serve_throughput.sh [--model DIR|ID] [--ifw BIN] [--clients 16]
#                                      [--audio FILE] [-- extra serve options]
# Starts a server on a free loopback port, sends CLIENTS requests serially, then all at once,
# and prints a Markdown table: mode, wall time, audio seconds per second, ratio, server peak RSS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
model=${IFW_MODEL:-$here/../../shared/golden/models/tiny-random-v3}
ifw=$here/../build/release/ifw
audio=$here/../../shared/data/openai-whisper/jfk.flac
clients=16
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --ifw) ifw=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --audio) audio=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--model M] [--ifw BIN] [--clients N] [--audio FILE] [-- SERVE OPTIONS]" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null || { echo "$0: curl is missing" >&2; exit 1; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
[ -x "$ifw" ] || { echo "$0: $ifw is not built (cmake --build --preset release)" >&2; exit 1; }

work=$(mktemp -d)
log=$work/serve.log
"$ifw" serve --model "$model" --port 0 --max-concurrent "$clients" "${extra[@]}" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do grep -q "ready:" "$log" && break; sleep 0.1; done
grep -q "ready:" "$log" || { cat "$log" >&2; exit 1; }
port=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f3)
url=http://127.0.0.1:$port/v1/audio/transcriptions
seconds=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$audio" 2>/dev/null || echo 0)

request() { curl -sf -o "$work/out_$1.json" -F "file=@$audio" -F response_format=verbose_json "$url"; }
now() { date +%s.%N; }

request warmup
start=$(now)
for i in $(seq "$clients"); do request "serial_$i"; done
serial=$(calc "$(now) - $start")
start=$(now)
pids=()
for i in $(seq "$clients"); do request "concurrent_$i" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done
concurrent=$(calc "$(now) - $start")
for i in $(seq "$clients"); do
  cmp -s <(grep -o '"tokens": \[[^]]*\]' "$work/out_serial_$i.json" | tr -d ' \n') \
         <(grep -o '"tokens": \[[^]]*\]' "$work/out_concurrent_$i.json" | tr -d ' \n') ||
    { echo "$0: request $i: concurrent tokens differ from serial ones" >&2; exit 1; }
done
peak=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
audio_total=$(calc "$seconds * $clients")
printf '| mode | wall | audio s/s | ratio | server peak RSS |\n|---|---|---|---|---|\n'
printf '| %d one by one | %.2f s | %.1f | 1.00 | |\n' "$clients" "$serial" "$(calc "$audio_total / $serial")"
printf '| %d at once | %.2f s | %.1f | %.2f | %d MiB |\n' "$clients" "$concurrent" \
  "$(calc "$audio_total / $concurrent")" "$(calc "$serial / $concurrent")" $((peak / 1024))
echo "tokens of every concurrent request equal the serial ones"
