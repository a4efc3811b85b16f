#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Medians over the rounds of a bench run.

  median-table.py CELLS

CELLS holds one line per cell, tab-separated: label, row, conns (may be
empty), IOPS, CPU us/req (nan where not measured). For each label, row and
conns, in the order first seen: the rounds, the median and best IOPS, the
median CPU per request, and IOPS against the device row of the same row and
conns when the run has one (label starting with "device")."""
import math
import statistics
import sys

runs = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) != 5:
        continue
    label, row, conns, iops, cpu = f
    runs.setdefault((label, row, conns), []).append((float(iops), float(cpu)))

device = {(r, c): statistics.median(x[0] for x in v)
          for (l, r, c), v in runs.items() if l.startswith("device")}
print("\nmedians over the rounds")
print("%-34s %-10s %-5s %6s %10s %10s %10s %9s" %
      ("server", "row", "conns", "rounds", "IOPS med", "IOPS best", "us/req", "x device"))
for (label, row, conns), v in runs.items():
    med = statistics.median(x[0] for x in v)
    cpus = [x[1] for x in v if not math.isnan(x[1])]
    cpu = "%.2f" % statistics.median(cpus) if cpus else "-"
    dev = device.get((row, conns))
    rel = "%.2f" % (med / dev) if dev and not label.startswith("device") else "-"
    print("%-34s %-10s %-5s %6d %10.0f %10.0f %10s %9s" %
          (label, row, conns, len(v), med, max(x[0] for x in v), cpu, rel))
