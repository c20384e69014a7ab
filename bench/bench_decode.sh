#!/usr/bin/env bash
# bench_decode.sh [BUILD_DIR] - batch-1 decode speed of the "small" model (6
# layers, 6 heads, width 384, context 256, byte vocabulary) in every storage
# type against its own f32 file, measured in interleaved rounds so that the
# load of a shared machine hits every file alike.
#
# It trains one step (speed does not depend on the weights' values), exports
# f32, q8, q4, q4a and q4 with groups of 128, then runs ROUNDS rounds; a round
# runs `pare bench FILE --tokens 128 --repeat 3` (best of 3) on each file in
# turn. It prints, per file, the median decode tokens/s over the rounds and the
# median (min, max) over rounds of the ratio to the same round's f32 figure.
# Environment: ROUNDS (default 7), THREADS (default "1 2"), LIMBS (default 3),
# KEEP=1 keeps the work directory; OMP_WAIT_POLICY is passed through (unset =
# libgomp's default, which spins briefly; with PASSIVE the decode step's one
# parallel region per token wakes a sleeping thread). docs/inference.md has
# figures and what they mean; bench/bench_infer.py compares with PyTorch and
# reports loss.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
pare=$build/pare
[[ -x $pare ]] || { echo "bench_decode.sh: $pare not found; build first (cmake --build $build)" >&2; exit 1; }
work=$(mktemp -d /tmp/pare-bench-decode.XXXXXX)
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT
export PARE_DB=none

echo "== small model: 1 training step, export (work directory $work)"
"$pare" train --data builtin:markov --vocab byte --n-layer 6 --n-head 6 --n-embd 384 --ctx 256 --batch 8 \
  --steps 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out "$work/small.ckpt" --json >"$work/train.log" 2>&1
files=()
for spec in f32:f32:-1 q8:q8:-1 q4:q4:-1 q4a:q4a:-1 q4g128:q4:128; do
  IFS=: read -r name fmt group <<<"$spec"
  "$pare" export "$work/small.ckpt" --out "$work/$name.pare" --format "$fmt" --group-size "$group" >/dev/null
  files+=("$name")
done

for th in ${THREADS:-1 2}; do
  echo
  echo "== decode, batch 1, 128 tokens, $th thread(s), ${LIMBS:-3} limb(s), ${ROUNDS:-7} rounds"
  for r in $(seq "${ROUNDS:-7}"); do
    for f in "${files[@]}"; do
      v=$("$pare" bench "$work/$f.pare" --tokens 128 --repeat 3 --threads "$th" --limbs "${LIMBS:-3}" --json |
          grep -o '"decode_tokens_per_s":[0-9.e+]*' | cut -d: -f2)
      echo "$r $f $v"
    done
  done | /usr/bin/python3 -c '
import collections, statistics, sys
rows = [line.split() for line in sys.stdin]
files = list(dict.fromkeys(f for _, f, _ in rows))
by = collections.defaultdict(dict)
for r, f, v in rows:
    by[r][f] = float(v)
print("%-8s %14s %10s %18s" % ("file", "decode tok/s", "x f32", "(min, max)"))
for f in files:
    tps = [by[r][f] for r in by]
    rat = [by[r][f] / by[r][files[0]] for r in by]
    print("%-8s %14.1f %10.2f %18s" % (f, statistics.median(tps), statistics.median(rat),
                                       "(%.2f, %.2f)" % (min(rat), max(rat))))
'
done
