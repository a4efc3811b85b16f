#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The qemu:dirty-bitmap:NAME meta context against QEMU's: qemu-nbd -B and
# vstor-nbd -B on copies of one image (persistent bitmaps made by qemu-img,
# writes by qemu-io) give the same extents to nbdinfo --map and to qemu-img
# map over NBD, the same meta context listing, the same errors for a missing
# bitmap. Then block-export-add's "bitmaps" on vstord and on
# qemu-storage-daemon: the same replies and errors, and after the same
# writes through an export, the same dirty extents read from a second export
# that carries the bitmap: exactly the writes.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd nbdinfo python3 qemu-storage-daemon
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration

qemu_img create -q -f qcow2 img.qcow2 8M
qemu_img bitmap --add img.qcow2 b0
qemu-io -c 'write 64k 64k' -c 'write 1M 100k' -c 'write 7M 4k' img.qcow2 >/dev/null ||
	fail "qemu-io write"
qemu_img bitmap --add -g 256k img.qcow2 b1
qemu_img bitmap --add -g 512 --disable img.qcow2 b2
qemu-io -c 'write 3M 1k' -c 'write 5M 300k' img.qcow2 >/dev/null || fail "qemu-io write"
cp img.qcow2 q.qcow2
cp img.qcow2 v.qcow2

log "a missing bitmap: the same error"
qerr=$(timeout 30 qemu-nbd -B nope -k "$WORKDIR/x.sock" q.qcow2 2>&1) && fail "qemu-nbd -B nope started"
verr=$(timeout 30 "$VSTOR_NBD" -B nope -k "$WORKDIR/x.sock" v.qcow2 2>&1) && fail "vstor-nbd -B nope started"
assert_eq "${verr#vstor-nbd: }" "${qerr#qemu-nbd: }" "error for a missing bitmap"

for ro in "" "-r"; do
	log "qemu-nbd -B and vstor-nbd -B ${ro:-(read-write)}: the same extents"
	rm -f q.pid v.pid
	start_daemon q.pid 30 qemu-nbd -t -A $ro -B b0 -B b1 -B b2 --pid-file="$WORKDIR/q.pid" \
		-k "$WORKDIR/q.sock" q.qcow2
	QPID=$DAEMON_PID
	start_daemon v.pid 30 "$VSTOR_NBD" -t $ro -B b0 -B b1 -B b2 --pid-file="$WORKDIR/v.pid" \
		-k "$WORKDIR/v.sock" v.qcow2
	VPID=$DAEMON_PID
	for b in b0 b1 b2; do
		for s in q v; do
			timeout 60 nbdinfo --map=qemu:dirty-bitmap:$b "nbd+unix:///?socket=$WORKDIR/$s.sock" \
				>"$s.$b.map" || fail "nbdinfo --map $b on $s"
			qemu_img map --output=json --image-opts \
				"driver=nbd,server.type=unix,server.path=$WORKDIR/$s.sock,x-dirty-bitmap=qemu:dirty-bitmap:$b" \
				>"$s.$b.json" || fail "qemu-img map $b on $s"
		done
		cmp -s q.$b.map v.$b.map || fail "nbdinfo --map=qemu:dirty-bitmap:$b differs: $(diff q.$b.map v.$b.map)"
		cmp -s q.$b.json v.$b.json || fail "qemu-img map x-dirty-bitmap=$b differs: $(diff q.$b.json v.$b.json)"
	done
	assert_grep "1 *dirty" q.b0.map
	for s in q v; do
		timeout 60 nbdinfo --list --json "nbd+unix:///?socket=$WORKDIR/$s.sock" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["contexts"])' \
				>"$s.ctx" || fail "nbdinfo --list on $s"
	done
	assert_eq "$(cat v.ctx)" "$(cat q.ctx)" "meta contexts listed"
	stop_pid "$QPID"
	stop_pid "$VPID"
done

log "block-export-add bitmaps: vstord and qemu-storage-daemon agree"
for d in q v; do
	mkdir "$d"
	cp img.qcow2 "$d/a.qcow2"
	qemu_img create -q -f qcow2 "$d/c.qcow2" 4M
	qemu_img create -q -f raw "$d/r.raw" 4M
done
start_qsd_and_vstord
python3 - "$WORKDIR" <<'PY' || fail "vstord's bitmap exports differ from qemu-storage-daemon's"
import json, subprocess, sys
from qmp import QMP

w = sys.argv[1]

def run(sock, d):
    c = QMP(sock)
    out = []

    def x(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        r.pop("id", None)
        out.append((cmd, a, r))
        return r

    c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{w}/{d}/nbd.sock"}})
    for name, f, drv in (("a", "a.qcow2", "qcow2"), ("c", "c.qcow2", "qcow2"),
                         ("r", "r.raw", "raw")):
        c.cmd("blockdev-add", driver=drv, node_name=name,
              file={"driver": "file", "filename": f"{w}/{d}/{f}"})
    bad = (["nope"], [{"node": "a", "name": "nope"}], [{"node": "zz", "name": "b0"}], [42],
           "b0", [{"name": "b0"}], [{"node": "a"}], ["b0"], ["b2", "nope"])
    for i, b in enumerate(bad):
        x("block-export-add", type="nbd", id=f"bad{i}", node_name="a", name=f"bad{i}",
          bitmaps=b)
    # a disabled bitmap on a read-only export; enabled ones need a writable one
    # (vstord always serves qemu:allocation-depth: ask qsd for it too)
    x("block-export-add", type="nbd", id="e2", node_name="a", name="e2", bitmaps=["b2"],
      allocation_depth=True)
    x("block-export-add", type="nbd", id="e1", node_name="a", name="e1", writable=True,
      bitmaps=["b0", {"node": "a", "name": "b1"}], allocation_depth=True)
    x("block-dirty-bitmap-add", node="c", name="t", granularity=65536)
    x("block-export-add", type="nbd", id="c0", node_name="c", name="c0", writable=True)
    x("block-export-add", type="nbd", id="c1", node_name="c", name="c1", writable=True,
      bitmaps=["t"], allocation_depth=True)
    # a raw node: in-memory bitmaps only
    x("block-dirty-bitmap-add", node="r", name="p", persistent=True)
    x("block-dirty-bitmap-add", node="r", name="rt", granularity=65536)
    x("block-dirty-bitmap-add", node="r", name="off", disabled=True)
    x("block-export-add", type="nbd", id="r0", node_name="r", name="r0", writable=True)
    x("block-export-add", type="nbd", id="r1", node_name="r", name="r1", writable=True,
      bitmaps=["rt", "off"], allocation_depth=True)
    # an exported bitmap is busy
    x("block-dirty-bitmap-remove", node="r", name="rt")
    x("block-dirty-bitmap-clear", node="r", name="off")
    x("block-export-add", type="nbd", id="r2", node_name="r", name="r2", writable=True,
      bitmaps=["rt"])
    url = f"nbd+unix:///%s?socket={w}/{d}/nbd.sock"
    # writes through one export, the bitmap read through the other
    for exp in ("c0", "r0"):
        for off, ln in ((0, 512), (200000, 70000), (3 << 20, 65536)):
            subprocess.run(["qemu-io", "-f", "raw", "-c", f"write {off} {ln}", url % exp],
                           check=True, stdout=subprocess.DEVNULL)
    for n in c.cmd("query-named-block-nodes"):
        if n["node-name"] == "r":
            out.append(("dirty-bitmaps", n.get("dirty-bitmaps")))
    for exp, ctx in (("e1", "b0"), ("e1", "b1"), ("e2", "b2"), ("c1", "t"), ("r1", "rt"),
                     ("r1", "off")):
        m = subprocess.run(["nbdinfo", f"--map=qemu:dirty-bitmap:{ctx}", url % exp],
                           check=True, capture_output=True, text=True).stdout
        out.append((exp, ctx, m))
        l = subprocess.run(["nbdinfo", "--list", "--json", url % exp], check=True,
                           capture_output=True, text=True).stdout
        out.append((exp, [e["contexts"] for e in json.loads(l)["exports"]
                          if e["export-name"] == exp]))
    c.close()
    return out

q = run(f"{w}/qsd.sock", "q")
v = run(f"{w}/vd.sock", "v")
ok = True
for a, b in zip(q, v):
    if a != b:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        ok = False
assert len(q) == len(v)
# exactly the writes, in 64 KiB granules
want = ("         0       65536    1  dirty\n"
        "     65536      131072    0  clean\n"
        "    196608      131072    1  dirty\n"
        "    327680     2818048    0  clean\n"
        "   3145728       65536    1  dirty\n"
        "   3211264      983040    0  clean\n")
for t in [s[2] for s in v if s[:2] in (("c1", "t"), ("r1", "rt"))]:
    if t != want:
        print("dirty extents of the writes:\n" + t, file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
PY
