#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Incremental backup of a running guest's disk (issue 14): a QEMU guest
# (TCG) writes known MiBs through a vstord NBD export in three phases
# (tests/vm/guest/backup-phases.sh). After each phase the host takes a
# backup with `vstor backup` (full, then two increments), bandwidth-limited
# so that the guest's next writes land while the backup still reads its
# checkpoint's view. Then:
#   - restoring the chain up to each checkpoint gives exactly what the guest
#     had written before that checkpoint, nothing written after it
#     (qemu-img compare with a reference built from the guest's pattern);
#   - each increment allocates exactly the MiBs written between its
#     checkpoint and the previous one (qemu-img map, depth 0);
#   - the disk passes qemu-img check.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VS_LIB_DIR
require_tool qemu-img qemu-io
find_built VSTORD vstord/vstord
find_built VSTOR cli/vstor
"$VSTOR" help backup >/dev/null 2>&1 || skip_or_fail "vstor was built without libnbd (no backup verbs)"
vm_prepare

qemu_img create -q -f qcow2 disk.qcow2 64M
truncate -s 1M ctl.raw
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" --monitor "$WORKDIR/vd.sock" \
	--blockdev "driver=file,node-name=f,filename=$WORKDIR/disk.qcow2" \
	--blockdev driver=qcow2,node-name=disk,file=f \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/nbd.sock" \
	--export type=nbd,id=v,node-name=disk,name=disk,writable=on
VD=$DAEMON_PID

vm_run guest 900 backup-phases "" -- \
	-drive "driver=nbd,server.type=unix,server.path=$WORKDIR/nbd.sock,export=disk,if=none,id=d0" \
	-device virtio-blk-pci,drive=d0 \
	-drive "file=$WORKDIR/ctl.raw,format=raw,if=none,id=ctl" -device virtio-blk-pci,drive=ctl &
GUEST=$!

python3 - "$WORKDIR" "$VSTOR" <<'PY' || { pkill -TERM -P "$GUEST" 2>/dev/null || true; fail "the host side failed"; }
import json, os, re, subprocess, sys, time
from qmp import QMP

w, vstor = sys.argv[1], sys.argv[2]
console = os.path.join(w, "guest.console")
MIB = 1 << 20


def fail(msg):
    sys.stderr.write("backup-guest: %s\n" % msg)
    try:
        sys.stderr.write("".join(open(console, errors="replace").readlines()[-20:]))
    except OSError:
        pass
    sys.exit(1)


def wait_console(pattern, secs=600):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            text = open(console, errors="replace").read()
        except OSError:
            text = ""
        if re.search(pattern, text):
            return
        if "VSTOR-RESULT" in text:
            fail("the guest ended while the host waited for %r" % pattern)
        time.sleep(0.1)
    fail("no %r on the guest's console in %d s" % (pattern, secs))


def phase(k):
    return [(m, (k * 31 + m * 7) % 250 + 1) for m in (k, 10 + k, 30, 50 + 2 * k)]


def noise(k):
    return [(m, (k * 53 + m * 13) % 250 + 1) for m in (40 + k, 10 + k, 30)]


# What the disk held at checkpoint k: phases 1..k and the noise of 1..k-1.
disk = bytearray(64 * MIB)
qmp = QMP(os.path.join(w, "vd.sock"))
bdir = os.path.join(w, "backups")
backups = []
for k in (1, 2, 3):
    wait_console(r"VSTOR-BACKUP: phase %d written" % k)
    written = set()
    for m, b in phase(k):
        disk[m * MIB:(m + 1) * MIB] = bytes([b]) * MIB
        written.add(m)
    if k > 1:
        written |= {m for m, _ in noise(k - 1)}
    ref = os.path.join(w, "ref%d.raw" % k)
    with open(ref, "wb") as f:
        f.write(disk)
    cmd = [vstor, "backup", "v", "--to", bdir, "--nbd", os.path.join(w, "nbd.sock"),
           "--vstord", os.path.join(w, "vd.sock"), "--scratch-dir", w, "--bandwidth", "4",
           "--output=json"] + (["--incremental"] if k > 1 else [])
    before = {c["name"] for c in qmp.cmd("query-checkpoints")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Once the checkpoint exists, the guest writes on while the backup reads.
    end = time.monotonic() + 120
    while not {c["name"] for c in qmp.cmd("query-checkpoints")} - before:
        if p.poll() is not None or time.monotonic() > end:
            fail("no checkpoint appeared: %s" % p.communicate())
        time.sleep(0.02)
    with open(os.path.join(w, "ctl.raw"), "r+b") as f:
        f.write(b"C%d" % k)
        f.flush()
        os.fsync(f.fileno())
    wait_console(r"VSTOR-BACKUP: noise %d written" % k)
    running = p.poll() is None
    out, err = p.communicate(timeout=600)
    if p.returncode != 0:
        fail("vstor backup %d: %s" % (k, err))
    if not running:
        print("backup %d ended before the guest's noise writes did" % k, file=sys.stderr)
    summary = json.loads(out)
    backups.append((summary, ref, written))
    for m, b in noise(k):
        disk[m * MIB:(m + 1) * MIB] = bytes([b]) * MIB

for k, (s, ref, written) in enumerate(backups, 1):
    restored = os.path.join(w, "restored%d.raw" % k)
    r = subprocess.run([vstor, "restore", bdir, "--checkpoint", s["checkpoint"], "--to", restored],
                       capture_output=True, text=True)
    if r.returncode:
        fail("vstor restore %d: %s" % (k, r.stderr))
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", ref, restored],
                       capture_output=True, text=True)
    if r.returncode:
        fail("checkpoint %d: the restore differs from the guest's disk then: %s" % (k, r.stdout))
    if k == 1:
        continue
    # The increment allocates exactly the MiBs written since the last checkpoint.
    f = os.path.join(bdir, s["file"])
    m = json.loads(subprocess.check_output(["qemu-img", "map", "--output=json", "-f", "qcow2", f]))
    top = set()
    for e in m:
        if e["depth"] == 0 and e["data"]:
            top |= set(range(e["start"] // MIB, (e["start"] + e["length"] + MIB - 1) // MIB))
    if top != written:
        fail("increment %d allocates MiBs %s, written %s" % (k, sorted(top), sorted(written)))
    print("checkpoint %d: restore equal, increment holds MiBs %s" % (k, sorted(top)), file=sys.stderr)
PY
wait "$GUEST" || fail "the guest did not pass"
python3 -c "import sys; from qmp import QMP; QMP(sys.argv[1]).cmd('quit')" "$WORKDIR/vd.sock"
wait_for 30 bash -c "! kill -0 $VD"
qemu_img check -q disk.qcow2 || fail "qemu-img check of the disk"
for f in "$WORKDIR"/backups/*.qcow2; do
	qemu_img check -q "$f" || fail "qemu-img check $f"
done
log "done after $SECONDS s"
