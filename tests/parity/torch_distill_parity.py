#!/usr/bin/env python3
"""torch_distill_parity.py - pare's distillation losses against PyTorch.

Reads what tests/parity/parity_distill.c wrote and recomputes, in float64:
  kd_T     F.kl_div(log_softmax(s / T), softmax(t / T), reduction="batchmean") * T^2
           (Hinton et al. 2015, as DistilBERT's distiller computes it) and its gradient in s
  attn_kl  sum(xlogy(p_t, p_t) - p_t log p_s) / rows (F.kl_div with log p_s) and its gradient in p_s
  vr       the same KL between softmax(V V^T / sqrt(d)) (causal) of the two qkv tensors' values,
           over 2 relation heads, and its gradient in the student's qkv
Each must match to a normwise relative error of 1e-5 (pare computes in float32).

Usage: torch_distill_parity.py FILE. Exit status 0 pass, 1 fail, 77 skip (no torch).
"""
import math
import struct
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"SKIP: PyTorch is not importable ({e}); install python3-torch (scripts/deps.sh --test)")
    sys.exit(77)

TOL = 1e-5


def read(path):
    buf = open(path, "rb").read()
    assert buf[:8] == b"PRTY0001", "not a parity file"
    p, out = 8, {}
    while p < len(buf):
        (n,) = struct.unpack_from("<I", buf, p)
        name = buf[p + 4:p + 4 + n].decode()
        p += 4 + n
        typ, nd = struct.unpack_from("<BI", buf, p)
        p += 5
        dims = struct.unpack_from("<%dI" % nd, buf, p)
        p += 4 * nd
        cnt = math.prod(dims)
        vals = struct.unpack_from("<%df" % cnt, buf, p)
        p += 4 * cnt
        out[name] = torch.tensor(vals, dtype=torch.float64).reshape(dims)
    return out


def err(a, b):
    return float((a - b).abs().max() / max(b.abs().max(), 1e-30))


def main():
    r = read(sys.argv[1])
    fails = 0

    def check(name, value, grad, ref_value, ref_grad):
        nonlocal fails
        ev, eg = err(value.reshape(-1), ref_value.reshape(-1)), err(grad, ref_grad)
        ok = ev < TOL and eg < TOL
        fails += not ok
        print(f"{name:10s} value {float(value):.8g} (torch {float(ref_value):.8g}) err {ev:.2e}, gradient err {eg:.2e}"
              f" {'ok' if ok else 'FAIL'}")

    s, t = r["kd/s"], r["kd/t"]
    for T in (1, 2, 4):
        x = s.clone().requires_grad_(True)
        loss = F.kl_div(F.log_softmax(x / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
        loss.backward()
        check(f"kd T={T}", r[f"kd_{T}/value"], r[f"kd_{T}/grad"], loss.detach(), x.grad)

    ps, pt = r["attn/ps"], r["attn/pt"]
    x = ps.clone().requires_grad_(True)
    rows = pt.numel() // pt.shape[-1]
    mask = pt > 0
    loss = F.kl_div(torch.where(mask, x, torch.ones_like(x)).log(), pt, reduction="sum") / rows
    loss.backward()
    check("attn kl", r["attn_kl/value"], r["attn_kl/grad"], loss.detach(), x.grad)

    qs, qt = r["vr/qkv_s"], r["vr/qkv_t"]
    B, T_, W = qs.shape
    A, R = W // 3, 2

    def relation(qkv):
        v = qkv[:, :, 2 * A:].reshape(B, T_, R, A // R).transpose(1, 2)  # [B, R, T, d]
        sc = v @ v.transpose(-1, -2) / math.sqrt(A // R)
        causal = torch.ones(T_, T_, dtype=torch.bool).tril()
        return F.softmax(sc.masked_fill(~causal, float("-inf")), -1)

    x = qs.clone().requires_grad_(True)
    pv_s, pv_t = relation(x), relation(qt)
    m = pv_t > 0
    loss = F.kl_div(torch.where(m, pv_s, torch.ones_like(pv_s)).log(), pv_t, reduction="sum") / (B * R * T_)
    loss.backward()
    check("value rel", r["vr/value"], r["vr/grad"], loss.detach(), x.grad)
    if fails:
        print(f"{fails} check(s) failed")
        sys.exit(1)
    print("distillation parity: all checks passed")


main()
