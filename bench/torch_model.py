"""torch_model.py - pare's GPT (train/gpt.h) in PyTorch 1.13, shared by the benchmark scripts.

Pre-norm blocks, fused qkv, causal softmax attention written out (q k^T, mask, softmax, P v, as
nanoGPT's CPU path: PyTorch 1.13 has no fused attention kernel), GELU tanh, layer norm eps 1e-5,
biases on or off, LM head untied or tied to the token embedding, GPT-2 initialisation. forward()
takes an optional KV cache for decoding: cache = model.new_cache(), then forward(ids, cache, pos)
appends ids' keys and values at positions pos.. and returns the logits of the last position only.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H, ctx, bias):
        super().__init__()
        self.H = H
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C, bias=bias)
        self.proj = nn.Linear(C, C, bias=bias)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C, bias=bias)
        self.mproj = nn.Linear(4 * C, C, bias=bias)
        if not bias:
            self.ln1.bias = None
            self.ln2.bias = None
        self.register_buffer("mask", torch.ones(ctx, ctx, dtype=torch.bool).tril())

    def forward(self, x, cache=None, pos=0):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # append to the cache, attend to everything cached so far
            kc, vc = cache
            kc[:, :, pos:pos + T] = k
            vc[:, :, pos:pos + T] = v
            k, v = kc[:, :, :pos + T], vc[:, :, :pos + T]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        if T > 1:
            att = att.masked_fill(~self.mask[pos:pos + T, :pos + T], float("-inf"))
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(y)
        return x + self.mproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, H, C, ctx, V, bias=True, tied=False):
        super().__init__()
        self.ctx, self.H, self.D, self.tied = ctx, H, C // H, tied
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(ctx, C)
        self.blocks = nn.ModuleList(Block(C, H, ctx, bias) for _ in range(L))
        self.lnf = nn.LayerNorm(C, eps=1e-5)
        if not bias:
            self.lnf.bias = None
        self.head = None if tied else nn.Linear(C, V, bias=False)
        for n, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if n.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def new_cache(self):
        return [(torch.zeros(1, self.H, self.ctx, self.D), torch.zeros(1, self.H, self.ctx, self.D))
                for _ in self.blocks]

    def forward(self, ids, cache=None, pos=0):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(pos, pos + T))
        for i, b in enumerate(self.blocks):
            x = b(x, None if cache is None else cache[i], pos)
        if cache is not None:
            x = x[:, -1:]
        x = self.lnf(x)
        return x @ self.wte.weight.t() if self.tied else self.head(x)

    def param_groups(self, weight_decay):
        """AdamW groups as pare's: decay on matrices and embeddings, none on gains and biases."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
