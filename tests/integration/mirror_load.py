# SPDX-License-Identifier: LGPL-2.1-or-later
"""An NBD client that writes 4 KiB blocks as fast as it can (QD requests in
flight, never two on one block at once) until a stop file appears, then
waits for what is in flight and writes, as JSON to OUT, the sequence number
of the last completed write of every block it wrote. Each write holds its
block number and sequence number, so a reader can tell whether a block holds
its last write (check()).

    mirror_load.py URI QD random|hot STOPFILE OUT

random: blocks anywhere in the export; hot: 16 blocks within the first
256 KiB (writes racing the job's copies of the same granules).
"""
import json
import os
import random
import struct
import sys
import time

BS = 4096


def pattern(block, seq):
    return struct.pack("<QQ", block, seq) * (BS // 16)


def run(uri, qd, mode, stopfile, out):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = h.get_size() // BS
    pool = list(range(16)) if mode == "hot" else None
    rng = random.Random(1)
    last, busy, inflight = {}, set(), {}
    seq = 0
    n = 0
    stopping = False
    while True:
        if not stopping and os.path.exists(stopfile):
            stopping = True
        while not stopping and len(inflight) < qd:
            b = rng.choice(pool) if pool else rng.randrange(nblocks)
            if b in busy:
                if pool and len(busy) >= len(pool):
                    break
                continue
            seq += 1
            buf = nbd.Buffer.from_bytearray(bytearray(pattern(b, seq)))
            c = h.aio_pwrite(buf, b * BS)
            inflight[c] = (b, seq, buf)
            busy.add(b)
        if not inflight:
            break
        h.poll(100)
        for c in list(inflight):
            if h.aio_command_completed(c):
                b, s, _ = inflight.pop(c)
                busy.discard(b)
                last[b] = s
                n += 1
                if n == 16:
                    # Tell the test the load is running (it starts the job then).
                    open(out + ".started", "w").close()
    h.shutdown()
    with open(out + ".tmp", "w") as f:
        json.dump({"writes": n, "last": last}, f)
    os.rename(out + ".tmp", out)


def check(path, out, offset=0):
    """Blocks of the raw image PATH (or of an image read through qemu-img
    into PATH) that do not hold their last write: a list of block numbers."""
    last = json.load(open(out))["last"]
    bad = []
    with open(path, "rb") as f:
        for b, s in last.items():
            f.seek(offset + int(b) * BS)
            if f.read(BS) != pattern(int(b), s):
                bad.append(int(b))
    return bad


if __name__ == "__main__":
    uri, qd, mode, stopfile, out = sys.argv[1:6]
    run(uri, int(qd), mode, stopfile, out)
