#!/usr/bin/env python3
"""torch_quant_parity.py - pare's quantization grids and observers against PyTorch 1.13.

Reads what tests/parity/parity_quant.c wrote and recomputes with PyTorch:
  ptq_*   torch.fake_quantize_per_tensor_affine(x, s, zp, qmin, qmax) and its gradient
  pch_*   torch.fake_quantize_per_channel_affine(x, s, zp, 0, qmin, qmax) and its gradient
  obs_*   MinMaxObserver / MovingAverageMinMaxObserver (averaging_constant 0.01) and their
          per-channel versions: calculate_qparams() after the same batches
  lsq_*   torch._fake_quantize_learnable_per_tensor_affine's forward; the gradients against
          LSQ's formulas (Esser et al. 2020) computed here in float64, and the elements
          where PyTorch's learnable rule (inside decided on the rounded value) differs
Outputs, codes, scales and zero points must be equal bit for bit; the LSQ scale gradient
(a sum) to 1e-5 relative.

Usage: torch_quant_parity.py FILE. Exit status 0 pass, 1 fail, 77 skip (no torch).
"""
import math
import struct
import sys

try:
    import torch
    from torch.ao.quantization import (MinMaxObserver, MovingAverageMinMaxObserver,
                                       MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver)
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
        out[name] = torch.tensor(struct.unpack_from("<%df" % cnt, buf, p), dtype=torch.float32).reshape(dims)
        p += 4 * cnt
    return out


fails = 0


def same(what, a, b, zeros=False):
    """Bit for bit; zeros=True lets +0 equal -0 (a masked gradient: PyTorch multiplies dy by the mask and
    gets -0 where dy < 0, pare adds nothing into a zeroed buffer)."""
    global fails
    a, b = a.float().flatten(), b.float().flatten()
    differ = a.view(torch.int32) != b.view(torch.int32)
    if zeros:
        differ &= ~((a == 0) & (b == 0))
    bad = differ.nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        print(f"FAIL {what}: {len(bad)} of {a.numel()} differ, first [{i}]: pare {a[i].item()!r} torch {b[i].item()!r}")
        fails += 1
    else:
        print(f"ok   {what}: {a.numel()} values bit for bit")


def fake_quant_cases(d):
    for case in sorted({k.split("/")[0] for k in d if k.startswith(("ptq_", "pch_"))}):
        x = d[case + "/x"].clone().requires_grad_(True)
        s, z, rng, g = d[case + "/scale"], d[case + "/zero"], d[case + "/range"], d[case + "/g"]
        lo, hi = int(rng[0]), int(rng[1])
        if case.startswith("ptq_"):
            y = torch.fake_quantize_per_tensor_affine(x, float(s[0]), int(z[0]), lo, hi)
        else:
            y = torch.fake_quantize_per_channel_affine(x, s, z.to(torch.int32), 0, lo, hi)
        y.backward(g)
        same(case + " output", d[case + "/y"], y.detach())
        same(case + " gradient (straight-through with clipping)", d[case + "/dx"], x.grad, zeros=True)


def observer_cases(d):
    xs = d["obs/x"]
    c = float(d["obs/momentum"][0])
    kinds = {"minmax": (MinMaxObserver, PerChannelMinMaxObserver, {}),
             "ema": (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, {"averaging_constant": c})}
    for name, (tensor_obs, channel_obs, extra) in kinds.items():
        sym = tensor_obs(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-127, quant_max=127, **extra)
        aff = tensor_obs(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=15, **extra)
        pch = channel_obs(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127,
                          quant_max=127, **extra)
        for b in range(xs.shape[0]):
            sym(xs[b]), aff(xs[b]), pch(xs[b])
        for tag, obs in (("sym8", sym), ("affine4", aff)):
            s, z = obs.calculate_qparams()
            got = d[f"obs_{name}_{tag}/qparams"]
            same(f"obs {name} {tag} scale", got[0:1], s.float())
            same(f"obs {name} {tag} zero point", got[1:2], z.float())
        s, z = pch.calculate_qparams()
        same(f"obs {name} per-channel scales", d[f"obs_{name}_perchannel8/scale"], s.float())
        same(f"obs {name} per-channel zero points", d[f"obs_{name}_perchannel8/zero"], z.float())


def lsq_case(d):
    global fails
    case = "lsq_sym4"
    x = d[case + "/x"]
    s, rng, g = d[case + "/scale"], d[case + "/range"], d[case + "/g"]
    lo, hi = int(rng[0]), int(rng[1])
    gs = 1.0 / math.sqrt(x.numel() * hi)
    xt = x.clone().requires_grad_(True)
    st = s.clone().requires_grad_(True)
    zt = torch.zeros(1, requires_grad=True)
    y = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, lo, hi, gs)
    y.backward(g)
    same(case + " output (PyTorch's learnable fake quantization)", d[case + "/y"], y.detach())
    # the paper's gradients, here in float64 from the same v = x * (1 / s)
    inv = torch.tensor(1.0, dtype=torch.float32) / s[0]
    v = (x * inv).double()
    inside = (v > lo) & (v < hi)
    dx = torch.where(inside, g.double(), torch.zeros_like(v))
    same(case + " dx (LSQ paper: unrounded v inside)", d[case + "/dx"], dx.float())
    r = torch.round(v)  # half to even, as nearbyint
    ds = torch.where(inside, g.double() * (r - v), torch.where(v <= lo, g.double() * lo, g.double() * hi)).sum() * gs
    got = float(d[case + "/ds"][0])
    rel = abs(got - ds.item()) / abs(ds.item())
    ok = rel <= 1e-5
    fails += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {case} ds (LSQ paper, gradient scale 1/sqrt(N Qp)): pare {got:.9g}, float64 "
          f"{ds.item():.9g}, rel {rel:.1e}")
    differ = int((xt.grad != d[case + "/dx"]).sum())
    print(f"note {case}: PyTorch's learnable rule (inside on the rounded value) gives another dx on {differ} of "
          f"{x.numel()} elements and ds {st.grad.item():.6g} against the paper's {ds.item():.6g}")


def main():
    if len(sys.argv) != 2:
        print("usage: torch_quant_parity.py FILE")
        return 2
    d = read(sys.argv[1])
    torch.set_num_threads(1)
    fake_quant_cases(d)
    observer_cases(d)
    lsq_case(d)
    print("PASS" if not fails else f"FAIL: {fails} check(s)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
