#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The backup job of vstord (blockdev-backup, drive-backup, as commands and
# as transaction actions):
# 1. qemu-storage-daemon as the oracle: the same commands, good and bad
#    (sync modes, bitmap and bitmap-mode rules, sizes, ids, speed, cancel,
#    auto-dismiss, transactions with a bitmap, drive-backup full and top),
#    give the same replies, queries and job events.
# 2. Under a live NBD export, a client writing all along: a transaction
#    adds a bitmap and starts a full backup; the backup equals the disk as
#    the client had written it at that moment (its own record), although the
#    client kept writing into areas not yet copied. An incremental backup
#    (sync=incremental, into a qcow2 whose backing file is the full one)
#    holds exactly the granules written between the two, reads through the
#    chain as the disk at its own start, and leaves the bitmap holding
#    exactly what was written during it. Every image passes qemu-img check.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io qemu-storage-daemon
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

log "backup commands against qemu-storage-daemon"
for p in q v; do
	qemu_img create -q -f qcow2 "$WORKDIR/$p-src.qcow2" 16M
	qemu-io -f qcow2 -c 'write -P 1 0 4M' "$WORKDIR/$p-src.qcow2" >/dev/null
	qemu_img create -q -f qcow2 "$WORKDIR/$p-tgt.qcow2" 16M
	qemu_img create -q -f qcow2 "$WORKDIR/$p-tgt2.qcow2" 16M
	qemu_img create -q -f qcow2 "$WORKDIR/$p-small.qcow2" 8M
done
start_qsd_and_vstord

python3 - "$WORKDIR" <<'PY' || fail "vstord's backup differs from qemu-storage-daemon's"
import sys, time
from qmp import QMP, differences, stable, wait_job
d = sys.argv[1]

def run(path, p):
    c = QMP(path)
    out = []
    def ex(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        out.append((cmd, stable(r)))
        return r
    def f(name):
        return {"driver": "file", "filename": p + "-" + name + ".qcow2"}
    def bk(**a):
        a.setdefault("job_id", "j")
        a.setdefault("device", "src")
        a.setdefault("target", "tgt")
        return ex("blockdev-backup", **a)
    ex("blockdev-add", driver="qcow2", node_name="src", file=f("src"))
    ex("blockdev-add", driver="qcow2", node_name="tgt", file=f("tgt"))
    ex("blockdev-add", driver="qcow2", node_name="tgt2", file=f("tgt2"))
    ex("blockdev-add", driver="qcow2", node_name="small", file=f("small"))
    ex("block-dirty-bitmap-add", node="src", name="b0")
    bk(device="nope", sync="full")
    bk(target="nope", sync="full")
    bk(sync="bogus")
    bk()
    bk(target="src", sync="full")
    bk(target="small", sync="full")
    bk(sync="incremental")
    bk(sync="bitmap", bitmap="b0")
    bk(sync="bitmap", bitmap="nope", bitmap_mode="never")
    bk(sync="incremental", bitmap="b0", bitmap_mode="never")
    bk(sync="full", bitmap_mode="never")
    bk(sync="none", bitmap="b0", bitmap_mode="always")
    bk(sync="full", bitmap="b0", bitmap_mode="never")
    bk(sync="full", bitmap="b0", bitmap_mode="bogus")
    bk(sync="full", speed=-1)
    bk(job_id="9j", sync="full")
    ex("blockdev-backup", device="src", target="tgt", sync="full")
    # A slow one: queried, refused a second job, cancelled.
    bk(job_id="j2", target="tgt2", sync="full", speed=1 << 20)
    ex("query-block-jobs")
    ex("blockdev-del", node_name="tgt2")
    ex("block-job-cancel", device="j2")
    wait_job(c, "j2", None)
    bk(sync="full", auto_dismiss=False)
    wait_job(c, "j", "concluded")
    ex("query-block-jobs")
    ex("query-jobs")
    ex("job-dismiss", id="j")
    bk(sync="incremental", bitmap="b0")
    wait_job(c, "j", None)
    out.append(("bitmaps", [n.get("dirty-bitmaps") for n in c.cmd("query-named-block-nodes")
                            if n["node-name"] == "src"]))
    # sync=none waits for a cancel; the bitmap of a job is busy meanwhile.
    bk(job_id="n", sync="none")
    ex("block-job-cancel", device="n")
    wait_job(c, "n", None)
    bk(job_id="b", sync="full", bitmap="b0", bitmap_mode="on-success", speed=1 << 20)
    ex("block-dirty-bitmap-clear", node="src", name="b0")
    ex("block-job-cancel", device="b")
    wait_job(c, "b", None)
    ex("transaction", actions=[
        {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "b1"}},
        {"type": "blockdev-backup",
         "data": {"job-id": "t", "device": "src", "target": "tgt", "sync": "full"}}])
    wait_job(c, "t", None)
    ex("drive-backup", job_id="d", device="src", target=p + "-db.qcow2", sync="full",
       mode="bogus")
    ex("drive-backup", job_id="d", device="src", target=p + "-db.qcow2", sync="full",
       format="qcow2")
    wait_job(c, "d", None)
    ex("drive-backup", job_id="d", device="src", target=p + "-dt.qcow2", sync="top")
    wait_job(c, "d", None)
    ex("quit")
    try:
        while True:
            msg = c.read()
            if "event" in msg:
                c.events.append(msg)
    except Exception:
        pass
    # qsd pauses a job while its node is drained for a graph change; vstord does not.
    kept, skip = [], False
    for e in c.events:
        st = e["data"].get("status")
        if e["event"] == "JOB_STATUS_CHANGE" and st == "paused":
            skip = True
            continue
        if skip and e["event"] == "JOB_STATUS_CHANGE" and st == "running":
            skip = False
            continue
        kept.append(e)
    return out, [(e["event"], sorted(e["data"].keys()),
                  e["data"].get("status") or e["data"].get("error") or e["data"].get("len"))
                 for e in kept]

qo, qe = run(d + "/qsd.sock", d + "/q")
vo, ve = run(d + "/vd.sock", d + "/v")
sys.exit(1 if differences(qo, vo, qe, ve) else 0)
PY
wait_for 30 bash -c "! kill -0 $QSD_PID && ! kill -0 $VD_PID"
for f in src tgt tgt2 db dt; do
	qemu_img check -q "$WORKDIR/v-$f.qcow2" || fail "qemu-img check v-$f.qcow2"
	qemu_img compare -q "$WORKDIR/q-$f.qcow2" "$WORKDIR/v-$f.qcow2" ||
		fail "$f.qcow2: vstord's differs from qsd's"
done

log "backups under a live NBD export, a client writing all along"
qemu_img create -q -f qcow2 "$WORKDIR/l-disk.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 7 0 3M' "$WORKDIR/l-disk.qcow2" >/dev/null
qemu_img create -q -f qcow2 "$WORKDIR/l-full.qcow2" 8M
(cd "$WORKDIR" && qemu_img create -q -f qcow2 -b l-full.qcow2 -F qcow2 l-inc.qcow2)
start_daemon "$WORKDIR/vd2.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd2.pid" \
	--monitor "$WORKDIR/vd2.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" <<'PY' || fail "backups under writes"
import random, sys, time
import nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd2.sock")
def f(name):
    return {"driver": "file", "filename": d + "/l-" + name + ".qcow2"}
c.cmd("blockdev-add", driver="qcow2", node_name="disk", file=f("disk"))
c.cmd("blockdev-add", driver="qcow2", node_name="full", file=f("full"))
c.cmd("blockdev-add", driver="qcow2", node_name="inc", backing=None, file=f("inc"))
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="disk", writable=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///disk?socket=" + d + "/nbd.sock")
SIZE, BS, GRAN = 8 << 20, 4096, 65536
# The client's own record of the disk: what it wrote, nothing read back.
model = bytearray(b"\7" * (3 << 20) + bytes(SIZE - (3 << 20)))
rng = random.Random(14)
touched = set()  # granules written since the last mark
inflight = set()
n = [0]

def write_until(cond, at_least=50):
    """Writes 4 KiB blocks all over the disk, 16 in flight, until cond() holds."""
    done = 0
    deadline = time.time() + 60
    while done < at_least or not cond():
        while h.aio_in_flight() < 16:
            off = rng.randrange(SIZE // BS) * BS
            if off in inflight:
                continue  # two writes in flight to one block land in any order
            data = bytes([(n[0] % 240) + 10]) * BS
            model[off:off + BS] = data
            touched.add(off // GRAN)
            inflight.add(off)
            h.aio_pwrite(data, off, completion=lambda err, off=off: inflight.discard(off) or 1)
            n[0] += 1
            done += 1
        h.poll(-1)
        if time.time() > deadline:
            raise Exception("never: %s" % c.cmd("query-block-jobs"))
    while h.aio_in_flight():
        h.poll(-1)
    return done

def status(job):
    js = [j for j in c.cmd("query-jobs") if j["id"] == job]
    return js[0]["status"] if js else None

def bitmap_count(name):
    for node in c.cmd("query-named-block-nodes"):
        for b in node.get("dirty-bitmaps", []):
            if node["node-name"] == "disk" and b["name"] == name:
                return b["count"]
    raise Exception("no bitmap " + name)

write_until(lambda: True, 500)
# 1. A bitmap and a full backup at one point in time; the client writes on.
at_full = bytes(model)
touched.clear()
c.cmd("transaction", actions=[
    {"type": "block-dirty-bitmap-add", "data": {"node": "disk", "name": "b0"}},
    {"type": "blockdev-backup",
     "data": {"job-id": "full", "device": "disk", "target": "full", "sync": "full",
              "speed": 4 << 20}}])
during = write_until(lambda: status("full") is None)
assert during > 200, "too few writes during the full backup: %d" % during
# 2. The bitmap holds exactly what was written since.
assert bitmap_count("b0") == len(touched) * GRAN, (bitmap_count("b0"), len(touched))
changed = set(touched)
at_inc = bytes(model)
touched.clear()
c.cmd("blockdev-backup", job_id="inc", device="disk", target="inc", sync="incremental",
      bitmap="b0", speed=4 << 20)
write_until(lambda: status("inc") is None)
# on-success: what was written during the incremental backup, nothing more.
assert bitmap_count("b0") == len(touched) * GRAN, (bitmap_count("b0"), len(touched))
h.flush()
h.shutdown()
c.cmd("block-export-del", id="e")
deadline = time.time() + 10
while c.cmd("query-block-exports") and time.time() < deadline:
    time.sleep(0.02)
for node in ("inc", "full", "disk"):
    c.cmd("blockdev-del", node_name=node)
c.cmd("quit")
open(d + "/at-full.raw", "wb").write(at_full)
open(d + "/at-inc.raw", "wb").write(at_inc)
open(d + "/now.raw", "wb").write(bytes(model))
open(d + "/changed", "w").write(" ".join(str(g) for g in sorted(changed)))
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
for f in disk full inc; do
	qemu_img check -q "$WORKDIR/l-$f.qcow2" || fail "qemu-img check l-$f.qcow2"
done
qemu_img compare -q "$WORKDIR/now.raw" "$WORKDIR/l-disk.qcow2" || fail "the disk lost writes"
qemu_img compare -q "$WORKDIR/at-full.raw" "$WORKDIR/l-full.qcow2" ||
	fail "the full backup is not the disk at its start"
qemu_img compare -q "$WORKDIR/at-inc.raw" "$WORKDIR/l-inc.qcow2" ||
	fail "full + incremental is not the disk at the incremental's start"
# The increment holds exactly the granules written between the two backups.
got=$(qemu_img map --output=json "$WORKDIR/l-inc.qcow2" | python3 -c '
import json, sys
g = set()
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["data"]:
        g.update(range(e["start"] // 65536, (e["start"] + e["length"]) // 65536))
print(" ".join(str(x) for x in sorted(g)))')
[ "$got" = "$(cat "$WORKDIR/changed")" ] || fail "the increment holds other granules than those written"

log "fleecing: copy-before-write and snapshot-access, as qemu-storage-daemon takes them"
for p in fq fv; do
	qemu_img create -q -f qcow2 "$WORKDIR/$p-src.qcow2" 16M
	qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 5 12M 1M' "$WORKDIR/$p-src.qcow2" >/dev/null
	(cd "$WORKDIR" && qemu_img create -q -f qcow2 -b "$p-src.qcow2" -F qcow2 "$p-fl.qcow2")
	qemu_img create -q -f qcow2 "$WORKDIR/$p-small.qcow2" 8M
done
cp "$WORKDIR/fv-src.qcow2" "$WORKDIR/orig.qcow2"
start_daemon "$WORKDIR/qsd3.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd3.pid" \
	--chardev socket,id=m0,path="$WORKDIR/qsd3.sock",server=on,wait=off --monitor chardev=m0
QSD_PID=$DAEMON_PID
start_daemon "$WORKDIR/vd3.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd3.pid" \
	--monitor "$WORKDIR/vd3.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" <<'PY' || fail "fleecing differs from qemu-storage-daemon's"
import hashlib, subprocess, sys
import nbd
from qmp import QMP
d = sys.argv[1]

def run(path, p, extra):
    c = QMP(path)
    out = []
    def ex(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        out.append((cmd, r))
        return r
    def f(name):
        return {"driver": "file", "filename": d + "/" + p + "-" + name + ".qcow2"}
    ex("blockdev-add", driver="qcow2", node_name="src", file=f("src"))
    ex("blockdev-add", driver="qcow2", node_name="tmp", file=f("fl"), backing="src")
    ex("blockdev-add", driver="qcow2", node_name="small", file=f("small"))
    ex("blockdev-add", driver="copy-before-write", node_name="cbw", file="src")
    ex("blockdev-add", driver="copy-before-write", node_name="cbw", file="src", target="nope")
    ex("blockdev-add", driver="copy-before-write", node_name="cbw", file="src", target="tmp")
    ex("blockdev-add", driver="snapshot-access", node_name="acc", file="cbw")
    ex("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/" + p + ".sock"}})
    ex("block-export-add", type="nbd", id="guest", node_name="cbw", writable=True)
    ex("block-export-add", type="nbd", id="fleece", node_name="acc")
    g = nbd.NBD()
    g.connect_uri("nbd+unix:///cbw?socket=%s/%s.sock" % (d, p))
    r = nbd.NBD()
    r.connect_uri("nbd+unix:///acc?socket=%s/%s.sock" % (d, p))
    before = hashlib.sha256(r.pread(16 << 20, 0)).hexdigest()
    # The guest writes over old data, over zeroes, over the fleece's reads.
    for i, off in enumerate(range(0, 16 << 20, 192 << 10)):
        g.pwrite(bytes([0x40 + i % 64]) * 4096, off + 4096 * (i % 7))
    if extra:
        extra(c)
    g.flush()
    assert g.pread(4096, 0) == b"\x40" * 4096, "the guest's write is not there"
    view = hashlib.sha256(r.pread(16 << 20, 0)).hexdigest()
    out.append(("view unchanged", before == view and view == orig, view))
    r.shutdown()
    g.shutdown()
    ex("block-export-del", id="fleece")
    ex("block-export-del", id="guest")
    import time
    deadline = time.time() + 10
    while c.cmd("query-block-exports") and time.time() < deadline:
        time.sleep(0.02)
    ex("blockdev-del", node_name="acc")
    ex("blockdev-del", node_name="cbw")
    ex("blockdev-del", node_name="tmp")
    ex("quit")
    return out

subprocess.run(["qemu-img", "convert", "-O", "raw", d + "/orig.qcow2", d + "/orig.raw"],
               check=True)
orig = hashlib.sha256(open(d + "/orig.raw", "rb").read()).hexdigest()

def direct(c):
    # vstord only: a writer on an export of the source itself is covered too.
    c.cmd("block-export-add", type="nbd", id="direct", node_name="src", writable=True)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///src?socket=%s/fv.sock" % d)
    h.pwrite(b"\x77" * (1 << 20), 2 << 20)
    h.flush()
    h.shutdown()
    c.cmd("block-export-del", id="direct")

qo = run(d + "/qsd3.sock", "fq", None)
vo = run(d + "/vd3.sock", "fv", direct)
bad = 0
for a, b in zip(qo, vo):
    if a[0] == "view unchanged":
        if not a[1] or not b[1]:
            print("the view changed: qsd", a, "vstord", b, file=sys.stderr)
            bad += 1
        continue
    # blockdev-add of a missing target: QEMU's own wording differs.
    ka = a[1].get("error", {}).get("class", "return")
    kb = b[1].get("error", {}).get("class", "return")
    if ka != kb:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        bad += 1
    elif a != b:
        print("message differs (kept): qsd", a, "vstord", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
wait_for 30 bash -c "! kill -0 $QSD_PID && ! kill -0 $VD_PID"
qemu_img check -q "$WORKDIR/fv-src.qcow2" || fail "qemu-img check fv-src.qcow2"
qemu_img check -q "$WORKDIR/fv-fl.qcow2" || fail "qemu-img check fv-fl.qcow2"
# The scratch image (over the source as it is now) holds the old data of what was written.
qemu-io -f qcow2 -r -c 'read -P 1 0 64k' "$WORKDIR/fv-fl.qcow2" >/dev/null ||
	fail "the scratch image lacks the old data"
