#!/usr/bin/env bash
# test_infer_cli.sh PARE - the inference commands end to end: export to every
# storage type, `pare eval FILE` equals `pare eval CKPT` for f32 (same
# validation batches) and stays close for q8, greedy `pare generate` of the
# f32 file equals greedy `pare sample` of the checkpoint, `pare sample FILE`
# works, `pare bench --json` prints its keys, and bad input is a clear error
# with the right exit status (2 usage, 1 runtime).
set -uo pipefail
PARE=${1:?usage: test_infer_cli.sh path/to/pare}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export PARE_DB="$dir/pare.db"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
run() { "$@" >"$dir/out" 2>"$dir/err" || fail "'$*' exited $?: $(tail -3 "$dir/err")"; }
# json KEY: the value of "KEY" in the JSON object in $dir/out
json() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" "$dir/out" | tail -1; }
# expect STATUS TEXT CMD...: the command exits with STATUS and its stderr contains TEXT
expect() {
  local want=$1 text=$2; shift 2
  "$@" >"$dir/out" 2>"$dir/err"; local got=$?
  [[ $got == "$want" ]] || fail "'$*' exited $got, expected $want: $(tail -2 "$dir/err")"
  grep -qF -- "$text" "$dir/err" || fail "'$*': stderr lacks '$text': $(tail -2 "$dir/err")"
}

run "$PARE" train --data builtin:markov --vocab char --n-layer 2 --n-embd 64 --n-head 2 --ctx 32 --batch 8 \
  --steps 60 --eval-every 0 --eval-batches 2 --threads 1 --sample-tokens 0 --out "$dir/m.ckpt"
run "$PARE" eval "$dir/m.ckpt" --eval-batches 4 --batch 4 --threads 1 --json
ckpt_loss=$(json val_loss)
for f in f32 q8 q4 q4a; do
  run "$PARE" export "$dir/m.ckpt" --out "$dir/m.$f.pare" --format "$f" --json
  [[ $(json bytes) -gt 0 ]] || fail "export $f --json: no bytes"
done
# sizes: q8 about 1/4 of f32 and q4 smaller still (embeddings stay f32)
s32=$(stat -c %s "$dir/m.f32.pare"); s8=$(stat -c %s "$dir/m.q8.pare"); s4=$(stat -c %s "$dir/m.q4.pare")
(( s8 * 2 < s32 && s4 < s8 )) || fail "file sizes f32 $s32, q8 $s8, q4 $s4"

# eval of the f32 file = eval of the checkpoint (the data comes from the file's metadata)
run "$PARE" eval "$dir/m.f32.pare" --eval-batches 4 --batch 4 --threads 1 --json
f32_loss=$(json val_loss)
awk -v a="$ckpt_loss" -v b="$f32_loss" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }' ||
  fail "eval: checkpoint $ckpt_loss, f32 file $f32_loss"
run "$PARE" eval "$dir/m.q8.pare" --eval-batches 4 --batch 4 --threads 1 --json
q8_loss=$(json val_loss)
awk -v a="$f32_loss" -v b="$q8_loss" 'BEGIN { exit !(b < a * 1.02 && b > a * 0.98) }' ||
  fail "eval: q8 file $q8_loss is not within 2% of f32 $f32_loss"

# greedy generation of the f32 file = greedy sampling of the checkpoint
run "$PARE" sample "$dir/m.ckpt" --tokens 40 --temperature 0 --json
want=$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' "$dir/out")
run "$PARE" generate "$dir/m.f32.pare" --tokens 40 --temperature 0 --json
got=$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' "$dir/out")
[[ -n $want && $got == "$want" ]] || fail "greedy text differs: sample CKPT '$want', generate FILE '$got'"
run "$PARE" sample "$dir/m.q4.pare" --tokens 10 --sample-seed 3 --json
[[ $(json tokens) == 10 ]] || fail "sample FILE: expected 10 tokens: $(cat "$dir/out")"
run "$PARE" generate "$dir/m.q8.pare" --tokens 10 --limbs 1 --temperature 0

run "$PARE" bench "$dir/m.q8.pare" --tokens 8 --repeat 1 --threads 1 --json
for k in decode_tokens_per_s prompt_tokens_per_s bytes peak_rss_bytes; do
  v=$(json "$k")
  awk -v v="$v" 'BEGIN { exit !(v + 0 > 0) }' || fail "bench --json: $k is '$v'"
done
[[ $(json bytes) == "$s8" ]] || fail "bench bytes $(json bytes) != file size $s8"

# errors
expect 2 "group size 48" "$PARE" export "$dir/m.ckpt" --out "$dir/x.pare" --format q4 --group-size 48
[[ -e $dir/x.pare ]] && fail "a failed export left a file"
compgen -G "$dir/x.pare*.tmp" >/dev/null && fail "a failed export left a temporary file"
# export never replaces its own checkpoint, nor a read-only file (whose contents stay)
cp "$dir/m.ckpt" "$dir/m2.ckpt"
expect 2 "same file as the checkpoint" "$PARE" export "$dir/m2.ckpt" --out "$dir/m2.ckpt"
cmp -s "$dir/m.ckpt" "$dir/m2.ckpt" || fail "export --out over its checkpoint changed it"
printf 'keep' >"$dir/ro.pare"
chmod 444 "$dir/ro.pare"
expect 2 "is read-only" "$PARE" export "$dir/m.ckpt" --out "$dir/ro.pare"
[[ $(cat "$dir/ro.pare") == keep ]] || fail "export replaced a read-only file"
expect 2 "--out" "$PARE" export "$dir/m.ckpt" --format q8
expect 2 "--format" "$PARE" export "$dir/m.ckpt" --out "$dir/x.pare" --format q3
head -c 300 "$dir/m.q8.pare" >"$dir/trunc.pare"
expect 1 "file size: header says" "$PARE" generate "$dir/trunc.pare"
expect 1 "magic" "$PARE" bench "$dir/m.ckpt"
expect 1 "cannot open" "$PARE" eval "$dir/none.pare"
expect 2 "--prompt" "$PARE" generate "$dir/m.f32.pare" --prompt $'\x01'

if (( fails )); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "inference commands: all checks passed"
