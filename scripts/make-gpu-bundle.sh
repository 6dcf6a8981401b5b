#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU host that has the CUDA toolkit and nothing else:
# the release build's GPU programs (ifw_gpu_checks, ifw-bench), the shared libraries they load that
# such a host lacks (fmt, spdlog, FFTW, PCRE2, OpenBLAS; cuBLAS comes with the toolkit), and the
# reference corpus without its weights (make_models.py regenerates them bit for bit).
#   scripts/make-gpu-bundle.sh OUT_DIR      (then, on the GPU host: OUT_DIR/run.sh LOG_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
build=build/release
golden=${IFW_GOLDEN_DIR:-../shared/golden}
rm -rf "$out" && mkdir -p "$out/stage/bin" "$out/stage/lib" "$out/stage/golden/models"
cp "$build/tests/ifw_gpu_checks" "$build/ifw-bench" "$out/stage/bin/"
strip "$out/stage/bin/"*
for program in "$out/stage/bin/"*; do
  ldd "$program" | awk '/=> \// {print $3}' |
    grep -E 'libfmt|libspdlog|libfftw3f|libpcre2' | xargs -r -I{} cp -L {} "$out/stage/lib/"
done
blas=$(ldconfig -p | awk '/libopenblas.so.0 / {print $NF; exit}')
[ -n "$blas" ] && cp -L "$blas" "$out/stage/lib/libopenblas.so.0"
cp -r "$golden/reference" "$out/stage/golden/"
cp "$golden/make_models.py" "$golden/README.md" "$out/stage/golden/"
for model in "$golden"/models/*/; do
  name=$(basename "$model")
  mkdir -p "$out/stage/golden/models/$name"
  cp "$model"/*.json "$out/stage/golden/models/$name/"
done
cp scripts/gpu-check.sh "$out/stage/"
tar -C "$out/stage" -cf - . | xz -T0 -6 >"$out/bundle.tar.xz"
rm -rf "$out/stage"
cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Unpacks the bundle, regenerates the golden weights and runs gpu-check.sh; logs to $1.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
tar -C "$work" -xJf "$here/bundle.tar.xz"
python3 "$work/golden/make_models.py" "$work/golden/models" >/dev/null || echo "make_models.py failed"
cublas=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$work/lib:$cublas:${LD_LIBRARY_PATH:-}"
export IFW_GOLDEN_DIR="$work/golden"
"$work/gpu-check.sh" "$work/bin" "${1:-.}" "${2:-full}"
RUN
chmod +x "$out/run.sh"
du -sh "$out"/*
