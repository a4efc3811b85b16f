#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's dirty bitmap commands (block-dirty-bitmap-add/-remove/-clear/
# -enable/-disable/-merge and query-named-block-nodes' "dirty-bitmaps")
# against qemu-storage-daemon: the same commands and the same NBD writes go
# to both, each on its own copy of the images, and the replies, the errors
# and the bitmaps' fields (counts included) must be the same. Then the
# persistent bitmaps of vstord reach the image on blockdev-del (qemu-img
# info lists them, qemu-img check finds it clean, qsd reads the same count
# from it) and the in-memory ones never do.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon qemu-img
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

for d in q v; do
	mkdir "$d"
	qemu_img create -q -f qcow2 "$d/a.qcow2" 16M
	qemu_img create -q -f qcow2 "$d/b.qcow2" 16M
	qemu_img create -q -f qcow2 "$d/small.qcow2" 8M
	qemu_img create -q -f qcow2 -o compat=0.10 "$d/v2.qcow2" 1M
	qemu_img create -q -f raw "$d/r.raw" 1M
done

start_qsd_and_vstord

log "the same commands and writes: the same replies, errors and bitmaps as qsd"
python3 - "$WORKDIR" <<'PY' || fail "vstord's dirty bitmaps differ from qemu-storage-daemon's"
import json, sys
import nbd
from qmp import QMP

w = sys.argv[1]

def run(sock, d):
    """The scenario on one daemon: a list of (step, reply) to compare."""
    c = QMP(sock)
    out = []

    def x(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        r.pop("id", None)
        out.append((cmd, a, r))
        return r

    def bitmaps(node):
        for n in c.cmd("query-named-block-nodes"):
            if n["node-name"] == node:
                bms = n.get("dirty-bitmaps")
                out.append(("dirty-bitmaps", node, bms))
                return bms
        raise AssertionError("no node " + node)

    for name, f, drv in (("a", "a.qcow2", "qcow2"), ("b", "b.qcow2", "qcow2"),
                         ("s", "small.qcow2", "qcow2"), ("v2", "v2.qcow2", "qcow2"),
                         ("r", "r.raw", "raw")):
        c.cmd("blockdev-add", driver=drv, node_name=name,
              file={"driver": "file", "filename": d + "/" + f})
    assert bitmaps("a") is None  # no bitmaps: no list at all
    # add: defaults, options and every error qsd gives
    x("block-dirty-bitmap-add", node="a", name="b0")
    x("block-dirty-bitmap-add", node="a", name="p4k", persistent=True, granularity=4096)
    x("block-dirty-bitmap-add", node="a", name="off", disabled=True)
    x("block-dirty-bitmap-add", node="a", name="big", granularity=1 << 31)
    x("block-dirty-bitmap-add", node="a", name="b0")
    x("block-dirty-bitmap-add", node="a", name="b0", persistent=True)
    x("block-dirty-bitmap-add", node="a", name="")
    x("block-dirty-bitmap-add", node="nope", name="x")
    x("block-dirty-bitmap-add", node="a", name="g", granularity=1000)
    x("block-dirty-bitmap-add", node="a", name="g", granularity=256)
    x("block-dirty-bitmap-add", node="a", name="g", granularity=1 << 32)
    x("block-dirty-bitmap-add", node="a", name="L" * 1024)
    x("block-dirty-bitmap-add", node="a", name="L" * 1024, persistent=True)
    x("block-dirty-bitmap-add", node="v2", name="p", persistent=True)
    x("block-dirty-bitmap-add", node="r", name="p", persistent=True)
    x("block-dirty-bitmap-add", node="a", name="x", bogus=1)
    x("block-dirty-bitmap-add", node="a")
    x("block-dirty-bitmap-add", node="a", name="x", persistent="yes")
    # the other commands' errors
    for cmd in ("remove", "clear", "enable", "disable"):
        x("block-dirty-bitmap-" + cmd, node="a", name="zz")
        x("block-dirty-bitmap-" + cmd, node="nope", name="b0")
    x("block-dirty-bitmap-merge", node="a", target="zz", bitmaps=["b0"])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=["zz"])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[{"node": "zz", "name": "x"}])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[{"node": "b", "name": "zz"}])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[3])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[{"node": "a"}])
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[{"node": "a", "name": "b0", "x": 1}])
    x("block-dirty-bitmap-add", node="s", name="sb")
    x("block-dirty-bitmap-merge", node="a", target="b0", bitmaps=[{"node": "s", "name": "sb"}])
    x("block-dirty-bitmap-add", node="b", name="other", granularity=512)
    bitmaps("a")

    # writes through a live NBD export mark the enabled bitmaps
    c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/nbd.sock"}})
    c.cmd("block-export-add", type="nbd", id="ea", node_name="a", writable=True)
    c.cmd("block-export-add", type="nbd", id="eb", node_name="b", writable=True)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///a?socket=" + d + "/nbd.sock")
    h.pwrite(b"x", 0)                          # chunk 0 of every granularity
    h.pwrite(b"y" * 4096, 65536 + 100)         # 4 KiB across two 4 KiB chunks
    h.zero(8192, 5 * 1048576)                  # write-zeroes marks too
    h.trim(65536, 9 * 1048576)                 # and discard
    h.flush()
    bms = bitmaps("a")
    counts = {b["name"]: b["count"] for b in bms}
    # (discard=ignore, the default: the trim does not reach the node, so marks nothing)
    assert counts == {"b0": 3 * 65536, "p4k": 5 * 4096, "off": 0, "big": 1 << 31}, counts
    # enable/disable/clear change what is recorded
    x("block-dirty-bitmap-enable", node="a", name="off")
    x("block-dirty-bitmap-disable", node="a", name="b0")
    h.pwrite(b"z" * 512, 3 * 1048576)
    bitmaps("a")
    x("block-dirty-bitmap-clear", node="a", name="p4k")
    bitmaps("a")
    # merge: names on the node and {node, name} on another of the same size
    h2 = nbd.NBD()
    h2.connect_uri("nbd+unix:///b?socket=" + d + "/nbd.sock")
    h2.pwrite(b"w" * 1024, 7 * 1048576 + 300)
    h2.shutdown()
    x("block-dirty-bitmap-merge", node="a", target="p4k", bitmaps=["off", {"node": "b", "name": "other"}])
    bitmaps("a")
    x("block-dirty-bitmap-remove", node="a", name="big")
    x("block-dirty-bitmap-remove", node="a", name="off")
    bms = bitmaps("a")
    assert [b["name"] for b in bms] == ["p4k", "b0"], bms  # newest first
    h.shutdown()
    c.cmd("block-export-del", id="ea")
    c.cmd("block-export-del", id="eb")
    # wait for the exports to go (their clients are gone)
    for _ in range(500):
        if not c.cmd("query-block-exports"):
            break
        c.event("BLOCK_EXPORT_DELETED")
    c.cmd("blockdev-del", node_name="a")
    c.cmd("blockdev-del", node_name="b")
    c.close()
    return out

q = run(w + "/qsd.sock", w + "/q")
v = run(w + "/vd.sock", w + "/v")
assert len(q) == len(v), (len(q), len(v))
bad = 0
for (qc, qa, qr), (vc, va, vr) in zip(q, v):
    # QMP error messages are cut at 511 bytes in vstord (1 KiB bitmap names)
    if isinstance(qr, dict) and isinstance(vr, dict) and "error" in qr and "error" in vr \
            and len(vr["error"]["desc"]) >= 500:
        qr["error"]["desc"] = qr["error"]["desc"][:len(vr["error"]["desc"])]
    if qr != vr:
        bad += 1
        print("differs: %s %s\n  qsd:    %s\n  vstord: %s" %
              (qc, json.dumps(qa)[:100], json.dumps(qr)[:300], json.dumps(vr)[:300]))
assert not bad, "%d replies differ" % bad
print("compared %d replies" % len(q))
PY

log "the persistent bitmap is in the image after blockdev-del; the in-memory one is not"
info=$(qemu_img info --output=json v/a.qcow2)
python3 - "$info" <<'PY' || fail "qemu-img info of the image vstord closed"
import json, sys
i = json.loads(sys.argv[1])
bms = i["format-specific"]["data"].get("bitmaps")
assert bms == [{"flags": ["auto"], "name": "p4k", "granularity": 4096}], bms
PY
qemu_img check -q v/a.qcow2 || fail "qemu-img check after vstord stored the bitmap"
# An image with only in-memory bitmaps is left as it was: no bitmaps extension.
qemu_img info --output=json v/b.qcow2 | grep -q '"bitmaps"' && fail "b.qcow2 got a bitmap"
qemu_img check -q v/b.qcow2 || fail "qemu-img check b.qcow2"

log "qsd reads the same bits from the image vstord stored"
python3 - "$WORKDIR" <<'PY' || fail "the stored bitmap read back by qsd"
import sys
from qmp import QMP
w = sys.argv[1]
def count(sock, img):
    c = QMP(sock)
    c.cmd("blockdev-add", driver="qcow2", node_name="re",
          file={"driver": "file", "filename": img})
    n = [n for n in c.cmd("query-named-block-nodes") if n["node-name"] == "re"][0]
    c.cmd("blockdev-del", node_name="re")
    return n["dirty-bitmaps"]
q = count(w + "/qsd.sock", w + "/q/a.qcow2")
v = count(w + "/qsd.sock", w + "/v/a.qcow2")
assert q == v and q[0]["count"] > 0, (q, v)
# and vstord reads it back the same
assert count(w + "/vd.sock", w + "/v/a.qcow2") == v
PY
log ok
