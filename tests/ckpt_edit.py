#!/usr/bin/env python3
"""ckpt_edit.py IN OUT --fill TENSOR VALUE: a copy of checkpoint IN with every
float of TENSOR set to VALUE and the checksum recomputed (tests/test_cli.sh
makes a checkpoint with finite but absurd weights with it). The layout is
train/checkpoint.h's: a 32-byte header (magic, version, sections, payload
length, FNV-1a 64 of the payload), then tagged sections; TENS is a u32 count,
then per tensor a u32-length name, u32 ndim, ndim u32 dims and the floats."""
import struct
import sys


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    src, dst, flag, name, value = sys.argv[1:6]
    assert flag == "--fill"
    buf = bytearray(open(src, "rb").read())
    n_sec = struct.unpack_from("<I", buf, 12)[0]
    p = 32
    for _ in range(n_sec):
        tag = bytes(buf[p:p + 4]).decode()
        length = struct.unpack_from("<Q", buf, p + 8)[0]
        start = p + 16
        if tag == "TENS":
            q = start
            count = struct.unpack_from("<I", buf, q)[0]
            q += 4
            for _ in range(count):
                nl = struct.unpack_from("<I", buf, q)[0]
                tname = bytes(buf[q + 4:q + 4 + nl]).decode()
                q += 4 + nl
                ndim = struct.unpack_from("<I", buf, q)[0]
                dims = struct.unpack_from("<%dI" % ndim, buf, q + 4)
                q += 4 + 4 * ndim
                numel = 1
                for d in dims:
                    numel *= d
                if tname == name:
                    struct.pack_into("<%df" % numel, buf, q, *([float(value)] * numel))
                q += 4 * numel
        p = start + length
    struct.pack_into("<Q", buf, 24, fnv1a(bytes(buf[32:])))
    open(dst, "wb").write(buf)


main()
