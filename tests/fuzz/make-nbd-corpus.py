#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write the seed corpus of fuzz-nbd-server: client byte streams for whole
sessions (simple, structured and extended replies, every command, bad
inputs). Run: make-nbd-corpus.py OUTDIR

With --transmission, the corpus of fuzz-nbd-transmission instead: a mode
byte (0 simple, 1 structured, 2 extended, 3 read-only export; the target
supplies the handshake) followed by the requests."""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def go(name=b""):
    return opt(7, struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, 3))


def meta(o, name, queries):
    b = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        b += struct.pack(">I", len(q)) + q
    return opt(o, b)


def req(t, off, ln, flags=0, cookie=1, payload=b"", ext=False):
    if ext:
        return struct.pack(">IHHQQQ", 0x21E41C71, flags, t, cookie, off, ln) + payload
    return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln) + payload


def commands(ext=False):
    s = b""
    s += req(1, 0, 512, 1, 1, b"A" * 512, ext)
    s += req(0, 0, 4096, 0, 2, ext=ext)
    s += req(0, 0, 8192, 4, 3, ext=ext)
    s += req(7, 0, 1 << 20, 0, 4, ext=ext)
    s += req(7, 0, 1 << 20, 8, 5, ext=ext)
    s += req(4, 65536, 65536, 0, 6, ext=ext)
    s += req(6, 131072, 65536, 2, 7, ext=ext)
    s += req(6, 131072, 65536, 16, 8, ext=ext)
    s += req(3, 0, 0, 0, 9, ext=ext)
    s += req(5, 0, 4096, 0, 10, ext=ext)
    s += req(0, (1 << 20) - 100, 512, 0, 11, ext=ext)
    s += req(2, 0, 0, ext=ext)
    return s


flags = struct.pack(">I", 3)
seeds = {
    "simple-export-name": flags + opt(1, b"") + commands(),
    "structured-go": flags + opt(8) + meta(10, b"", [b"base:allocation", b"qemu:allocation-depth"])
    + go() + commands(),
    "extended-go": flags + opt(11) + meta(10, b"", [b"base:allocation"]) + go() + commands(True),
    "list-info-abort": flags + opt(3) + meta(9, b"", []) + opt(6, struct.pack(">I", 2) + b"ro"
                                                              + struct.pack(">H", 0)) + opt(2),
    "dirty-bitmap-go": flags + opt(8) + meta(9, b"", [b"qemu:dirty-bitmap:", b"qemu:"])
    + meta(10, b"", [b"qemu:dirty-bitmap:b0", b"qemu:dirty-bitmap:b1", b"qemu:dirty-bitmap:zz",
                     b"qemu:dirty-bitmap:"]) + go() + commands(),
    "readonly-writes": flags + opt(8) + go(b"ro") + req(1, 0, 16, 0, 1, b"B" * 16)
    + req(4, 0, 16, 0, 2) + req(6, 0, 16, 0, 3) + req(2, 0, 0),
    "bad-option-magic": flags + struct.pack(">QII", 1, 7, 0),
    "unknown-option": flags + opt(4242, b"xyz") + opt(1, b""),
    "oversize-option": flags + struct.pack(">QII", IHAVEOPT, 3, 70000) + b"\0" * 70000,
    "bad-request-magic": flags + opt(1, b"") + struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 1),
    "truncated-write": flags + opt(1, b"") + req(1, 0, 4096, 0, 1, b"C" * 100),
}
if sys.argv[1] == "--transmission":
    bad = struct.pack(">IHHQQI", 0x25609513, 0xFFFF, 99, 1, 0, 1)
    seeds = {
        "simple-commands": b"\0" + commands(),
        "structured-commands": b"\1" + commands(),
        "extended-commands": b"\2" + commands(True),
        "readonly-writes": b"\3" + req(1, 0, 16, 0, 1, b"B" * 16) + req(4, 0, 16, 0, 2)
        + req(2, 0, 0),
        "unknown-command-flags": b"\1" + bad + req(2, 0, 0),
        "past-the-end": b"\1" + req(0, (1 << 20) - 1, 2, 0, 1) + req(1, 1 << 40, 512, 0, 2,
                                                                       b"D" * 512),
        "huge-lengths": b"\2" + req(0, 0, 1 << 40, 0, 1, ext=True) + req(7, 0, 1 << 62, 0, 2, ext=True),
        "disconnect-first": b"\0" + req(2, 0, 0) + commands(),
        # Found by fuzzing: a structured read of length 0 (null buffer + 0).
        "regress-structured-read-zero-length": b"\1" + req(0, 256, 0, 0, 0x4F000200),
    }
    sys.argv.pop(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
