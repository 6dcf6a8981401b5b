#!/usr/bin/env bash
# Builds and runs the whole test suite: formatting, then every test in an optimised build and
# again under AddressSanitizer + UndefinedBehaviorSanitizer. Warnings are errors here.
# IFW_TEST_PRESETS overrides which builds run (default: "release asan").
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-format.sh
# The openai npm client for the server's tests, at the versions in its package-lock.json.
npm ci --prefix tests/integration/openai_client --no-audit --no-fund --loglevel=error
# playwright-core drives Debian's chromium through the web page's test (tests/browser).
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

jobs=$(nproc)
for preset in ${IFW_TEST_PRESETS:-release asan}; do
  echo "== $preset: configure and build"
  cmake --preset "$preset" -DIFW_BUILD_TESTS=ON -DIFW_WERROR=ON
  cmake --build --preset "$preset" -j "$jobs"
  echo "== $preset: test"
  ctest --preset "$preset" -j "$jobs"
done
echo "test: all green"
