#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The nfs driver's answer to a server restart between UNSTABLE writes and
# the flush (RFC 1813 3.3.7, 3.3.21): nfs-ganesha (VFS backend) is killed
# after vstor has written, the data those writes put on the export is then
# destroyed behind the server's back (what a real server crash does to
# data it never committed: ganesha's VFS backend keeps it in the page
# cache, where a restart alone would not lose it), and ganesha is started
# again with a new write verifier. The flush must see the new verifier,
# write everything it kept again, in order, and only then succeed: the
# file on the export must then hold exactly what vstor wrote. A read before
# the flush must already return the written data, not the damaged copy.
# The driver's warning (verifier changed, how many writes were resent) is
# checked too, so the test proves the resend ran. Then: a 64 KiB bound (the
# resend happens at the COMMIT a write over the bound sends), 32 concurrent
# writes through vstor-nbd (libnbd) with 16 more and a flush in flight after
# the restart, and writethrough and unsafe, which must keep nothing.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img cmp mkfifo
require_vstor_io
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd (import nbd) is not installed"
nfs_enter_netns "$@"

mkdir exp
nfs_start_server "$WORKDIR/exp"
# The server goes away for a moment: libnfs reconnects without a limit.
U="$NFS_URL/d.raw$NFS_OPTS&autoreconnect=-1"
qemu_img create -q -f raw exp/d.raw 16M

# What vstor writes: before the restart (0x11, a seeded pattern, 0x33 with
# FUA), and after it (0x22 over part of the first write: it must win when
# everything is written again in order).
before=(-c 'writeb 0 1M 0x11' -c 'write 3M 2M 5' -c 'writeb 8M 4K 0x33 fua'
	-c 'writeb 9M 64K 0x44')
after=(-c 'writeb 512K 1M 0x22' -c 'writeb 9M 4K 0x55')
qemu_img create -q -f raw ref.raw 16M
vstor_io -f raw "${before[@]}" "${after[@]}" ref.raw >/dev/null || fail "reference writes"

# The image is written through NFS by one vstor-io that pauses (wait) while
# ganesha restarts; its stdin is a FIFO this script holds open.
# run_io [BOUND [VSTOR-IO OPTIONS...]]
run_io()
{
	local bound=${1:-}
	shift || true
	mkfifo ctl
	VSTOR_NFS_UNSTABLE_MAX=$bound timeout 60 "$VSTOR_IO" "$@" -f raw "${before[@]}" \
		-c 'echo written' -c wait -c 'readb 0 512K 0x11' -c 'read 3M 2M 5' \
		"${after[@]}" -c flush -c 'echo flushed' -c wait "$U" <ctl >io.out 2>io.err &
	IO_PID=$!
	exec 3>ctl
	wait_for 30 grep -q written io.out
}

# damage FILE OFF:LEN...: overwrite what uncommitted writes put on the
# export (the server "lost" it); each range must have held something else.
damage()
{
	python3 - "$@" <<'PY' || fail "damage $*"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for r in sys.argv[2:]:
    off, n = (int(x, 0) for x in r.split(":"))
    assert os.pread(fd, n, off) != b"\xee" * n, r
    os.pwrite(fd, b"\xee" * n, off)
os.fsync(fd)
os.close(fd)
PY
}

io_flushed_or_gone() { grep -q flushed io.out || ! kill -0 "$IO_PID" 2>/dev/null; }

finish_io()
{
	echo >&3 # go on: read, write more, flush
	wait_for 30 io_flushed_or_gone
	# The client may be gone already (a failure): no SIGPIPE for this shell.
	grep -q flushed io.out && { (echo >&3) 2>/dev/null || true; }
	exec 3>&-
	local rc=0
	wait "$IO_PID" || rc=$?
	assert_eq "$rc" 0 "vstor-io exit status"
	rm -f ctl io.out
}

# --- writes, crash and restart, writes, flush ---
run_io
nfs_restart_server damage exp/d.raw 0:0x100000 0x300000:0x200000 0x900000:0x10000
finish_io
cmp exp/d.raw ref.raw || fail "data written before the restart is not on the export after the flush"
# Kept: 4 unstable writes before the restart (1 MiB requests: the 2 MiB one
# is 2), the FUA one (stable, kept for order) and the 2 after it.
assert_grep "write verifier changed.*4 uncommitted writes may be lost; writing 7 writes \(4268032 bytes\) again" io.err \
	"the resend after the restart"

# --- the same with a 64 KiB bound: the second write COMMITs the first first ---
qemu_img create -q -f raw exp/d.raw 16M
run_io 65536
nfs_restart_server damage exp/d.raw 0x900000:0x10000
finish_io
cmp exp/d.raw ref.raw || fail "data lost across a restart with a small bound"
# Only the last write before the restart was kept; the first write after it
# went over the bound, and its COMMIT found the new verifier.
assert_grep "1 uncommitted writes may be lost; writing 1 writes \(65536 bytes\) again" io.err \
	"the resend at the bound"

# --- many writes in flight at once, through vstor-nbd: 32 concurrent writes,
#     crash and restart with their data destroyed, then 16 concurrent writes
#     over them with an NBD flush among them, then a last flush ---
find_built VSTOR_NBD nbd-server/vstor-nbd
cat >client.py <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
ref = bytearray(32 << 20)

def batch(writes, flush=False):
    cookies = []
    for off, n, byte in writes:
        cookies.append(h.aio_pwrite(bytes([byte]) * n, off))
        ref[off:off + n] = bytes([byte]) * n
    if flush:
        cookies.append(h.aio_flush())
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)

batch([(i * (512 << 10), 256 << 10, i + 1) for i in range(32)])
print("written", flush=True)
sys.stdin.readline()
batch([(i * (1 << 20) + (64 << 10), 128 << 10, 0x80 + i) for i in range(16)], flush=True)
h.flush()
open(sys.argv[2], "wb").write(ref)
print("flushed", flush=True)
sys.stdin.readline()
PY
qemu_img create -q -f raw exp/n.raw 32M
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -f raw -k "$WORKDIR/nbd.sock" \
	--pid-file "$WORKDIR/nbd.pid" "$NFS_URL/n.raw$NFS_OPTS&autoreconnect=-1"
NBD_PID=$DAEMON_PID
NBD_ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
mkfifo ctl
timeout 60 python3 client.py "$WORKDIR/nbd.sock" nref.raw <ctl >io.out 2>io.err &
IO_PID=$!
exec 3>ctl
wait_for 30 grep -q written io.out
nfs_restart_server damage exp/n.raw $(for ((i = 0; i < 32; i++)); do echo $((i * 524288)):262144; done)
finish_io
cmp exp/n.raw nref.raw || fail "concurrent writes lost across a restart"
assert_grep "32 uncommitted writes may be lost; writing 48 writes" "$NBD_ERR" \
	"the resend of concurrent writes"
stop_pid "$NBD_PID"

# --- writethrough writes FILE_SYNC and unsafe never COMMITs: neither keeps
#     anything, so a restart (without damage: the data is in ganesha's
#     page cache) has nothing to resend ---
for cache in writethrough unsafe; do
	qemu_img create -q -f raw exp/d.raw 16M
	run_io "" -t "$cache"
	nfs_restart_server
	finish_io
	cmp exp/d.raw ref.raw || fail "cache=$cache: data across a restart"
	if grep -q "verifier changed" io.err; then
		cat io.err >&2
		fail "cache=$cache: writes were kept for a COMMIT"
	fi
done
log "ok"
