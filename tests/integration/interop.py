#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for the qemu-img interop tests (standard library only).

  interop.py combos [pairwise|full]
      The qcow2 option combinations to test, one -o string per line.
      pairwise: every value of every option at least once and every pair of
      values of two options at least once, among the valid combinations
      (deterministic greedy cover); full: every valid combination.
  interop.py gen SEED SIZE CLUSTER NOPS [vstor|qemu-io]
      A seeded random workload for an image of SIZE bytes, in vstor-io's
      script syntax (vstor) or as qemu-io commands, one per line (qemu-io).
  interop.py apply SCRIPT RAW SIZE
      Apply a vstor-io script (or the qemu-io commands from gen) to the raw
      reference file RAW (created sparse, SIZE bytes).
  interop.py info-cmp A.json B.json
      qemu-img info --output=json documents agree on the fields both tools report.
  interop.py check-cmp A.json B.json
      qemu-img check --output=json documents agree.
  interop.py map-cmp [--data-only] A.json B.json
      qemu-img map --output=json documents agree on data/zero coverage
      (--data-only: on data coverage alone).
  interop.py prealloc MAP.json INFO.json MODE
      The allocation a preallocation mode promises is there.

Exit 0 when the comparison holds, 1 with a message on stderr when not.
"""
import itertools
import json
import os
import random
import re
import sys

OPTIONS = [
    ("compat", ["0.10", "1.1"]),
    ("cluster_size", ["512", "4096", "65536", "2097152"]),
    ("refcount_bits", ["1", "16", "64"]),
    ("lazy_refcounts", ["off", "on"]),
    ("extended_l2", ["off", "on"]),
    ("preallocation", ["off", "metadata", "falloc", "full"]),
]


def valid(c):
    """What qemu-img 7.2 accepts."""
    if c["extended_l2"] == "on" and (int(c["cluster_size"]) < 16384 or c["compat"] != "1.1"):
        return False
    if c["compat"] == "0.10" and (c["refcount_bits"] != "16" or c["lazy_refcounts"] == "on"):
        return False
    return True


def all_valid():
    names = [n for n, _ in OPTIONS]
    out = []
    for values in itertools.product(*[v for _, v in OPTIONS]):
        c = dict(zip(names, values))
        if valid(c):
            out.append(c)
    return out


def pairs_of(c):
    names = [n for n, _ in OPTIONS]
    return {((a, c[a]), (b, c[b])) for a, b in itertools.combinations(names, 2)}


def pairwise():
    combos = all_valid()
    uncovered = set()
    for c in combos:
        uncovered |= pairs_of(c)  # only pairs that some valid combination has
    chosen = []
    while uncovered:
        best = max(combos, key=lambda c: len(pairs_of(c) & uncovered))  # first best wins
        chosen.append(best)
        uncovered -= pairs_of(best)
    return chosen


def optstr(c):
    return ",".join(f"{n}={c[n]}" for n, _ in OPTIONS)


# --- workloads ----------------------------------------------------------------------------

PERIOD = 251 * 512
_BASE0 = bytes(((7 * ((o >> 9) % 251) + (o & 511)) & 0xFF) for o in range(PERIOD))


def pattern(off, length, seed):
    """vstor-io's seeded pattern: byte(o) = (seed + 7*((o>>9)%251) + (o&511)) & 0xff."""
    table = bytes(((i + seed) & 0xFF) for i in range(256))
    base = _BASE0.translate(table)
    start = off % PERIOD
    reps = (start + length) // PERIOD + 1
    return (base * reps)[start:start + length]


def gen(seed, size, cluster, nops, flavour):
    rnd = random.Random(seed)
    lines = []

    def pick_len():
        r = rnd.random()
        if r < 0.4:
            n = rnd.randint(1, 8192)
        elif r < 0.8:
            n = rnd.randint(1, max(2 * cluster, 65536))
        else:
            n = rnd.randint(1, 2 << 20)
        if rnd.random() < 0.5:  # aligned sizes half of the time
            n = max(512, n // 512 * 512)
        return n

    def pick_off(n):
        r = rnd.random()
        # a hot zone gets most operations so that they overlap
        zone = size if rnd.random() < 0.3 else min(size, 8 * max(cluster, 65536) + (4 << 20))
        off = rnd.randrange(0, max(1, zone - n))
        if r < 0.3:
            off = off // cluster * cluster
        elif r < 0.6:
            off = off // 512 * 512
        return min(off, size - n)

    for _ in range(nops):
        kind = rnd.random()
        n = pick_len()
        if n > size:
            n = size
        off = pick_off(n)
        if kind < 0.6:
            s = rnd.randint(0, 255)
            if flavour == "qemu-io":
                lines.append(f"write -P {s} {off} {n}")
            else:
                lines.append(f"write {off} {n} {s}")
        elif kind < 0.78:
            unmap = rnd.random() < 0.5
            if flavour == "qemu-io":
                lines.append(f"write -z{' -u' if unmap else ''} {off} {n}")
            else:
                lines.append(f"zero {off} {n}{' unmap' if unmap else ''}")
        elif kind < 0.93:
            # Discarded content is unspecified except where whole clusters go
            # (they read as zeroes without a backing file): make the partial
            # head and tail defined again by writing them.
            lines.append(f"discard {off} {n}")
            head_end = min(off + n, -(-off // cluster) * cluster)
            tail_start = max(head_end, (off + n) // cluster * cluster)
            s = rnd.randint(0, 255)
            for a, b in ((off, head_end), (tail_start, off + n)):
                if b > a:
                    if flavour == "qemu-io":
                        lines.append(f"write -P {s} {a} {b - a}")
                    else:
                        lines.append(f"write {a} {b - a} {s}")
        else:
            lines.append("flush")
    lines.append("flush")
    return lines


def apply(script, raw, size):
    with open(raw, "wb") as f:
        f.truncate(size)
    fd = os.open(raw, os.O_RDWR)
    try:
        with open(script) as f:
            for line in f:
                w = line.split()
                if not w or w[0].startswith("#") or w[0] in ("flush", "echo", "wait"):
                    continue
                if w[0] == "write" and w[1] == "-P":  # qemu-io
                    s, off, n = int(w[2]), int(w[3]), int(w[4])
                    os.pwrite(fd, bytes([s]) * n, off)
                elif w[0] == "write" and w[1].startswith("-z"):  # qemu-io
                    off, n = int(w[-2]), int(w[-1])
                    os.pwrite(fd, bytes(n), off)
                elif w[0] == "write":
                    off, n, s = int(w[1]), int(w[2]), int(w[3])
                    os.pwrite(fd, pattern(off, n, s), off)
                elif w[0] == "writeb":
                    off, n, s = int(w[1]), int(w[2]), int(w[3], 0)
                    os.pwrite(fd, bytes([s]) * n, off)
                elif w[0] == "zero":
                    off, n = int(w[1]), int(w[2])
                    os.pwrite(fd, bytes(n), off)
                elif w[0] == "discard":
                    off, n = int(w[1]), int(w[2])
                    # Whole clusters read as zeroes; the test regenerates the
                    # partial ends, so zeroing the whole range is exact here.
                    os.pwrite(fd, bytes(n), off)
                else:
                    raise SystemExit(f"apply: unknown command: {line.strip()}")
    finally:
        os.close(fd)


# --- comparisons --------------------------------------------------------------------------

def load(path):
    with open(path) as f:
        return json.load(f)


def problem(msg):
    print(msg, file=sys.stderr)
    return 1


INFO_FIELDS = ["format", "virtual-size", "cluster-size", "dirty-flag"]
QCOW2_FIELDS = ["compat", "compression-type", "lazy-refcounts", "refcount-bits", "corrupt",
                "extended-l2", "data-file", "data-file-raw", "bitmaps"]


def info_cmp(a, b):
    A, B = load(a), load(b)
    bad = []
    for k in INFO_FIELDS:
        if A.get(k) != B.get(k):
            bad.append(f"{k}: {A.get(k)!r} != {B.get(k)!r}")
    fa, fb = A.get("format-specific", {}), B.get("format-specific", {})
    if fa.get("type") != fb.get("type"):
        bad.append(f"format-specific.type: {fa.get('type')!r} != {fb.get('type')!r}")
    da, db = fa.get("data", {}), fb.get("data", {})
    for k in QCOW2_FIELDS:
        if da.get(k) != db.get(k):
            bad.append(f"format-specific.data.{k}: {da.get(k)!r} != {db.get(k)!r}")
    if bad:
        return problem(f"info of {a} and {b} differ:\n  " + "\n  ".join(bad))
    return 0


CHECK_FIELDS = ["image-end-offset", "total-clusters", "allocated-clusters",
                "fragmented-clusters", "compressed-clusters", "check-errors", "corruptions",
                "leaks", "corruptions-fixed", "leaks-fixed", "format"]


def check_cmp(a, b):
    A, B = load(a), load(b)
    bad = [f"{k}: {A.get(k)!r} != {B.get(k)!r}" for k in CHECK_FIELDS if A.get(k) != B.get(k)]
    if bad:
        return problem(f"check of {a} and {b} differ:\n  " + "\n  ".join(bad))
    return 0


def coverage(m, data_only=False):
    """Merge a qemu-img map into runs of [start, end, data, zero]."""
    runs = []
    pos = 0
    for e in sorted(m, key=lambda e: e["start"]):
        if e["start"] != pos:
            raise SystemExit(f"map is not contiguous at {pos}: {e}")
        key = (bool(e.get("data")), False if data_only else bool(e.get("zero")))
        end = e["start"] + e["length"]
        if runs and tuple(runs[-1][2:]) == key:
            runs[-1][1] = end
        else:
            runs.append([e["start"], end, *key])
        pos = end
    return runs


def flags_at(runs, off):
    for r in runs:
        if r[0] <= off < r[1]:
            return r
    return None


def map_cmp(a, b, data_only=False):
    ca, cb = coverage(load(a), data_only), coverage(load(b), data_only)
    if ca == cb:
        return 0
    # Report where they first disagree, and how much of the image differs.
    edges = sorted({r[0] for r in ca} | {r[0] for r in cb} | {ca[-1][1], cb[-1][1]})
    first = None
    differ = 0
    for lo, hi in zip(edges, edges[1:]):
        ra, rb = flags_at(ca, lo), flags_at(cb, lo)
        if (ra and ra[2:]) != (rb and rb[2:]):
            differ += hi - lo
            if first is None:
                first = lo
    lines = [f"maps differ in data/zero coverage ({a}: left, {b}: right), "
             f"{differ} bytes in all, first at offset {first}:"]
    shown = 0
    for lo, hi in zip(edges, edges[1:]):
        if first is not None and lo < first:
            continue
        ra, rb = flags_at(ca, lo), flags_at(cb, lo)
        fa = "data" * bool(ra and ra[2]) + "+zero" * bool(ra and ra[3]) or "hole"
        fb = "data" * bool(rb and rb[2]) + "+zero" * bool(rb and rb[3]) or "hole"
        mark = "  " if fa == fb else "! "
        lines.append(f"{mark}[{lo}, {hi}) {fa:>10} | {fb}")
        shown += 1
        if shown >= 40:
            lines.append("  ...")
            break
    return problem("\n".join(lines))


def prealloc(mapf, infof, mode):
    m, info = load(mapf), load(infof)
    size = info["virtual-size"]
    with_offset = sum(e["length"] for e in m if "offset" in e)
    if mode == "off":
        if with_offset:
            return problem(f"preallocation=off but {with_offset} bytes are allocated")
        return 0
    if with_offset != size:
        return problem(f"preallocation={mode}: {with_offset} of {size} bytes allocated")
    if mode in ("falloc", "full") and info.get("actual-size", 0) < size:
        return problem(f"preallocation={mode}: actual-size {info.get('actual-size')} < {size}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "combos":
        mode = argv[2] if len(argv) > 2 else "pairwise"
        combos = all_valid() if mode == "full" else pairwise()
        sample = int(os.environ.get("VSTOR_COMBOS_SAMPLE", "0") or 0)
        if 0 < sample < len(combos):
            rnd = random.Random(os.environ.get("VSTOR_COMBOS_SEED", "1"))
            combos = rnd.sample(combos, sample)
        match = os.environ.get("VSTOR_COMBOS_MATCH")
        for c in combos:
            if not match or re.search(match, optstr(c)):
                print(optstr(c))
        return 0
    if cmd == "gen":
        seed, size, cluster, nops = (int(x) for x in argv[2:6])
        flavour = argv[6] if len(argv) > 6 else "vstor"
        print("\n".join(gen(seed, size, cluster, nops, flavour)))
        return 0
    if cmd == "apply":
        apply(argv[2], argv[3], int(argv[4]))
        return 0
    if cmd == "info-cmp":
        return info_cmp(argv[2], argv[3])
    if cmd == "check-cmp":
        return check_cmp(argv[2], argv[3])
    if cmd == "map-cmp":
        if argv[2] == "--data-only":
            return map_cmp(argv[3], argv[4], True)
        return map_cmp(argv[2], argv[3])
    if cmd == "prealloc":
        return prealloc(argv[2], argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
