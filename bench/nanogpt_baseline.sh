#!/usr/bin/env bash
# nanogpt_baseline.sh [BUILD_DIR] [THREADS] - the quality target of the Training issue, measured side
# by side: nanoGPT's CPU baseline run on tinyshakespeare (4 layers, 4 heads, width 128, context 64,
# batch 12, 2000 steps, lr 1e-3 cosine to 1e-4, warmup 100, beta2 0.99, weight decay 0.1, no biases,
# tied head, character vocabulary, last 10% for validation, 200 validation batches) by pare and by
# PyTorch (bench/torch_nanogpt_baseline.py). Prints both validation curves, both training times
# (evaluation excluded) and their ratio. Data: $PARE_SHARED_DATA or ../shared/data.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
threads=${2:-2}
data=${PARE_SHARED_DATA:-$here/../../shared/data}/tinyshakespeare.txt
[[ -f "$data" ]] || { echo "nanogpt_baseline: $data not found (see README.md, Data)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=PASSIVE

echo "== pare, $threads thread(s)"
start=$(date +%s.%N)
"$build/pare" train --data "$data" --vocab char --n-layer 4 --n-head 4 --n-embd 128 --ctx 64 \
  --batch 12 --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta2 0.99 --weight-decay 0.1 \
  --grad-clip 1.0 --bias false --tied --eval-every 500 --eval-batches 200 --threads "$threads" \
  --db none --out "$out/base.ckpt" --sample-tokens 0 --log-every 500 --json >"$out/pare.json"
pare_wall=$(echo "$(date +%s.%N) - $start" | bc)
cat "$out/pare.json"

echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), $threads thread(s)"
/usr/bin/python3 "$here/torch_nanogpt_baseline.py" "$data" --threads "$threads" | tee "$out/torch.txt"

pare_train=$(grep -o '"train_seconds":[^,}]*' "$out/pare.json" | cut -d: -f2)
pare_val=$(grep -o '"val_loss":[^,}]*' "$out/pare.json" | cut -d: -f2)
torch_train=$(grep -o 'train_s=[^ ]*' "$out/torch.txt" | cut -d= -f2)
torch_val=$(grep -o 'val_2000=[^ ]*' "$out/torch.txt" | cut -d= -f2)
printf '\n%-8s %12s %14s %10s\n' impl val_loss train_seconds wall_s
printf '%-8s %12.4f %14.1f %10.1f\n' pare "$pare_val" "$pare_train" "$pare_wall"
printf '%-8s %12.4f %14.1f %10s\n' torch "$torch_val" "$torch_train" "-"
echo "pare training time / PyTorch training time: $(echo "scale=3; $pare_train / $torch_train" | bc)"
