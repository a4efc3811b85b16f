#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# External snapshots under a live NBD export of vstord
# (blockdev-snapshot-sync, and blockdev-snapshot of an overlay added with
# "backing": null): a client keeps 32 writes in flight on one connection
# while the overlay goes above the node. No request fails, every write is
# visible through the new chain, the base holds only what was written
# before the switch (no write lands in it afterwards), and qemu-img finds
# every image clean with the right backing file.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

qemu_img create -q -f qcow2 base.qcow2 64M
qemu_img create -q -f qcow2 ov2.qcow2 64M
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock"
VD_PID=$DAEMON_PID

python3 - "$WORKDIR" <<'PY' || fail "writes across external snapshots"
import sys
import nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="base",
      file={"driver": "file", "filename": d + "/base.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="base", writable=True)

h = nbd.NBD()
h.connect_uri("nbd+unix:///base?socket=" + d + "/nbd.sock")
BS = 4096

def pattern(i):
    return bytes([(i % 250) + 1]) * BS

# 3 phases of 200 writes, each to its own 64 KiB slot; 32 always in flight,
# and the graph changes between the phases while writes are in flight.
written = 0
def write_phase(n, switch=None):
    global written
    start = written
    issued = 0
    while issued < n or h.aio_in_flight():
        while issued < n and h.aio_in_flight() < 32:
            i = start + issued
            h.aio_pwrite(pattern(i), i * 65536)
            issued += 1
            if switch and issued == n // 2:
                switch()  # with writes in flight
                switch = None
        h.poll(-1)
    written = start + n

write_phase(200)
# The base's content is fixed once the overlay goes above it.
def snap_sync():
    c.cmd("blockdev-snapshot-sync", node_name="base", snapshot_file=d + "/ov1.qcow2",
          snapshot_node_name="ov1", format="qcow2")
write_phase(200, snap_sync)
def snap_overlay():
    c.cmd("blockdev-add", driver="qcow2", node_name="ov2", backing=None,
          file={"driver": "file", "filename": d + "/ov2.qcow2"})
    c.cmd("blockdev-snapshot", node="ov1", overlay="ov2")
write_phase(200, snap_overlay)
h.flush()
# Every write reads back through the export (now on ov2).
for i in range(written):
    assert h.pread(BS, i * 65536) == pattern(i), "write %d lost" % i
h.shutdown()
nodes = {n["node-name"]: n for n in c.cmd("query-named-block-nodes")}
assert nodes["ov2"]["backing_file_depth"] == 2, nodes["ov2"]
exp = c.cmd("query-block-exports")
# The export serves the top overlay now, and says so as qsd does (its NBD name stays "base").
assert [e["node-name"] for e in exp] == ["ov2"], exp
c.cmd("quit")
open(d + "/written", "w").write(str(written))
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
stop_pid "$VD_PID"

log "the images: clean, chained, and the base fixed at the first switch"
for f in base ov1 ov2; do
	qemu_img check -q "$f.qcow2" || fail "qemu-img check $f.qcow2"
done
qemu_img info --output=json ov2.qcow2 | grep -q "\"backing-filename\": \"$WORKDIR/ov1.qcow2\"" ||
	fail "ov2's backing file is not ov1"
qemu_img info --output=json ov1.qcow2 | grep -q "\"backing-filename\": \"$WORKDIR/base.qcow2\"" ||
	fail "ov1's backing file is not base"
python3 - "$WORKDIR" <<'PY' || fail "the chain's content"
import subprocess, sys
d = sys.argv[1]
written = int(open(d + "/written").read())
def read(img, off):
    out = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -v %d 16" % off, img],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[1], 16)
# Each switch came after the 100th write of its phase was issued: writes
# 0..299 were issued to base, 300..499 to ov1, 500..599 to ov2. Through ov2
# every write is there; no write issued after a switch reached the image
# below it (each image read with its own backing chain).
for i in range(0, written, 7):
    assert read(d + "/ov2.qcow2", i * 65536) == (i % 250) + 1, i
for i in range(0, 300, 7):
    assert read(d + "/base.qcow2", i * 65536) == (i % 250) + 1, "not in base: %d" % i
for i in range(300, written, 7):
    assert read(d + "/base.qcow2", i * 65536) == 0, "a write reached base after the switch: %d" % i
for i in range(300, 500, 7):
    assert read(d + "/ov1.qcow2", i * 65536) == (i % 250) + 1, "not in ov1: %d" % i
for i in range(500, written, 7):
    assert read(d + "/ov1.qcow2", i * 65536) == 0, "a write reached ov1 after the switch: %d" % i
PY
log ok
