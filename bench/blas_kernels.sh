#!/usr/bin/env bash
# blas_kernels.sh [BUILD_DIR] - what "the same bits at any thread count" means across OpenBLAS's kernels.
# Trains the nanoGPT baseline's shape (4 layers, width 128, ctx 64, batch 12, tinyshakespeare, char
# vocabulary; builtin:markov when the file is absent) for STEPS steps (default 100) at 1, 2 and 3 threads
# under each OpenBLAS kernel in KERNELS (default: the one this machine picks, then Haswell, Sandybridge
# and Nehalem: AVX2, AVX and SSE code), and prints for each run its validation loss and how far its
# weights are from the first run of the same kernel (bench/ckpt_diff), then how far each kernel's
# 1-thread weights are from the first kernel's. A kernel the CPU cannot run (SkylakeX/Cooperlake need
# AVX-512) is skipped. Every run is its own `pare train` process; the variable is set only here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
steps=${STEPS:-100}
data=${PARE_SHARED_DATA:-$here/../../shared/data}/tinyshakespeare.txt
[[ -f "$data" ]] || { echo "blas_kernels: $data not found, using builtin:markov"; data=builtin:markov; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=PASSIVE
kernels=${KERNELS:-default Haswell Sandybridge Nehalem}
printf '%-12s %7s %12s   %s\n' kernel threads val_loss "weights against the kernel's 1-thread run"
first=""
for k in $kernels; do
  envk=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
  [[ $k != default ]] && envk+=(OPENBLAS_CORETYPE=$k)
  if [[ $k != default ]] && grep -q "^flags" /proc/cpuinfo && [[ $k == SkylakeX || $k == Cooperlake ]] &&
     ! grep -q avx512f /proc/cpuinfo; then
    echo "$k: skipped (this CPU has no AVX-512)"; continue
  fi
  for th in 1 2 3; do
    "${envk[@]}" "$build/pare" train --data "$data" --vocab char --n-layer 4 --n-head 4 --n-embd 128 --ctx 64 \
      --batch 12 --steps "$steps" --lr 1e-3 --min-lr 1e-4 --warmup 10 --beta2 0.99 --bias false --tied \
      --eval-every 0 --eval-batches 20 --threads "$th" --db none --out "$out/$k.$th.ckpt" --sample-tokens 0 \
      --json >"$out/$k.$th.json" 2>/dev/null
    val=$(grep -o '"val_loss":[^,}]*' "$out/$k.$th.json" | cut -d: -f2)
    cmp=$("$build/bench/ckpt_diff" "$out/$k.1.ckpt" "$out/$k.$th.ckpt" || true)
    printf '%-12s %7s %12s   %s\n' "$k" "$th" "$val" "$cmp"
  done
  [[ -z $first ]] && first=$k
done
echo
echo "between kernels (1 thread), against $first:"
for k in $kernels; do
  [[ $k == "$first" || ! -f $out/$k.1.ckpt ]] && continue
  printf '%-12s %s\n' "$k" "$("$build/bench/ckpt_diff" "$out/$first.1.ckpt" "$out/$k.1.ckpt" || true)"
done
