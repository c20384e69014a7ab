#!/usr/bin/env bash
# test_runlog_cli.sh PARE - every command that trains, evaluates, samples,
# exports or benchmarks records a run, and the runs form the lineage the
# files imply: train -> export (f32, q8, q4) -> eval of each file and bench,
# train -> sample, train -> eval. Checked with SQL on the database (sqlite3),
# then `pare plot pareto` draws one labelled point per exported model.
set -uo pipefail
PARE=${1:?usage: test_runlog_cli.sh path/to/pare}
command -v sqlite3 >/dev/null || { echo "SKIP: the sqlite3 shell is missing (apt-get install sqlite3)"; exit 77; }
dir=$(mktemp -d)
trap 'umount "$dir/ro" 2>/dev/null; rm -rf "$dir"' EXIT
export PARE_DB="$dir/pare.db"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
q() { sqlite3 -separator '|' "$PARE_DB" "$1"; }
# check SQL EXPECTED: the query's output equals EXPECTED
check() { local got; got=$(q "$1"); [[ $got == "$2" ]] || fail "$1: got '$got', expected '$2'"; }
run() { "$@" >"$dir/out" 2>&1 || fail "'$*' exited $?: $(tail -3 "$dir/out")"; }

tiny=(--data builtin:copy --vocab char --n-layer 1 --n-embd 32 --n-head 2 --batch 4 --eval-batches 2
      --threads 1 --sample-tokens 0 --eval-every 0 --steps 20)
run "$PARE" train "${tiny[@]}" --name teacher --out "$dir/t.ckpt"
run "$PARE" sample "$dir/t.ckpt" --prompt "ab>" --tokens 3 --temperature 0
run "$PARE" eval "$dir/t.ckpt" --eval-batches 2 --batch 4 --threads 1
for f in f32 q8 q4; do
  run "$PARE" export "$dir/t.ckpt" --out "$dir/t.$f.pare" --format "$f"
  run "$PARE" eval "$dir/t.$f.pare" --eval-batches 2 --batch 4 --threads 1
done
run "$PARE" bench "$dir/t.q8.pare" --tokens 4 --repeat 1
run "$PARE" sample "$dir/t.q4.pare" --prompt "ab>" --tokens 3 --temperature 0
run "$PARE" export "$dir/t.ckpt" --out "$dir/t.q8.pare" --format q8 --db none # --db none records nothing

# one run per command, all finished; none from the --db none export
check "SELECT group_concat(command, ' ') FROM (SELECT command FROM runs ORDER BY id)" \
      "train sample eval export eval export eval export eval bench sample"
check "SELECT count(*) FROM runs WHERE status <> 'finished' OR ended_at IS NULL" "0"
# lineage: everything made from the checkpoint points at the training run, everything
# made from a model file at the export that wrote it
check "SELECT group_concat(r.command || '<-' || coalesce(p.command || ':' || coalesce(c.value, ''), 'none'), ' ')
       FROM (SELECT * FROM runs ORDER BY id) r LEFT JOIN runs p ON p.id = r.parent_id
       LEFT JOIN config c ON c.run_id = p.id AND c.key = 'method'" \
      "train<-none sample<-train: eval<-train: export<-train: eval<-export:f32 export<-train: eval<-export:q8 export<-train: eval<-export:q4/g32 bench<-export:q8 sample<-export:q4/g32"
# the exported files: kind model, bytes and SHA-256 of the file on disk
for f in f32 q4; do
  check "SELECT bytes || ' ' || sha256 FROM artifacts WHERE kind = 'model' AND path = '$dir/t.$f.pare'" \
        "$(stat -c %s "$dir/t.$f.pare") $(sha256sum "$dir/t.$f.pare" | cut -d' ' -f1)"
done
check "SELECT count(*) FROM results r JOIN runs u ON u.id = r.run_id WHERE u.command = 'export'
       AND r.name IN ('bytes', 'params', 'f32_param_bytes', 'compression')" "12"
# eval of a model file records val_loss and the data it read; the file's eval
# equals the checkpoint's within quantization error (f32: same network)
check "SELECT count(*) FROM runs r JOIN results v ON v.run_id = r.id AND v.name = 'val_loss'
       WHERE r.command = 'eval' AND r.data_path = 'builtin:copy'" "4"
check "SELECT abs(a.value - b.value) < 1e-4 FROM results a, results b
       WHERE a.name = 'val_loss' AND b.name = 'val_loss' AND a.run_id = 3 AND b.run_id = 5" "1"
# bench: speeds, memory and size as results; its config names the file
check "SELECT group_concat(name, ',') FROM (SELECT r.name FROM results r JOIN runs u ON u.id = r.run_id
       WHERE u.command = 'bench' AND r.value > 0 ORDER BY r.name)" \
      "bytes,decode_tokens_per_s,ms_per_token,peak_rss_bytes,prompt_tokens,prompt_tokens_per_s"
check "SELECT c.value FROM config c JOIN runs u ON u.id = c.run_id WHERE u.command = 'bench' AND c.key = 'model'" \
      "$dir/t.q8.pare"
# sample: tokens generated
check "SELECT group_concat(value, ',') FROM results r JOIN runs u ON u.id = r.run_id
       WHERE u.command = 'sample' AND r.name = 'tokens'" "3.0,3.0"

# the pareto figure: one point per exported model, labelled by method
mkdir -p "$dir/fig"
if "$PARE" plot pareto --out "$dir/fig/pareto.png" >"$dir/out" 2>&1; then
  [[ $(cut -f3 "$dir/fig/pareto.dat" | tail -n +2 | sort | tr '\n' ' ') == "f32 q4/g32 q8 " ]] ||
    fail "pareto points: $(cat "$dir/fig/pareto.dat")"
  [[ $(head -c 8 "$dir/fig/pareto.png" | od -An -tx1 | tr -d ' ') == 89504e470d0a1a0a ]] || fail "pareto.png is not a PNG"
elif grep -q "gnuplot was not found" "$dir/out"; then
  echo "note: gnuplot is missing; the pareto data is checked without the image"
  [[ $(tail -n +2 "$dir/fig/pareto.dat" | wc -l) == 3 ]] || fail "pareto rows: $(cat "$dir/fig/pareto.dat")"
else
  fail "pare plot pareto: $(cat "$dir/out")"
fi

# a run database on read-only storage can still be read (runs, report): it is opened as immutable
mkdir -p "$dir/ro" "$dir/rosrc"
cp "$PARE_DB" "$dir/rosrc/r.db"
if mount --bind -o ro "$dir/rosrc" "$dir/ro" 2>/dev/null; then
  out=$("$PARE" runs --db "$dir/ro/r.db" 2>&1) || fail "pare runs on a read-only database: $out"
  [[ $out == *" train "* ]] || fail "pare runs on a read-only database lists no run: $out"
  "$PARE" report --db "$dir/ro/r.db" --out "$dir/rorep" --figures false >/dev/null 2>&1 ||
    fail "pare report on a read-only database failed"
  umount "$dir/ro"
else
  echo "note: this machine does not allow a read-only bind mount here; the read-only database case was not run"
fi

if ((fails)); then echo "$fails failure(s)"; exit 1; fi
echo "all run log CLI checks passed"
