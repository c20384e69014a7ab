#!/usr/bin/env bash
# run.sh - install what is missing, build (Release), and run pare's main job on
# its built-in data. Usage: bash scripts/run.sh [pare experiment options, e.g. --dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j "$(nproc)"

# The main job: experiments/quickstart.ini, the whole story on data pare makes
# itself (builtin:markov): a teacher far larger than a core's caches, a student
# distilled from it, the teacher fine-tuned with QAT to W8A8 and W4A8, pruned
# gradually to 90% and structurally (half the heads and MLP neurons), every
# model exported, scored by the inference runtime and timed, then one table
# (bytes, x smaller, loss, decode tokens/s, x faster) and the report's path.
# About two minutes on 2 cores. Running it again reuses what is finished.
# Idle OpenMP threads sleep instead of spinning: on 2 cores a spinning thread
# steals the core the other one needs (PyTorch has the same problem).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
./build/pare experiment experiments/quickstart.ini --out build/quickstart "$@"
echo
echo "every run is a row of build/quickstart/quickstart.db (./build/pare runs --db build/quickstart/quickstart.db);"
echo "see docs/experiments.md for recipes and experiments/shakespeare.ini for the study on tinyshakespeare"
