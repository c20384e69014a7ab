#!/usr/bin/env python3
"""torch_prune_parity.py - pare's magnitude-pruning masks against PyTorch.

Reads what tests/parity/parity_prune.c wrote and, for each tensor, prunes an
nn.Linear holding the same weights with torch.nn.utils.prune.l1_unstructured at
the same amount (round(amount x n) entries, Python's round: half to even), and
all of them together with prune.global_unstructured (L1Unstructured, one
threshold); every mask must equal pare's exactly.

Usage: torch_prune_parity.py FILE. Exit status 0 pass, 1 fail, 77 skip (no torch).
"""
import math
import struct
import sys

try:
    import torch
    import torch.nn.utils.prune as prune
except ImportError as e:
    print(f"SKIP: PyTorch is not importable ({e}); install python3-torch (scripts/deps.sh --test)")
    sys.exit(77)


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
        out[name] = torch.tensor(vals, dtype=torch.float32).reshape(dims)
    return out


def linear(w):
    m = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
    return m


def main():
    r = read(sys.argv[1])
    fails, mods = 0, []
    i = 0
    while f"t{i}/w" in r:
        w, mask = r[f"t{i}/w"], r[f"t{i}/mask"]
        amount = round(float(r[f"t{i}/amount"][0]), 6)
        m = linear(w)
        prune.l1_unstructured(m, "weight", amount=amount)
        ok = torch.equal(m.weight_mask, mask)
        k = int((mask == 0).sum())
        fails += not ok
        print(f"l1_unstructured t{i} {tuple(w.shape)} amount {amount}: pare prunes {k}, torch "
              f"{int((m.weight_mask == 0).sum())} (round({amount} x {w.numel()}) = {round(amount * w.numel())}) "
              f"{'ok' if ok else 'FAIL'}")
        mods.append(linear(w))
        i += 1
    amount = round(float(r["global/amount"][0]), 6)
    prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=amount)
    for j, m in enumerate(mods):
        ok = torch.equal(m.weight_mask, r[f"global/mask{j}"])
        fails += not ok
        print(f"global_unstructured t{j} amount {amount}: {int((m.weight_mask == 0).sum())} pruned by torch, "
              f"{int((r[f'global/mask{j}'] == 0).sum())} by pare {'ok' if ok else 'FAIL'}")
    print("PASS" if fails == 0 else f"FAIL: {fails} masks differ")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
