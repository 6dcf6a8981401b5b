#!/usr/bin/env bash
# Installs the dependencies and builds the optimised `ifw` binary into build/release/ifw.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release -DIFW_BUILD_TESTS=OFF
cmake --build --preset release
echo "setup: built $(pwd)/build/release/ifw"
