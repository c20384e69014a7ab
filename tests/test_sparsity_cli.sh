#!/usr/bin/env bash
# test_sparsity_cli.sh PARE - pruning and low rank as a user runs them: every
# pruning key in train --help; pare train with each method (the reported
# sparsity is the asked one; a gradual run stopped and resumed ends with the
# same loss); pare prune writes masks, a smaller model or factors, and its
# result evaluates, exports and runs; pare sensitivity records its losses,
# writes a plan that pare train accepts, and draws its figure; bad keys
# (sparsity 1.5, nm 3:2, a rank above min(out, in)) exit 2 with a message.
set -uo pipefail
PARE=${1:?usage: test_sparsity_cli.sh path/to/pare}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export PARE_DB="$dir/pare.db"
export OMP_WAIT_POLICY=PASSIVE
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

expect() { # expect STATUS NEEDLE -- command...
  local want=$1 needle=$2
  shift 3
  local out
  out=$("$@" 2>&1)
  local got=$?
  [[ $got == "$want" ]] || fail "'$*' exited $got, expected $want; output: $out"
  [[ $out == *"$needle"* ]] || fail "'$*' output lacks '$needle': $out"
}
json_num() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -1 | cut -d: -f2; }

help=$("$PARE" train --help)
for k in prune sparsity schedule prune-start prune-end prune-every prune-sites prune-scope prune-score nm l1 \
         l1-proximal group-lasso density dst-every dst-fraction dst-end sparsity-plan rank rank-energy rank-sites nuclear; do
  grep -q -- "--$k " <<<"$help" || fail "train --help lacks --$k"
done

T=(--data builtin:markov --n-layer 2 --n-head 2 --n-embd 32 --batch 8 --eval-batches 4 --threads 2 --sample-tokens 0)
"$PARE" train "${T[@]}" --steps 120 --eval-every 60 --out "$dir/dense.ckpt" >/dev/null 2>&1 || fail "dense training"

# bad keys: exit 2, naming the key
expect 2 "sparsity" -- "$PARE" train "${T[@]}" --steps 5 --prune magnitude --sparsity 1.5 --out ""
expect 2 "sparsity 1: expected a fraction in [0, 1)" -- "$PARE" train "${T[@]}" --steps 5 --prune magnitude --sparsity 1 --out ""
expect 2 "nm '3:2': expected 1 <= N < M" -- "$PARE" train "${T[@]}" --steps 5 --prune nm --nm 3:2 --out ""
expect 2 "rank 99: h.0.attn.qkv is [96, 32]: expected a rank of at most min(out, in) = 32" -- \
  "$PARE" prune "$dir/dense.ckpt" --out "$dir/x.ckpt" --rank 99 --eval-batches 2
expect 2 "nothing to do" -- "$PARE" prune "$dir/dense.ckpt" --out "$dir/x.ckpt"

# each method from the command line reaches its sparsity
for m in "magnitude --schedule gradual --prune-every 10 --sparsity 0.8:0.8" "magnitude --schedule iterative --prune-every 20 --prune-scope global --sparsity 0.75:0.75" \
         "nm --schedule gradual --prune-every 10:0.5" "set --sparsity 0.9 --dst-every 10:0.9" "rigl --sparsity 0.9 --dst-every 10 --density uniform:0.9"; do
  args=${m%:*} want=${m##*:}
  out=$("$PARE" train "${T[@]}" --steps 60 --eval-every 0 --init "$dir/dense.ckpt" --prune $args --out "$dir/m.ckpt" \
        --log-every 60 2>&1) || fail "train --prune $args: $out"
  got=$(grep -o "sparsity [0-9.e-]*" <<<"$out" | tail -1 | cut -d' ' -f2)
  awk -v g="$got" -v w="$want" 'BEGIN { exit !(g >= w - 0.01 && g <= w + 0.01) }' || fail "--prune $args: sparsity $got, expected $want"
done

# composes with distillation in one run, and the run log has the per-step sparsity
"$PARE" train "${T[@]}" --steps 20 --eval-every 10 --init "$dir/dense.ckpt" --teacher "$dir/dense.ckpt" --prune rigl \
  --sparsity 0.8 --dst-every 5 --name kd-rigl --out "" >/dev/null 2>&1 || fail "distillation + rigl"
n=$(sqlite3 "$PARE_DB" "SELECT count(DISTINCT m.step) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.name = 'kd-rigl' AND m.name = 'sparsity'" 2>/dev/null || echo skip)
[[ $n == skip || $n == 20 ]] || fail "kd-rigl: sparsity logged at $n steps, expected 20"
n=$(sqlite3 "$PARE_DB" "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.name = 'kd-rigl' AND m.name IN ('kd.logit', 'moved')" 2>/dev/null || echo skip)
[[ $n == skip || $n -ge 23 ]] || fail "kd-rigl: $n rows of kd.logit and moved, expected 20 + 3 updates"

# a gradual run interrupted by its --steps and resumed ends where the straight run ends
G=("${T[@]}" --init "$dir/dense.ckpt" --prune magnitude --schedule gradual --prune-start 0 --prune-end 40 --prune-every 10 --sparsity 0.7 --eval-every 20)
a=$("$PARE" train "${G[@]}" --steps 60 --out "$dir/a.ckpt" --json 2>/dev/null)
"$PARE" train "${G[@]}" --steps 30 --out "$dir/c.ckpt" >/dev/null 2>&1 || fail "first half"
r=$("$PARE" train --resume "$dir/c.ckpt" --steps 60 --out "$dir/c.ckpt" --threads 2 --json 2>/dev/null) || fail "resume"
[[ $(json_num val_loss "$a") == "$(json_num val_loss "$r")" ]] || fail "gradual resume: $(json_num val_loss "$a") vs $(json_num val_loss "$r")"

# pare prune: masks, a smaller model, factors; each evaluates, exports and runs
for p in "magnitude --sparsity 0.5" "heads --sparsity 0.5" "neurons --sparsity 0.5 --prune-score activation" "nm"; do
  out=$("$PARE" prune "$dir/dense.ckpt" --out "$dir/p.ckpt" --prune $p --eval-batches 4 --json 2>&1) || fail "prune $p: $out"
  loss=$(json_num val_loss "$out")
  ev=$("$PARE" eval "$dir/p.ckpt" --eval-batches 4 --batch 16 --json 2>&1)
  [[ $(json_num val_loss "$ev") == "$loss" ]] || true # different batch sizes: only that it evaluates
  "$PARE" export "$dir/p.ckpt" --out "$dir/p.pare" >/dev/null 2>&1 || fail "export after prune $p"
  "$PARE" eval "$dir/p.pare" --eval-batches 4 >/dev/null 2>&1 || fail "eval FILE after prune $p"
done
# a run trained with --prune heads exports at its smaller shape (the policy's export hook) and the file
# computes the checkpoint's loss
"$PARE" train "${T[@]}" --steps 20 --eval-every 0 --init "$dir/dense.ckpt" --prune heads --sparsity 0.5 --prune-start 10 \
  --out "$dir/th.ckpt" >/dev/null 2>&1 || fail "train --prune heads"
"$PARE" export "$dir/th.ckpt" --out "$dir/th.pare" >/dev/null 2>&1 || fail "export of a --prune heads run"
"$PARE" export "$dir/dense.ckpt" --out "$dir/d.pare" >/dev/null 2>&1 || fail "export of the dense model"
[[ $(stat -c %s "$dir/th.pare") -lt $(stat -c %s "$dir/d.pare") ]] || fail "heads pruned in training: the file is not smaller"
a=$(json_num val_loss "$("$PARE" eval "$dir/th.ckpt" --eval-batches 4 --json 2>&1)")
b=$(json_num val_loss "$("$PARE" eval "$dir/th.pare" --eval-batches 4 --json 2>&1)")
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(a > 0 && d < 1e-4 && d > -1e-4) }' || fail "heads file loss $b, checkpoint $a"
out=$("$PARE" prune "$dir/dense.ckpt" --out "$dir/h.ckpt" --prune heads --sparsity 0.5 --eval-batches 4 --json 2>&1)
[[ $(json_num removed_heads "$out") == 2 ]] || fail "prune heads 0.5 of 2 x 2 heads: $out"
out=$("$PARE" prune "$dir/dense.ckpt" --out "$dir/lr.ckpt" --rank 8 --rank-sites "h.*.mlp.*" --eval-batches 4 --json 2>&1)
[[ $(json_num params "$out") -lt $(json_num params_before "$out") ]] || fail "rank 8: $out"
lrout=$out
"$PARE" train "${T[@]}" --steps 10 --init "$dir/lr.ckpt" --rank 8 --rank-sites "h.*.mlp.*" --out "$dir/lr2.ckpt" >/dev/null 2>&1 \
  || fail "fine-tuning the factors"
# fine-tuning a pruned checkpoint keeps its zeros: its masks travel with --init
out=$("$PARE" prune "$dir/dense.ckpt" --out "$dir/p.ckpt" --prune magnitude --sparsity 0.5 --eval-batches 2 --json 2>&1) \
  || fail "prune magnitude 0.5: $out"
nz=$(json_num nonzero_linear "$out")
"$PARE" train "${T[@]}" --steps 10 --eval-every 0 --init "$dir/p.ckpt" --out "$dir/p2.ckpt" >/dev/null 2>&1 || fail "fine-tuning p.ckpt"
out=$("$PARE" prune "$dir/p2.ckpt" --out "$dir/x.ckpt" --prune magnitude --sparsity 0.1 --eval-batches 2 --json 2>&1)
[[ -n $nz && $(json_num nonzero_linear_before "$out") == "$nz" ]] ||
  fail "fine-tuned pruned model: $(json_num nonzero_linear_before "$out") non-zero linear weights, the pruned one $nz"
# train --init DENSE --rank R factorizes the dense checkpoint itself before fine-tuning
out=$("$PARE" train "${T[@]}" --steps 10 --init "$dir/dense.ckpt" --rank 8 --rank-sites "h.*.mlp.*" --out "$dir/lr3.ckpt" --json 2>&1) \
  || fail "train --init dense --rank 8: $out"
a=$(json_num params "$out")
b=$(json_num params_before "$lrout")
[[ -n $a && -n $b && $a -lt $b ]] || fail "train --init dense --rank 8: $a parameters, the dense model $b"

# pare sensitivity: a loss per site and sparsity in the run log, a plan train accepts, a figure
out=$("$PARE" sensitivity "$dir/dense.ckpt" --sparsities 0.5,0.9 --eval-batches 2 --plan-out "$dir/plan.txt" \
      --figure "$dir/sens.png" 2>&1) || fail "sensitivity: $out"
grep -q "^h.0.mlp.fc=" "$dir/plan.txt" || fail "plan lacks h.0.mlp.fc: $(cat "$dir/plan.txt")"
n=$(sqlite3 "$PARE_DB" "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.command = 'sensitivity' AND m.name LIKE 'sens.%'" 2>/dev/null || echo skip)
[[ $n == skip || $n == 27 ]] || fail "sensitivity metrics: $n rows, expected 9 sites x 3"
if command -v gnuplot >/dev/null; then [[ -s "$dir/sens.png" ]] || fail "no figure: $out"; fi
"$PARE" train "${T[@]}" --steps 10 --init "$dir/dense.ckpt" --prune magnitude --sparsity-plan "@$dir/plan.txt" \
  --out "" >/dev/null 2>&1 || fail "train with the sensitivity plan"

# sparse storage: a 90%-pruned model's q8 file stores its pruned matrices as q8s, at least 2.5x smaller than the
# dense q8 file (--dense) of the same checkpoint (embeddings int8 in both, no biases: the parts no type shrinks
# would dominate so small a model); both files compute the same loss, and the checkpoint's within
# the int8 grid's error
W=(--data builtin:markov --n-layer 4 --n-head 2 --n-embd 192 --ctx 32 --bias false --batch 8 --threads 2 --sample-tokens 0)
"$PARE" train "${W[@]}" --steps 5 --eval-every 0 --out "$dir/w.ckpt" >/dev/null 2>&1 || fail "training the wide model"
"$PARE" prune "$dir/w.ckpt" --out "$dir/w90.ckpt" --prune magnitude --sparsity 0.9 --eval-batches 2 >/dev/null 2>&1 \
  || fail "prune magnitude 0.9"
out=$("$PARE" export "$dir/w90.ckpt" --out "$dir/w90.pare" --format q8 --quantize-embeddings --json 2>&1) \
  || fail "export q8: $out"
[[ $(json_num sparse_tensors "$out") -gt 0 ]] || fail "90% pruned q8 export stores nothing sparse: $out"
out=$("$PARE" export "$dir/w90.ckpt" --out "$dir/w90d.pare" --format q8 --quantize-embeddings --dense \
  --json 2>&1) || fail "export --dense: $out"
[[ $(json_num sparse_tensors "$out") == 0 ]] || fail "--dense stores sparse tensors: $out"
s=$(stat -c %s "$dir/w90.pare") d=$(stat -c %s "$dir/w90d.pare")
awk -v s="$s" -v d="$d" 'BEGIN { exit !(d >= 2.5 * s) }' || fail "90% pruned: q8 file $s bytes, dense q8 $d: expected >= 2.5x smaller"
a=$(json_num val_loss "$("$PARE" eval "$dir/w90.pare" --eval-batches 4 --json 2>&1)")
b=$(json_num val_loss "$("$PARE" eval "$dir/w90d.pare" --eval-batches 4 --json 2>&1)")
c=$(json_num val_loss "$("$PARE" eval "$dir/w90.ckpt" --eval-batches 4 --json 2>&1)")
[[ -n $a && $a == "$b" ]] || fail "sparse file loss $a, dense q8 file $b: expected the same"
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; exit !(c > 0 && d < 0.01 * c && d > -0.01 * c) }' \
  || fail "sparse file loss $a, checkpoint $c"
# a 2:4 model's matrices come out q8nm: at most 0.65x the dense q8 file, the same loss
"$PARE" prune "$dir/w.ckpt" --out "$dir/nm.ckpt" --prune nm --eval-batches 2 >/dev/null 2>&1 || fail "prune nm"
out=$("$PARE" export "$dir/nm.ckpt" --out "$dir/nm.pare" --format q8 --quantize-embeddings --json 2>&1) || fail "export nm: $out"
[[ $(json_num nm_tensors "$out") -gt 0 ]] || fail "2:4 q8 export stores nothing as q8nm: $out"
"$PARE" export "$dir/nm.ckpt" --out "$dir/nmd.pare" --format q8 --quantize-embeddings --dense >/dev/null 2>&1 || fail "export nm --dense"
s=$(stat -c %s "$dir/nm.pare") d=$(stat -c %s "$dir/nmd.pare")
awk -v s="$s" -v d="$d" 'BEGIN { exit !(s <= 0.65 * d) }' || fail "2:4: q8 file $s bytes, dense q8 $d: expected <= 0.65x"
a=$(json_num val_loss "$("$PARE" eval "$dir/nm.pare" --eval-batches 4 --json 2>&1)")
b=$(json_num val_loss "$("$PARE" eval "$dir/nmd.pare" --eval-batches 4 --json 2>&1)")
c=$(json_num val_loss "$("$PARE" eval "$dir/nm.ckpt" --eval-batches 4 --json 2>&1)")
[[ -n $a && $a == "$b" ]] || fail "2:4 file loss $a, dense q8 file $b: expected the same"
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; exit !(c > 0 && d < 0.01 * c && d > -0.01 * c) }' || fail "2:4 file loss $a, checkpoint $c"

[[ $fails == 0 ]] && echo "PASS" || { echo "$fails failure(s)"; exit 1; }
