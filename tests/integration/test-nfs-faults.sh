#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The nfs driver against replies that nfs-ganesha does not give on demand,
# from a small NFSv3 server (nfs_fake_server.py, no root needed):
# - a crash that really loses UNSTABLE data (the server's cache is dropped
#   and its write verifier changes): the flush must write it all again;
# - NFS3ERR_JUKEBOX on the first READ, WRITE and COMMIT calls: retried;
# - short WRITEs and READs (half of what was asked): the rest is sent or
#   asked for again.
# Each time the file the server stored must hold what vstor wrote, and the
# server's counters must show the replies were really given.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool python3 qemu-img cmp mkfifo
require_vstor_io
SRV=$VS_LIB_DIR/nfs_fake_server.py

# start_fake [SERVER OPTIONS...]: a server for an 8 MiB file; sets FU.
start_fake()
{
	rm -f port pid stats.json crashed.* img
	timeout --kill-after=5 60 python3 "$SRV" --dir "$WORKDIR" --file "$WORKDIR/img" \
		--size $((8 << 20)) "$@" 2>fake.err &
	FAKE_PID=$!
	register_pid "$FAKE_PID"
	wait_for 10 test -s port
	FU="nfs://127.0.0.1/export/img?nfsport=$(<port)&mountport=$(<port)"
}

# stop_fake: SIGUSR2 (to the server itself, not to timeout): it writes
# stats.json and exits.
stop_fake()
{
	kill -USR2 "$(<pid)"
	wait "$FAKE_PID" || true
	[[ -s stats.json ]] || {
		cat fake.err >&2
		fail "the fake server left no stats"
	}
}

# fake_stat NAME: a counter of the server's.
fake_stat() { python3 -c "import json, sys; print(json.load(open('stats.json')).get(sys.argv[1], 0))" "$1"; }

# reference FILE VSTOR-IO-ARGS...: what those commands make of a zeroed 8 MiB file.
reference()
{
	local f=$1
	shift
	qemu_img create -q -f raw "$f" 8M
	vstor_io -f raw "$@" "$f" >/dev/null || fail "reference writes"
}

# --- a crash between UNSTABLE writes and the flush loses the server's cache ---
before=(-c 'writeb 0 256K 0x11' -c 'write 1M 192K 3' -c 'writeb 4M 4K 0x33 fua')
after=(-c 'writeb 64K 64K 0x22')
reference ref.raw "${before[@]}" "${after[@]}"
start_fake
mkfifo ctl
timeout 60 "$VSTOR_IO" -f raw "${before[@]}" -c 'echo written' -c wait \
	-c 'readb 0 256K 0x11' -c 'read 1M 192K 3' "${after[@]}" -c flush -c 'echo flushed' \
	-c wait "$FU" <ctl >io.out 2>io.err &
IO_PID=$!
exec 3>ctl
wait_for 30 grep -q written io.out
kill -USR1 "$(<pid)"
wait_for 10 test -e crashed.1
# The crash dropped the UNSTABLE writes (the FUA one was FILE_SYNC and stays).
python3 - img <<'PY' || fail "the crash did not drop the unstable writes"
import sys
d = open(sys.argv[1], "rb").read()
assert d[:256 << 10] == bytes(256 << 10) and d[1 << 20:(1 << 20) + (192 << 10)] == bytes(192 << 10)
assert d[4 << 20:(4 << 20) + 4096] == b"\x33" * 4096
PY
echo >&3
io_flushed_or_gone() { grep -q flushed io.out || ! kill -0 "$IO_PID" 2>/dev/null; }
wait_for 30 io_flushed_or_gone
grep -q flushed io.out && { (echo >&3) 2>/dev/null || true; }
exec 3>&-
rc=0
wait "$IO_PID" || rc=$?
cat io.err >&2
assert_eq "$rc" 0 "vstor-io across a crash"
stop_fake
cmp img ref.raw || fail "data the crash lost was not written again"
# 64 KiB per WRITE: 4 + 3 pieces, 4 + 3 + 1 (FUA, kept for order) + 1 requests.
assert_grep "verifier changed to 7665726630303032.*7 uncommitted writes may be lost; writing 9 writes \(528384 bytes\) again" \
	io.err "the resend after the crash"

# --- NFS3ERR_JUKEBOX twice for each of READ, WRITE, COMMIT ---
ops=(-c 'writeb 0 256K 0x44' -c 'write 2M 100000 9' -c flush)
reference ref.raw "${ops[@]}"
start_fake --jukebox 2
vstor_io -f raw "${ops[@]}" -c 'readb 0 256K 0x44' -c 'read 2M 100000 9' "$FU" >/dev/null ||
	fail "I/O with JUKEBOX replies"
stop_fake
cmp img ref.raw || fail "data written through JUKEBOX replies"
for op in read write commit; do
	assert_eq "$(fake_stat jukebox_$op)" 2 "JUKEBOX replies to $op"
done

# --- short WRITEs and READs ---
ops=(-c 'writeb 0 256K 0x55' -c 'write 3M 200000 11' -c 'writeb 7M 1 0x66' -c flush)
reference ref.raw "${ops[@]}"
start_fake --short
vstor_io -f raw "${ops[@]}" -c 'readb 0 256K 0x55' -c 'read 3M 200000 11' -c 'readb 7M 1 0x66' \
	-c 'readb 8384512 4K 0' "$FU" >/dev/null || fail "I/O with short replies"
stop_fake
cmp img ref.raw || fail "data written with short WRITEs"
(($(fake_stat short_write) >= 8)) || fail "short WRITEs: $(fake_stat short_write)"
(($(fake_stat short_read) >= 8)) || fail "short READs: $(fake_stat short_read)"
log "ok"
