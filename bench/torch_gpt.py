#!/usr/bin/env python3
"""torch_gpt.py - the PyTorch reference for bench/bench_train.c: the same
GPT (train/gpt.h: pre-norm, fused qkv, causal softmax attention, GELU tanh,
layer norm eps 1e-5, biases, untied head), the same batch shape and the same
step (zero grads, forward, cross-entropy, backward, global-norm clipping to
1, AdamW lr 1e-3, betas 0.9/0.95, weight decay 0.1 on matrices and
embeddings), timed the same way (median step over --steps after --warmup).

Attention is written out (q k^T, mask, softmax, P v) as nanoGPT's CPU path
does: PyTorch 1.13 has no fused attention kernel.

Prints a readable line and
  RESULT impl=torch config=small threads=2 tokens_per_s=... step_s=... rss_mib=... loss=...
For 2 threads run it with OMP_WAIT_POLICY=PASSIVE (bench_train.sh does).

Usage: torch_gpt.py [--config small|tiny] [--threads N] [--steps N] [--warmup N]
"""
import argparse
import resource
import sys
import time

import torch
import torch.nn.functional as F

from torch_model import GPT

CONFIGS = {
    # n_layer, n_head, n_embd, ctx, batch
    "small": (6, 6, 384, 256, 8),
    "tiny": (4, 4, 128, 128, 16),
}
VOCAB = 256


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=CONFIGS, default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Python + torch, no model
    L, H, C, T, B = CONFIGS[a.config]
    model = GPT(L, H, C, T, VOCAB)
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(7)
    times, loss = [], None
    for s in range(a.warmup + a.steps):
        x = torch.randint(0, VOCAB, (B, T), generator=g)
        y = torch.randint(0, VOCAB, (B, T), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, VOCAB), y.view(-1), ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    nparams = sum(p.numel() for p in model.parameters())
    tps = B * T / med
    print(f"torch {torch.__version__} {a.config} ({nparams} params), {a.threads} thread(s), batch {B}x{T}: "
          f"{tps:.0f} tokens/s (median step {med:.4f} s over {a.steps}, after {a.warmup} warm-up), "
          f"peak RSS {rss:.1f} MiB ({base:.1f} MiB of it before the model: Python and torch)")
    print(f"RESULT impl=torch config={a.config} threads={a.threads} tokens_per_s={tps:.1f} step_s={med:.5f} "
          f"rss_mib={rss:.1f} loss={loss.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
