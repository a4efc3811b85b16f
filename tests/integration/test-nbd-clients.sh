#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd against real NBD clients: nbdinfo (--json, --map, --list, --can),
# nbdcopy both ways with --flush, qemu-img (info, compare, convert) on
# nbd+unix:// URIs, fio's nbd engine with verify over several connections,
# and nbdsh for out-of-order requests and error replies.
. "$(dirname "$0")/lib.sh"

# nbdsh runs "python3" from PATH; Debian's python3 has the nbd module.
export PATH=/usr/bin:/bin:$PATH
require_tool nbdinfo nbdcopy nbdsh qemu-img fio
find_built VSTOR_NBD nbd-server/vstor-nbd

# A 64 MiB raw image: data at 1 MiB and 9 MiB, a hole elsewhere.
qemu_img create -f raw disk.raw 64M >/dev/null
python3 - <<'PY'
import random
r = random.Random(4)
with open("disk.raw", "r+b") as f:
    for off, n in ((1 << 20, 1 << 20), (9 << 20, 300 * 1024)):
        f.seek(off)
        f.write(bytes(r.getrandbits(8) for _ in range(n)))
PY
cp --sparse=always disk.raw ref.raw

SOCK=$WORKDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$SOCK" -f raw --discard=unmap \
	--pid-file "$WORKDIR/nbd.pid" disk.raw
SERVER=$DAEMON_PID

# --- nbdinfo ---
nbdinfo --json "$URI" >info.json
python3 - <<'PY' || fail "nbdinfo --json does not describe the export"
import json
e = json.load(open("info.json"))["exports"][0]
assert e["export-size"] == 64 << 20, e
assert e["is_read_only"] is False
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_df"):
    assert e[k] is True, k
assert "base:allocation" in e["contexts"] and "qemu:allocation-depth" in e["contexts"], e["contexts"]
PY
nbdinfo --can multi-conn "$URI" || fail "nbdinfo --can multi-conn"
nbdinfo --is rotational "$URI" && fail "export claims to be rotational"

# --map must agree with the host file's allocation (qemu-img map of the raw file).
nbdinfo --map --json "$URI" >nbd-map.json
qemu_img map -U -f raw --output=json disk.raw >file-map.json
python3 - <<'PY' || fail "nbdinfo --map disagrees with the file's allocation"
import json
def data_ranges(runs, is_data):
    out = []
    for r in runs:
        if is_data(r):
            s, e = r["start"] if "start" in r else r["offset"], None
            s = r.get("start", r.get("offset"))
            e = s + r["length"]
            if out and out[-1][1] == s:
                out[-1][1] = e
            else:
                out.append([s, e])
    return out
nbd = json.load(open("nbd-map.json"))
img = json.load(open("file-map.json"))
a = data_ranges(nbd, lambda r: (r["type"] & 1) == 0)
b = data_ranges(img, lambda r: r["data"])
assert a == b, (a, b)
PY
nbdinfo --map=qemu:allocation-depth "$URI" >depth.txt
assert_grep "local" depth.txt "allocation depth of a raw image"

# --- nbdcopy both ways ---
nbdcopy "$URI" copy.raw
cmp copy.raw ref.raw || fail "nbdcopy from the export differs from the image"
python3 -c "
import random
r = random.Random(7)
open('new.raw','wb').write(bytes(r.getrandbits(8) for _ in range(64 << 20)))"
nbdcopy --flush new.raw "$URI"
nbdcopy "$URI" back.raw
cmp back.raw new.raw || fail "data written with nbdcopy did not read back"

# --- qemu-img as a client ---
qemu_img info "$URI" >qinfo.txt
assert_grep "virtual size: 64 MiB" qinfo.txt "qemu-img info over NBD"
qemu_img compare -f raw -F raw new.raw "$URI" || fail "qemu-img compare over NBD"
qemu_img convert -f raw -O qcow2 "$URI" conv.qcow2
qemu_img compare -f qcow2 -F raw conv.qcow2 new.raw || fail "qemu-img convert from NBD"

# --- fio nbd engine, 4 connections, verify ---
cat >verify.fio <<FIO
[global]
ioengine=nbd
uri=$URI
rw=randwrite
bs=4k
size=16m
iodepth=16
numjobs=4
offset_increment=16m
verify=crc32c
verify_fatal=1
do_verify=1
group_reporting=1
[job]
FIO
timeout 300 fio --output=fio.out verify.fio || { cat fio.out >&2; fail "fio verify over NBD"; }
assert_grep "err= *0" fio.out "fio error count"

# --- nbdsh: many requests in flight, error replies, block status ---
timeout 120 nbdsh -c "h.set_strict_mode(0); h.add_meta_context('base:allocation'); h.add_meta_context('qemu:allocation-depth'); h.connect_uri('$URI')" -c '
import errno
size = h.get_size()
# 64 reads in flight at once, completed in whatever order the server answers.
bufs = [nbd.Buffer(4096) for _ in range(64)]
cookies = [h.aio_pread(bufs[i], i * 65536) for i in range(64)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
# Past the end: EINVAL, and the connection stays usable.
try:
    h.pread(512, size - 256)
    raise SystemExit("read past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 0) == b"x" * 4096
h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 0) == bytes(65536)
h.trim(1 << 20, 1 << 20)
h.flush()
seen = []
def cb(meta, off, entries, err):
    seen.append((meta, entries))
    return 0
h.block_status(1 << 20, 0, cb, nbd.CMD_FLAG_REQ_ONE)
assert len(seen) == 2 and all(len(e) == 2 for _, e in seen), seen
' || fail "nbdsh checks"

# A second export, listed, read-only: writes fail with EPERM.
stop_pid "$SERVER"
SOCK2=$WORKDIR/nbd2.sock
start_daemon "$WORKDIR/nbd2.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$SOCK2" --pid-file "$WORKDIR/nbd2.pid" \
	--export name=one,file=new.raw,format=raw,description=first \
	--export name=two,file=ref.raw,format=raw,readonly=on
nbdinfo --list --json "nbd+unix:///?socket=$SOCK2" >list.json
python3 - <<'PY' || fail "nbdinfo --list"
import json
names = sorted(e["export-name"] for e in json.load(open("list.json"))["exports"])
assert names == ["one", "two"], names
PY
timeout 60 nbdsh -c "h.set_strict_mode(0); h.connect_uri('nbd+unix:///two?socket=$SOCK2')" -c '
import errno
assert h.is_read_only()
try:
    h.pwrite(b"y" * 512, 0)
    raise SystemExit("write to a read-only export succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
' || fail "read-only export"
nbdinfo "nbd+unix:///nope?socket=$SOCK2" >/dev/null 2>&1 && fail "unknown export accepted"

# SIGTERM: the server flushes, exits 0 and removes its socket.
kill -TERM "$DAEMON_PID"
for ((i = 0; i < 500; i++)); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.02; done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "server did not stop on SIGTERM"
[[ -e $SOCK2 ]] && fail "socket left behind after SIGTERM"

# Without -t the server ends when its first client leaves.
SOCK3=$WORKDIR/nbd3.sock
start_daemon "$WORKDIR/nbd3.pid" 20 "$VSTOR_NBD" -k "$SOCK3" --pid-file "$WORKDIR/nbd3.pid" -r ref.raw
nbdinfo "nbd+unix:///?socket=$SOCK3" >/dev/null
for ((i = 0; i < 500; i++)); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.02; done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "non-persistent server still running after its client left"

# -s: writes go to a temporary overlay; the image itself is untouched.
cp ref.raw snap.raw
SOCK4=$WORKDIR/nbd4.sock
start_daemon "$WORKDIR/nbd4.pid" 20 "$VSTOR_NBD" -s -k "$SOCK4" --pid-file "$WORKDIR/nbd4.pid" -f raw snap.raw
timeout 60 nbdsh -c "h.connect_uri('nbd+unix:///?socket=$SOCK4')" -c '
h.pwrite(b"s" * 65536, 0)
assert h.pread(65536, 0) == b"s" * 65536
' || fail "writes to a -s export"
for ((i = 0; i < 500; i++)); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.02; done
cmp snap.raw ref.raw || fail "-s modified the image"

# --detect-zeroes=unmap with --discard=unmap: all-zero writes deallocate qcow2 clusters.
qemu_img create -f qcow2 dz.qcow2 16M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' dz.qcow2 >/dev/null
SOCK5=$WORKDIR/nbd5.sock
start_daemon "$WORKDIR/nbd5.pid" 20 "$VSTOR_NBD" -t -k "$SOCK5" --pid-file "$WORKDIR/nbd5.pid" -f qcow2 \
	--detect-zeroes=unmap --discard=unmap dz.qcow2
timeout 60 nbdsh -c "h.connect_uri('nbd+unix:///?socket=$SOCK5')" -c '
h.pwrite(bytes(2 << 20), 0)
h.flush()
' || fail "zero writes with detect-zeroes"
stop_pid "$DAEMON_PID"
qemu_img map --output=json dz.qcow2 >dz.json
python3 - <<'PY' || fail "detect-zeroes=unmap left the zeroed range allocated"
import json
for r in json.load(open("dz.json")):
    if r["start"] < (2 << 20) and r["data"]:
        raise SystemExit(r)
PY
qemu_img check dz.qcow2 >/dev/null || fail "qemu-img check after detect-zeroes"

# --fork: the parent returns once the server listens; the pid file names the server.
SOCK6=$WORKDIR/nbd6.sock
timeout 20 "$VSTOR_NBD" --fork -t -r -k "$SOCK6" --pid-file "$WORKDIR/nbd6.pid" -f raw ref.raw ||
	fail "--fork start-up"
[[ -S $SOCK6 && -s $WORKDIR/nbd6.pid ]] || fail "--fork returned before the server was ready"
register_pid "$(<"$WORKDIR/nbd6.pid")"
nbdinfo --size "nbd+unix:///?socket=$SOCK6" >size.txt
assert_eq "$(<size.txt)" 67108864 "size from a forked server"
stop_pid "$(<"$WORKDIR/nbd6.pid")"

# Socket activation: the listening socket arrives as fd 3 with LISTEN_PID/LISTEN_FDS.
SOCK7=$WORKDIR/nbd7.sock
python3 - "$SOCK7" "$VSTOR_NBD" "$WORKDIR/ref.raw" "$WORKDIR/nbd7.pid" <<'PY' &
import os, socket, sys
path, prog, img, pidfile = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(4)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(prog, [prog, "-r", "-f", "raw", "--pid-file", pidfile, img])  # keeps the pid
PY
ACT=$!
register_pid "$ACT"
wait_for 20 test -s "$WORKDIR/nbd7.pid"
nbdinfo --size "nbd+unix:///?socket=$SOCK7" >size.txt || fail "socket-activated server"
assert_eq "$(<size.txt)" 67108864 "size from a socket-activated server"
log "ok"
