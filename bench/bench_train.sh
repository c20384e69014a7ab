#!/usr/bin/env bash
# bench_train.sh [BUILD_DIR] - training tokens/s and peak RSS of pare's GPT
# against the same model in PyTorch (bench/torch_gpt.py), configs "small" and
# "tiny" at 1 and 2 threads, each run in its own process. Prints a table with
# the ratios pare / torch. Both run with OMP_WAIT_POLICY=PASSIVE at 2 threads and
# ACTIVE at 1 (spinning threads slow either down on 2 cores; docs/performance.md).
# Environment: STEPS_SMALL, STEPS_TINY (timed steps; default 10 and 30),
# WARMUP (default 2), CONFIGS (default "small tiny"), THREADS (default "1 2").
# Timings on a shared machine are noisy: run it on a quiet one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
exe=$build/bench/bench_train
[[ -x $exe ]] || { echo "bench_train.sh: $exe not found; build first (cmake --build $build)" >&2; exit 1; }
py=/usr/bin/python3
have_torch=1
$py -c "import torch" 2>/dev/null || { have_torch=0; echo "bench_train.sh: PyTorch not importable by $py; pare figures only"; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

printf "%-6s %7s %14s %14s %7s %10s %10s\n" config threads "pare tok/s" "torch tok/s" ratio "pare MiB" "torch MiB"
for cfg in ${CONFIGS:-small tiny}; do
  steps=${STEPS_SMALL:-10}
  [[ $cfg == tiny ]] && steps=${STEPS_TINY:-30}
  for th in ${THREADS:-1 2}; do
    # Both run with the same wait policy: PASSIVE at 2 threads (PyTorch needs
    # it; for pare, docs/performance.md measures 8x slower at 2 threads with
    # libgomp's default spinning as soon as another process wants a core).
    wait_policy=ACTIVE
    (( th > 1 )) && wait_policy=PASSIVE
    p=$(OMP_NUM_THREADS=$th OMP_WAIT_POLICY=$wait_policy "$exe" --config "$cfg" --threads "$th" --steps "$steps" \
          --warmup "${WARMUP:-2}" | tail -1)
    pt=$(field tokens_per_s "$p"); pm=$(field rss_mib "$p")
    tt="-"; tm="-"; ratio="-"
    if (( have_torch )); then
      t=$(OMP_NUM_THREADS=$th OMP_WAIT_POLICY=$wait_policy $py "$here/torch_gpt.py" --config "$cfg" --threads "$th" \
            --steps "$steps" --warmup "${WARMUP:-2}" | tail -1)
      tt=$(field tokens_per_s "$t"); tm=$(field rss_mib "$t")
      ratio=$(awk -v a="$pt" -v b="$tt" 'BEGIN { printf "%.2fx", a / b }')
    fi
    printf "%-6s %7s %14s %14s %7s %10s %10s\n" "$cfg" "$th" "$pt" "$tt" "$ratio" "$pm" "$tm"
  done
done
