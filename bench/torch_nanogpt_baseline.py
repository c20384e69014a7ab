#!/usr/bin/env python3
"""torch_nanogpt_baseline.py - nanoGPT's CPU baseline on tinyshakespeare in
PyTorch, the reference for bench/nanogpt_baseline.sh.

The run (nanoGPT README, "I only have a macbook"): character vocabulary, last
10% of the text for validation, 4 layers, 4 heads, width 128, context 64,
batch 12, 2000 steps, AdamW lr 1e-3 with 100 warmup steps and cosine decay to
1e-4 at step 2000, betas (0.9, 0.99), weight decay 0.1 on matrices and
embeddings, gradient clipping at 1.0, no dropout, no biases, LM head tied to
the token embedding (nanoGPT's defaults). Validation loss on --eval-batches
random validation batches at steps 500, 1000, 1500 and 2000.

Prints progress and
  RESULT impl=torch train_s=... wall_s=... val_500=... val_1000=... val_1500=... val_2000=...
train_s is the time inside training steps only (evaluation excluded).

Usage: torch_nanogpt_baseline.py DATA [--threads N] [--steps N] [--eval-batches N]
"""
import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

from torch_model import GPT

L, H, C, T, B = 4, 4, 128, 64, 12


def lr_at(step, steps, lr=1e-3, min_lr=1e-4, warmup=100):
    if step < warmup:
        return lr * (step + 1) / warmup
    r = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-batches", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    text = open(a.data, "rb").read()
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]

    def batch(split):
        d = train if split == "train" else val
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])

    model = GPT(L, H, C, T, len(chars), bias=False, tied=True)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
    results, train_s, t_wall = {}, 0.0, time.perf_counter()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps)
        x, y = batch("train")
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_s += time.perf_counter() - t0
        if (step + 1) % 500 == 0:
            model.eval()
            with torch.no_grad():
                tot = 0.0
                for _ in range(a.eval_batches):
                    vx, vy = batch("val")
                    lv = model(vx)
                    tot += F.cross_entropy(lv.view(-1, lv.size(-1)), vy.view(-1)).item()
            model.train()
            results[step + 1] = tot / a.eval_batches
            print(f"step {step + 1}: train loss {loss.item():.4f}, val loss {results[step + 1]:.4f}, "
                  f"{train_s:.1f} s in training", flush=True)
    wall = time.perf_counter() - t_wall
    vals = " ".join(f"val_{k}={v:.4f}" for k, v in sorted(results.items()))
    print(f"RESULT impl=torch threads={a.threads} train_s={train_s:.1f} wall_s={wall:.1f} {vals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
