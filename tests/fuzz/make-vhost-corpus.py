#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write the seed corpora of fuzz-vhost-user and fuzz-virtq.

  make-vhost-corpus.py OUTDIR

OUTDIR/vhost-user: message streams (QEMU's setup sequence, requests put in
guest memory and kicked, restarts, bad messages), with the harness-only
requests 0xf0 (write guest memory) and 0xf1 (kick); see fuzz-vhost-user.c.
OUTDIR/virtq: a flags pair and a guest memory image with a split ring and
chains in it; see fuzz-virtq.c."""
import os
import struct
import sys

UVA = 0x7F0000000000
DESC, AVAIL, USED = 0x0, 0x2000, 0x3000
HDR, DATA = 0x8000, 0x10000

# vhost-user requests
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
GET_CONFIG, SET_CONFIG = 24, 25
NEED_REPLY = 0x8

FEATURES = (1 << 32) | (1 << 30) | (1 << 9) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 11)
EVENT_IDX, INDIRECT = 1 << 29, 1 << 28


def msg(req, payload=b"", flags=0):
    return struct.pack("<III", req, 1 | flags, len(payload)) + payload


def u64(req, v, flags=NEED_REPLY):
    return msg(req, struct.pack("<Q", v), flags)


def state(req, idx, num, flags=NEED_REPLY):
    return msg(req, struct.pack("<II", idx, num), flags)


def guest_write(off, data):
    return msg(0xF0, struct.pack("<I", off) + data)


def kick(q):
    return msg(0xF1, bytes([q]))


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def setup(features=FEATURES, num=128, queues=(0,), inflight=None):
    b = msg(GET_FEATURES) + msg(GET_PROTOCOL_FEATURES)
    b += msg(SET_PROTOCOL_FEATURES, struct.pack("<Q", (1 << 0) | (1 << 3) | (1 << 9) | (1 << 12)))
    if inflight is not None:  # (offset in guest memory, queues, queue size)
        off, nq, qs = inflight
        size = nq * ((16 + 16 * qs + 63) & ~63)
        b += msg(31, struct.pack("<QQHHI", 0, 0, nq, qs, 0))
        b += msg(32, struct.pack("<QQHHI", size, off, nq, qs, 0), NEED_REPLY)
    b += msg(GET_QUEUE_NUM) + msg(GET_CONFIG, struct.pack("<III", 0, 60, 0) + bytes(60))
    b += msg(SET_OWNER, flags=NEED_REPLY) + u64(SET_FEATURES, features)
    b += msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, UVA, 0),
             NEED_REPLY)
    for q in queues:
        base = q * 0x4000
        b += state(SET_VRING_NUM, q, num) + state(SET_VRING_BASE, q, 0)
        b += msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + DESC + base,
                                             UVA + USED + base, UVA + AVAIL + base, 0),
                 NEED_REPLY)
        b += u64(SET_VRING_KICK, q) + u64(SET_VRING_CALL, q) + state(SET_VRING_ENABLE, q, 1)
    return b


def blk_hdr(t, sector):
    return struct.pack("<IIQ", t, 0, sector)


def chain_rw(t, sector, length, write_data=False, slot=0):
    """Descriptors 3*slot.. for header, data, status; returns (descs, memory writes)."""
    h = HDR + 32 * slot
    d = DATA + 0x10000 * slot
    dev_writes = t in (0, 8)
    i = 3 * slot
    ds = desc(h, 16, 1, i + 1) + desc(d, length, 1 | (2 if dev_writes else 0), i + 2) + \
        desc(h + 16, 1, 2, 0)
    writes = [(h, blk_hdr(t, sector) + b"\xff")]
    if write_data:
        writes.append((d, bytes((k * 7) & 0xFF for k in range(min(length, 4096)))))
    return i, ds, writes


def put_requests(reqs, q=0):
    """reqs: list of (head, descs, writes); puts them in guest memory and the avail ring."""
    b = b""
    base = q * 0x4000
    for head, ds, writes in reqs:
        b += guest_write(DESC + base + 16 * head, ds)
        for off, data in writes:
            b += guest_write(off, data)
    ring = b"".join(struct.pack("<H", r[0]) for r in reqs)
    b += guest_write(AVAIL + base + 4, ring)
    b += guest_write(AVAIL + base, struct.pack("<HH", 0, len(reqs)))
    return b + kick(q)


def vhost_user_corpus(out):
    os.makedirs(out, exist_ok=True)
    seeds = {}
    seeds["setup"] = setup()
    seeds["setup-two-queues-event-idx"] = setup(FEATURES | EVENT_IDX | INDIRECT, queues=(0, 1))
    rw = [chain_rw(1, 8, 4096, True, 0), chain_rw(0, 8, 4096, False, 1), chain_rw(4, 0, 0, False, 2)]
    rw[2] = (6, desc(HDR + 64, 16, 1, 7) + desc(HDR + 80, 1, 2, 0), [(HDR + 64, blk_hdr(4, 0))])
    seeds["write-read-flush"] = setup() + put_requests(rw)
    seeds["write-read-flush-event-idx"] = setup(FEATURES | EVENT_IDX) + put_requests(rw)
    seg = struct.pack("<QII", 16, 8, 0)
    dz = [(0, desc(HDR, 16, 1, 1) + desc(DATA, 16, 1, 2) + desc(HDR + 16, 1, 2, 0),
           [(HDR, blk_hdr(11, 0)), (DATA, seg)]),
          (3, desc(HDR + 32, 16, 1, 4) + desc(DATA + 64, 16, 1, 5) + desc(HDR + 48, 1, 2, 0),
           [(HDR + 32, blk_hdr(13, 0)), (DATA + 64, struct.pack("<QII", 64, 8, 1))]),
          (6, desc(HDR + 64, 16, 1, 7) + desc(DATA + 128, 20, 3, 8) + desc(HDR + 80, 1, 2, 0),
           [(HDR + 64, blk_hdr(8, 0))])]
    seeds["discard-zeroes-get-id"] = setup() + put_requests(dz)
    ind = [(0, desc(0x6000, 48, 4, 0), [(0x6000, desc(HDR, 16, 1, 1) + desc(DATA, 512, 3, 2) +
                                         desc(HDR + 16, 1, 2, 0)), (HDR, blk_hdr(0, 0))])]
    seeds["indirect-read"] = setup(FEATURES | INDIRECT) + put_requests(ind)
    loop = [(0, desc(HDR, 16, 1, 1) + desc(DATA, 512, 3, 1), [(HDR, blk_hdr(0, 0))])]
    seeds["descriptor-loop"] = setup() + put_requests(loop)
    oob = [chain_rw(0, (1 << 20) // 512, 512)]
    seeds["out-of-range"] = setup() + put_requests(oob)
    seeds["restart"] = (setup() + put_requests(rw) + state(SET_VRING_ENABLE, 0, 0) +
                        state(GET_VRING_BASE, 0, 0, 0) + state(SET_VRING_BASE, 0, 0) +
                        u64(SET_VRING_KICK, 0) + state(SET_VRING_ENABLE, 0, 1) + kick(0))
    seeds["mem-table-change"] = (setup() + put_requests(rw) + msg(
        SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, UVA, 0),
        NEED_REPLY) + kick(0))
    seeds["config"] = (setup() + msg(SET_CONFIG, struct.pack("<III", 32, 1, 0) + b"\x00",
                                     NEED_REPLY) + msg(GET_CONFIG, struct.pack("<III", 32, 4, 0) +
                                                       bytes(4)))
    seeds["reset-owner"] = setup() + put_requests(rw) + msg(RESET_OWNER) + setup()
    # A dead back end's leftovers: heads 0 and 3 marked in flight, used index 0.
    area = 0x80000
    marks = b""
    for head, counter in ((0, 5), (3, 6)):
        marks += guest_write(area + 16 + 16 * head, struct.pack("<B5xHQ", 1, 0, counter))
    seeds["inflight-resubmit"] = (guest_write(area, struct.pack("<QHHHH", 0, 1, 128, 0, 0)) +
                                  marks + put_requests(rw[:2])[:-13] +
                                  setup(inflight=(area, 1, 128)) + kick(0))
    seeds["inflight-torn"] = (guest_write(area, struct.pack("<QHHHH", 0, 1, 128, 3, 0)) +
                              marks + put_requests(rw[:2])[:-13] +
                              guest_write(USED, struct.pack("<HH", 0, 1)) +
                              setup(inflight=(area, 1, 128)) + kick(0))
    seeds["bad-version"] = struct.pack("<III", 1, 2, 0)
    seeds["oversize"] = struct.pack("<III", 2, 1, 100000)
    seeds["bad-mem-table"] = msg(SET_MEM_TABLE, struct.pack("<II", 9, 0), NEED_REPLY) + \
        msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 4 << 20, UVA, 0),
            NEED_REPLY)
    seeds["bad-head"] = setup() + guest_write(AVAIL + 4, struct.pack("<H", 500)) + \
        guest_write(AVAIL, struct.pack("<HH", 0, 1)) + kick(0)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def virtq_corpus(out):
    os.makedirs(out, exist_ok=True)

    def image(flags0, flags1, reqs, num=128):
        mem = bytearray(65536)
        for head, ds, writes in reqs:
            mem[16 * head:16 * head + len(ds)] = ds
            for off, data in writes:
                if off + len(data) <= len(mem):
                    mem[off:off + len(data)] = data
        ring = b"".join(struct.pack("<H", r[0]) for r in reqs)
        mem[8192:8196] = struct.pack("<HH", 0, len(reqs))
        mem[8196:8196 + len(ring)] = ring
        # data buffers live in the 64 KiB too: move them below 64 KiB
        return bytes([flags0 | (7 << 2), flags1]) + bytes(mem[:49152])

    def rq(t, sector, length, slot):
        h = 0x4000 + 32 * slot
        d = 0x5000 + 0x1000 * slot
        dev = t in (0, 8)
        return (3 * slot, desc(h, 16, 1, 3 * slot + 1) +
                desc(d, length, 1 | (2 if dev else 0), 3 * slot + 2) + desc(h + 16, 1, 2, 0),
                [(h, blk_hdr(t, sector))])

    seeds = {
        "read-write": image(0, 8, [rq(1, 0, 4096, 0), rq(0, 0, 4096, 1)]),
        "event-idx-indirect": image(3, 8, [(0, desc(0x3800, 48, 4, 0),
                                            [(0x3800, desc(0x4000, 16, 1, 1) +
                                              desc(0x5000, 512, 3, 2) + desc(0x4010, 1, 2, 0)),
                                             (0x4000, blk_hdr(0, 0))])]),
        "discard": image(0, 6, [(0, desc(0x4000, 16, 1, 1) + desc(0x5000, 16, 1, 2) +
                                 desc(0x4010, 1, 2, 0),
                                 [(0x4000, blk_hdr(11, 0)), (0x5000, struct.pack("<QII", 0, 8, 0))])]),
        "read-only-write": image(0, 1, [rq(1, 0, 512, 0)]),
        "split-regions": image(0, 0, [(0, desc(0x4000, 16, 1, 1) + desc(0xFE00, 1024, 3, 2) +
                                       desc((1 << 20), 1, 2, 0), [(0x4000, blk_hdr(0, 0))])]),
        "loop": image(0, 0, [(0, desc(0x4000, 16, 1, 1) + desc(0x5000, 512, 3, 1),
                              [(0x4000, blk_hdr(0, 0))])]),
    }
    # Packed rings: descriptors in ring order, AVAIL=1 USED=0 (wrap counter 1).
    def pdesc(addr, length, flags, bid):
        return struct.pack("<QIHH", addr, length, bid, flags | 0x80)

    def packed_image(flags0, flags1, descs):
        mem = bytearray(65536)
        ring = b"".join(descs)
        mem[0:len(ring)] = ring
        mem[0x4000:0x4010] = blk_hdr(1, 0)
        mem[0x4020:0x4030] = blk_hdr(0, 0)
        return bytes([flags0 | 0x20 | (7 << 2), flags1]) + bytes(mem[:49152])

    seeds["packed-write-read"] = packed_image(1, 8, [
        pdesc(0x4000, 16, 1, 0), pdesc(0x5000, 4096, 1, 0), pdesc(0x4010, 1, 2, 7),
        pdesc(0x4020, 16, 1, 0), pdesc(0x6000, 4096, 3, 0), pdesc(0x4030, 1, 2, 9)])
    seeds["packed-indirect"] = packed_image(3, 0, [pdesc(0x3800, 48, 4, 5)])
    seeds["packed-indirect"] = seeds["packed-indirect"][:2 + 0x3800] + \
        struct.pack("<QIHH", 0x4020, 16, 0, 0) + struct.pack("<QIHH", 0x6000, 512, 0, 2) + \
        struct.pack("<QIHH", 0x4030, 1, 0, 2) + \
        seeds["packed-indirect"][2 + 0x3800 + 48:]
    seeds["packed-endless-chain"] = packed_image(0, 0, [pdesc(0x4000, 16, 1, 0)] * 128)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    out = sys.argv[1]
    vhost_user_corpus(os.path.join(out, "vhost-user"))
    virtq_corpus(os.path.join(out, "virtq"))


main()
