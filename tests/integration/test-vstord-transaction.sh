#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's transaction: the same transactions to qemu-storage-daemon and
# vstord give the same replies, errors and bitmaps; a failing transaction
# leaves nothing behind in vstord (no file created, no bitmap, no snapshot,
# the graph as it was); and the incremental-backup use, an external
# snapshot and a bitmap on the overlay in one transaction under a live NBD
# export with writes in flight, starts the bitmap exactly at the snapshot:
# every write is in the base or in the overlay, and the bitmap counts
# exactly those in the overlay.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon qemu-img qemu-io
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

for d in q v; do
	mkdir "$d"
	qemu_img create -q -f qcow2 "$d/a.qcow2" 16M
	qemu_img create -q -f qcow2 "$d/o2.qcow2" 16M
done
qemu_img create -q -f qcow2 live.qcow2 64M

start_qsd_and_vstord

log "the same transactions: the same replies, errors and bitmaps as qsd"
python3 - "$WORKDIR" <<'PY' || fail "vstord's transactions differ from qemu-storage-daemon's"
import json, sys
from qmp import QMP

w = sys.argv[1]

def run(sock, d):
    c = QMP(sock)
    out = []

    def t(actions, **a):
        r = c.execute("transaction", dict(actions=actions, **a))
        out.append((actions, json.loads(json.dumps(r).replace(d, "DIR"))))
        return r

    def add(node, name, **a):
        return {"type": "block-dirty-bitmap-add", "data": dict(node=node, name=name, **a)}

    def bitmaps():
        n = [n for n in c.cmd("query-named-block-nodes") if n["node-name"] == "a"][0]
        out.append(("dirty-bitmaps", n.get("dirty-bitmaps")))
        out.append(("snapshots", n["image"].get("snapshots")))

    c.cmd("blockdev-add", driver="qcow2", node_name="a",
          file={"driver": "file", "filename": d + "/a.qcow2"})
    t([add("a", "b0")])
    t([{"type": "bogus", "data": {}}])
    t([{"type": "block-dirty-bitmap-add"}])
    t([{"type": "block-dirty-bitmap-add", "data": {"node": "a"}}])
    t([add("a", "x", bogus=1)])
    t([add("a", "t1")], properties={"completion-mode": "grouped"})
    t([add("a", "t1")], properties={"completion-mode": "individual"})
    t([{"type": "abort", "data": {}}])
    t([], properties={"x": 1})
    t([{"type": "block-dirty-bitmap-remove", "data": {"node": "a", "name": "b0"}},
       {"type": "block-dirty-bitmap-clear", "data": {"node": "a", "name": "b0"}}])
    t([{"type": "block-dirty-bitmap-merge",
        "data": {"node": "a", "target": "b0", "bitmaps": [{"node": "a"}]}}])
    t([])
    # failing: nothing of the first action stays
    t([add("a", "t2"), add("a", "b0")])
    t([add("a", "t3", persistent=True), {"type": "abort", "data": {}}])
    t([{"type": "blockdev-snapshot-internal-sync", "data": {"device": "a", "name": "s1"}},
       add("a", "b0")])
    t([add("a", "t4"), {"type": "block-dirty-bitmap-remove", "data": {"node": "a", "name": "zz"}}])
    t([add("a", "t5"), {"type": "block-dirty-bitmap-merge",
                        "data": {"node": "a", "target": "b0", "bitmaps": ["zz"]}}])
    bitmaps()
    # every bitmap action in one transaction
    t([add("a", "m", disabled=True),
       {"type": "block-dirty-bitmap-disable", "data": {"node": "a", "name": "b0"}},
       {"type": "block-dirty-bitmap-enable", "data": {"node": "a", "name": "m"}},
       {"type": "block-dirty-bitmap-clear", "data": {"node": "a", "name": "t1"}},
       {"type": "block-dirty-bitmap-merge", "data": {"node": "a", "target": "m", "bitmaps": ["t1"]}},
       {"type": "block-dirty-bitmap-remove", "data": {"node": "a", "name": "t1"}},
       {"type": "blockdev-snapshot-internal-sync", "data": {"device": "a", "name": "s2"}}])
    bitmaps()
    c.close()
    return out

q = run(w + "/qsd.sock", w + "/q")
v = run(w + "/vd.sock", w + "/v")
assert len(q) == len(v)
bad = 0
for (qa, qr), (va, vr) in zip(q, v):
    if qa == "snapshots" and qr and vr:
        # dates and ids: only the names must match
        qr = [s["name"] for s in qr]
        vr = [s["name"] for s in vr]
    if qr != vr:
        bad += 1
        print("differs: %s\n  qsd:    %s\n  vstord: %s" %
              (json.dumps(qa)[:200], json.dumps(qr)[:300], json.dumps(vr)[:300]))
assert not bad, "%d replies differ" % bad
print("compared %d replies" % len(q))
PY

log "a failing transaction leaves no file, no bitmap, no snapshot, the graph unchanged"
python3 - "$WORKDIR" <<'PY' || fail "a failing transaction left something behind"
import json, os, sys
from qmp import QMP

w = sys.argv[1]
d = w + "/v"
c = QMP(w + "/vd.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="o2", backing=None,
      file={"driver": "file", "filename": d + "/o2.qcow2"})

# The file's length may grow (an internal snapshot taken and deleted again
# leaves free clusters at its end, as in QEMU): not part of the graph.
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k != "actual-size" and
                not (k == "virtual-size" and v.get("format") == "file")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v

def graph():
    return strip(c.cmd("query-named-block-nodes")), strip(c.cmd("query-named-block-nodes", flat=True))

sync = lambda f, n: {"type": "blockdev-snapshot-sync",
                     "data": {"node-name": "a", "snapshot-file": d + "/" + f,
                              "snapshot-node-name": n, "format": "qcow2"}}
add = lambda node, name, **a: {"type": "block-dirty-bitmap-add",
                               "data": dict(node=node, name=name, **a)}
failing = [
    ([sync("f1.qcow2", "ov1"), add("zz", "x")], "Cannot find device='zz' nor node-name='zz'"),
    ([sync("f2.qcow2", "ov2"), add("ov2", "inc"), add("a", "b0")], "Bitmap already exists: b0"),
    ([{"type": "blockdev-snapshot", "data": {"node": "a", "overlay": "o2"}},
      add("o2", "inc", persistent=True), {"type": "abort", "data": {}}],
     "Transaction aborted using Abort action"),
    ([{"type": "blockdev-snapshot-internal-sync", "data": {"device": "a", "name": "s9"}},
      add("a", "p", persistent=True), sync("f3.qcow2", "ov3"), add("a", "m")],
     "Bitmap already exists: m"),
]
for actions, err in failing:
    before = graph()
    r = c.execute("transaction", {"actions": actions})
    assert r.get("error", {}).get("desc") == err, (actions, r)
    assert graph() == before, ("the graph changed", actions)
    for f in ("f1.qcow2", "f2.qcow2", "f3.qcow2"):
        assert not os.path.exists(d + "/" + f), "%s was left" % f
# the overlay's header was put back, and it took no bitmap
c.cmd("blockdev-del", node_name="o2")
c.cmd("blockdev-del", node_name="a")
c.close()
PY
for f in v/o2.qcow2 v/a.qcow2; do
	qemu_img check -q "$f" || fail "qemu-img check $f"
done
qemu_img info --output=json v/o2.qcow2 | grep -q '"backing-filename"\|"bitmaps"' &&
	fail "o2.qcow2 kept the aborted backing file or bitmap"
qemu_img info --output=json v/a.qcow2 | grep -q '"p"\|"s9"' &&
	fail "a.qcow2 kept the aborted bitmap or snapshot"

log "incremental backup: snapshot and bitmap in one transaction under live writes"
python3 - "$WORKDIR" <<'PY' || fail "the bitmap does not start at the snapshot"
import json, sys
import nbd
from qmp import QMP

w = sys.argv[1]
c = QMP(w + "/vd.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="live",
      file={"driver": "file", "filename": w + "/live.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "path": w + "/nbd.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="live", writable=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///live?socket=" + w + "/nbd.sock")
BS, N = 4096, 600

# Each write to its own 64 KiB slot (one bit of the bitmap), 32 in flight;
# the transaction runs after the 300th was issued, with writes in flight.
pending = {}
done_before = set()
issued_after = None
issued = 0
while issued < N or h.aio_in_flight():
    while issued < N and h.aio_in_flight() < 32:
        pending[issued] = h.aio_pwrite(bytes([(issued % 250) + 1]) * BS, issued * 65536)
        issued += 1
        if issued == 300:
            for i, ck in list(pending.items()):
                if h.aio_command_completed(ck):
                    done_before.add(i)
                    del pending[i]
            c.cmd("transaction", actions=[
                {"type": "blockdev-snapshot-sync",
                 "data": {"node-name": "live", "snapshot-file": w + "/ov.qcow2",
                          "snapshot-node-name": "ov", "format": "qcow2"}},
                {"type": "block-dirty-bitmap-add",
                 "data": {"node": "ov", "name": "inc", "persistent": True}}])
            issued_after = issued
    h.poll(-1)
    for i, ck in list(pending.items()):
        if h.aio_command_completed(ck):
            del pending[i]
h.flush()
inc = [b for n in c.cmd("query-named-block-nodes") if n["node-name"] == "ov"
       for b in n.get("dirty-bitmaps", [])]
assert [b["name"] for b in inc] == ["inc"], inc
json.dump({"count": inc[0]["count"], "done_before": sorted(done_before),
           "issued_after": issued_after, "n": N}, open(w + "/live.json", "w"))
h.shutdown()
c.cmd("quit")
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
stop_pid "$VD_PID"
for f in live ov; do
	qemu_img check -q "$f.qcow2" || fail "qemu-img check $f.qcow2"
done
qemu_img info --output=json ov.qcow2 | grep -q '"name": "inc"' || fail "ov.qcow2 has no bitmap inc"
qemu_img map --output=json ov.qcow2 >ov.map
python3 - "$WORKDIR" <<'PY' || fail "the writes and the bitmap do not split at the snapshot"
import json, subprocess, sys
w = sys.argv[1]
r = json.load(open(w + "/live.json"))
# slots the overlay itself holds (depth 0)
in_ov = set()
for e in json.load(open(w + "/ov.map")):
    if e["depth"] == 0 and e["data"]:
        in_ov.update(range(e["start"] // 65536, (e["start"] + e["length"] + 65535) // 65536))
def base_has(i):
    out = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -v %d 16" % (i * 65536),
                          w + "/live.qcow2"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[1], 16) == (i % 250) + 1
for i in range(r["n"]):
    b = base_has(i) if i % 3 == 0 or i in in_ov or i in r["done_before"] else None
    if i in in_ov:
        assert not b, "write %d is in both the base and the overlay" % i
    elif b is not None:
        assert b, "write %d is nowhere" % i
for i in r["done_before"]:
    assert i not in in_ov, "write %d completed before the transaction, yet in the overlay" % i
for i in range(r["issued_after"], r["n"]):
    assert i in in_ov, "write %d issued after the transaction is not in the overlay" % i
# the bitmap started exactly at the snapshot: it counts the overlay's writes, no more, no less
assert r["count"] == len(in_ov) * 65536, (r["count"], len(in_ov))
print("%d writes before the snapshot, %d after; bitmap count %d" %
      (r["n"] - len(in_ov), len(in_ov), r["count"]))
PY
log ok
