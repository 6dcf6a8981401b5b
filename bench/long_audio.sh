#!/usr/bin/env bash
# Peak memory and speed of `ifw transcribe` on long recordings (issue 4's flat-memory promise):
#   bench/long_audio.sh [--model DIR|ID] [--ifw BIN] [--work DIR] [--lengths "180 600 10800"]
#                       [--batches "default 4"] [-- extra transcribe options]
# Prints a Markdown table: audio length, batch size, peak RSS (GNU time), wall time, ×realtime.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
model=${IFW_MODEL:-$here/../../shared/golden/models/tiny-random-v3}
ifw=$here/../build/release/ifw
work=${TMPDIR:-/tmp}/ifw-long-audio
lengths="180 600 10800"
batches="default 4"
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --ifw) ifw=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --lengths) lengths=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--model M] [--ifw BIN] [--work DIR] [--lengths \"S...\"] [--batches \"B...\"] [-- OPTIONS]" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "$0: GNU time (/usr/bin/time) is missing (scripts/install-deps.sh)" >&2; exit 1; }
[ -x "$ifw" ] || { echo "$0: $ifw is not built (cmake --build --preset release)" >&2; exit 1; }

# shellcheck disable=SC2086
"$here/make_long_audio.sh" "$work" $lengths >/dev/null
echo "| audio | batch | peak RSS | wall | ×realtime |"
echo "|---|---|---|---|---|"
for seconds in $lengths; do
  for batch in $batches; do
    args=()
    [ "$batch" = default ] || args=(--batch-size "$batch")
    out="$work/out_${seconds}_${batch}"
    rm -rf "$out"
    /usr/bin/time -f "%M %e" -o "$work/time.txt" "$ifw" transcribe "$work/speech_${seconds}s.opus" \
      --model "$model" --language en --progress none -q -f srt,verbose_json -o "$out" \
      "${args[@]}" "${extra[@]}"
    read -r rss_kib wall <"$work/time.txt"
    awk -v s="$seconds" -v b="$batch" -v k="$rss_kib" -v w="$wall" 'BEGIN {
      printf "| %s | %s | %.1f MiB | %.1f s | %.1f× |\n", (s >= 3600 ? sprintf("%.1f h", s / 3600) : sprintf("%d min", s / 60)), b, k / 1024, w, s / w }'
  done
done
