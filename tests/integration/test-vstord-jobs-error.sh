#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# on-error of vstord's block jobs against qemu-storage-daemon: a mirror
# into an NBD target (nbdkit's error filter fails every write while a
# trigger file exists). stop: BLOCK_JOB_ERROR, the job paused with
# io-status failed until block-job-resume, then it goes on to ready once
# the writes succeed again; report: the job fails with the error in
# BLOCK_JOB_COMPLETED; ignore: it goes on until cancelled. Both daemons
# give the same replies and the same events (repeated errors counted once).
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io qemu-storage-daemon nbdkit
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration

for p in q v; do
	qemu_img create -q -f qcow2 "$WORKDIR/$p-src.qcow2" 64M
	qemu-io -f qcow2 -c 'write -P 1 0 8M' "$WORKDIR/$p-src.qcow2" >/dev/null
	start_daemon "$WORKDIR/$p-nbdkit.pid" 30 nbdkit -f -U "$WORKDIR/$p-nbdkit.sock" \
		-P "$WORKDIR/$p-nbdkit.pid" --filter=error memory 64M error-pwrite=EIO \
		error-zero=EIO error-rate=100% error-file="$WORKDIR/$p-errors"
done
start_qsd_and_vstord

python3 - "$WORKDIR" <<'PY' || fail "vstord's on-error differs from qemu-storage-daemon's"
import os, sys, time
from qmp import QMP, differences, stable, wait_job
d = sys.argv[1]

def run(path, p):
    c = QMP(path)
    out = []
    errors = d + "/" + p + "-errors"
    def ex(cmd, **a):
        r = c.execute(cmd, {k.replace("_", "-"): v for k, v in a.items()})
        out.append((cmd, stable(r)))
        return r
    def wait(cond):
        deadline = time.time() + 30
        while not cond():
            assert time.time() < deadline, c.cmd("query-jobs")
            time.sleep(0.02)
    def status(job):
        js = [j for j in c.cmd("query-jobs") if j["id"] == job]
        return js[0]["status"] if js else None
    ex("blockdev-add", driver="qcow2", node_name="src",
       file={"driver": "file", "filename": d + "/" + p + "-src.qcow2"})
    ex("blockdev-add", driver="nbd", node_name="tgt",
       server={"type": "unix", "path": d + "/" + p + "-nbdkit.sock"})
    open(errors, "w").close()
    ex("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
       on_target_error="bogus")
    # stop, resume into the same error, then resume with the writes working.
    ex("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
       on_target_error="stop")
    wait(lambda: status("m") == "paused")
    ex("query-block-jobs")
    ex("block-job-pause", device="m")
    ex("block-job-resume", device="m")
    wait(lambda: status("m") == "paused")
    ex("query-block-jobs")
    os.unlink(errors)
    ex("block-job-resume", device="m")
    wait(lambda: status("m") == "ready")
    ex("query-block-jobs")
    ex("block-job-cancel", device="m", force=True)
    wait(lambda: status("m") is None)
    # report (the default): the job fails.
    open(errors, "w").close()
    ex("blockdev-mirror", job_id="r", device="src", target="tgt", sync="full",
       auto_dismiss=False)
    wait(lambda: status("r") == "concluded")
    ex("query-block-jobs")
    ex("query-jobs")
    ex("job-dismiss", id="r")
    # ignore: it keeps trying until cancelled.
    ex("blockdev-mirror", job_id="i", device="src", target="tgt", sync="full",
       on_target_error="ignore")
    def ignored():
        c.cmd("query-jobs")  # reads the events that came meanwhile
        return any(e["event"] == "BLOCK_JOB_ERROR" and e["data"].get("action") == "ignore"
                   for e in c.events)
    wait(ignored)
    ex("query-block-jobs")
    ex("block-job-cancel", device="i", force=True)
    wait(lambda: status("i") is None)
    os.unlink(errors)
    ex("quit")
    try:
        while True:
            msg = c.read()
            if "event" in msg:
                c.events.append(msg)
    except Exception:
        pass
    evs = []
    for e in c.events:
        item = (e["event"], sorted(e["data"].items()) if e["event"] == "BLOCK_JOB_ERROR" else
                (sorted(e["data"].keys()), e["data"].get("status") or e["data"].get("error")))
        if not evs or evs[-1] != item:  # repeated errors (requests in parallel) once
            evs.append(item)
    return out, evs

qo, qe = run(d + "/qsd.sock", "q")
vo, ve = run(d + "/vd.sock", "v")
# The errors happened, and each policy acted.
for action in ("stop", "report", "ignore"):
    assert any(e[0] == "BLOCK_JOB_ERROR" and ("action", action) in e[1] for e in ve), action
assert ("JOB_STATUS_CHANGE", (["id", "status"], "paused")) in ve, ve
sys.exit(1 if differences(qo, vo, qe, ve) else 0)
PY
wait_for 30 bash -c "! kill -0 $QSD_PID && ! kill -0 $VD_PID"
qemu_img check -q "$WORKDIR/v-src.qcow2" || fail "qemu-img check v-src.qcow2"
log ok
