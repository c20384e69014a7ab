#!/usr/bin/env bash
# test_report_browser.sh PARE - `pare report` checked in a real browser: a
# small lineage of real runs (train, train --init, eval, export, eval of the
# model file) is recorded, the report is written, Debian's headless Chromium
# takes a 1200x1600 screenshot of report.html, and png_check.py checks that the
# screenshot is a valid PNG of that size showing text, tables and the
# (coloured) gnuplot figures rather than a blank or broken page.
# Skips (exit 77) when chromium or python3 is missing: apt-get install chromium.
set -uo pipefail
PARE=${1:?usage: test_report_browser.sh path/to/pare}
here=$(cd "$(dirname "$0")" && pwd)
chromium=${PARE_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z $chromium || ! -x $chromium ]]; then
  echo "SKIP: chromium not found (apt-get install chromium, or set PARE_CHROMIUM)"
  exit 77
fi
command -v python3 >/dev/null || { echo "SKIP: python3 not found (needed to decode the screenshot)"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export PARE_DB="$dir/pare.db"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

tiny=(--data builtin:copy --vocab char --n-layer 1 --n-embd 32 --n-head 2 --batch 4 --eval-batches 2
      --threads 1 --sample-tokens 0 --eval-every 10 --steps 40)
"$PARE" train "${tiny[@]}" --name teacher --out "$dir/a.ckpt" >/dev/null 2>"$dir/log" || fail "train: $(cat "$dir/log")"
"$PARE" train "${tiny[@]}" --name student --lr 3e-3 --init "$dir/a.ckpt" --out "$dir/b.ckpt" >/dev/null 2>"$dir/log" ||
  fail "train --init: $(cat "$dir/log")"
"$PARE" eval "$dir/b.ckpt" --eval-batches 2 --threads 1 >/dev/null 2>"$dir/log" || fail "eval: $(cat "$dir/log")"
"$PARE" export "$dir/b.ckpt" --out "$dir/b.q8.pare" --format q8 >/dev/null 2>"$dir/log" || fail "export: $(cat "$dir/log")"
"$PARE" eval "$dir/b.q8.pare" --eval-batches 2 --threads 1 >/dev/null 2>"$dir/log" || fail "eval FILE: $(cat "$dir/log")"
"$PARE" report --out "$dir/rep" --title "Browser check" >"$dir/log" 2>&1 || fail "report: $(cat "$dir/log")"
html="$dir/rep/report.html"
[[ -s $html ]] || { echo "FAIL: no $html"; exit 1; }
grep -q "<h2>Runs</h2>" "$html" || fail "report lacks its runs table"

min_colour=500
if [[ $(grep -o "data:image/png;base64," "$html" | wc -l) != 2 ]]; then # loss curves, size against loss
  if command -v gnuplot >/dev/null; then
    fail "report lacks its two figures although gnuplot is installed"
  else
    echo "note: gnuplot is missing, so the report has no figures; their pixels are not checked"
    min_colour=0
  fi
fi

# The browser: a fresh profile, no network, no GPU; bounded in time.
profile="$dir/profile"
mkdir -p "$profile"
shot="$dir/report.png"
timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
  --screenshot="$shot" --window-size=1200,1600 "file://$html" >"$dir/chromium.log" 2>&1
st=$?
[[ $st == 0 && -s $shot ]] || { echo "FAIL: chromium exited $st without a screenshot: $(tail -5 "$dir/chromium.log")"; exit 1; }
[[ -n ${PARE_KEEP_SCREENSHOT:-} ]] && cp "$shot" "$PARE_KEEP_SCREENSHOT"

# A blank page has one colour and no ink; the report has text (ink), many
# anti-aliased colours, and gnuplot's coloured curves.
python3 "$here/png_check.py" "$shot" --width 1200 --height 1600 --min-colours 50 --min-ink 0.005 \
  --min-colour-pixels "$min_colour" || fail "the screenshot of the report does not look right"

if ((fails)); then echo "$fails failure(s)"; exit 1; fi
echo "report rendered by $chromium: ok"
