#!/usr/bin/env bash
# test_llama.sh PARE PARE_PROBS SRC_DIR CACHE_DIR - GGUF files pare writes,
# run in llama.cpp itself (node-llama-cpp 3.21.1's prebuilt CPU binary,
# installed with npm into CACHE_DIR), against pare's runtime on the same
# model: top-1 agreement at every position, the largest probability
# difference, and the loss of the sequence from each side's probabilities.
# Skips (exit 77) with a message where node or npm is missing.
set -euo pipefail
PARE=$1 PROBS=$2 SRC=$3 CACHE=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node or npm is missing: the llama.cpp parity test needs node-llama-cpp (apt-get install nodejs npm)"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if (( major < 20 )); then
  echo "SKIP: node $(node --version) is older than 20, which node-llama-cpp 3.21.1 needs"
  exit 77
fi
mkdir -p "$CACHE"
cp "$SRC/package.json" "$SRC/probs.mjs" "$CACHE/"
# the prebuilt CPU binary is an optional dependency of node-llama-cpp: named here, so --omit=optional skips only the
# CUDA and Vulkan ones (about 83 MB); NODE_LLAMA_CPP_SKIP_DOWNLOAD keeps its postinstall from building llama.cpp
if [[ ! -d $CACHE/node_modules/@node-llama-cpp/linux-x64 ]]; then
  (cd "$CACHE" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional --no-audit --no-fund --loglevel=error >npm.log 2>&1) ||
    { cat "$CACHE/npm.log" >&2; fail "npm install of node-llama-cpp 3.21.1 (tests/llama/package.json) failed"; }
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# a tiny byte-vocabulary model with widths that are multiples of 32 (for Q8_0 / Q4_0)
"$PARE" train --data builtin:markov --n-layer 2 --n-head 2 --n-embd 64 --ctx 32 --batch 8 --steps 60 --lr 3e-3 \
  --db none --out "$dir/m.ckpt" >/dev/null 2>&1 || fail "train"
"$PARE" export "$dir/m.ckpt" --out "$dir/m.bin" --db none >/dev/null || fail "export f32"
# a sequence like the training data (so the distributions are peaked, not near uniform)
text="itlrrtrsteslll rrrlre eslsttrrta"
ids=$(printf '%s' "$text" | od -An -tu1 | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
"$PROBS" "$dir/m.bin" $ids >"$dir/pare.json" || fail "pare_probs"
compare() { # FORMAT MAXDIFF LOSS_REL
  "$PARE" export "$dir/m.ckpt" --out "$dir/m-$1.gguf" --format "gguf-$1" --db none >/dev/null || fail "export gguf-$1"
  (cd "$CACHE" && node probs.mjs "$dir/m-$1.gguf" $ids) >"$dir/llama-$1.json" 2>"$dir/llama-$1.err" ||
    { cat "$dir/llama-$1.err" >&2; fail "llama.cpp could not run m-$1.gguf"; }
  node -e '
    const fs = require("fs");
    const [a, b, ids, fmt, lim, rel] = [JSON.parse(fs.readFileSync(process.argv[1])), JSON.parse(fs.readFileSync(process.argv[2])),
      process.argv[3].split(" ").map(Number), process.argv[4], Number(process.argv[5]), Number(process.argv[6])];
    if (a.length !== b.length) { console.error(`${fmt}: ${a.length} rows from pare, ${b.length} from llama.cpp`); process.exit(1); }
    let md = 0, agree = 0, la = 0, lb = 0;
    const am = (r) => r.reduce((m, v, i) => (v > r[m] ? i : m), 0);
    for (let t = 0; t < a.length; t++) {
      for (let v = 0; v < a[t].length; v++) md = Math.max(md, Math.abs(a[t][v] - (b[t][v] ?? 0)));
      agree += am(a[t]) === am(b[t]);
      if (t + 1 < a.length) { la -= Math.log(a[t][ids[t + 1]]); lb -= Math.log(b[t][ids[t + 1]]); }
    }
    const n = a.length - 1, d = Math.abs(la - lb) / la;
    console.log(`${fmt}: top-1 agreement ${agree}/${a.length}, max |dp| ${md.toExponential(2)}, loss pare ${(la / n).toFixed(5)} llama.cpp ${(lb / n).toFixed(5)} (rel ${d.toExponential(2)})`);
    if (agree !== a.length && lim < 1) process.exit(1);
    if (md > lim || d > rel) process.exit(1);
  ' "$dir/pare.json" "$dir/llama-$1.json" "$ids" "$1" "$2" "$3" || fail "gguf-$1 against pare's f32 runtime: outside the bounds (max |dp| <= $2, loss within $3)"
}
# f32: the same model; llama.cpp's fp16 GELU table sets the floor (about 5e-5)
compare f32 1e-3 0.005
# quantized files against pare's f32 model: their own rounding, loose bounds (the QAT grids are not done yet)
compare q8_0 2e-2 0.02
compare q4_0 1 0.2
compare q4_1 1 0.2
# the tokenizer: any text tokenizes to exactly its byte ids, and detokenizes back unchanged (spaces before
# punctuation included: tokenizer.ggml.pre = smollm)
probe='Hello, world! A b ,c . d\t\x01 \xc3\xa9 ok ?'
probe=$(printf "$probe")
(cd "$CACHE" && node probs.mjs "$dir/m-f32.gguf" --tokenize "$probe") >"$dir/tok.json" || fail "llama.cpp tokenize"
want=$(printf '%s' "$probe" | od -An -tu1 | tr -s ' \n' ' ' | sed 's/^ //; s/ $//' | tr ' ' ',')
node -e '
  const fs = require("fs"); const r = JSON.parse(fs.readFileSync(process.argv[1]));
  if (r.ids.join(",") !== process.argv[2]) { console.error(`tokens ${r.ids} != bytes ${process.argv[2]}`); process.exit(1); }
  if (r.text !== process.argv[3]) { console.error(`detokenized ${JSON.stringify(r.text)} != ${JSON.stringify(process.argv[3])}`); process.exit(1); }
  console.log(`tokenizer: ${r.ids.length} bytes -> the same ids, detokenized unchanged`);
' "$dir/tok.json" "$want" "$probe" || fail "llama.cpp's tokenizer of the GGUF vocabulary"
echo "ok"
