#!/usr/bin/env python3
"""rounds_table.py [REF_LABEL] - the table of interleaved benchmark rounds.

Reads lines "ROUND FILE DECODE PROMPT" (tokens/s of one `pare bench` run) from
stdin; the first FILE seen is the reference. Prints per file the median decode
and prompt tokens/s over the rounds, and the median (min, max) over rounds of
the ratio to the same round's reference figure, so a load that changes between
rounds moves both sides of a ratio. REF_LABEL names the reference in the header
(default "ref"). Used by bench_quant.sh and bench_sparse.sh.
"""
import collections
import statistics
import sys

ref = sys.argv[1] if len(sys.argv) > 1 else "ref"
rows = [line.split() for line in sys.stdin if line.strip()]
files = list(dict.fromkeys(r[1] for r in rows))
by = collections.defaultdict(dict)
for r, f, d, p in rows:
    by[r][f] = (float(d), float(p))
x = "x " + ref
w = max(6, max(len(f) for f in files)) if files else 6
print("%-*s %12s %8s %16s %12s %8s %16s" % (w, "file", "decode tok/s", x, "(min, max)", "prompt tok/s", x, "(min, max)"))
for f in files:
    out = []
    for k in (0, 1):
        v = [by[r][f][k] for r in by]
        rat = [by[r][f][k] / by[r][files[0]][k] for r in by]
        out += [statistics.median(v), statistics.median(rat), "(%.2f, %.2f)" % (min(rat), max(rat))]
    print("%-*s %12.1f %8.2f %16s %12.1f %8.2f %16s" % tuple([w, f] + out))
