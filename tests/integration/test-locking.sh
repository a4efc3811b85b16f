#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Image locking against QEMU, both ways. QEMU 7.2 takes OFD read locks on
# byte 100+n for each permission n it holds and 200+n for each permission it
# does not share (n: 0 consistent-read, 1 write, 2 write-unchanged, 3 resize);
# see docs/testing.md. vstor uses the same bytes, so:
#   - qemu-nbd holds the image writable: vstor refuses to write it, and to read
#     it without -U, with a message about the lock; with -U it reads.
#   - vstor holds the image writable: qemu-io cannot write it ("Failed to get
#     "write" lock"), qemu-img info fails without -U and works with -U.
#   - vstor holds the image read-only: qemu-img info works, qemu-io write fails.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd
require_vstor_img
require_vstor_io

qemu_img create -q -f qcow2 img.qcow2 16M

# --- qemu-nbd holds it for writing ---
# --fork returns once the server is up (no polling needed).
timeout 60 qemu-nbd --fork --persistent --pid-file="$WORKDIR/nbd.pid" \
	-k "$WORKDIR/nbd.sock" -f qcow2 img.qcow2 || fail "qemu-nbd did not start"
nbd_pid=$(<"$WORKDIR/nbd.pid")
register_pid "$nbd_pid"

# The byte layout this test (and vstor's lock.c) relies on.
locks=$(inode_locks img.qcow2 | awk '{print $1 "-" $2}' | tr '\n' ' ')
assert_eq "$locks" "100-101 103-103 201-201 203-203 " "QEMU 7.2 lock bytes held by qemu-nbd"

assert_fails vstor_io -f qcow2 -c 'write 0 512 1' img.qcow2
assert_grep 'lock' err "vstor-io's error for a locked image"
assert_fails vstor_io -r -f qcow2 -c 'readb 0 512 0' img.qcow2
assert_grep 'lock' err "vstor-io's error for a read without -U"
assert_rc 0 vstor_io -r -U -f qcow2 -c 'readb 0 512 0' img.qcow2

# vstor-img info fails the way qemu-img info does, and -U gets through.
rc=0
qemu_img info img.qcow2 >/dev/null 2>&1 || rc=$?
vrc=0
vstor_img info img.qcow2 >out 2>err || vrc=$?
assert_eq "$vrc" "$rc" "exit code of vstor-img info vs qemu-img info on a locked image"
[[ $rc == 0 ]] || assert_grep 'lock' err "vstor-img info's error"
assert_rc 0 vstor_img info -U img.qcow2
assert_rc 0 vstor_img info -U --output=json img.qcow2

stop_pid "$nbd_pid"
wait_for 10 test -z "$(inode_locks img.qcow2)"
# Released: vstor can write now.
assert_rc 0 vstor_io -f qcow2 -c 'writeb 0 512 0x5a' img.qcow2

# --- vstor holds it for writing ---
# vstor-io prints "ready" once the image is open and then waits for a line
# on stdin; closing its stdin lets it finish.
hold()
{
	coproc HOLDER { exec timeout 120 "$VSTOR_IO" "$@" -c 'echo ready' -c wait img.qcow2 2>holder.err; }
	local line=
	read -r -t 60 -u "${HOLDER[0]}" line || true
	[[ $line == ready ]] || { cat holder.err >&2; fail "vstor-io did not open the image"; }
}
release()
{
	local pid=$HOLDER_PID rc=0 fd=${HOLDER[1]}
	exec {fd}>&-
	wait "$pid" || rc=$?
	[[ $rc == 0 ]] || { cat holder.err >&2; fail "the holding vstor-io exited $rc"; }
}

hold -f qcow2 -c 'writeb 512 512 0x6b'
locks=$(inode_locks img.qcow2)
log "locks held by vstor (writable): $(tr '\n' ' ' <<<"$locks")"
awk '$1 <= 101 && $2 >= 101' <<<"$locks" | grep -q . || fail "vstor does not lock byte 101 (write)"
awk '$1 <= 201 && $2 >= 201' <<<"$locks" | grep -q . || fail "vstor does not lock byte 201 (write not shared)"

assert_fails timeout 60 qemu-io -f qcow2 -c 'write 0 512' img.qcow2
assert_grep 'Failed to get "write" lock' err "qemu-io's error while vstor writes"
assert_fails qemu_img info img.qcow2
assert_grep 'lock' err "qemu-img info's error while vstor writes"
assert_rc 0 qemu_img info -U img.qcow2
# A second vstor writer is refused as well.
assert_fails vstor_io -f qcow2 -c 'write 0 512 1' img.qcow2
assert_grep 'lock' err "a second vstor-io writer's error"
release

# What vstor wrote while it held the image is there, and the image is clean.
assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'read -P 0x5a 0 512' -c 'read -P 0x6b 512 512' img.qcow2
assert_rc 0 qemu_img check -f qcow2 img.qcow2
assert_eq "$(inode_locks img.qcow2)" "" "locks left after vstor-io exited"

# --- vstor holds it read-only: readers share, writers are refused ---
hold -r -f qcow2
assert_rc 0 qemu_img info img.qcow2
assert_rc 0 vstor_img info img.qcow2
assert_fails timeout 60 qemu-io -f qcow2 -c 'write 0 512' img.qcow2
assert_grep 'Failed to get "write" lock' err "qemu-io's error while vstor reads"
release

log "vstor and QEMU exclude each other as writers"
