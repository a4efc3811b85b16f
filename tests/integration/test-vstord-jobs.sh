#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Block jobs of vstord (the framework and block-stream):
# 1. qemu-storage-daemon as the oracle: the same job commands, good and bad
#    (unknown job, a second job on a busy node, blockdev-del of it, verbs
#    in the wrong state, pause/resume/set-speed/finalize/dismiss, cancel),
#    give the same replies and the same event sequence (names, data keys).
# 2. block-stream under a live NBD export with a client writing: the events
#    in order, every write and every backing byte read back, the chain
#    shortened in the header, every image clean.
# 3. kill -9 in the middle of a stream: every image clean, every write
#    flushed before the kill readable from a restarted vstord.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io qemu-storage-daemon
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

# base (1 in 0-8M) <- mid (2 in 4-12M) <- top, 64 MiB each.
make_chain()
{
	local p=$1
	qemu_img create -q -f qcow2 "$p-base.qcow2" 64M
	qemu-io -f qcow2 -c 'write -P 1 0 8M' "$p-base.qcow2" >/dev/null
	qemu_img create -q -f qcow2 -b "$p-base.qcow2" -F qcow2 "$p-mid.qcow2"
	qemu-io -f qcow2 -c 'write -P 2 4M 8M' "$p-mid.qcow2" >/dev/null
	qemu_img create -q -f qcow2 -b "$p-mid.qcow2" -F qcow2 "$p-top.qcow2"
}

log "the job commands against qemu-storage-daemon"
make_chain "$WORKDIR/q"
make_chain "$WORKDIR/v"
start_qsd_and_vstord

python3 - "$WORKDIR" <<'PY' || fail "vstord's jobs differ from qemu-storage-daemon's"
import sys, time
from qmp import QMP, differences, stable, wait_job
d = sys.argv[1]

def shape(v):
    return stable(v, ("offset", "current-progress", "busy", "timestamp"))

def run(path, p):
    c = QMP(path)
    out = []
    def ex(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        out.append((cmd, shape(r)))
        return r
    ex("blockdev-add", driver="qcow2", node_name="top",
       file={"driver": "file", "filename": p + "-top.qcow2"})
    ex("query-block-jobs")
    ex("query-jobs")
    for verb in ("pause", "resume", "cancel", "complete", "set-speed"):
        ex("block-job-" + verb, device="nope", **({"speed": 1} if verb == "set-speed" else {}))
    for verb in ("pause", "resume", "cancel", "complete", "finalize", "dismiss"):
        ex("job-" + verb, id="nope")
    ex("block-stream", device="top")
    ex("block-stream", job_id="1bad", device="top")
    ex("block-stream", job_id="j", device="nope")
    ex("block-stream", job_id="j", device="top", base="/no/such/file")
    ex("block-stream", job_id="j", device="top", base_node="nope")
    ex("block-stream", job_id="j", device="top", base_node="top")
    ex("block-stream", job_id="j", device="top", on_error="bogus")
    ex("block-stream", job_id="j", device="top", speed=-1)
    ex("block-stream", job_id="j", device="top", backing_file="x")
    ex("block-stream", job_id="j", device="top", base="/x", base_node="top")
    # A slow job, held at pending, kept after it concludes.
    ex("block-stream", job_id="j1", device="top", speed=1 << 20, auto_finalize=False,
       auto_dismiss=False)
    ex("query-block-jobs")
    ex("block-stream", job_id="j1", device="top")
    ex("block-stream", job_id="j2", device="top")
    ex("blockdev-del", node_name="top")
    # The graph of a job's node stays as it is.
    ex("blockdev-snapshot-sync", node_name="top", snapshot_file=p + "-ov.qcow2",
       snapshot_node_name="ov", format="qcow2")
    ex("blockdev-snapshot-internal-sync", device="top", name="sn")
    ex("block-job-complete", device="j1")
    ex("block-job-finalize", id="j1")
    ex("block-job-dismiss", id="j1")
    ex("block-job-resume", device="j1")
    ex("block-job-pause", device="j1")
    ex("block-job-pause", device="j1")
    wait_job(c, "j1", "paused")
    ex("query-block-jobs")
    ex("block-job-set-speed", device="j1", speed=-1)
    ex("block-job-set-speed", device="j1", speed=0)
    ex("block-job-resume", device="j1")
    wait_job(c, "j1", "pending")
    ex("query-block-jobs")
    ex("block-job-finalize", id="j1")
    ex("query-block-jobs")
    ex("query-jobs")
    ex("block-job-dismiss", id="j1")
    ex("query-block-jobs")
    # The chain is streamed: top has no backing file any more.
    ex("query-named-block-nodes")
    out[-1] = ("query-named-block-nodes",
               [n.get("backing_file_depth") for n in out[-1][1]["return"]])
    # Cancel, by both names, once kept and once not.
    ex("blockdev-add", driver="qcow2", node_name="mid",
       file={"driver": "file", "filename": p + "-mid.qcow2"})
    # Nothing to stream (the base is mid's backing node): held at pending, cancelled.
    ex("block-stream", job_id="n", device="mid", base=p + "-base.qcow2", auto_finalize=False)
    wait_job(c, "n", "pending")
    ex("query-block-jobs")
    ex("job-dismiss", id="n")
    ex("block-job-cancel", device="n")
    deadline = time.time() + 30
    while c.cmd("query-jobs") and time.time() < deadline:
        time.sleep(0.02)
    ex("block-stream", job_id="c1", device="mid", speed=1 << 20)
    ex("block-job-cancel", device="c1")
    deadline = time.time() + 30
    while c.cmd("query-jobs") and time.time() < deadline:
        time.sleep(0.02)
    ex("block-stream", job_id="c2", device="mid", speed=1 << 20, auto_dismiss=False)
    ex("job-cancel", id="c2")
    wait_job(c, "c2", "concluded")
    ex("query-jobs")
    ex("job-dismiss", id="c2")
    ex("quit")
    # Events: names and data keys, in order.
    deadline = time.time() + 10
    try:
        while True:
            msg = c.read()
            if "event" in msg:
                c.events.append(msg)
    except Exception:
        pass
    evs = [(e["event"], sorted(e["data"].keys()),
            e["data"].get("status") or e["data"].get("error")) for e in c.events]
    # qsd pauses a job for every drain of its node (the refused snapshots
    # drain it): a run of paused/running pairs counts once.
    pair = [("JOB_STATUS_CHANGE", ["id", "status"], "paused"),
            ("JOB_STATUS_CHANGE", ["id", "status"], "running")]
    i = 0
    while i + 4 <= len(evs):
        if evs[i:i + 2] == pair and evs[i + 2:i + 4] == pair:
            del evs[i:i + 2]
        else:
            i += 1
    return out, evs

qo, qe = run(d + "/qsd.sock", d + "/q")
vo, ve = run(d + "/vd.sock", d + "/v")
sys.exit(1 if differences(qo, vo, qe, ve) else 0)
PY
wait_for 30 bash -c "! kill -0 $QSD_PID && ! kill -0 $VD_PID"
for f in q-top q-mid v-top v-mid v-base; do
	qemu_img check -q "$WORKDIR/$f.qcow2" || fail "qemu-img check $f.qcow2"
done
qemu_img compare -q "$WORKDIR/q-top.qcow2" "$WORKDIR/v-top.qcow2" ||
	fail "the streamed images differ"
qemu_img info --output=json "$WORKDIR/v-top.qcow2" | grep -q backing-filename &&
	fail "the streamed top still has a backing file"

log "block-stream under a live NBD export, a client writing"
make_chain "$WORKDIR/l"
cp "$WORKDIR/l-mid.qcow2" "$WORKDIR/l-mid.orig.qcow2"
start_daemon "$WORKDIR/vd2.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd2.pid" \
	--monitor "$WORKDIR/vd2.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" <<'PY' || fail "block-stream under writes"
import sys, time
import nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd2.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="base",
      file={"driver": "file", "filename": d + "/l-base.qcow2"})
c.cmd("blockdev-add", driver="qcow2", node_name="mid", backing="base",
      file={"driver": "file", "filename": d + "/l-mid.qcow2"})
c.cmd("blockdev-add", driver="qcow2", node_name="top", backing="mid",
      file={"driver": "file", "filename": d + "/l-top.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd2.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="top", writable=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///top?socket=" + d + "/nbd2.sock")
BS = 4096
# Stream mid into top (base stays), 4 MiB/s: about 3 s for 12 MiB.
c.cmd("block-stream", job_id="s", device="top", base_node="base", speed=4 << 20)
# Writes all over the first 16 MiB while it runs, 16 in flight.
written = {}
i = 0
while c.cmd("query-jobs"):
    while h.aio_in_flight() < 16:
        off = (i * 7919 * BS) % (16 << 20)
        written[off] = (i % 250) + 3
        h.aio_pwrite(bytes([written[off]]) * BS, off)
        i += 1
    h.poll(-1)
    if i > 200000:
        raise Exception("the job never ended")
while h.aio_in_flight():
    h.poll(-1)
h.flush()
assert i > 100, "too few writes during the job: %d" % i
evs = [(e["event"], e["data"].get("status")) for e in c.events]
assert evs == [("JOB_STATUS_CHANGE", "created"), ("JOB_STATUS_CHANGE", "running"),
               ("JOB_STATUS_CHANGE", "waiting"), ("JOB_STATUS_CHANGE", "pending"),
               ("BLOCK_JOB_COMPLETED", None), ("JOB_STATUS_CHANGE", "concluded"),
               ("JOB_STATUS_CHANGE", "null")], evs
done = [e for e in c.events if e["event"] == "BLOCK_JOB_COMPLETED"][0]["data"]
assert done["offset"] == done["len"] == 64 << 20 and "error" not in done, done
# Every write, and the backing data elsewhere, through the export.
for off, v in written.items():
    assert h.pread(BS, off) == bytes([v]) * BS, "write at %d lost" % off
def expect(off):
    if off in written:
        return written[off]
    return 2 if 4 << 20 <= off < 12 << 20 else 1 if off < 8 << 20 else 0
for off in range(0, 20 << 20, 64 * 1024):
    assert h.pread(BS, off) == bytes([expect(off)]) * BS, "bad data at %d" % off
h.shutdown()
nodes = {n["node-name"]: n for n in c.cmd("query-named-block-nodes")}
assert nodes["top"]["backing_file_depth"] == 1, nodes["top"]
c.cmd("quit")
open(d + "/written", "w").write(repr(written))
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
for f in l-base l-mid l-top; do
	qemu_img check -q "$WORKDIR/$f.qcow2" || fail "qemu-img check $f.qcow2"
done
qemu_img info --output=json "$WORKDIR/l-top.qcow2" |
	grep -q "\"backing-filename\": \"$WORKDIR/l-base.qcow2\"" || fail "top's backing is not base"
qemu_img compare -q "$WORKDIR/l-mid.qcow2" "$WORKDIR/l-mid.orig.qcow2" ||
	fail "the stream wrote into mid"
# The removed layer's data is in top now: top over base reads as mid did
# (outside the guest's writes).
python3 - "$WORKDIR" <<'PY' || fail "the streamed data"
import subprocess, sys
d = sys.argv[1]
written = eval(open(d + "/written").read())
def read(img, off):
    out = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -v %d 16" % off, img],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[1], 16)
for off in range(0, 16 << 20, 256 * 1024 + 4096):
    want = written.get(off - off % 4096)
    if want is None:
        want = 2 if 4 << 20 <= off < 12 << 20 else 1 if off < 8 << 20 else 0
    assert read(d + "/l-top.qcow2", off) == want, off
PY

log "kill -9 in the middle of a stream"
make_chain "$WORKDIR/k"
start_daemon "$WORKDIR/vd3.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd3.pid" \
	--monitor "$WORKDIR/vd3.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" "$VD_PID" <<'PY' || fail "kill -9 during a stream"
import os, signal, sys, time
import nbd
from qmp import QMP
d, pid = sys.argv[1], int(sys.argv[2])
c = QMP(d + "/vd3.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="top",
      file={"driver": "file", "filename": d + "/k-top.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd3.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="top", writable=True)
h = nbd.NBD()
h.connect_uri("nbd+unix:///top?socket=" + d + "/nbd3.sock")
c.cmd("block-stream", job_id="s", device="top", speed=2 << 20)
deadline = time.time() + 30
while c.cmd("query-jobs")[0]["current-progress"] < 4 << 20:
    assert time.time() < deadline
    time.sleep(0.05)
for i in range(64):
    h.pwrite(bytes([0x40 + i % 64]) * 4096, i * 128 * 1024)
h.flush()
os.kill(pid, signal.SIGKILL)
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
for f in k-base k-mid k-top; do
	qemu_img check -q "$WORKDIR/$f.qcow2" || fail "qemu-img check $f.qcow2 after kill -9"
done
start_daemon "$WORKDIR/vd4.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd4.pid" \
	--monitor "$WORKDIR/vd4.sock"
VD_PID=$DAEMON_PID
python3 - "$WORKDIR" <<'PY' || fail "data after kill -9 and restart"
import sys
import nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd4.sock")
c.cmd("blockdev-add", driver="qcow2", node_name="top",
      file={"driver": "file", "filename": d + "/k-top.qcow2"})
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd4.sock"})
c.cmd("block-export-add", type="nbd", id="e", node_name="top", writable=False)
h = nbd.NBD()
h.connect_uri("nbd+unix:///top?socket=" + d + "/nbd4.sock")
for i in range(64):
    assert h.pread(4096, i * 128 * 1024) == bytes([0x40 + i % 64]) * 4096, i
for off in range(4096, 16 << 20, 128 * 1024):
    want = 2 if 4 << 20 <= off < 12 << 20 else 1 if off < 8 << 20 else 0
    assert h.pread(4096, off) == bytes([want]) * 4096, off
# The stream runs again to its end on the restarted daemon.
c.cmd("block-stream", job_id="s", device="top")
c.event("BLOCK_JOB_COMPLETED")
c.cmd("quit")
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
qemu_img check -q "$WORKDIR/k-top.qcow2" || fail "qemu-img check k-top.qcow2 after the restream"
qemu_img info --output=json "$WORKDIR/k-top.qcow2" | grep -q backing-filename &&
	fail "the restreamed top still has a backing file"
log ok
