#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's checkpoint (checkpoint-add, checkpoint-remove,
# query-checkpoints) on a live NBD export that a client keeps writing:
# 1. A first checkpoint exports the disk's point in time read-only; read
#    over NBD while the client writes on, it equals the client's own
#    record of the disk at that moment (a full backup).
# 2. Once the first is removed (its scratch deleted), a second one, with
#    the first's bitmap, exports the next point in time
#    with qemu:dirty-bitmap:ck1: its dirty extents are exactly the granules
#    written in between, and the full backup plus those extents equals
#    the client's record at the second checkpoint.
#    The copy unit is 4 KiB, below the 64 KiB granule: a 4 KiB write into
#    an untouched granule copies 4 KiB (query-checkpoints' counters), and
#    after writes to two parts of one granule, and one that straddles two
#    units, the view still shows the old data of the written parts and of
#    the rest of the granule; reads of the view racing first writes to
#    their units see the old data.
# 3. kill -9 while a checkpoint is exported: the disk passes qemu-img
#    check; its bitmaps are in-use or absent, never silently wrong.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

qemu_img create -q -f qcow2 "$WORKDIR/disk.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 7 0 3M' "$WORKDIR/disk.qcow2" >/dev/null
# A bitmap already in the image: open read-write, it must be in-use on disk.
qemu_img bitmap --add "$WORKDIR/disk.qcow2" base
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" <<'PY' || fail "checkpoints under writes"
import random, sys, time
import nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="disk",
      file={"driver": "file", "filename": d + "/disk.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/nbd.sock"}})
c.cmd("block-export-add", type="nbd", id="disk", node_name="disk", writable=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///disk?socket=" + d + "/nbd.sock")
SIZE, BS, GRAN = 8 << 20, 4096, 65536
model = bytearray(b"\7" * (3 << 20) + bytes(SIZE - (3 << 20)))
rng = random.Random(3)
touched, inflight, n = set(), set(), [0]

def write(count):
    """count 4 KiB writes at random places, 8 in flight, never two on one block."""
    done = 0
    while done < count:
        while h.aio_in_flight() < 8 and done < count:
            off = rng.randrange(SIZE // BS) * BS
            if off in inflight:
                continue
            data = bytes([(n[0] % 240) + 10]) * BS
            model[off:off + BS] = data
            touched.add(off // GRAN)
            inflight.add(off)
            h.aio_pwrite(data, off, completion=lambda err, off=off: inflight.discard(off) or 1)
            n[0] += 1
            done += 1
        h.poll(-1)
    while h.aio_in_flight():
        h.poll(-1)

def ok(cmd, **a):
    r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
    assert "return" in r, (cmd, a, r)
    return r["return"]

def expect_error(cmd, **a):
    r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
    assert "error" in r, (cmd, a, r)

write(300)
expect_error("checkpoint-add", name="ck1", scratch=d + "/ck1.qcow2")
expect_error("checkpoint-add", name="ck1", export="nope", scratch=d + "/ck1.qcow2")
expect_error("checkpoint-add", name="ck1", node="disk", bitmap="nope", scratch=d + "/ck1.qcow2")
# 1. ck1: the full backup, read while the client writes on.
ok("checkpoint-add", name="ck1", export="disk", scratch=d + "/ck1.qcow2")
at1 = bytes(model)
touched.clear()
expect_error("checkpoint-add", name="ck1", export="disk", scratch=d + "/x.qcow2")
v = nbd.NBD()
v.connect_uri("nbd+unix:///ck1?socket=" + d + "/nbd.sock")
assert v.is_read_only()
full = bytearray()
for off in range(0, SIZE, 1 << 20):
    write(40)
    full += v.pread(1 << 20, off)
assert bytes(full) == at1, "the first checkpoint's view is not the disk at ck1"
v.shutdown()
assert [x["name"] for x in ok("query-checkpoints")] == ["ck1"]
expect_error("checkpoint-add", name="ck2", node="disk", scratch=d + "/ck2.qcow2")
ok("checkpoint-remove", name="ck1")
import os
assert not os.path.exists(d + "/ck1.qcow2"), "ck1's scratch is still there"
expect_error("checkpoint-remove", name="ck1")
# 2. ck2 with ck1's bitmap: the increment.
write(100)
ok("checkpoint-add", name="ck2", node="disk", scratch=d + "/ck2.qcow2", bitmap="ck1")
at2 = bytes(model)
changed = set(touched)
touched.clear()
cks = ok("query-checkpoints")
assert [(x["name"], x.get("bitmap")) for x in cks] == [("ck2", "ck1")], cks
v = nbd.NBD()
v.add_meta_context("qemu:dirty-bitmap:ck1")
v.connect_uri("nbd+unix:///ck2?socket=" + d + "/nbd.sock")
dirty, covered = [], [0]
def extents(ctx, offset, entries, err):
    if ctx == "qemu:dirty-bitmap:ck1":
        pos = offset
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                dirty.append((pos, entries[i]))
            pos += entries[i]
        covered[0] = pos
    return 0
while covered[0] < SIZE:
    v.block_status(SIZE - covered[0], covered[0], extents)
granules = set()
for off, ln in dirty:
    granules.update(range(off // GRAN, (off + ln) // GRAN))
assert granules == changed, ("dirty extents differ", sorted(granules ^ changed))
restored = bytearray(full)
for off, ln in dirty:
    write(10)
    restored[off:off + ln] = v.pread(ln, off)
assert bytes(restored) == at2, "full + increment is not the disk at ck2"
v.shutdown()
# Partial-granule copies: granules nobody wrote since ck2.
def cbw_stats():
    return ok("query-checkpoints")[0]["copy-before-write"]
free = [g for g in range(SIZE // GRAN) if g not in touched]
g0, g1 = free[len(free) // 2] * GRAN, free[-1] * GRAN
st = cbw_stats()
assert st["copy-unit"] == 4096, st
for off, ln in ((g0 + 8192, 4096), (g0 + 40960, 4096), (g1 + 20000, 6000)):
    h.pwrite(bytes([0xee]) * ln, off)
    model[off:off + ln] = bytes([0xee]) * ln
    now = cbw_stats()
    units = (off + ln + 4095) // 4096 - off // 4096
    assert now["copied-bytes"] - st["copied-bytes"] == units * 4096, (off, ln, st, now)
    assert now["copies"] == st["copies"] + 1 and now["writes"] == st["writes"] + 1, (st, now)
    st = now
v = nbd.NBD()
v.connect_uri("nbd+unix:///ck2?socket=" + d + "/nbd.sock")
for g in (g0, g1):
    assert v.pread(GRAN, g) == at2[g:g + GRAN], "the view lost old data of granule %d" % g
    for o in range(0, GRAN, 4096):
        assert v.pread(4096, g + o) == at2[g + o:g + o + 4096], (g, o)
# Written again: nothing more to copy.
h.pwrite(bytes([0xdd]) * 4096, g0 + 8192)
assert cbw_stats()["copied-bytes"] == st["copied-bytes"], cbw_stats()
assert v.pread(GRAN, g0) == at2[g0:g0 + GRAN]
# Reads of the view racing the first writes to their units (whose old
# data may be in memory, on its way to the scratch): always the old data.
bufs = []
for g in [x * GRAN for x in free if x * GRAN not in (g0, g1)][:64]:
    for o in range(0, GRAN, 4096):
        h.aio_pwrite(bytes([0xcc]) * 4096, g + o)
        b = nbd.Buffer(8192)
        v.aio_pread(b, g + o - 4096 if o else g + o)
        bufs.append((b, g + o - 4096 if o else g + o))
    while h.aio_in_flight() or v.aio_in_flight():
        if h.aio_in_flight():
            h.poll(-1)
        if v.aio_in_flight():
            v.poll(-1)
for b, off in bufs:
    assert b.to_bytearray() == at2[off:off + 8192], "a racing read of the view at %d" % off
v.shutdown()
h.flush()
open(d + "/at2.raw", "wb").write(at2)
PY
# 3. kill -9 with ck2 exported: the image stays consistent.
kill -9 "$VD_PID"
wait_for 10 bash -c "! kill -0 $VD_PID"
qemu_img check -q "$WORKDIR/disk.qcow2" || fail "qemu-img check after kill -9"
# A bitmap in the image is either in-use (never trusted) or was not
# recording (exact); one added since the last clean close is not there at
# all, as with QEMU (the next backup is then a full one).
qemu_img info --output=json "$WORKDIR/disk.qcow2" | python3 -c '
import json, sys
bms = json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", [])
for b in bms:
    assert "in-use" in b["flags"] or "auto" not in b["flags"], b
assert any(b["name"] == "base" and "in-use" in b["flags"] for b in bms), bms
' || fail "a recording bitmap is not marked in-use after kill -9"
