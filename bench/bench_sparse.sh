#!/usr/bin/env bash
# bench_sparse.sh [BUILD_DIR] - sparse and structured storage against dense int8, measured side by side in one
# run, on the "small" model (6 layers, 6 heads, width 384, context 256, byte vocabulary):
#  1. the files, all `pare export --format q8` of one checkpoint pruned or factorized by `pare prune`:
#       q8          the dense model (the reference of every ratio)
#       s90         --prune magnitude --sparsity 0.9: 90% unstructured, stored q8s (the export's sparse rule)
#       nm24        --prune nm (2:4), stored q8nm
#       hn50        --prune heads --sparsity 0.5, then --prune neurons --sparsity 0.5: half the heads and half
#                   the MLP neurons removed (a smaller dense model, q8)
#       lr96        --rank 96 --rank-sites "h.*.mlp.*": rank C/4 on the MLP sites (factors, q8)
#     their bytes and the ratio to q8, and for lr96 the MLP sites' expected ratio r (N + K) / (N K);
#  2. batch-1 KV-cache decode (128 tokens) and prompt (one batched forward over the context) tokens/s at
#     1 and 2 threads, in ROUNDS interleaved rounds (each `pare bench FILE --repeat 3`, the best of 3); per
#     file the median tokens/s and the median (min, max) over rounds of the ratio to that round's q8 figure;
#     for each instruction set of ISAS ("native" = the best this CPU has; "avx2" = PARE_ISA=avx2 for every
#     file, dense included).
# Speed does not depend on the weights' values: the model is trained one step. Environment: ROUNDS
# (default 5), THREADS (default "1 2"), ISAS (default "native avx2"), KEEP=1 keeps the work directory.
# OMP_WAIT_POLICY=PASSIVE (as bench_quant.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
pare=$build/pare
[[ -x $pare ]] || { echo "bench_sparse.sh: $pare not found; build first" >&2; exit 1; }
work=$(mktemp -d /tmp/pare-bench-sparse.XXXXXX)
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT
export PARE_DB=none OMP_WAIT_POLICY=PASSIVE
echo "== bench_sparse: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"

d=$work
spec=(--data builtin:markov --vocab byte --n-layer 6 --n-head 6 --n-embd 384 --ctx 256 --batch 8)
"$pare" train "${spec[@]}" --steps 1 --eval-batches 1 --sample-tokens 0 --threads 2 --out "$d/m.ckpt" >/dev/null 2>&1
p() { "$pare" prune "$1" --out "$2" --eval-batches 1 --calib-batches 1 --threads 2 "${@:3}" >/dev/null; }
p "$d/m.ckpt" "$d/s90.ckpt" --prune magnitude --sparsity 0.9
p "$d/m.ckpt" "$d/nm24.ckpt" --prune nm --nm 2:4
p "$d/m.ckpt" "$d/h50.ckpt" --prune heads --sparsity 0.5
p "$d/h50.ckpt" "$d/hn50.ckpt" --prune neurons --sparsity 0.5
p "$d/m.ckpt" "$d/lr96.ckpt" --rank 96 --rank-sites "h.*.mlp.*"
files=(q8 s90 nm24 hn50 lr96)
"$pare" export "$d/m.ckpt" --out "$d/q8.pare" --format q8 >/dev/null
for f in "${files[@]:1}"; do "$pare" export "$d/$f.ckpt" --out "$d/$f.pare" --format q8 >/dev/null; done

echo
echo "== small: files (pare export --format q8)"
for f in "${files[@]}"; do
  /usr/bin/python3 - "$d/$f.pare" "$d/q8.pare" "$f" <<'EOF'
import os, sys
b, r = os.path.getsize(sys.argv[1]), os.path.getsize(sys.argv[2])
print("%-6s %10d bytes  %.3f x q8  (q8 / file %.2f)" % (sys.argv[3], b, b / r, r / b))
EOF
done
echo "lr96: the MLP sites' expected ratio r (N + K) / (N K) = 96 x 1920 / (1536 x 384) = $(/usr/bin/python3 -c 'print("%.4f" % (96 * 1920 / (1536 * 384)))')"

for isa in ${ISAS:-native avx2}; do
  for th in ${THREADS:-1 2}; do
    echo
    echo "== small: $th thread(s), isa $isa, ${ROUNDS:-5} rounds (decode 128 tokens batch 1; prompt = the context)"
    for r in $(seq "${ROUNDS:-5}"); do
      for f in "${files[@]}"; do
        if [[ $isa == native ]]; then
          out=$("$pare" bench "$d/$f.pare" --tokens 128 --repeat 3 --threads "$th" --json)
        else
          out=$(PARE_ISA=$isa "$pare" bench "$d/$f.pare" --tokens 128 --repeat 3 --threads "$th" --json)
        fi
        dec=$(grep -o '"decode_tokens_per_s":[0-9.e+]*' <<<"$out" | cut -d: -f2)
        pre=$(grep -o '"prompt_tokens_per_s":[0-9.e+]*' <<<"$out" | cut -d: -f2)
        echo "$r $f $dec $pre"
      done
    done | /usr/bin/python3 "$here/rounds_table.py" q8
  done
done
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
