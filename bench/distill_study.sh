#!/usr/bin/env bash
# distill_study.sh BUILD TEACHER.ckpt [DB] - the distillation results table of docs/distillation.md.
#
# On tinyshakespeare, a student of the nanoGPT CPU baseline's size (4 layers, width 128, ctx 64, batch
# 12, 2000 steps, lr 1e-3 -> 1e-4; 2 heads, a count that divides the teacher's 6, so the attention terms
# can pair heads) is trained, for each seed in SEEDS (default "1 2 3"), alone and distilled from TEACHER:
#   alone | KD T=1 | KD T=2 | KD T=4 | KD T=2 + attention mse | KD T=2 + attention kl |
#   KD T=2 + attention mse + hidden states
# (kd-alpha 0.5; the attention and hidden weights, 100 for attention MSE, 1 for attention KL, 1 for the
# hidden states, were fixed before any result by making each term's value at the first step comparable
# to the cross-entropy's, about 0.4, 0.5 and 1.2 against 4.2). Every run is recorded in DB (default
# ./distill_study.db, named "distill/<setting>/seed<k>"); the table (validation loss on 200 batches at the
# end, mean and sample standard deviation over seeds) is printed from the database at the end, so it can
# be rebuilt from the file alone: bash bench/distill_study.sh --table DB.
# JOBS (default 1) runs that many trainings side by side, THREADS (default 1) threads each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

table() {
  sqlite3 -separator ' | ' "$1" "
    WITH r AS (
      SELECT substr(u.name, 9, instr(substr(u.name, 9), '/') - 1) AS setting, x.value AS val
      FROM runs u JOIN results x ON x.run_id = u.id
      WHERE u.name LIKE 'distill/%' AND u.status = 'finished' AND x.name = 'val_loss')
    SELECT setting, count(*) AS seeds, printf('%.4f', avg(val)) AS mean,
           printf('%.4f', CASE WHEN count(*) > 1 THEN sqrt((sum(val * val) - sum(val) * sum(val) / count(*)) / (count(*) - 1)) END) AS sd,
           printf('%.4f', min(val)) AS min, printf('%.4f', max(val)) AS max
    FROM r GROUP BY setting ORDER BY mean"
}

if [[ ${1:-} == --table ]]; then
  echo "setting | seeds | mean val loss | sd | min | max"
  table "${2:?usage: distill_study.sh --table DB}"
  exit 0
fi
build=${1:?usage: distill_study.sh BUILD TEACHER.ckpt [DB]}
teacher=${2:?usage: distill_study.sh BUILD TEACHER.ckpt [DB]}
db=${3:-distill_study.db}
data=${PARE_SHARED_DATA:-$here/../../shared/data}/tinyshakespeare.txt
[[ -f $data ]] || { echo "distill_study: $data not found (README.md, Data)" >&2; exit 1; }
pare=$build/pare
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=PASSIVE
student=(--data "$data" --vocab char --n-layer 4 --n-head 2 --n-embd 128 --ctx 64 --batch 12 --steps 2000
         --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta2 0.99 --weight-decay 0.1 --eval-every 500 --eval-batches 200
         --threads "${THREADS:-1}" --sample-tokens 0 --db "$db")
declare -A setting=(
  [alone]=""
  [kd-T1]="--teacher $teacher --kd-temp 1"
  [kd-T2]="--teacher $teacher --kd-temp 2"
  [kd-T4]="--teacher $teacher --kd-temp 4"
  [kd-T2+attn-mse]="--teacher $teacher --kd-temp 2 --attn-weight 100 --attn-kind mse"
  [kd-T2+attn-kl]="--teacher $teacher --kd-temp 2 --attn-weight 1 --attn-kind kl"
  [kd-T2+attn-mse+hidden]="--teacher $teacher --kd-temp 2 --attn-weight 100 --attn-kind mse --hidden-weight 1"
)
jobs=()
for seed in ${SEEDS:-1 2 3}; do
  for s in "${!setting[@]}"; do
    jobs+=("$s $seed")
  done
done
run() {
  local s=$1 seed=$2
  # shellcheck disable=SC2086
  "$pare" train "${student[@]}" ${setting[$s]} --seed "$seed" --name "distill/$s/seed$seed" \
    --out "$out/$s.$seed.ckpt" >"$out/$s.$seed.log" 2>&1 || echo "distill_study: $s seed $seed failed: $(tail -2 "$out/$s.$seed.log")" >&2
  echo "done: $s seed $seed: $(grep -o 'val loss [0-9.]*' "$out/$s.$seed.log" | tail -1)"
}
running=0
for j in "${jobs[@]}"; do
  # shellcheck disable=SC2086
  run $j &
  running=$((running + 1))
  if (( running >= ${JOBS:-1} )); then wait -n; running=$((running - 1)); fi
done
wait
echo
echo "setting | seeds | mean val loss | sd | min | max"
table "$db"
