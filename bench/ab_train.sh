#!/usr/bin/env bash
# ab_train.sh CONFIG THREADS STEPS ROUNDS BIN... - A/B timing of bench_train
# binaries (for example a baseline built from an older commit against the
# current one): runs them alternately, ROUNDS times, and prints each binary's
# median tokens/s and every run. Alternating keeps a shared machine's changing
# load from favouring one side. OMP_WAIT_POLICY etc. pass through.
set -euo pipefail
(( $# >= 5 )) || { echo "usage: ab_train.sh CONFIG THREADS STEPS ROUNDS BIN..." >&2; exit 2; }
cfg=$1 th=$2 steps=$3 rounds=$4
shift 4
for _ in $(seq "$rounds"); do
  for b in "$@"; do
    t=$(OMP_NUM_THREADS=$th "$b" --config "$cfg" --threads "$th" --steps "$steps" --warmup 2 | tail -1 |
        sed -n 's/.*tokens_per_s=\([^ ]*\).*/\1/p')
    echo "$b $t"
  done
done | awk '{ n[$1]++; v[$1, n[$1]] = $2; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  END { for (i = 1; i <= k; i++) { b = order[i]; m = n[b]; s = "";
          for (j = 1; j <= m; j++) a[j] = v[b, j];
          for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
          for (j = 1; j <= m; j++) s = s " " v[b, j];
          med = m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2;
          printf "%-50s median %10.1f  runs%s\n", b, med, s } }'
