#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-vhost against a host-side vhost-user front end (tests/tools/vhost-client:
# memfd guest memory, split rings, raw virtqueue requests). The same
# conformance checks run against qemu-storage-daemon's vhost-user-blk export
# first, which validates the client itself. Then vstor-vhost gets the
# conformance checks on two queues, with and without event idx and indirect
# descriptors, and the hostile ones (descriptor loops, addresses outside the
# memory table, short headers, oversize chains, bad indirect tables, broken
# rings, bad messages): every one must be answered and the daemon must take
# new front ends afterwards; and requests left in flight by a dead back end
# (INFLIGHT_SHMFD) must be run by the next session. The images must pass qemu-img check and hold
# what the client wrote.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io qemu-storage-daemon
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
client() { timeout 120 "$VHOST_CLIENT" "$@"; }

# The anchor: qemu-storage-daemon.
qemu_img create -f qcow2 anchor.qcow2 64M >/dev/null
start_daemon "$WORKDIR/qsd.pid" 20 qemu-storage-daemon \
	--blockdev "driver=file,node-name=f,filename=anchor.qcow2,cache.direct=on,aio=io_uring" \
	--blockdev driver=qcow2,node-name=q,file=f \
	--export "type=vhost-user-blk,id=e,node-name=q,addr.type=unix,addr.path=$WORKDIR/qsd.sock,writable=on,num-queues=2" \
	--pidfile "$WORKDIR/qsd.pid"
client "$WORKDIR/qsd.sock" conformance 2 || fail "the client fails against qemu-storage-daemon"
stop_pid "$DAEMON_PID"

# vstor-vhost on qcow2, two queues, discard.
qemu_img create -f qcow2 disk.qcow2 64M >/dev/null
start_daemon "$WORKDIR/vh.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f qcow2 \
	--num-queues 2 --discard=unmap --cache=none --pid-file "$WORKDIR/vh.pid" disk.qcow2
VH=$DAEMON_PID
client "$WORKDIR/vh.sock" conformance 2 || fail "conformance against vstor-vhost"
client "$WORKDIR/vh.sock" hostile || fail "hostile requests against vstor-vhost"
# INFLIGHT_SHMFD: what a dead back end left in flight is run by the next session.
# (qemu-storage-daemon 7.2 does not offer it, so this has no anchor run.)
client "$WORKDIR/vh.sock" inflight >inflight.out || fail "inflight resubmission"
assert_grep "resubmission ok" inflight.out "vhost-client inflight"
kill -0 "$VH" 2>/dev/null || fail "vstor-vhost died"
# Still serving after all that.
client "$WORKDIR/vh.sock" conformance 1 || fail "conformance after the hostile front ends"
stop_pid "$VH"
err=$WORKDIR/daemon.$VS_NDAEMONS.err
assert_grep "bad chains" "$err" "vstor-vhost's log"
grep -q "15 bad chains" "$err" || { cat "$err" >&2; fail "not every bad chain was counted"; }
qemu_img check disk.qcow2 >check.out || { cat check.out >&2; fail "qemu-img check"; }
qemu-io -f qcow2 -c 'read -P 0xa5 4M 64K' disk.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "the client's write is not in the image"
qemu-io -f qcow2 -c 'read -P 0x5b 32k 4k' disk.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "the resubmitted write is not in the image"

# Read-only raw.
qemu_img create -f raw ro.raw 16M >/dev/null
start_daemon "$WORKDIR/ro.pid" 20 "$VSTOR_VHOST" --socket "$WORKDIR/ro.sock" -f raw --read-only \
	--pid-file "$WORKDIR/ro.pid" ro.raw
client "$WORKDIR/ro.sock" readonly || fail "read-only export"
stop_pid "$DAEMON_PID"
log "ok"
