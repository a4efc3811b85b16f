#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Error policies of vstord's exports (vstor's block-export-add extensions
# werror/rerror; qemu-storage-daemon refuses them as unexpected). A disk
# that fills is libstore's fault: driver failing writes with ENOSPC while a
# flag file exists: with werror=enospc the failing write and the later ones
# are held (not failed), BLOCK_IO_ERROR comes in QEMU's shape, the flag goes
# (space freed), `cont` resumes: every write lands, the data reads back,
# and qemu-img compares the image with what was written. Also: EIO under
# enospc is reported; werror=stop holds any error; rerror=stop holds a read
# (simple and structured replies); the default reports as before; a stopped
# export is deleted without hanging.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon qemu-img
find_built VSTORD vstord/vstord
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3 libnbd bindings (python3-libnbd) missing"

truncate -s 16M full.img stop.img rd.img plain.img
touch "$WORKDIR/full" "$WORKDIR/eio" "$WORKDIR/rdfail"
fault() { printf '{"driver": "file", "node-name": "%s", "filename": "fault:%s:%s"}' "$1" "$2" "$3"; }

start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd.pid" \
	--chardev socket,id=m0,path="$WORKDIR/qsd.sock",server=on,wait=off --monitor chardev=m0 \
	--blockdev driver=file,node-name=f,filename="$WORKDIR/plain.img" \
	--nbd-server addr.type=unix,addr.path="$WORKDIR/qsd-nbd.sock"
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock" \
	--blockdev "$(fault full "write,err=ENOSPC,if=$WORKDIR/full+write,off=8M,len=64k,err=EIO" "$WORKDIR/full.img")" \
	--blockdev "$(fault stop "write,err=EIO,if=$WORKDIR/eio" "$WORKDIR/stop.img")" \
	--blockdev "$(fault rd "read,err=EIO,if=$WORKDIR/rdfail" "$WORKDIR/rd.img")" \
	--blockdev driver=file,node-name=f,filename="$WORKDIR/plain.img" \
	--nbd-server addr.type=unix,addr.path="$WORKDIR/nbd.sock" \
	--export type=nbd,id=efull,node-name=full,writable=on,werror=enospc \
	--export type=nbd,id=estop,node-name=stop,writable=on,werror=stop \
	--export type=nbd,id=erd,node-name=rd,rerror=stop

log "werror/rerror are vstor's: qsd refuses them, vstord checks their values"
python3 - "$WORKDIR" <<'PY' || fail "werror/rerror arguments"
import sys
from qmp import QMP
d = sys.argv[1]
q, v = QMP(d + "/qsd.sock"), QMP(d + "/vd.sock")
a = {"type": "nbd", "id": "x", "node-name": "f", "werror": "stop"}
r = q.execute("block-export-add", a)
assert r["error"]["desc"] == "Parameter 'werror' is unexpected", r
for arg, val, desc in [
    ("werror", "bogus", "Parameter 'werror' does not accept value 'bogus'"),
    ("rerror", "enospc", "Parameter 'rerror' does not accept value 'enospc'"),
    ("werror", "ignore", "werror=ignore is not supported by vstord"),
    ("werror", 1, "Invalid parameter type for 'werror', expected: string"),
]:
    r = v.execute("block-export-add", {"type": "nbd", "id": "x", "node-name": "f", arg: val})
    assert r.get("error", {}).get("desc") == desc, (arg, val, r)
# Nothing was half-added.
assert [e["id"] for e in v.cmd("query-block-exports")] == ["erd", "estop", "efull"]
PY

log "werror=enospc: a full disk holds the writes; cont after freeing space: none lost"
python3 - "$WORKDIR" <<'PY' || fail "werror=enospc"
import os, sys, nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
h = nbd.NBD()
h.connect_uri("nbd+unix:///full?socket=%s/nbd.sock" % d)
data = [bytes([i + 1]) * 65536 for i in range(16)]
bufs = [nbd.Buffer.from_bytearray(bytearray(x)) for x in data]
cookies = [h.aio_pwrite(b, i * 65536) for i, b in enumerate(bufs)]
ev = c.event("BLOCK_IO_ERROR")
assert ev["data"] == {"device": "efull", "node-name": "full", "operation": "write",
                      "action": "stop", "nospace": True,
                      "reason": "No space left on device"}, ev
# A command round trip later, nothing has completed: held, not failed.
st = {e["id"]: e.get("x-vstor-stopped") for e in c.cmd("query-block-exports")}
assert st == {"efull": True, "estop": False, "erd": False}, st
h.poll(0)
assert not any(h.aio_command_completed(x) for x in cookies), "a write finished while stopped"
os.unlink(d + "/full")  # space freed
c.cmd("cont")
while h.aio_in_flight():
    h.poll(-1)
assert c.cmd("query-block-exports")[-1]["x-vstor-stopped"] is False
for x in cookies:
    assert h.aio_command_completed(x)  # raises on a failed write
for i, x in enumerate(data):
    assert h.pread(65536, i * 65536) == x, "data lost at %d" % i
# Reported, not held: EIO under enospc.
try:
    h.pwrite(b"x" * 4096, 8 << 20)
    raise AssertionError("the EIO write succeeded")
except nbd.Error as e:
    assert e.errnum == 5, e
ev = c.event("BLOCK_IO_ERROR")
assert ev["data"]["action"] == "report" and ev["data"]["nospace"] is False, ev
h.flush()
h.shutdown()
PY
python3 - "$WORKDIR" <<'PY' || fail "the image differs from what was written"
import sys
d = sys.argv[1]
with open(d + "/expect.img", "wb") as f:
    f.truncate(16 << 20)
    for i in range(16):
        f.seek(i * 65536)
        f.write(bytes([i + 1]) * 65536)
PY
qemu_img compare -q -f raw -F raw "$WORKDIR/expect.img" "$WORKDIR/full.img" ||
	fail "qemu-img compare: the image lost writes"

log "a vhost-user-blk export holds a write the same way"
python3 - "$WORKDIR" "$VHOST_CLIENT" <<'PY' || fail "werror=enospc on vhost-user-blk"
import os, subprocess, sys, nbd
from qmp import QMP
d, client = sys.argv[1], sys.argv[2]
c = QMP(d + "/vd.sock")
os.close(os.open(d + "/full", os.O_CREAT | os.O_WRONLY))
c.cmd("block-export-add", type="vhost-user-blk", id="evh", node_name="full", writable=True,
      werror="enospc", addr={"type": "unix", "path": d + "/vh.sock"})
# One write of 64 KiB of 0x5a at sector 4096 (2 MiB); the client waits up to 5 s.
p = subprocess.Popen(["timeout", "60", client, d + "/vh.sock", "write", "4096", "65536", "0x5a"])
ev = c.event("BLOCK_IO_ERROR")
assert ev["data"]["device"] == "evh" and ev["data"]["action"] == "stop", ev
assert p.poll() is None, "the write finished while the export was stopped"
os.unlink(d + "/full")
c.cmd("cont")
assert p.wait() == 0, "the held write failed"
h = nbd.NBD()
h.connect_uri("nbd+unix:///full?socket=%s/nbd.sock" % d)
assert h.pread(65536, 2 << 20) == b"\x5a" * 65536
h.shutdown()
c.cmd("block-export-del", id="evh", mode="hard")  # the client may not be seen gone yet
c.event("BLOCK_EXPORT_DELETED")
PY

log "werror=stop holds EIO too; rerror=stop holds reads (simple and structured replies)"
python3 - "$WORKDIR" <<'PY' || fail "werror=stop / rerror=stop"
import os, sys, nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
h = nbd.NBD()
h.connect_uri("nbd+unix:///stop?socket=%s/nbd.sock" % d)
b = nbd.Buffer.from_bytearray(bytearray(b"s" * 4096))
ck = h.aio_pwrite(b, 0)
ev = c.event("BLOCK_IO_ERROR")
assert ev["data"]["action"] == "stop" and ev["data"]["reason"] == "Input/output error", ev
c.cmd("cont")  # still failing: held again, with another event
ev = c.event("BLOCK_IO_ERROR")
assert ev["data"]["action"] == "stop", ev
h.poll(0)
assert not h.aio_command_completed(ck)
os.unlink(d + "/eio")
c.cmd("cont")
while h.aio_in_flight():
    h.poll(-1)
assert h.aio_command_completed(ck)
assert h.pread(4096, 0) == b"s" * 4096
h.shutdown()

for structured in (True, False):
    os.close(os.open(d + "/rdfail", os.O_CREAT | os.O_WRONLY))
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri("nbd+unix:///rd?socket=%s/nbd.sock" % d)
    rb = nbd.Buffer(4096)
    ck = h.aio_pread(rb, 4096)
    ev = c.event("BLOCK_IO_ERROR")
    assert ev["data"]["operation"] == "read" and ev["data"]["action"] == "stop", ev
    c.cmd("query-block-exports")
    h.poll(0)
    assert not h.aio_command_completed(ck)
    os.unlink(d + "/rdfail")
    c.cmd("cont")
    while h.aio_in_flight():
        h.poll(-1)
    assert h.aio_command_completed(ck)
    assert rb.to_bytearray() == bytearray(4096)
    h.shutdown()
PY

log "the default reports as before; a stopped export is deleted without hanging"
python3 - "$WORKDIR" <<'PY' || fail "report default / deleting a stopped export"
import os, sys, nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
os.close(os.open(d + "/eio", os.O_CREAT | os.O_WRONLY))
r = c.execute("block-export-add", {"type": "nbd", "id": "edef", "node-name": "stop",
                                   "name": "def", "writable": True})
assert "return" in r, r
h = nbd.NBD()
h.connect_uri("nbd+unix:///def?socket=%s/nbd.sock" % d)
try:
    h.pwrite(b"x" * 512, 0)
    raise AssertionError("the write succeeded")
except nbd.Error as e:
    assert e.errnum == 5, e
h.shutdown()
assert not [e for e in c.events if e["event"] == "BLOCK_IO_ERROR"], c.events

h = nbd.NBD()
h.connect_uri("nbd+unix:///stop?socket=%s/nbd.sock" % d)
b = nbd.Buffer.from_bytearray(bytearray(b"y" * 512))
ck = h.aio_pwrite(b, 0)
c.event("BLOCK_IO_ERROR")
c.cmd("block-export-del", id="estop", mode="hard")
c.event("BLOCK_EXPORT_DELETED")
# The held write failed when the export went (the connection is closed).
try:
    while h.aio_in_flight():
        h.poll(-1)
    ok = h.aio_command_completed(ck)
except nbd.Error:
    ok = False
assert not ok, "a write held by a deleted export succeeded"
assert c.cmd("query-version")
PY
stop_pid "$(<"$WORKDIR/vd.pid")"
