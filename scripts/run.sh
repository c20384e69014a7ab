#!/usr/bin/env bash
# run.sh - install what is missing, build (Release), and run pare's main job on
# its built-in data. Usage: bash scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
exec ./build/pare version
