#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Mirror and active commit of vstord under an uncapped write load (issue
# 13): a libnbd client (mirror_load.py) writes 4 KiB blocks at QD16 as fast
# as it can into the NBD export of the source while the job runs.
# 1. blockdev-mirror copy-mode=write-blocking, blockdev-mirror background,
#    and an active block-commit reach BLOCK_JOB_READY within 30 s; the load
#    stops, block-job-complete pivots, and the target equals the source
#    (qemu-img compare), passes qemu-img check, and holds every write.
# 2. Writes racing the copies: 16 hot blocks written all the time (the same
#    granules the job copies again and again), through READY and through
#    block-job-complete (background and write-blocking): after the pivot
#    every block holds the last write the client saw complete.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"

SIZE=16M
for c in wb bg race-bg race-wb; do
	qemu_img create -q -f raw "$WORKDIR/$c-src.raw" $SIZE
	qemu-io -f raw -c "write -P 7 0 $SIZE" "$WORKDIR/$c-src.raw" >/dev/null
	qemu_img create -q -f qcow2 "$WORKDIR/$c-tgt.qcow2" $SIZE
done
qemu_img create -q -f raw "$WORKDIR/cm-base.raw" $SIZE
qemu-io -f raw -c "write -P 7 0 $SIZE" "$WORKDIR/cm-base.raw" >/dev/null
qemu_img create -q -f qcow2 -b "$WORKDIR/cm-base.raw" -F raw "$WORKDIR/cm-top.qcow2"
qemu-io -f qcow2 -c "write -P 9 0 8M" "$WORKDIR/cm-top.qcow2" >/dev/null

start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock"
VD_PID=$DAEMON_PID

python3 - "$WORKDIR" <<'PY' || fail "mirror/commit under load"
import os, subprocess, sys, time
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
c.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/nbd.sock"})

def event(name, job, secs):
    deadline = time.time() + secs
    while True:
        for e in c.events:
            if e["event"] == name and e["data"].get("device") == job:
                c.events.remove(e)
                return e
        left = deadline - time.time()
        assert left > 0, "%s: no %s within %d s: %s" % (job, name, secs,
                                                       c.cmd("query-block-jobs"))
        c.sock.settimeout(min(left, 1))
        try:
            msg = c.read()
            if "event" in msg:
                c.events.append(msg)
        except OSError:
            pass
        c.sock.settimeout(30)

def load(case, mode):
    stop = d + "/" + case + ".stop"
    p = subprocess.Popen([sys.executable, os.environ["PYTHONPATH"] + "/mirror_load.py",
                          "nbd+unix:///%s?socket=%s/nbd.sock" % (case, d), "16", mode, stop,
                          d + "/" + case + ".json"])
    # The job starts once the load runs: 16 writes completed.
    deadline = time.monotonic() + 30
    while not os.path.exists(d + "/" + case + ".json.started"):
        assert p.poll() is None, "load client died"
        assert time.monotonic() < deadline, "load client wrote nothing in 30 s"
        time.sleep(0.01)
    return p, stop

def stop_load(p, stop):
    open(stop, "w").close()
    assert p.wait(timeout=60) == 0, "load client failed"

def run(case, mode, start, kind, stop_before_complete):
    node = "top" if kind == "commit" else "src"
    r = c.execute("block-export-add", {"type": "nbd", "id": case, "node-name": case + "-" + node,
                                       "name": case, "writable": True})
    assert "return" in r, r
    p, stop = load(case, mode)
    t0 = time.time()
    start()
    ev = event("BLOCK_JOB_READY", case, 30)
    ready = time.time() - t0
    if stop_before_complete:
        stop_load(p, stop)
    c.cmd("block-job-complete", device=case)
    event("BLOCK_JOB_COMPLETED", case, 30)
    if not stop_before_complete:
        stop_load(p, stop)
    c.cmd("block-export-del", id=case)
    n = __import__("json").load(open(d + "/" + case + ".json"))["writes"]
    print("%-8s ready after %.2f s, %d writes" % (case, ready, n))
    assert n >= 16, "%s: the load wrote only %d blocks" % (case, n)

for case in ("wb", "bg", "race-bg", "race-wb"):
    c.cmd("blockdev-add", driver="raw", node_name=case + "-src",
          file={"driver": "file", "filename": d + "/" + case + "-src.raw"})
    c.cmd("blockdev-add", driver="qcow2", node_name=case + "-tgt",
          file={"driver": "file", "filename": d + "/" + case + "-tgt.qcow2"})
c.cmd("blockdev-add", driver="raw", node_name="cm-base",
      file={"driver": "file", "filename": d + "/cm-base.raw"})
c.cmd("blockdev-add", driver="qcow2", node_name="cm-top", backing="cm-base",
      file={"driver": "file", "filename": d + "/cm-top.qcow2"})

def mirror(case, mode):
    return lambda: c.cmd("blockdev-mirror", job_id=case, device=case + "-src",
                         target=case + "-tgt", sync="full", copy_mode=mode)

run("wb", "random", mirror("wb", "write-blocking"), "mirror", True)
run("bg", "random", mirror("bg", "background"), "mirror", True)
run("cm", "random", lambda: c.cmd("block-commit", job_id="cm", device="cm-top"), "commit",
    True)
run("race-bg", "hot", mirror("race-bg", "background"), "mirror", False)
run("race-wb", "hot", mirror("race-wb", "write-blocking"), "mirror", False)
c.cmd("quit")
PY
wait_for 30 bash -c "! kill -0 $VD_PID"

for c in wb bg race-bg race-wb; do
	qemu_img check -q "$WORKDIR/$c-tgt.qcow2" || fail "$c: qemu-img check of the target"
	qemu_img convert -O raw "$WORKDIR/$c-tgt.qcow2" "$WORKDIR/$c-tgt.raw"
done
for c in wb bg; do
	qemu_img compare -q -f raw -F qcow2 "$WORKDIR/$c-src.raw" "$WORKDIR/$c-tgt.qcow2" ||
		fail "$c: the target differs from the source"
done
qemu_img compare -q -f qcow2 -F raw "$WORKDIR/cm-top.qcow2" "$WORKDIR/cm-base.raw" ||
	fail "cm: the base differs from the top"
python3 - "$WORKDIR" <<'PY' || fail "a write is missing from the target"
import sys
from mirror_load import check
d = sys.argv[1]
for case, img in (("wb", "wb-tgt.raw"), ("bg", "bg-tgt.raw"), ("cm", "cm-base.raw"),
                  ("race-bg", "race-bg-tgt.raw"), ("race-wb", "race-wb-tgt.raw")):
    bad = check(d + "/" + img, d + "/" + case + ".json")
    assert not bad, "%s: blocks %s lack their last write" % (case, bad[:10])
PY
log ok
