#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Before/after table of a bench run with two builds of one server.

  ab-table.py CELLS PREFIX

CELLS holds one line per cell, tab-separated: label, row, conns (may be
empty), IOPS, CPU us/req; the base build's labels start with PREFIX. For each label and row: the median
IOPS and CPU per request of both builds over the rounds, and new/base
(IOPS: above 1.0 the new build is faster; CPU: below 1.0 it is cheaper)."""
import statistics
import sys

cells, prefix = sys.argv[1], sys.argv[2]
runs = {}
for line in open(cells):
    f = line.rstrip("\n").split("\t")
    if len(f) != 5:
        continue
    label, row, conns, iops, cpu = f
    base = label.startswith(prefix)
    key = (label[len(prefix):] if base else label, row, conns or "")
    runs.setdefault(key, {}).setdefault(base, []).append((float(iops), float(cpu)))

print("\n%-34s %-10s %-5s %10s %10s %7s %9s %9s %7s" %
      ("before/after", "row", "conns", "IOPS new", "IOPS base", "ratio", "us new", "us base", "ratio"))
for (label, row, conns), v in runs.items():
    if True not in v or False not in v:
        continue
    new_i = statistics.median(x[0] for x in v[False])
    base_i = statistics.median(x[0] for x in v[True])
    new_c = statistics.median(x[1] for x in v[False])
    base_c = statistics.median(x[1] for x in v[True])
    print("%-34s %-10s %-5s %10.0f %10.0f %7.3f %9.2f %9.2f %7.3f" %
          (label, row, conns, new_i, base_i, new_i / max(base_i, 1), new_c, base_c,
           new_c / max(base_c, 1e-9)))
