#!/usr/bin/env python3
"""torch_decode.py - the PyTorch reference for `pare bench`: the same GPT as
train/gpt.h (pre-norm, fused qkv, causal softmax attention, GELU tanh, layer
norm eps 1e-5, biases, untied head) decoding with a KV cache, batch 1, in
inference mode, timed the way `pare bench` times the runtime:

  decode: N tokens one at a time (greedy), each step appends one position to
          the cached keys and values; when the context is full the cache
          restarts; the time of the decode steps only;
  prompt: one batched forward over the context (or --prompt-tokens);
  each figure is the best of --repeat runs.

Weights are random (speed does not depend on their values).

Prints a readable line and
  RESULT impl=torch config=small threads=1 decode_tokens_per_s=... prompt_tokens_per_s=... rss_mib=...
For 2 threads run it with OMP_WAIT_POLICY=PASSIVE (bench_infer.sh does).

Usage: torch_decode.py [--config small|baseline] [--threads N] [--tokens N] [--repeat N]
"""
import argparse
import resource
import time

import torch

from torch_model import GPT

CONFIGS = {
    # n_layer, n_head, n_embd, ctx, vocab
    "small": (6, 6, 384, 256, 256),
    "baseline": (4, 4, 128, 64, 65),
}


def time_decode(model, n):
    cache, pos, tok, secs = model.new_cache(), 0, torch.zeros(1, 1, dtype=torch.long), 0.0
    for _ in range(n):
        if pos == model.ctx:
            cache, pos = model.new_cache(), 0
        t0 = time.perf_counter()
        logits = model(tok, cache, pos)
        tok = logits.argmax(dim=-1).view(1, 1)
        secs += time.perf_counter() - t0
        pos += 1
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L, H, C, ctx, V = CONFIGS[a.config]
    model = GPT(L, H, C, ctx, V).eval()
    T = a.prompt_tokens if 0 < a.prompt_tokens < ctx else ctx
    ids = (torch.arange(T) * 31 + 7).remainder(V).view(1, T)
    with torch.inference_mode():
        time_decode(model, min(a.tokens, 8))  # warm-up
        dec, pre = float("inf"), float("inf")
        for _ in range(a.repeat):
            dec = min(dec, time_decode(model, a.tokens))
            t0 = time.perf_counter()
            model(ids, model.new_cache(), 0)
            pre = min(pre, time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {torch.__version__} {a.config}: decode {a.tokens / dec:.1f} tokens/s, "
          f"prompt {T / pre:.1f} tokens/s ({T} tokens), {a.threads} threads, peak RSS {rss:.0f} MiB")
    print(f"RESULT impl=torch config={a.config} threads={a.threads} decode_tokens_per_s={a.tokens / dec:.3f} "
          f"prompt_tokens_per_s={T / pre:.3f} rss_mib={rss:.1f}")


if __name__ == "__main__":
    main()
