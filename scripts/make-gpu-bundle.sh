#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU host that has the CUDA toolkit and nothing else:
# the release build's GPU programs (ifw_gpu_checks, ifw-bench) and their CUDA module, the shared
# libraries they load that such a host lacks (fmt, spdlog, FFTW, PCRE2, OpenBLAS; cuBLAS comes with
# the toolkit), and the reference corpus without its weights (make_models.py regenerates them bit for bit).
# With --source it packs instead the committed source and the Debian packages the engine builds
# with (headers, CMake files and libraries, unpacked into a folder; nothing is installed), so that
# the host builds the engine, ifw-bench and the GPU checks itself with its CUDA toolkit, CMake,
# ninja and compiler (IFW_ENGINE_ONLY; docs/GPU.md).
#   scripts/make-gpu-bundle.sh OUT_DIR            (on the GPU host: OUT_DIR/run.sh LOG_DIR)
#   scripts/make-gpu-bundle.sh --source OUT_DIR   (on the GPU host: OUT_DIR/build.sh LOG_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --source ]; then
  out=$2
  golden=${IFW_GOLDEN_DIR:-../shared/golden}
  rm -rf "$out" && mkdir -p "$out/stage/deps" "$out/stage/golden/models" "$out/debs"
  git archive --format=tar --prefix=ifw/ HEAD | tar -C "$out/stage" -xf -
  (cd "$out/debs" && apt-get download nlohmann-json3-dev libfmt-dev libfmt9 libspdlog-dev \
    libspdlog1.10 libcli11-dev libgtest-dev libfftw3-dev libfftw3-single3 libpcre2-dev \
    libpcre2-8-0 zlib1g-dev zlib1g libopenblas-pthread-dev libopenblas0-pthread libgfortran5 \
    libquadmath0 >/dev/null)
  for deb in "$out/debs"/*.deb; do dpkg -x "$deb" "$out/stage/deps"; done
  rm -rf "$out/debs"
  cp -r "$golden/reference" "$out/stage/golden/"
  cp "$golden/make_models.py" "$out/stage/golden/"
  for model in "$golden"/models/*/; do
    mkdir -p "$out/stage/golden/models/$(basename "$model")"
    cp "$model"/*.json "$out/stage/golden/models/$(basename "$model")/"
  done
  tar -C "$out/stage" -cf - . | xz -T0 -6 >"$out/source.tar.xz"
  rm -rf "$out/stage"
  cat >"$out/build.sh" <<'BUILD'
#!/usr/bin/env bash
# Builds the engine, ifw-bench and the GPU checks from the bundled source with this machine's
# CUDA toolkit, CMake, ninja and compiler, then runs gpu-check.sh; logs to $1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${IFW_BUILD_DIR:-$(mktemp -d)}
tar -C "$work" -xJf "$here/source.tar.xz"
deps="$work/deps/usr"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
cmake -S "$work/ifw" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIFW_ENGINE_ONLY=ON \
  -DCMAKE_PREFIX_PATH="$deps;$deps/lib/$multiarch/cmake" -DCMAKE_CUDA_ARCHITECTURES="${IFW_CUDA_ARCHITECTURES:-90}"
ninja -C "$work/build" ifw-bench $([ -n "$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)" ] && echo ifw_gpu_checks)
if [ -z "${IFW_GOLDEN_DIR:-}" ]; then
  python3 "$work/golden/make_models.py" "$work/golden/models" >/dev/null || echo "make_models.py failed"
  export IFW_GOLDEN_DIR="$work/golden"
fi
export LD_LIBRARY_PATH="$deps/lib/$multiarch:$deps/lib/$multiarch/openblas-pthread:${LD_LIBRARY_PATH:-}"
echo "built in $work/build (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
[ "${IFW_BUILD_ONLY:-}" = 1 ] && exit 0
"$work/ifw/scripts/gpu-check.sh" "$work/build" "${1:-.}" "${2:-full}"
BUILD
  chmod +x "$out/build.sh"
  du -sh "$out"/*
  exit 0
fi
out=$1
build=build/release
golden=${IFW_GOLDEN_DIR:-../shared/golden}
rm -rf "$out" && mkdir -p "$out/stage/bin" "$out/stage/lib" "$out/stage/golden/models"
# The CUDA backend is a module the programs load from beside themselves.
cp "$build/tests/ifw_gpu_checks" "$build/ifw-bench" "$build/libifw-cuda.so" "$out/stage/bin/"
strip "$out/stage/bin/"*
for program in "$out/stage/bin/ifw_gpu_checks" "$out/stage/bin/ifw-bench"; do
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
# Unpacks the bundle, regenerates the golden weights and runs gpu-check.sh; its logs go to
# $1/logs.tgz, packed again every 15 s (a run cut short by a time limit still leaves them, and
# some device hosts return only a few files).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-.}
mkdir -p "$out"
work=$(mktemp -d)
logs="$work/logs"
mkdir -p "$logs"
tar -C "$work" -xJf "$here/bundle.tar.xz"
python3 "$work/golden/make_models.py" "$work/golden/models" >/dev/null || echo "make_models.py failed"
cublas=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$work/lib:$cublas:${LD_LIBRARY_PATH:-}"
export IFW_GOLDEN_DIR="$work/golden"
pack() { tar -C "$logs" -czf "$out/logs.tgz.part" . && mv "$out/logs.tgz.part" "$out/logs.tgz"; }
(while sleep 15; do pack; done) &
packer=$!
"$work/gpu-check.sh" "$work/bin" "$logs" "${2:-full}"
status=$?
kill "$packer" 2>/dev/null
wait "$packer" 2>/dev/null
pack
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"/*
