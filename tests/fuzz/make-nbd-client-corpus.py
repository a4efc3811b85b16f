#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write the seed corpus of fuzz-nbd-client: what a server says to vstor's
NBD client over a whole session (handshake, option replies, replies to the
target's fixed requests), well-formed and not. Run:
make-nbd-client-corpus.py OUTDIR

The target's client sends, after NBD_OPT_GO: two 8 KiB reads (cookies 0
and 1) and a block status (cookie 2) in parallel, then one at a time a FUA
write, write-zeroes, a discard and a flush (cookie 0 each; some only when
the export's flags allow them), then NBD_CMD_DISC."""
import os
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
SIMPLE = 0x67446698
STRUCT = 0x668E33EF
# transmission flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES
TFLAGS = 0x1 | 0x4 | 0x8 | 0x20 | 0x40
SIZE = 1 << 20


def hello(flags=3):
    return struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags)


def rep(o, t, data=b""):
    return struct.pack(">QIII", REPMAGIC, o, t, len(data)) + data


def info_export(size=SIZE, flags=TFLAGS):
    return rep(7, 3, struct.pack(">HQH", 0, size, flags))


def info_bs(mn=512, pref=4096, mx=32 << 20):
    return rep(7, 3, struct.pack(">HIII", 3, mn, pref, mx))


def structured_handshake(size=SIZE, flags=TFLAGS):
    return (hello() + rep(8, 1) + rep(10, 4, struct.pack(">I", 1) + b"base:allocation") +
            rep(10, 1) + info_export(size, flags) + info_bs() + rep(7, 1))


def simple_handshake(size=SIZE, flags=TFLAGS):
    return hello() + rep(8, 0x80000001) + info_export(size, flags) + rep(7, 1)


def simple(cookie, err=0, data=b""):
    return struct.pack(">IIQ", SIMPLE, err, cookie) + data


def chunk(cookie, typ, payload=b"", done=True):
    return struct.pack(">IHHQI", STRUCT, 1 if done else 0, typ, cookie, len(payload)) + payload


def data(cookie, off, d, done=True):
    return chunk(cookie, 1, struct.pack(">Q", off) + d, done)


def hole(cookie, off, ln, done=True):
    return chunk(cookie, 2, struct.pack(">QI", off, ln), done)


def bstatus(cookie, extents, ctx=1):
    p = struct.pack(">I", ctx)
    for ln, fl in extents:
        p += struct.pack(">II", ln, fl)
    return chunk(cookie, 5, p)


def error(cookie, err=5, msg=b"bad"):
    return chunk(cookie, 32769, struct.pack(">IH", err, len(msg)) + msg)


def tail_ok(structured=True):
    # write, write-zeroes, discard, flush: cookie 0 each
    if structured:
        return b"".join(chunk(0, 0) for _ in range(4))
    return b"".join(simple(0) for _ in range(4))


seeds = {}
r8 = bytes(range(256)) * 32
seeds["structured-ok"] = (structured_handshake() + data(0, 0, r8) + data(1, 8192, r8) +
                          bstatus(2, [(65536, 0), (SIZE - 65536, 3)]) + tail_ok())
seeds["structured-split"] = (structured_handshake() + data(0, 0, r8[:4096], False) +
                             hole(1, 8192, 8192) + hole(0, 4096, 4096) +
                             bstatus(2, [(4096, 1)]) + tail_ok())
seeds["structured-errors"] = (structured_handshake() + error(1) + data(0, 0, r8) +
                              chunk(2, 32770, struct.pack(">IHQ", 22, 0, 0)) +
                              error(0, 28) + error(0, 1) + chunk(0, 0) + chunk(0, 0))
seeds["structured-short-read"] = (structured_handshake() + data(0, 0, r8[:100]) +
                                  data(1, 8192, r8) + bstatus(2, [(0, 0)]) + tail_ok())
seeds["simple-ok"] = (simple_handshake() + simple(0, 0, r8) + simple(1, 0, r8) + tail_ok(False))
seeds["simple-out-of-order"] = (simple_handshake() + simple(1, 0, r8) + simple(0, 0, r8) +
                                simple(0, 5) + simple(0, 1) + simple(0) + simple(0))
seeds["small-export"] = simple_handshake(4096, 1) + simple(0)
seeds["huge-export"] = structured_handshake((1 << 63) + 1) + data(0, 0, r8) + data(1, 8192, r8)
seeds["no-such-export"] = hello() + rep(8, 1) + rep(10, 1) + rep(7, 0x80000006, b"nope")
seeds["tls-required"] = hello() + rep(8, 0x80000005) + rep(7, 0x80000005, b"tls")
seeds["oldstyle"] = struct.pack(">QQ", NBDMAGIC, 0x00420281861253) + b"\0" * 140
seeds["bad-cookie"] = structured_handshake() + data(7, 0, r8)
seeds["bad-block-size"] = (hello() + rep(8, 1) + rep(10, 1) + info_export() +
                           info_bs(3, 1, 2) + rep(7, 1) + simple(0, 0, r8))

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, b in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(b)
