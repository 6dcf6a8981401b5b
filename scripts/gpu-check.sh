#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA backend's operations against the CPU's, the engine's
# conformance on the GPU in fp32, fp16 and bf16 (against ../shared/golden or $IFW_GOLDEN_DIR), and
# the benchmarks recorded in docs/PERFORMANCE.md.
#   scripts/gpu-check.sh BIN_DIR [OUT_DIR] [full|quick|profile]
# BIN_DIR holds ifw_gpu_checks and ifw-bench (a release build: build/release/tests and
# build/release, or a bundle made by scripts/make-gpu-bundle.sh). Logs go to OUT_DIR.
set -uo pipefail
bin=$1
out=${2:-.}
mode=${3:-full}
mkdir -p "$out"
checks=$(find "$bin" -name ifw_gpu_checks -type f | head -1)
bench=$(find "$bin" -name ifw-bench -type f | head -1)
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap --format=csv | tee "$out/gpu.txt"
# The build, the cores it counts and where its CUDA module is (or why it cannot be used).
"$bench" --version 2>&1 | tee "$out/version.txt"
grep -q "^cuda backend: /" "$out/version.txt" || status=1
timeout 600 "$checks" --gtest_filter='DeviceSelection*:*Cuda*:-*HopperFlash*' 2>&1 | tee "$out/cuda_ops.log" | grep -E "^\[  (FAILED|PASSED|SKIPPED) |relative error|Failure|error" || true
grep -q "^\[  FAILED" "$out/cuda_ops.log" && status=1
# The wgmma flash kernels (versions 6 to 8; 6 is the default on Hopper, so the tests above run
# it too) by name in a process of their own under a time limit: a fault or a hang takes only
# them down. Every run below has a limit too.
timeout 120 "$checks" --gtest_filter='*HopperFlash*' >"$out/cuda_ops_hopper.log" 2>&1
hopper=$?
[ $hopper = 0 ] || status=1
echo "wgmma flash ops (exit $hopper$([ $hopper = 124 ] && echo ', timed out')):"
grep -E "^\[  (PASSED|FAILED) |IFW_CUDA_FLASH=6, 7 or 8" "$out/cuda_ops_hopper.log" | sort -u
grep -A4 "Failure" "$out/cuda_ops_hopper.log" | cut -c1-400 | head -40
# On a compute-capability 9.0 device the wgmma kernels must have run, not version 2 in their place.
if nvidia-smi --query-gpu=compute_cap --format=csv,noheader | grep -q "^9\.0" &&
  grep -q "no sm_90a code" "$out/cuda_ops_hopper.log"; then
  echo "wgmma flash: this 9.0 device ran version 2 in their place (no sm_90a code in this build)"
  status=1
fi
# The benchmarks first: a device session cut short by its time limit still has the figures.
archs="large-v3-turbo large-v3"
batches="24 64"
[ "$mode" = quick ] && archs="large-v3-turbo" && batches="24"
if [ "$mode" = profile ]; then
  # Where the time goes, per operation (every operation waits for the GPU: slower overall).
  IFW_CUDA_PROFILE=1 timeout 300 "$bench" --device cuda --arch large-v3-turbo --batch 24 --tokens 20 \
    --repetitions 1 >"$out/profile_turbo_b24.txt" 2>&1
  IFW_CUDA_PROFILE=1 timeout 300 "$bench" --device cuda --arch large-v3 --batch 8 --tokens 20 \
    --repetitions 1 >"$out/profile_large_b8.txt" 2>&1
  tail -n 25 "$out/profile_turbo_b24.txt" "$out/profile_large_b8.txt"
  archs="large-v3-turbo large-v3"
  batches="64"
fi
# The defaults (steps from CUDA graphs; flash attention v6 on Hopper, v2 elsewhere; decoding
# attention split over the keys with its heads,early tweaks; the second row kernels) at every
# size, then at batch 64 side by side with the defaults before the H200 run of 2026-11-28
# (flash v2, the first row kernels, no split tweaks) and with each choice or opt-in that a whole
# run tells apart: flash v7 and v8 with turbo (76 % encoder at batch 64), self-attention by rows
# (IFW_CUDA_DECODE_ATTENTION=mixed) with large-v3 (69 % decoder), cuBLASLt for every product
# with each shape's algorithm timed (IFW_CUDA_LT=tune) with both. Each other choice is timed
# where it acts by the operations below (a whole run each would not fit a device session).
bench_run() {  # arch, batch, variant
  local vars suffix
  case $3 in
    default) vars="" suffix="" ;;
    previous)
      vars="IFW_CUDA_FLASH=2 IFW_CUDA_ELEMENTWISE=1 IFW_CUDA_SPLIT=none"
      suffix="_previous"
      ;;
    mixed) vars="IFW_CUDA_DECODE_ATTENTION=mixed" suffix="_mixed" ;;
    flash7) vars="IFW_CUDA_FLASH=7" suffix="_flash7" ;;
    flash8) vars="IFW_CUDA_FLASH=8" suffix="_flash8" ;;
    lt_tune) vars="IFW_CUDA_LT=tune" suffix="_lt_tune" ;;
  esac
  timeout 300 env $vars "$bench" --device cuda --arch "$1" --batch "$2" --tokens 100 \
    --repetitions 2 2>&1 | tee "$out/bench_$1_b$2$suffix.txt" || status=1
}
# The defaults at every size first (what a run cut short by its time limit must still have); the
# comparisons come after the conformance suite and the device-failure test.
for arch in $archs; do
  for batch in $batches; do
    bench_run "$arch" "$batch" default
  done
done
# Each operation alone at large-v3's shapes at batch 64 (ifw bench --ops: ms per call and the
# rate it reaches; turbo's layers have the same shapes), with the defaults and with each choice
# that changes a kernel: what the whole-model comparisons cannot tell apart. The decoding
# attention's tweaks (IFW_CUDA_SPLIT: blocks head by head, values loaded with the keys, parts
# combined by their last block) are only measured here, and so are uploads from pageable memory
# (IFW_CUDA_PINNED=0) against the page-locked buffers the features live in.
ops_name() { echo "$1" | sed 's/^IFW_CUDA_//; s/[=,]/_/g' | tr 'A-Z' 'a-z'; }
ops_lines() {  # the rows a variant changes
  case $1 in
    IFW_CUDA_FLASH*) echo "encoder self-attention" ;;
    IFW_CUDA_DECODE_ATTENTION* | IFW_CUDA_SPLIT*) echo "decoder (self|cross)-attention" ;;
    IFW_CUDA_ELEMENTWISE*) echo "layer norm|GELU" ;;
    IFW_CUDA_LT*) echo "product|projection" ;;
    IFW_CUDA_PINNED*) echo "upload" ;;
    *) echo "." ;;
  esac
}
ops_variants="default IFW_CUDA_FLASH=2 IFW_CUDA_FLASH=7 IFW_CUDA_FLASH=8 IFW_CUDA_FLASH=1
  IFW_CUDA_ELEMENTWISE=1 IFW_CUDA_SPLIT=none IFW_CUDA_SPLIT=heads IFW_CUDA_SPLIT=early
  IFW_CUDA_SPLIT=heads,early,fused IFW_CUDA_DECODE_ATTENTION=rows
  IFW_CUDA_DECODE_ATTENTION=split256 IFW_CUDA_LT=1 IFW_CUDA_LT=tune IFW_CUDA_PINNED=0"
ops_run() {  # environment (or "default")
  local file
  file="$out/ops_$(ops_name "$1").txt"
  timeout 300 env $([ "$1" = default ] || echo "$1") "$bench" --ops --device cuda --arch large-v3 \
    --batch 64 --tokens 100 --repetitions 2 >"$file" 2>&1 || status=1
  echo "ops, $1:"
  grep -E "$(ops_lines "$1")|error" "$file" | sed 's/^/  /'
}
# The conformance suite with the defaults in each precision, then in half precision with each
# choice switched back (flash v2, the first row kernels, no split tweaks, steps issued one by
# one, flash v1, decoding attention by rows) and with each opt-in.
conformance() {  # log name, environment...
  local log="$out/conformance_$1.log"
  shift
  timeout 300 env "$@" IFW_TEST_DEVICE=cuda "$checks" --gtest_filter='Corpus/EngineConformance*' \
    >"$log" 2>&1 || status=1
  echo "conformance $(basename "$log" .log): $(grep -E '^\[  (PASSED|FAILED) ' "$log" | tr '\n' ' ')"
  grep -E "worst row|Failure|Expected|Which is|argmax|recorded decoder step" "$log" | head -40
}
for precision in fp32 fp16 bf16; do
  conformance "$precision" IFW_TEST_PRECISION=$precision
done

# A fault on the GPU (a kernel of the test's own writes to address 16) in a process of its own, as
# it leaves the GPU unusable to the process: the engine says the device failed, the transcription
# goes on on the CPU with the CPU's tokens, --device auto then takes the CPU.
timeout 120 "$checks" --gtest_filter='CudaDeviceFailure.*' >"$out/device_failure.log" 2>&1 || status=1
echo "device failure: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/device_failure.log" | tr '\n' ' ')"
grep -E "^\[ fault \]|Failure|Expected|Which is|failed \(|going on there" "$out/device_failure.log" |
  cut -c1-300 | head -20

for arch in $archs; do
  for batch in $batches; do
    variants=""
    if [ "$batch" = 64 ]; then
      variants="previous lt_tune"
      [ "$arch" = large-v3-turbo ] && variants="$variants flash7 flash8"
      [ "$arch" = large-v3 ] && variants="$variants mixed"
    fi
    for variant in $variants; do
      bench_run "$arch" "$batch" "$variant"
    done
  done
done
if [ "$mode" != quick ]; then
  for variant in $ops_variants; do
    ops_run "$variant"
  done
fi
conformance fp16_previous IFW_TEST_PRECISION=fp16 IFW_CUDA_FLASH=2 IFW_CUDA_ELEMENTWISE=1 \
  IFW_CUDA_SPLIT=none
conformance bf16_flash2 IFW_TEST_PRECISION=bf16 IFW_CUDA_FLASH=2
conformance fp16_flash7 IFW_TEST_PRECISION=fp16 IFW_CUDA_FLASH=7
conformance fp16_flash8 IFW_TEST_PRECISION=fp16 IFW_CUDA_FLASH=8
conformance fp32_elementwise1 IFW_TEST_PRECISION=fp32 IFW_CUDA_ELEMENTWISE=1
conformance bf16_elementwise1 IFW_TEST_PRECISION=bf16 IFW_CUDA_ELEMENTWISE=1
conformance fp16_no_graphs IFW_TEST_PRECISION=fp16 IFW_CUDA_GRAPHS=0
conformance fp16_flash1 IFW_TEST_PRECISION=fp16 IFW_CUDA_FLASH=1
conformance fp16_rows IFW_TEST_PRECISION=fp16 IFW_CUDA_DECODE_ATTENTION=rows
conformance bf16_rows IFW_TEST_PRECISION=bf16 IFW_CUDA_DECODE_ATTENTION=rows
conformance fp16_lt_tune IFW_TEST_PRECISION=fp16 IFW_CUDA_LT=tune
conformance fp32_lt_tune IFW_TEST_PRECISION=fp32 IFW_CUDA_LT=tune
conformance fp16_split256 IFW_TEST_PRECISION=fp16 IFW_CUDA_DECODE_ATTENTION=split256
conformance fp16_mixed IFW_TEST_PRECISION=fp16 IFW_CUDA_DECODE_ATTENTION=mixed
conformance fp16_split_fused IFW_TEST_PRECISION=fp16 IFW_CUDA_SPLIT=heads,early,fused
# The first flash-attention kernel's operations against the CPU's (the decoding kernels are
# both checked by the default run).
IFW_CUDA_FLASH=1 timeout 300 "$checks" --gtest_filter='*CudaOps*Attention*:-*HopperFlash*' \
  >"$out/cuda_ops_flash1.log" 2>&1 || status=1
echo "flash v1 ops: $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_ops_flash1.log" | tr '\n' ' ')"

# Whole transcriptions (ifw bench --audio: audio read, windows cut, log-mel, batches, text) of 64
# clips of 95 s with random large-v3-turbo weights at batch 64, with and without the next batch
# prepared while one runs: the pipeline's cost beside the model's.
if [ "$mode" = full ] && [ -n "${IFW_GOLDEN_DIR:-}" ]; then
  clips=$(mktemp -d)
  python3 - "$clips/clip0.wav" <<'PY'
import math, random, struct, sys, wave
random.seed(7)
rate, seconds = 16000, 95
frames = bytearray()
for i in range(rate * seconds):
    t = i / rate
    v = (0.3 * math.sin(2 * math.pi * 220 * t) + random.uniform(-0.1, 0.1)) if t % 2.5 < 1.8 else 0.0
    frames += struct.pack("<h", int(v * 32767))
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(bytes(frames))
PY
  for i in $(seq 1 63); do cp "$clips/clip0.wav" "$clips/clip$i.wav"; done
  for ahead in on off; do
    timeout 300 "$bench" --device cuda --arch large-v3-turbo --batch 64 --tokens 100 --audio "$clips"/*.wav \
      --tokenizer "$IFW_GOLDEN_DIR/models/tiny-random-v3" --prepare-ahead $ahead 2>&1 |
      tee "$out/transcribe_turbo_b64_ahead_$ahead.txt" || status=1
  done
  rm -rf "$clips"
fi

if [ "$mode" = full ]; then
  # Where the time goes at batch 64, by section (the encoder, then the steps of the full batch):
  # every operation waits for the GPU, so the steps run without graphs.
  for arch in large-v3 large-v3-turbo; do
    IFW_CUDA_PROFILE=1 timeout 300 "$bench" --device cuda --arch $arch --batch 64 --tokens 20 \
      --repetitions 1 >"$out/profile_${arch}_b64.txt" 2>&1
    grep -A14 -E "cuda profile, (the encoder|[0-9]+ runs of)" "$out/profile_${arch}_b64.txt"
  done
fi
# The figures again, one line each, where a caller that keeps only the end of the output sees them.
echo "summary:"
for f in "$out"/bench_*.txt "$out"/transcribe_*.txt; do
  [ -f "$f" ] || continue
  echo "  $(basename "$f" .txt): $(grep -hE "^(encoder|throughput|transcribed)| ms per step of " "$f" |
    sed 's/, tokens chosen[^,]*//' | tr -s ' ' | tr '\n' ' ')"
done
# Each variant's throughput against the defaults' at its size (what decides a new default).
throughput() { grep -hoE "^throughput +[0-9.]+" "$1" 2>/dev/null | tr -s ' ' | cut -d' ' -f2; }
for f in "$out"/bench_*_b[0-9]*_*.txt; do
  [ -f "$f" ] || continue
  base=$(basename "$f" .txt)
  default="$out/$(echo "$base" | sed -E 's/(_b[0-9]+)_.*/\1/').txt"
  a=$(throughput "$f") b=$(throughput "$default")
  [ -n "$a" ] && [ -n "$b" ] &&
    echo "  ${base#bench_} against the defaults: $a / $b = $(awk "BEGIN { printf \"%.3f\", $a / $b }")"
done
# The rows each kernel choice changes (name, ms per call, per window, per step, rate).
for variant in $ops_variants; do
  f="$out/ops_$(ops_name "$variant").txt"
  [ -f "$f" ] || continue
  [ "$variant" = default ] && pattern="self-attention|cross-attention|upload|GELU|alone|total" ||
    pattern=$(ops_lines "$variant")
  grep -E "$pattern" "$f" | grep -E " (GB|TFLOP)/s|^total " | cut -c1-40,94- | tr -s ' ' |
    sed "s/^/  ops $(ops_name "$variant"): /"
done
for f in "$out"/conformance_*.log; do
  [ -f "$f" ] || continue
  echo "  $(basename "$f" .log): $(grep -cE '^\[       OK \]' "$f") passed, $(grep -cE '^\[  FAILED  \] .*\([0-9]+ ms\)$' "$f") failed"
done
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
