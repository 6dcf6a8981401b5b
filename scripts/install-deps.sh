#!/usr/bin/env bash
# Installs every package ifw needs to build and test on Debian 12 (bookworm). Idempotent.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang-format git
  # engine
  libfftw3-dev libopenblas-dev libpcre2-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  # audio and video decoding, downloads, server state (used by later layers)
  libavformat-dev libavcodec-dev libavutil-dev libswresample-dev libcurl4-openssl-dev
  libcpp-httplib-dev libsqlite3-dev libssl-dev libarchive-dev
  # tests and benchmarks (ffmpeg, espeak-ng and sox make and check test media; GNU time measures peak memory;
  # chromium and unzip: the web page's browser test)
  libgtest-dev libgmock-dev libbenchmark-dev ffmpeg espeak-ng sox time chromium unzip
  # the official openai npm client tests `ifw serve` (tests/integration/openai_client)
  nodejs
)

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo=(sudo)
fi

# npm comes with some builds of nodejs (then Debian's npm package would conflict with it).
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
# Through env, so that sudo does not drop the setting and debconf never prompts.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
