#!/usr/bin/env bash
# test_experiment_cli.sh PARE - `pare experiment` end to end: a recipe's
# errors name its file, line and key before anything runs; a sweep runs into
# one database (two at a time) with the lineage its references imply; a
# second run reuses everything; changing one key reruns only what depends on
# it; a deleted output is remade; an interrupted training run resumes its
# checkpoint and ends with the same weights as an uninterrupted one.
set -uo pipefail
PARE=$(realpath "${1:?usage: test_experiment_cli.sh path/to/pare path/to/ckpt_diff}")
CKPT_DIFF=$(realpath "${2:?usage: test_experiment_cli.sh path/to/pare path/to/ckpt_diff}")
command -v sqlite3 >/dev/null || { echo "SKIP: the sqlite3 shell is missing (apt-get install sqlite3)"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
db="$dir/out/t.db"
src=$(cd "$(dirname "$0")/.." && pwd)

# --- the recipes pare ships stay valid against every command's keys (the README's main job, the study)
# (the study's data need not be there: a dry run reads no data)
for recipe in "quickstart" "shakespeare --set data=$dir/absent.txt" "distill --set data=$dir/absent.txt"; do
  set -- $recipe
  "$PARE" experiment "$src/experiments/$1.ini" --out "$dir/$1" "${@:2}" --dry-run > "$1.txt" 2>&1 ||
    fail "experiments/$1.ini: $(head -3 "$1.txt")"
done
grep -q '^experiment quickstart: 29 runs' quickstart.txt || fail "quickstart plan: $(head -1 quickstart.txt)"
grep -q '^experiment distill: 22 runs' distill.txt || fail "distill plan: $(head -1 distill.txt)"
grep -q 'student-kd/seed=3$' shakespeare.txt || fail "the study's students pair with the teachers' seeds"
[[ $(grep -c '^ *[0-9]*  shakespeare/student-kd/' shakespeare.txt) == 3 ]] || fail "the study: expected 3 distilled students"
"$PARE" experiment "$src/experiments/quickstart.ini" --out "$dir/x" --set "stepz=1" --dry-run > set.txt 2>&1
[[ $? == 2 ]] && grep -q "sets no key 'stepz'" set.txt || fail "--set of a key no stage sets: $(cat set.txt)"
q() { sqlite3 -separator '|' "$db" "$1"; }
check() { local got; got=$(q "$1"); [[ $got == "$2" ]] || fail "$1: got '$got', expected '$2'"; }

# --- errors: named by file, line and key, and nothing runs
bad() { # bad TEXT EXPECTED: the recipe is refused with EXPECTED in the message, exit status 2
  printf '%b' "$1" > bad.ini
  "$PARE" experiment bad.ini --out "$dir/bad" > err.txt 2>&1
  local rc=$?
  [[ $rc == 2 ]] || fail "recipe '$1': exit $rc, expected 2"
  grep -qF -- "$2" err.txt || fail "recipe '$1': expected '$2' in: $(cat err.txt)"
}
bad '[t]\ncommand = train\nstepz = 10\n' 'bad.ini:3: stage [t] (train): unknown option'
bad '[t]\ncommand = train\nsteps = ten\n' 'bad.ini:3: stage [t] (train):'
bad '[t]\ncommand = train\nsteps = 10, -5\n' 'bad.ini:3: stage [t] (train):'
bad '[t]\ncommand = trian\n' "bad.ini:2: stage [t]: command 'trian' is not a pare command"
bad '[e]\ncommand = export\n' 'bad.ini:1: stage [e]: export needs `input'
bad '[t]\ncommand = train\ninput = x.ckpt\n' 'bad.ini:3: stage [t]: train takes no input'
bad '[e]\ncommand = export\ninput = t\n[t]\ncommand = train\n' 'refers to stage [t], which is not defined before it'
[[ -e "$dir/bad" ]] && fail "a refused recipe created its output folder"

# --- a sweep: two seeds, each exported twice and evaluated
cat > t.ini <<'EOF'
[experiment]
name = t
jobs = 2

[teacher]
command = train
data = builtin:copy
n-layer = 1
n-embd = 32
n-head = 2
batch = 4
eval-batches = 2
eval-every = 0
sample-tokens = 0
steps = 30
seed = 1, 2

[model]
command = export
input = teacher
format = f32, q8

[ev]
command = eval
input = model
eval-batches = 1
EOF
"$PARE" experiment t.ini --out "$dir/out" --dry-run > plan.txt 2>&1 || fail "dry run: $(cat plan.txt)"
grep -q '^experiment t: 10 runs' plan.txt || fail "dry run: expected 10 runs: $(head -3 plan.txt)"
[[ -e "$db" ]] && fail "a dry run created the database"
"$PARE" experiment t.ini --out "$dir/out" --report=false > run1.txt 2>&1 || fail "first run: $(tail -5 run1.txt)"
grep -q '10 runs: 10 done (0 reused, 0 resumed), 0 failed' run1.txt || fail "first run: $(tail -3 run1.txt)"
check "SELECT count(*) FROM runs WHERE status = 'finished'" "10"
check "SELECT group_concat(command, ' ') FROM (SELECT DISTINCT command FROM runs ORDER BY command)" "eval export train"
# lineage: each eval's parent is the export of the same seed and format, whose parent is that seed's training
label="substr(%s.name, 1, instr(%s.name, ' [') - 1)"
check "SELECT count(*) FROM runs e JOIN runs x ON x.id = e.parent_id JOIN runs t ON t.id = x.parent_id
       WHERE e.command = 'eval' AND x.command = 'export' AND t.command = 'train'
       AND replace(${label//%s/e}, 't/ev/', '') = replace(${label//%s/x}, 't/model/', '')
       AND replace(${label//%s/x}, 't/model/', '') LIKE replace(${label//%s/t}, 't/teacher/', '') || ' format=%'" "4"
check "SELECT count(*) FROM runs WHERE name LIKE 't/model/seed=2 format=q8 [%]'" "1"
[[ -f out/model/seed-2_format-q8.pare ]] || fail "missing out/model/seed-2_format-q8.pare"
# the table: one row per model over both seeds, the q8 file smaller than the f32 one
f32=$(awk '$1 == "model/format=f32" {print $4}' run1.txt)
q8=$(awk '$1 == "model/format=q8" {print $4}' run1.txt)
[[ -n $f32 && -n $q8 ]] && ((q8 < f32)) || fail "table: expected model/format=q8 smaller than f32: $(tail -9 run1.txt)"
grep -qE '^model/format=q8 +export +2 ' run1.txt || fail "table: no row for model/format=q8 over 2 seeds"
# each file's row has the loss of its own evaluations, not another file's made from the same checkpoint
# (int4 and f32 files of one model: their losses differ in the 3rd decimal)
cat > own.ini <<'EOF'
[experiment]
name = own
[t]
command = train
data = builtin:copy
n-layer = 1
n-embd = 32
n-head = 2
batch = 4
eval-batches = 2
eval-every = 0
sample-tokens = 0
steps = 30
[m]
command = export
input = t
format = f32, q4
[ev]
command = eval
input = m
eval-batches = 1
EOF
"$PARE" experiment own.ini --out "$dir/own" --report=false > own.txt 2>&1 || fail "own: $(tail -3 own.txt)"
for fmt in f32 q4; do
  want=$(sqlite3 "$dir/own/own.db" "SELECT printf('%.4f', x.value) FROM runs e JOIN results x ON x.run_id = e.id
         AND x.name = 'val_loss' JOIN runs p ON p.id = e.parent_id WHERE e.command = 'eval' AND p.name LIKE 'own/m/format=$fmt%'")
  got=$(awk -v m="m/format=$fmt" '$1 == m {print $6}' own.txt)
  [[ -n $want && $got == "$want" ]] || fail "table: m/format=$fmt loss $got, its own evaluation's $want"
done

# --- again: everything reused, nothing recorded
n_before=$(q "SELECT count(*) FROM runs")
"$PARE" experiment t.ini --out "$dir/out" > run2.txt 2>&1 || fail "second run: $(tail -5 run2.txt)"
grep -q '10 runs: 10 done (10 reused' run2.txt || fail "second run: $(tail -3 run2.txt)"
check "SELECT count(*) FROM runs" "$n_before"
# the report: the results table first (one row per model over both seeds), then this plan's 10 runs only
md=out/report/report.md
grep -q "^## Results: the experiment's models" "$md" || fail "report: no results table: $(head -5 "$md")"
grep -qE '^\| model/format=q8 \| export \| 2 \| [0-9]+ \| [0-9.]+ \| [0-9.]+ \+- [0-9.]+ ' "$md" ||
  fail "report: no row for model/format=q8 with 2 seeds: $(grep -F 'model/format' "$md")"
grep -q '^10 runs from ' "$md" || fail "report: expected 10 runs: $(sed -n 3p "$md")"
if command -v gnuplot >/dev/null; then
  [[ -s out/report/figures/pareto.png ]] || fail "report: no pareto figure"
  # one point per model over its two seeds: the mean, lowest and highest loss
  awk -F'\t' '$3 == "model/format=q8" && $4 == 2 && $5 <= $2 && $2 <= $6 { ok = 1 } END { exit !ok }' \
    out/report/figures/pareto.dat || fail "pareto points not one per model over seeds: $(cat out/report/figures/pareto.dat)"
fi

# --- one key changed: only what depends on it reruns (eval's key: the 4 evals)
sed -i 's/^eval-batches = 1$/eval-batches = 3/' t.ini
"$PARE" experiment t.ini --out "$dir/out" --report=false > run3.txt 2>&1 || fail "third run: $(tail -5 run3.txt)"
grep -q '10 runs: 10 done (6 reused' run3.txt || fail "changing ev's key: expected 6 reused: $(tail -3 run3.txt)"

# --- a deleted output is remade; what reads it is reused, as the remade file has the same bytes
rm out/model/seed-1_format-f32.pare
"$PARE" experiment t.ini --out "$dir/out" --report=false > run4.txt 2>&1 || fail "fourth run: $(tail -5 run4.txt)"
grep -q '10 runs: 10 done (9 reused' run4.txt || fail "deleted output: expected 9 reused: $(tail -3 run4.txt)"
grep -q 't/model/seed=1 format=f32: started' run4.txt || fail "deleted output: not remade: $(cat run4.txt)"
[[ -f out/model/seed-1_format-f32.pare ]] || fail "the deleted model file was not remade"
# the remade file has the bytes it had: its evaluations (reused) still fill its row, for both seeds
grep -q '^model/format=f32 .* +- ' run4.txt || fail "remade file: its row lost a seed's loss: $(grep '^model/format=f32' run4.txt)"

# --- an interrupted training run resumes and ends where an uninterrupted one does
cat > long.ini <<'EOF'
[experiment]
name = long
[t]
command = train
data = builtin:copy
n-layer = 1
n-embd = 32
n-head = 2
batch = 4
eval-batches = 2
eval-every = 50
ckpt-every = 50
sample-tokens = 0
steps = 20000
threads = 1
EOF
"$PARE" experiment long.ini --out "$dir/long" --report=false > long1.txt 2>&1 &
pid=$!
for _ in $(seq 1 300); do  # until the first checkpoint is there
  [[ -f long/t.ckpt ]] && break
  sleep 0.02
done
sleep 0.1
kill -INT "$pid"
wait "$pid"
rc=$?
[[ $rc == 130 ]] || fail "interrupted experiment: exit $rc, expected 130: $(tail -3 long1.txt)"
grep -q 'stopped by a signal' long1.txt || fail "interrupted experiment: $(tail -3 long1.txt)"
"$PARE" experiment long.ini --out "$dir/long" --report=false > long2.txt 2>&1 || fail "resumed: $(tail -5 long2.txt)"
grep -q 'long/t: resuming its checkpoint' long2.txt || fail "not resumed: $(head -5 long2.txt)"
"$PARE" train --data builtin:copy --n-layer 1 --n-embd 32 --n-head 2 --batch 4 --eval-batches 2 --eval-every 50 \
  --ckpt-every 50 --sample-tokens 0 --steps 20000 --threads 1 --db none --out straight.ckpt > straight.txt 2>&1 ||
  fail "uninterrupted run: $(tail -3 straight.txt)"
"$CKPT_DIFF" long/t.ckpt straight.ckpt > diff.txt 2>&1 ||
  fail "the resumed run's weights differ from the uninterrupted run's: $(cat diff.txt)"
if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "OK: pare experiment: errors by line, a sweep with lineage, reuse, partial reruns, resume"
