#!/usr/bin/env python3
"""bench_infer.py - issue 5's inference figures, measured side by side in one run.

For the "small" model (6 layers, 6 heads, width 384, context 256, byte
vocabulary) and the nanoGPT CPU baseline model (4 layers, 4 heads, width 128,
context 64, tinyshakespeare's 65 characters):
  1. make a checkpoint with `pare train` (--steps; 1 step is enough for speed,
     2000 steps is the nanoGPT baseline run and gives meaningful losses);
  2. export it as f32, q8 (int8, per output channel), q4 and q4a (int4, group 32) and
     q4g128 (int4, group 128: fewer scales, faster, a little less accurate);
  3. at 1 and 2 threads: `pare bench` (batch-1 decode of --tokens tokens with
     the KV cache, prompt = one batched forward over the context) for every
     file, and bench/torch_decode.py (PyTorch, same model, KV-cached);
  4. with --eval-batches > 0: `pare eval` validation loss of every file.
Prints one table per model with the ratios the issue asks for:
f32 decode / PyTorch decode, q8 and q4 decode / f32 decode, q8 prompt / f32
prompt, bytes on disk / f32 bytes, and the loss of each storage type.

Usage: bench/bench_infer.py [--build build] [--steps 1] [--tokens 128] [--eval-batches 0]
                            [--models small,baseline] [--threads 1,2] [--limbs 3]
Run it on a quiet machine: the figures are ratios, but a loaded machine
disturbs the memory-bound f32 decode more than the in-cache int8 one.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"  # Debian's python3 with python3-torch
# label: (storage type, group size; -1 = the type's default)
FORMATS = {"f32": ("f32", -1), "q8": ("q8", -1), "q4": ("q4", -1), "q4a": ("q4a", -1), "q4g128": ("q4", 128)}


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"bench_infer: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--eval-batches", type=int, default=0)
    ap.add_argument("--models", default="small,baseline")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--limbs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    pare = os.path.join(ROOT, a.build, "pare")
    if not os.path.exists(pare):
        sys.exit(f"bench_infer: {pare} not found (build first: cmake -S . -B {a.build} && cmake --build {a.build})")
    data = os.environ.get("PARE_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
    shakespeare = os.path.join(data, "tinyshakespeare.txt")
    work = tempfile.mkdtemp(prefix="pare-bench-infer-")
    # the run log of these throwaway runs goes to a database that is deleted with them
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PARE_DB=os.path.join(work, "bench.db"))
    threads = [int(t) for t in a.threads.split(",")]
    try:
        for name in a.models.split(","):
            if name == "small":
                train = ["--data", "builtin:markov", "--vocab", "byte", "--n-layer", "6", "--n-head", "6",
                         "--n-embd", "384", "--ctx", "256", "--batch", "8"]
            elif name == "baseline":
                src = shakespeare if os.path.exists(shakespeare) else "builtin:markov"
                train = ["--data", src, "--vocab", "char", "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
                         "--ctx", "64", "--batch", "12", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup", "100",
                         "--beta2", "0.99", "--weight-decay", "0.1"]
            else:
                sys.exit(f"bench_infer: unknown model {name} (small, baseline)")
            ckpt = os.path.join(work, name + ".ckpt")
            print(f"== {name}: training {a.steps} step(s) ...", flush=True)
            run([pare, "train", *train, "--steps", str(a.steps), "--out", ckpt, "--sample-tokens",
                 "0", "--eval-batches", "1", "--threads", "2", "--json"], env)
            files = {}
            for f, (fmt, group) in FORMATS.items():
                files[f] = os.path.join(work, f"{name}_{f}.pare")
                run([pare, "export", ckpt, "--out", files[f], "--format", fmt, "--group-size", str(group)], env)
            loss = {}
            if a.eval_batches > 0:
                for f in ["ckpt"] + list(FORMATS):
                    r = json.loads(run([pare, "eval", ckpt if f == "ckpt" else files[f], "--eval-batches",
                                        str(a.eval_batches), "--threads", "2", "--json"], env).strip().splitlines()[-1])
                    loss[f] = r["val_loss"]
            rows = {}
            for t in threads:
                for f in FORMATS:
                    out = run([pare, "bench", files[f], "--threads", str(t), "--tokens", str(a.tokens), "--limbs",
                               str(a.limbs), "--repeat", str(a.repeat), "--json"], env)
                    rows[(f, t)] = json.loads(out.strip().splitlines()[-1])
                out = run([PY, os.path.join(ROOT, "bench", "torch_decode.py"), "--config", name, "--threads", str(t),
                           "--tokens", str(a.tokens), "--repeat", str(a.repeat)], env)
                m = re.search(r"decode_tokens_per_s=([\d.]+) prompt_tokens_per_s=([\d.]+) rss_mib=([\d.]+)", out)
                rows[("torch", t)] = {"decode_tokens_per_s": float(m.group(1)), "prompt_tokens_per_s": float(m.group(2)),
                                      "peak_rss_bytes": float(m.group(3)) * 1048576, "bytes": None}
            f32_bytes = rows[("f32", threads[0])]["bytes"]
            print(f"\n{name}: decode {a.tokens} tokens batch 1 (KV cache), prompt = one forward over the context; "
                  f"limbs {a.limbs}; best of {a.repeat}")
            print(f"{'format':7} {'thr':>3} {'decode tok/s':>13} {'x f32':>7} {'x torch':>8} {'prompt tok/s':>13} "
                  f"{'x f32':>7} {'bytes':>10} {'/ f32':>6} {'RSS MiB':>8} {'val loss':>9}")
            for t in threads:
                base = rows[("f32", t)]
                for f in list(FORMATS) + ["torch"]:
                    r = rows[(f, t)]
                    dec, pre = r["decode_tokens_per_s"], r["prompt_tokens_per_s"]
                    b = r["bytes"]
                    print(f"{f:7} {t:3d} {dec:13.1f} {dec / base['decode_tokens_per_s']:7.2f} "
                          f"{dec / rows[('torch', t)]['decode_tokens_per_s']:8.2f} {pre:13.1f} "
                          f"{pre / base['prompt_tokens_per_s']:7.2f} {b if b else '-':>10} "
                          f"{(f'{b / f32_bytes:.3f}' if b else '-'):>6} {r['peak_rss_bytes'] / 1048576:8.1f} "
                          f"{(f'{loss[f]:.4f}' if f in loss else '-'):>9}")
            if "ckpt" in loss:
                print(f"checkpoint (training forward) val loss {loss['ckpt']:.4f}")
            print(flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
