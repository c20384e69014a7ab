#!/usr/bin/env bash
# quant_results.sh [BUILD_DIR] - the quantization results table of docs/quantization.md: validation
# loss (200 batches) of the nanoGPT CPU baseline model on tinyshakespeare under every setting, for
# SEEDS seeds (default "1 2 3"), with mean and spread.
#
# Per seed: the float baseline (bench/nanogpt_baseline.sh's recipe: 4 layers, 4 heads, width 128,
# context 64, batch 12, 2000 steps, lr 1e-3 -> 1e-4, no biases, tied head, character vocabulary),
# then from it
#   PTQ  `pare quantize` with 32 calibration batches: W8A8; W4A8; weight-only groups of 32 at 4, 3
#        and 2 bits with the min-max, MSE and least-squares observers
#   QAT  `pare train --init` for 500 steps (lr 3e-4 -> 3e-5, warmup 50): W8A8; W4A8; weight-only
#        groups of 32 at 4, 3 and 2 bits with min-max scales (STE) and with LSQ
#   float the same 500-step fine-tune without quantization: the control every QAT row is measured
#        against (QAT gets 500 more steps than PTQ)
# Every figure is `pare eval CKPT --eval-batches 200` (a quantized checkpoint evaluates its quantized
# forward, which its model file reproduces: tests/test_quant_parity.c). Nothing is tuned per seed.
# The embeddings and the tied LM head stay float (docs/quantization.md, "Where it applies").
#
# Environment: SEEDS, THREADS (default 2), WORK (default a temporary directory, kept), STEPS (2000),
# FT_STEPS (500). Data: $PARE_SHARED_DATA or ../shared/data/tinyshakespeare.txt. Prints the table and
# writes $WORK/results.tsv (seed, setting, val_loss).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
pare=$build/pare
data=${PARE_SHARED_DATA:-$here/../../shared/data}/tinyshakespeare.txt
[[ -f "$data" ]] || { echo "quant_results: $data not found (see README.md, Data)" >&2; exit 1; }
[[ -x "$pare" ]] || { echo "quant_results: $pare not found: build first" >&2; exit 1; }
work=${WORK:-$(mktemp -d /tmp/pare-quant-results.XXXXXX)}
mkdir -p "$work"
threads=${THREADS:-2}
steps=${STEPS:-2000}
ft=${FT_STEPS:-500}
export PARE_DB=none OMP_WAIT_POLICY=PASSIVE
base=(--data "$data" --vocab char --n-layer 4 --n-head 4 --n-embd 128 --ctx 64 --batch 12 --beta2 0.99
      --weight-decay 0.1 --grad-clip 1.0 --bias false --tied --eval-batches 200 --threads "$threads"
      --sample-tokens 0 --log-every 1000000)
tune=(--steps "$ft" --lr 3e-4 --min-lr 3e-5 --warmup 50 --eval-every 0)
tsv=$work/results.tsv
: >"$tsv"
evalj() { "$pare" eval "$1" --eval-batches 200 --threads "$threads" --json | grep -o '"val_loss":[^,}]*' | cut -d: -f2; }
row() { echo -e "$1\t$2\t$3" >>"$tsv"; echo "  seed $1 $2: $3"; }

g32=(--granularity group --group-size 32)
declare -A ptq=(
  [ptq-w8a8]="--w-bits 8 --a-bits 8"
  [ptq-w4a8]="--w-bits 4 --a-bits 8 ${g32[*]}"
  [ptq-w4g32-minmax]="--w-bits 4 ${g32[*]}" [ptq-w4g32-mse]="--w-bits 4 ${g32[*]} --observer mse"
  [ptq-w4g32-lsfit]="--w-bits 4 ${g32[*]} --observer least-squares"
  [ptq-w3g32-minmax]="--w-bits 3 ${g32[*]}" [ptq-w3g32-mse]="--w-bits 3 ${g32[*]} --observer mse"
  [ptq-w3g32-lsfit]="--w-bits 3 ${g32[*]} --observer least-squares"
  [ptq-w2g32-minmax]="--w-bits 2 ${g32[*]}" [ptq-w2g32-mse]="--w-bits 2 ${g32[*]} --observer mse"
  [ptq-w2g32-lsfit]="--w-bits 2 ${g32[*]} --observer least-squares"
)
declare -A qat=(
  [qat-w8a8]="--w-bits 8 --a-bits 8"
  [qat-w4a8]="--w-bits 4 --a-bits 8 ${g32[*]}"
  [qat-w4g32-minmax]="--w-bits 4 ${g32[*]}" [qat-w4g32-lsq]="--w-bits 4 ${g32[*]} --lsq"
  [qat-w3g32-minmax]="--w-bits 3 ${g32[*]}" [qat-w3g32-lsq]="--w-bits 3 ${g32[*]} --lsq"
  [qat-w2g32-minmax]="--w-bits 2 ${g32[*]}" [qat-w2g32-lsq]="--w-bits 2 ${g32[*]} --lsq"
)
echo "== quant_results: work directory $work, $threads thread(s), load $(cut -d' ' -f1-3 /proc/loadavg)"
for seed in ${SEEDS:-1 2 3}; do
  f=$work/float_s$seed.ckpt
  if [[ ! -f $f ]]; then
    "$pare" train "${base[@]}" --steps "$steps" --lr 1e-3 --min-lr 1e-4 --warmup 100 --eval-every 0 --seed "$seed" \
      --out "$f" >"$work/float_s$seed.log" 2>&1
  fi
  row "$seed" float "$(evalj "$f")"
  c=$work/ft_s$seed.ckpt
  [[ -f $c ]] || "$pare" train --init "$f" "${base[@]}" "${tune[@]}" --seed "$seed" --out "$c" >"$work/ft_s$seed.log" 2>&1
  row "$seed" float-ft "$(evalj "$c")"
  for name in $(printf '%s\n' "${!ptq[@]}" | sort); do
    o=$work/${name}_s$seed.ckpt
    # shellcheck disable=SC2086
    [[ -f $o ]] || "$pare" quantize "$f" --out "$o" ${ptq[$name]} --calib-batches 32 --eval-batches 1 \
      --threads "$threads" >"$work/${name}_s$seed.log" 2>&1
    row "$seed" "$name" "$(evalj "$o")"
  done
  for name in $(printf '%s\n' "${!qat[@]}" | sort); do
    o=$work/${name}_s$seed.ckpt
    # shellcheck disable=SC2086
    [[ -f $o ]] || "$pare" train --init "$f" "${base[@]}" "${tune[@]}" --seed "$seed" ${qat[$name]} --out "$o" \
      >"$work/${name}_s$seed.log" 2>&1
    row "$seed" "$name" "$(evalj "$o")"
  done
done
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - "$tsv" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    seed, name, v = line.split("\t")
    rows[name][seed] = float(v)
float_mean = statistics.mean(rows["float"].values())
ft_mean = statistics.mean(rows["float-ft"].values())
print("| setting | seeds | val loss mean | spread (min .. max) | vs float | vs its float control |")
print("|---|---:|---:|---:|---:|---:|")
for name in sorted(rows, key=lambda n: (n not in ("float", "float-ft"), n)):
    v = list(rows[name].values())
    m = statistics.mean(v)
    ref = ft_mean if name.startswith("qat") or name == "float-ft" else float_mean
    print("| %s | %d | %.4f | %.4f .. %.4f | %+.2f%% | %+.2f%% |" % (name, len(v), m, min(v), max(v),
          100 * (m - float_mean) / float_mean, 100 * (m - ref) / ref))
EOF
