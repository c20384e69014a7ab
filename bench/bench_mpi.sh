#!/usr/bin/env bash
# bench_mpi.sh [PARE] - data-parallel training on one machine: the "small"
# config of bench_train.c (6 layers, 6 heads, width 384, ctx 256, batch 8,
# byte vocabulary) trained by pare train at 1 rank x 1 thread, 1 rank x 2
# threads and 2 ranks x 1 thread (mpirun), interleaved over ROUNDS rounds
# in one run, with tokens/s, each against 1x1, and the share of the step
# spent in the gradient exchange (comm_seconds / train_seconds from pare's
# --json). Env: STEPS (default 6), ROUNDS (default 2), DATA (default
# builtin:markov).
set -euo pipefail
PARE=$(realpath "${1:-build/pare}")
command -v mpirun >/dev/null || { echo "bench_mpi: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_WAIT_POLICY=PASSIVE
STEPS=${STEPS:-6} ROUNDS=${ROUNDS:-2} DATA=${DATA:-builtin:markov}
A=(train --data "$DATA" --vocab byte --n-layer 6 --n-head 6 --n-embd 384 --ctx 256 --batch 8 --steps "$STEPS"
   --eval-batches 1 --sample-tokens 0 --out "" --db none --json)
num() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -1 | cut -d: -f2; }
declare -A tps comm
for r in $(seq "$ROUNDS"); do
  for cfg in 1x1 1x2 2x1; do
    ranks=${cfg%x*} threads=${cfg#*x}
    if [[ $ranks == 1 ]]; then j=$("$PARE" "${A[@]}" --threads "$threads" 2>/dev/null)
    else j=$(mpirun -np "$ranks" --oversubscribe --bind-to none "$PARE" "${A[@]}" --threads "$threads" 2>/dev/null); fi
    t=$(num tokens_per_s "$j") c=$(num comm_seconds "$j") s=$(num train_seconds "$j")
    tps[$cfg]="${tps[$cfg]:-} $t"
    comm[$cfg]="${comm[$cfg]:-} $(awk -v c="$c" -v s="$s" 'BEGIN {printf "%.3f", c / s}')"
    echo "round $r $cfg: $t tok/s, comm $c s of $s s"
  done
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
base=$(med <<<"${tps[1x1]}")
printf '\n%-22s %10s %9s %12s\n' "ranks x threads" "tok/s" "vs 1x1" "comm share"
for cfg in 1x1 1x2 2x1; do
  t=$(med <<<"${tps[$cfg]}") c=$(med <<<"${comm[$cfg]}")
  printf '%-22s %10.0f %8.2fx %11.1f%%\n' "$cfg" "$t" "$(awk -v a="$t" -v b="$base" 'BEGIN {print a / b}')" \
    "$(awk -v c="$c" 'BEGIN {print 100 * c}')"
done
