#!/usr/bin/env bash
# sparse_results.sh [BUILD_DIR] [THREADS] [OUT_DIR] - the results table of docs/sparsity.md: the nanoGPT CPU
# baseline (bench/nanogpt_baseline.sh: 4 layers, 4 heads, width 128, ctx 64, batch 12, 2000 steps, lr 1e-3
# cosine to 1e-4, no biases, tied head, tinyshakespeare by characters, 200 validation batches) trained
# dense and with every pruning method at equal total steps (2000), then compressed after training.
#
#   unstructured, 2000 steps from scratch, sparsity s of every linear weight (the tied head is wte: dense):
#     oneshot    dense to step 1000, magnitude-pruned to s there, fine-tuned to 2000
#     iterative  5 rounds at 500, 750, ..., 1500, each removing the same share of what is left
#     gradual    Zhu and Gupta's cubic from 500 to 1500, every 100 steps
#     set, rigl  sparse from step 0 (ERK densities), masks updated every 100 steps until 1500
#     nm         2:4, gradual like the above
#   after training (the dense seed-1 model, then 500 steps of fine-tuning with --init):
#     heads 25/50% (scored by the calibration loss), neurons 25/50% (by activation), low rank r = 16, 32, 64
#     on the MLP sites; each exported (f32) and benchmarked: bytes and batch-1 decode tokens/s at 1 thread
#   Zhu and Gupta's comparison: the baseline pruned gradually to 75% against a dense model of width 64
#     (the same number of non-zero linear weights, 196,608), both 2000 steps, 3 seeds
#
# Run one instance per free core (each with THREADS 1) to share the list; run it again at the end to draw
# the table from what has finished. Seeds 1, 2, 3 where methods are compared (sparsity 0.9, the dense baseline, Zhu-Gupta); one seed for the
# other sparsities (SEEDS_ALL=3 runs three everywhere). Finished runs are kept in OUT_DIR (default
# build/sparse-results) and skipped when the script is run again; the table is printed at the end and
# every run is in OUT_DIR/results.db (pare runs --db ...). Data: $PARE_SHARED_DATA or ../shared/data.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
threads=${2:-2}
out=${3:-$build/sparse-results}
data=${PARE_SHARED_DATA:-$here/../../shared/data}/tinyshakespeare.txt
[[ -f "$data" ]] || { echo "sparse_results: $data not found (see README.md, Data)" >&2; exit 1; }
pare=$build/pare
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
db=$out/results.db
model=(--data "$data" --vocab char --n-layer 4 --n-head 4 --n-embd 128 --ctx 64 --bias false --tied)
opt=(--batch 12 --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta2 0.99 --weight-decay 0.1 --grad-clip 1.0 --eval-batches 200
     --threads "$threads" --sample-tokens 0 --log-every 500 --db "$db")

# train NAME ARGS...: one run, skipped when OUT/NAME.json holds its result or another instance of this script
# runs it (OUT/NAME.lock: several instances, for example one per core, share the list)
train() {
  local name=$1
  shift
  [[ -s "$out/$name.json" ]] && return 0
  mkdir "$out/$name.lock" 2>/dev/null || return 0
  echo "== $name: pare train $*" >&2
  if ! "$pare" train "${opt[@]}" --name "$name" --out "$out/$name.ckpt" --json "$@" >"$out/$name.json.tmp" \
       2>"$out/$name.log"; then
    rmdir "$out/$name.lock"
    echo "sparse_results: $name failed: $(tail -1 "$out/$name.log")" >&2
    return 0
  fi
  mv "$out/$name.json.tmp" "$out/$name.json"
}
# bench NAME: export OUT/NAME.ckpt as f32 and time batch-1 decode at one thread (once its run has finished)
bench() {
  local name=$1
  [[ -s "$out/$name.bench" || ! -s "$out/$name.json" ]] && return 0
  "$pare" export "$out/$name.ckpt" --out "$out/$name.pare" --db "$db" >/dev/null
  "$pare" bench "$out/$name.pare" --threads 1 --tokens 256 --repeat 3 --db "$db" --json >"$out/$name.bench"
}

S=(--steps 2000 --eval-every 500)
method_args() { # method sparsity
  case $1 in
    oneshot) echo "--prune magnitude --schedule oneshot --prune-start 1000 --sparsity $2" ;;
    iterative) echo "--prune magnitude --schedule iterative --prune-start 500 --prune-end 1500 --prune-every 250 --sparsity $2" ;;
    gradual) echo "--prune magnitude --schedule gradual --prune-start 500 --prune-end 1500 --prune-every 100 --sparsity $2" ;;
    set) echo "--prune set --sparsity $2 --dst-every 100 --dst-end 1500 --density erk" ;;
    rigl) echo "--prune rigl --sparsity $2 --dst-every 100 --dst-end 1500 --density erk" ;;
  esac
}
methods=(oneshot iterative gradual set rigl)
seeds_all=${SEEDS_ALL:-1}

# 1. the dense baseline and every method at 90%, 3 seeds
for seed in 1 2 3; do train "dense-s$seed" "${model[@]}" "${S[@]}" --seed $seed; done
for seed in 1 2 3; do
  for m in "${methods[@]}"; do train "$m-0.9-s$seed" "${model[@]}" "${S[@]}" --seed $seed $(method_args $m 0.9); done
done
# 2. Zhu and Gupta: large-sparse (75%, gradual) against small-dense (width 64), 3 seeds
for seed in 1 2 3; do
  train "gradual-0.75-s$seed" "${model[@]}" "${S[@]}" --seed $seed $(method_args gradual 0.75)
  train "small-dense-s$seed" --data "$data" --vocab char --n-layer 4 --n-head 4 --n-embd 64 --ctx 64 --bias false --tied \
    "${S[@]}" --seed $seed
done
# 3. after training: heads, neurons, low rank on the dense seed-1 model, 500 steps of fine-tuning; 2:4 in training
FT=(--steps 500 --eval-every 500 --seed 1)
post() { # name, then pare prune's keys
  local name=$1
  shift
  [[ -s "$out/$name.json" || ! -s "$out/dense-s1.json" ]] && return 0
  mkdir "$out/$name.prune.lock" 2>/dev/null || return 0
  "$pare" prune "$out/dense-s1.ckpt" --out "$out/$name-oneshot.ckpt" --batch 12 --eval-batches 200 --threads "$threads" \
    --db "$db" --json "$@" >"$out/$name.prune.json"
  train "$name" --init "$out/$name-oneshot.ckpt" "${FT[@]}" --data "$data"
}
post heads-0.25 --prune heads --sparsity 0.25 --prune-score loss --calib-batches 8
post heads-0.5 --prune heads --sparsity 0.5 --prune-score loss --calib-batches 8
post neurons-0.25 --prune neurons --sparsity 0.25 --prune-score activation --calib-batches 8
post neurons-0.5 --prune neurons --sparsity 0.5 --prune-score activation --calib-batches 8
for r in 16 32 64; do post "rank-$r" --rank $r --rank-sites "h.*.mlp.*"; done
train nm-2:4-s1 "${model[@]}" "${S[@]}" --seed 1 --prune nm --nm 2:4 --schedule gradual --prune-start 500 --prune-end 1500 \
  --prune-every 100
for n in dense-s1 rigl-0.9-s1 nm-2:4-s1 heads-0.25 heads-0.5 neurons-0.25 neurons-0.5 rank-16 rank-32 rank-64; do bench $n; done
# 4. the other sparsities (one seed unless SEEDS_ALL=3)
for s in 0.5 0.75 0.95; do
  for seed in $(seq 1 "$seeds_all"); do
    for m in "${methods[@]}"; do train "$m-$s-s$seed" "${model[@]}" "${S[@]}" --seed $seed $(method_args $m $s); done
  done
done

/usr/bin/python3 - "$out" <<'PY'
import glob, json, math, os, re, statistics, sys
out = sys.argv[1]
res = {}
for f in glob.glob(os.path.join(out, "*.json")):
    name = os.path.basename(f)[:-5]
    if name.endswith(".prune"):
        continue
    try:
        j = json.load(open(f))
    except Exception:
        continue
    if j.get("val_loss") is None:
        continue
    m = re.match(r"(.*)-s(\d+)$", name)
    key = m.group(1) if m else name
    res.setdefault(key, []).append(j["val_loss"])
def cell(key):
    v = res.get(key)
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f} (n={len(v)})"
print("\n| method | 50% | 75% | 90% | 95% |\n|---|---|---|---|---|")
for m in ["oneshot", "iterative", "gradual", "set", "rigl"]:
    print(f"| {m} | " + " | ".join(cell(f"{m}-{s}") for s in ["0.5", "0.75", "0.9", "0.95"]) + " |")
print(f"\ndense baseline: {cell('dense')}; 2:4 (gradual): {cell('nm-2:4')}")
print(f"Zhu and Gupta: large-sparse (width 128, 75% gradual) {cell('gradual-0.75')} vs small-dense (width 64) {cell('small-dense')}")
print("\n| after training (+500 steps) | val loss | val loss before fine-tuning | params | file bytes (f32) | decode tok/s (1 thread) |\n|---|---|---|---|---|---|")
for n in ["dense", "rigl-0.9", "nm-2:4", "heads-0.25", "heads-0.5", "neurons-0.25", "neurons-0.5", "rank-16", "rank-32", "rank-64"]:
    b = os.path.join(out, (n + "-s1" if n in ("dense", "rigl-0.9", "nm-2:4") else n) + ".bench")
    p = os.path.join(out, n + ".prune.json")
    bj = json.load(open(b)) if os.path.exists(b) else {}
    pj = json.load(open(p)) if os.path.exists(p) else {}
    loss = cell(n) if n not in ("dense", "rigl-0.9", "nm-2:4") else (f"{res[n][0]:.4f}" if n in res else "-")
    print(f"| {n} | {loss} | {pj.get('val_loss', float('nan')):.4f} | {pj.get('params', '-')} | {bj.get('bytes', '-')} | "
          f"{bj.get('decode_tokens_per_s', float('nan')):.0f} |")
PY
