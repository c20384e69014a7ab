#!/usr/bin/env bash
# bench_quant.sh [BUILD_DIR] - quantization's speed figures, each measured side by side in one run:
#  1. decode (batch 1, KV cache, 128 tokens) and prompt (one batched forward over the context) tokens/s
#     of the "small" model (6 layers, 6 heads, width 384, context 256) and the nanoGPT baseline model
#     (4 layers, width 128, context 64, no biases, tied head), at 1 and 2 threads, for the files
#       f32                 the float file
#       q8                  int8 weights, float-exact activations (3 limbs: the non-QAT path)
#       w8a8                `pare quantize --w-bits 8 --a-bits 8` (per channel, static int8 activations)
#       w4a8                `--w-bits 4 --a-bits 8 --granularity group --group-size 32`
#       w4a8g128            the same with groups of 128
#       w4a16               `--w-bits 4 --granularity group` (weight-only, groups of 32)
#     in ROUNDS interleaved rounds (each `pare bench FILE --repeat 3`, the best of 3); prints per file the
#     median tokens/s and the median (min, max) over rounds of the ratio to that round's f32 figure;
#  2. the bytes per parameter of every file;
#  3. a QAT step against a float step (bench_quant_train, alternating steps) for W8A8, W4A8, W4 g32.
# Speed does not depend on the weights' values: each model is trained one step, its activation scales
# calibrated on 4 batches. Environment: ROUNDS (default 5), THREADS (default "1 2"), MODELS (default
# "small baseline"), KEEP=1 keeps the work directory. OMP_WAIT_POLICY=PASSIVE (as bench_infer.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
pare=$build/pare
[[ -x $pare ]] || { echo "bench_quant.sh: $pare not found; build first" >&2; exit 1; }
work=$(mktemp -d /tmp/pare-bench-quant.XXXXXX)
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT
export PARE_DB=none OMP_WAIT_POLICY=PASSIVE
echo "== bench_quant: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"

for model in ${MODELS:-small baseline}; do
  if [[ $model == small ]]; then
    spec=(--data builtin:markov --vocab byte --n-layer 6 --n-head 6 --n-embd 384 --ctx 256 --batch 8)
  else
    spec=(--data builtin:markov --vocab char --n-layer 4 --n-head 4 --n-embd 128 --ctx 64 --batch 12 --bias false --tied)
  fi
  d=$work/$model
  mkdir -p "$d"
  "$pare" train "${spec[@]}" --steps 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out "$d/m.ckpt" >/dev/null 2>&1
  "$pare" export "$d/m.ckpt" --out "$d/f32.pare" >/dev/null
  "$pare" export "$d/m.ckpt" --out "$d/q8.pare" --format q8 >/dev/null
  q() { "$pare" quantize "$d/m.ckpt" --out "$d/$1.ckpt" --calib-batches 4 --eval-batches 1 --threads 2 "${@:2}" >/dev/null &&
        "$pare" export "$d/$1.ckpt" --out "$d/$1.pare" >/dev/null; }
  q w8a8 --w-bits 8 --a-bits 8
  q w4a8 --w-bits 4 --a-bits 8 --granularity group --group-size 32
  q w4a8g128 --w-bits 4 --a-bits 8 --granularity group --group-size 128
  q w4a16 --w-bits 4 --granularity group --group-size 32
  files=(f32 q8 w8a8 w4a8 w4a8g128 w4a16)
  echo
  echo "== $model: bytes per parameter"
  n=$(/usr/bin/python3 -c "import os; print(os.path.getsize('$d/f32.pare') / 4)") # parameters (the f32 file's bytes / 4)
  for f in "${files[@]}"; do
    /usr/bin/python3 -c "import os; print('%-9s %10d bytes  %.3f bytes per parameter' % ('$f', os.path.getsize('$d/$f.pare'), os.path.getsize('$d/$f.pare') / $n))"
  done
  for th in ${THREADS:-1 2}; do
    echo
    echo "== $model: $th thread(s), ${ROUNDS:-5} rounds (decode 128 tokens batch 1; prompt = the context)"
    for r in $(seq "${ROUNDS:-5}"); do
      for f in "${files[@]}"; do
        out=$("$pare" bench "$d/$f.pare" --tokens 128 --repeat 3 --threads "$th" --json)
        dec=$(grep -o '"decode_tokens_per_s":[0-9.e+]*' <<<"$out" | cut -d: -f2)
        pre=$(grep -o '"prompt_tokens_per_s":[0-9.e+]*' <<<"$out" | cut -d: -f2)
        echo "$r $f $dec $pre"
      done
    done | /usr/bin/python3 "$here/rounds_table.py" f32
  done
done

echo
echo "== QAT step against a float step (alternating steps, medians)"
for model in ${MODELS:-small baseline}; do
  st=10
  [[ $model == small ]] && st=4
  for keys in "--w-bits 8 --a-bits 8" "--w-bits 4 --a-bits 8 --granularity group" "--w-bits 4 --granularity group"; do
    # shellcheck disable=SC2086
    "$build/bench/bench_quant_train" --config "$model" --threads 2 --steps "$st" -- $keys | tail -2 | head -1
  done
done
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
