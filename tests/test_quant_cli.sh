#!/usr/bin/env bash
# test_quant_cli.sh PARE - quantization from the command line: QAT with `pare train`, PTQ with
# `pare quantize`, `pare export CKPT` without --format, `pare eval FILE` = `pare eval CKPT` (the
# checkpoint's quantized forward) to 1e-5, `pare bench` and `pare generate` of the files, the run
# log's per-step, per-site metrics, QAT composed with distillation and pruning in one run, and bad input as a clear error naming the key: bits out of range,
# a group size that does not divide, an unknown observer, a glob that matches no site, asymmetric
# weights beyond 4 bits, a tied head, learned parameters in PTQ, --format on a quantized checkpoint.
set -uo pipefail
PARE=${1:?usage: test_quant_cli.sh path/to/pare}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export PARE_DB="$dir/pare.db"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() { "$@" >"$dir/out" 2>"$dir/err" || fail "'$*' exited $?: $(tail -3 "$dir/err")"; }
json() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" "$dir/out" | tail -1; }
# expect STATUS TEXT CMD...: the command exits with STATUS and its stderr contains TEXT
expect() {
  local want=$1 text=$2; shift 2
  "$@" >"$dir/out" 2>"$dir/err"; local got=$?
  [[ $got == "$want" ]] || fail "'$*' exited $got, expected $want: $(tail -2 "$dir/err")"
  grep -qF -- "$text" "$dir/err" || fail "'$*': stderr lacks '$text': $(tail -2 "$dir/err")"
}
# close A B: |A - B| <= 1e-5 |B|
close() { /usr/bin/python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-5 * abs(b))" "$1" "$2"; }

model=(--data builtin:markov --vocab char --n-layer 2 --n-embd 64 --n-head 2 --ctx 32 --batch 8 --eval-batches 2
       --threads 1 --sample-tokens 0)
run "$PARE" train "${model[@]}" --steps 40 --eval-every 0 --out "$dir/f.ckpt"

# --- QAT: W8A8 from the float checkpoint; the plan is printed
run "$PARE" train "${model[@]}" --init "$dir/f.ckpt" --steps 12 --eval-every 6 --out "$dir/qat.ckpt" \
  --w-bits 8 --a-bits 8 --quant-override "h.1.mlp.*=w4,g32"
grep -q "^quant: 8 products" "$dir/out" || fail "train: no plan printed: $(head -5 "$dir/out")"
grep -q "W4 g32 sym minmax, A8 minmax: h.1.mlp.fc h.1.mlp.proj" "$dir/out" || fail "train: the override is not in the plan"
grep -q "q.wclip" "$dir/out" || fail "train: no quantization metrics in the progress line"
run "$PARE" export "$dir/qat.ckpt" --out "$dir/qat.pare" --json
[[ $(json format) == '"mixed"' ]] || fail "export of mixed precision: format $(json format)"
run "$PARE" eval "$dir/qat.ckpt" --eval-batches 4 --batch 4 --threads 1 --json
ck=$(json val_loss)
run "$PARE" eval "$dir/qat.pare" --eval-batches 4 --batch 4 --threads 1 --json
fl=$(json val_loss)
close "$fl" "$ck" || fail "QAT: eval FILE $fl != eval CKPT $ck"
run "$PARE" bench "$dir/qat.pare" --tokens 8 --repeat 1 --json
[[ -n $(json decode_tokens_per_s) ]] || fail "bench of the QAT file"
run "$PARE" generate "$dir/qat.pare" --tokens 16 --temperature 0
# the run log: per step, per site (the trainer's metric table takes the first 32 names)
if command -v sqlite3 >/dev/null; then
  n=$(sqlite3 "$PARE_DB" "SELECT count(*) FROM metrics WHERE name = 'q.wclip'")
  [[ $n == 12 ]] || fail "run log: $n q.wclip rows, expected one per step (12)"
  n=$(sqlite3 "$PARE_DB" "SELECT count(DISTINCT name) FROM metrics WHERE name LIKE 'q.ascale@h.0.%'")
  [[ $n -ge 1 ]] || fail "run log: no per-site activation scales"
fi

# --- composed: distillation from the float model + magnitude pruning + W8A8 QAT in one run
run "$PARE" train "${model[@]}" --init "$dir/f.ckpt" --steps 10 --eval-every 0 --out "$dir/all.ckpt" \
  --teacher "$dir/f.ckpt" --kd-alpha 0.5 --prune magnitude --sparsity 0.5 --schedule oneshot --prune-start 2 \
  --w-bits 8 --a-bits 8
run "$PARE" export "$dir/all.ckpt" --out "$dir/all.pare"
run "$PARE" eval "$dir/all.ckpt" --eval-batches 4 --batch 4 --threads 1 --json
ck=$(json val_loss)
run "$PARE" eval "$dir/all.pare" --eval-batches 4 --batch 4 --threads 1 --json
fl=$(json val_loss)
close "$fl" "$ck" || fail "distill + prune + QAT: eval FILE $fl != eval CKPT $ck"

# --- PTQ: W4A8, calibration, then export without --format
run "$PARE" quantize "$dir/f.ckpt" --out "$dir/ptq.ckpt" --w-bits 4 --a-bits 8 --granularity group \
  --calib-batches 4 --eval-batches 2 --batch 4 --threads 1 --json
[[ -n $(json val_loss) ]] || fail "quantize --json: no val_loss"
run "$PARE" export "$dir/ptq.ckpt" --out "$dir/ptq.pare" --json
[[ $(json format) == '"q4/g32+a8"' ]] || fail "export of the PTQ checkpoint: format $(json format)"
run "$PARE" eval "$dir/ptq.ckpt" --eval-batches 4 --batch 4 --threads 1 --json
ck=$(json val_loss)
run "$PARE" eval "$dir/ptq.pare" --eval-batches 4 --batch 4 --threads 1 --json
fl=$(json val_loss)
close "$fl" "$ck" || fail "PTQ: eval FILE $fl != eval CKPT $ck"
if command -v sqlite3 >/dev/null; then
  n=$(sqlite3 "$PARE_DB" "SELECT count(*) FROM runs WHERE command = 'quantize' AND status = 'finished'")
  [[ $n == 1 ]] || fail "run log: $n finished quantize runs"
fi
# a weight-only 3-bit PTQ file is smaller than the 4-bit one? (both int4 nibbles: the same size)
run "$PARE" quantize "$dir/f.ckpt" --out "$dir/w3.ckpt" --w-bits 3 --granularity group --observer mse \
  --calib-batches 2 --eval-batches 1 --batch 4 --threads 1
run "$PARE" export "$dir/w3.ckpt" --out "$dir/w3.pare"

# --- errors, each naming its key
# pare quantize and pare prune never overwrite their input, and need an --out they can write
cp "$dir/f.ckpt" "$dir/keep.ckpt"
for c in "quantize --w-bits 8" "prune --prune magnitude"; do
  set -- $c
  expect 2 "is the same file as the checkpoint" "$PARE" "$@" "$dir/keep.ckpt" --out "$dir/./keep.ckpt"
  expect 2 "--out: expected the path of the checkpoint to write" "$PARE" "$@" "$dir/keep.ckpt"
  expect 2 "does not exist: expected an existing directory" "$PARE" "$@" "$dir/keep.ckpt" --out "$dir/no/x.ckpt"
done
cmp -s "$dir/f.ckpt" "$dir/keep.ckpt" || fail "quantize / prune changed their input"
e=(train "${model[@]}" --steps 1 --out "$dir/e.ckpt")
expect 2 "w-bits 9: expected 2 to 8" "$PARE" "${e[@]}" --w-bits 9
expect 2 "--w-bits" "$PARE" "${e[@]}" --w-bits 40
expect 2 "a-bits 1: expected 2 to 8" "$PARE" "${e[@]}" --w-bits 8 --a-bits 1
expect 2 "observer" "$PARE" "${e[@]}" --w-bits 8 --observer median
expect 1 "group-size 48 (site h.0.attn.qkv, input width 64): expected a multiple of 32 that divides" \
  "$PARE" "${e[@]}" --w-bits 4 --granularity group --group-size 48
expect 1 "quant-override rule 1: 'h.7.*' matches no linear site" "$PARE" "${e[@]}" --w-bits 4 --quant-override "h.7.*=w8"
expect 1 "quant-override rule 2: unknown setting 'w4x'" "$PARE" "${e[@]}" --w-bits 4 --quant-override "h.0.*=w8;lm_head=w4x"
expect 1 "symmetric false with w-bits 8" "$PARE" "${e[@]}" --w-bits 8 --symmetric false
expect 1 "a tied head is wte itself" "$PARE" "${e[@]}" --tied --w-bits 8 --quant-head
expect 1 "a-bits 8 without w-bits" "$PARE" "${e[@]}" --quant-override "h.0.attn.qkv=w0,a8"
expect 2 "--lsq learns during training" "$PARE" quantize "$dir/f.ckpt" --out "$dir/x.ckpt" --w-bits 4 --lsq
expect 2 "nothing to do" "$PARE" quantize "$dir/f.ckpt" --out "$dir/x.ckpt"
expect 2 "is already quantized" "$PARE" quantize "$dir/ptq.ckpt" --out "$dir/x.ckpt" --w-bits 8
expect 2 "--format q4: checkpoint" "$PARE" export "$dir/qat.ckpt" --out "$dir/x.pare" --format q4

[[ $fails == 0 ]] || { echo "$fails check(s) failed"; exit 1; }
echo "all quantization CLI checks passed"
