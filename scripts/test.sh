#!/usr/bin/env bash
# test.sh - install what is missing, build, and run the whole test suite twice:
# a Release build with -Werror, then the same tests under AddressSanitizer and
# UndefinedBehaviorSanitizer. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test

jobs=$(nproc)
for type in Release Sanitize; do
  dir="build-test-${type,,}"
  echo "== $type build in $dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DPARE_WERROR=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "== $type tests"
  # ASan's leak checker does not run under ptrace-like sandboxes consistently;
  # it is on by default and stays on: a leak fails the run.
  ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
