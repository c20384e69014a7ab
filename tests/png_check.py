#!/usr/bin/env python3
"""png_check.py FILE --width W --height H [--min-colours N] [--min-ink F] [--min-colour-pixels N]

Checks that FILE is a valid PNG (signature, chunk CRCs, IHDR, IDAT that
inflates to exactly the expected rows, IEND) of the given size, decodes its
pixels (8-bit grey, RGB or RGBA, not interlaced: what Chromium writes) and
checks that it shows something:
  --min-colours        distinct colours at least this many (a blank page has 1)
  --min-ink            fraction of pixels darker than the background (text,
                       rules) at least this much
  --min-colour-pixels  strongly coloured pixels (max - min channel > 100) at
                       least this many: the report's style sheet is grey, so
                       these come from its figures, proving the embedded
                       images were decoded and drawn
Prints the figures measured; exits 0 when every check holds, 1 otherwise.
Only the Python standard library is used (zlib, struct)."""
import argparse
import struct
import sys
import zlib


def fail(msg):
    print(f"png_check: {msg}")
    sys.exit(1)


def read_chunks(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("not a PNG: bad signature")
    pos, chunks = 8, []
    while pos < len(data):
        if pos + 8 > len(data):
            fail(f"chunk header truncated at byte {pos}")
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + n > len(data):
            fail(f"chunk {kind!r} at byte {pos} runs past the end of the file")
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            fail(f"chunk {kind!r} at byte {pos}: CRC mismatch")
        chunks.append((kind, body))
        pos += 12 + n
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        fail("expected IHDR first and IEND last")
    return chunks


def decode(chunks):
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace != 0:
        fail(f"IHDR: depth {depth}, colour type {ctype}, interlace {interlace}: expected 8-bit, not interlaced")
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = w * channels
    if len(raw) != h * (stride + 1):
        fail(f"IDAT inflates to {len(raw)} bytes, expected {h * (stride + 1)} for {w}x{h}")
    rows, prev, bpp = [], bytearray(stride), channels
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif f != 0:
            fail(f"row {y}: unknown filter type {f}")
        rows.append(line)
        prev = line
    return w, h, channels, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--min-colours", type=int, default=2)
    ap.add_argument("--min-ink", type=float, default=0.0)
    ap.add_argument("--min-colour-pixels", type=int, default=0)
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        data = f.read()
    w, h, ch, rows = decode(read_chunks(data))
    if (w, h) != (a.width, a.height):
        fail(f"{a.file} is {w}x{h}, expected {a.width}x{a.height}")
    colours, counts = set(), {}
    coloured = 0
    for line in rows:
        for x in range(0, len(line), ch):
            px = bytes(line[x:x + 3]) if ch >= 3 else bytes(line[x:x + 1]) * 3
            counts[px] = counts.get(px, 0) + 1
    for px, k in counts.items():
        colours.add(px)
        if max(px) - min(px) > 100:
            coloured += k
    background = max(counts, key=counts.get)
    bg_luma = sum(background) / 3
    ink = sum(k for px, k in counts.items() if sum(px) / 3 < bg_luma - 96) / (w * h)
    print(f"png_check: {a.file}: {w}x{h}, {len(colours)} colours, background #{background.hex()}, "
          f"ink {ink:.4f}, coloured pixels {coloured}")
    if len(colours) < a.min_colours:
        fail(f"only {len(colours)} distinct colours (expected >= {a.min_colours}): the page looks blank")
    if ink < a.min_ink:
        fail(f"ink fraction {ink:.4f} < {a.min_ink}: too little text or rules drawn")
    if coloured < a.min_colour_pixels:
        fail(f"{coloured} coloured pixels < {a.min_colour_pixels}: the figures were not drawn")
    print("png_check: ok")


if __name__ == "__main__":
    main()
