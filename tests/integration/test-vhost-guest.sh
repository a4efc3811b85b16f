#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A real QEMU guest with a vhost-user-blk-pci disk (two queues) served by
# vstor-vhost: the disk starts write-through (--cache=writethrough), the
# guest switches it to write back through cache_type (SET_CONFIG), fsyncs
# (flush), writes a pattern over the whole disk, reads it back, zeroes and
# discards. The qcow2 image then passes qemu-img check and holds what the
# guest wrote. The same with packed rings on a raw image. Then the back end
# is killed and restarted under a guest that writes and verifies (QEMU
# reconnects, INFLIGHT_SHMFD). Then a guest writes until QEMU is killed: the
# daemon must serve the next front end, and the image must stay consistent.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
vm_prepare

vhost_args()
{
	echo -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
		-chardev "socket,id=c0,path=$WORKDIR/vh.sock" \
		-device vhost-user-blk-pci,chardev=c0,num-queues=2
}

qemu_img create -f qcow2 disk.qcow2 32M >/dev/null
start_daemon "$WORKDIR/vh.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f qcow2 \
	--num-queues 2 --discard=unmap --cache=writethrough --pid-file "$WORKDIR/vh.pid" disk.qcow2
VH=$DAEMON_PID
ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
# shellcheck disable=SC2046
vm_run guest 300 vhost-blk writethrough -- $(vhost_args)
grep -q "write-zeroes ok" "$WORKDIR/guest.console" || fail "write-zeroes not exercised"
grep -q "discard ok" "$WORKDIR/guest.console" || fail "discard not exercised"
# The daemon logs the front end's counters when it leaves (wait for that line).
wait_for 20 grep -q "front end gone" "$ERR"
assert_grep "guest set the write cache to write back" "$ERR" "vstor-vhost's log"
grep -qE "[1-9][0-9]* flushes" "$ERR" || { cat "$ERR" >&2; fail "no flush reached the daemon"; }
grep -qE " 0 I/O errors" "$ERR" || { cat "$ERR" >&2; fail "the guest got I/O errors"; }
stop_pid "$VH"
qemu_img check disk.qcow2 >check.out || { cat check.out >&2; fail "qemu-img check after the guest"; }
# MiB 2 was zeroed, MiB 3 discarded: both read as zeroes.
qemu-io -f qcow2 -c 'read -P 0 2M 2M' disk.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "zeroed/discarded ranges do not read as zero"

# Packed rings (packed=on), cache=none, on a raw image.
qemu_img create -f raw disk.raw 32M >/dev/null
start_daemon "$WORKDIR/vhp.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f raw \
	--num-queues 2 --discard=unmap --cache=none --pid-file "$WORKDIR/vhp.pid" disk.raw
VH=$DAEMON_PID
ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
# shellcheck disable=SC2046
vm_run packed 300 vhost-blk "" -- $(vhost_args),packed=on
wait_for 20 grep -q "front end gone" "$ERR"
assert_grep "packed rings" "$ERR" "vstor-vhost's log"
grep -qE "[1-9][0-9]* flushes" "$ERR" || { cat "$ERR" >&2; fail "no flush reached the daemon (packed)"; }
grep -qE " 0 I/O errors" "$ERR" || { cat "$ERR" >&2; fail "the guest got I/O errors (packed)"; }
stop_pid "$VH"
qemu-io -f raw -c 'read -P 0 2M 2M' disk.raw >qio.out
grep -q "Pattern verification failed" qio.out && fail "zeroed/discarded ranges do not read as zero (packed)"

# Kill the back end while the guest writes and verifies in rounds (QEMU
# reconnects; INFLIGHT_SHMFD hands the new daemon what was in flight).
qemu_img create -f raw disk3.raw 16M >/dev/null
start_daemon "$WORKDIR/vhr.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f raw \
	--num-queues 2 --pid-file "$WORKDIR/vhr.pid" disk3.raw
VH=$DAEMON_PID
accel=$(vm_accel)
# shellcheck disable=SC2046
timeout --kill-after=5 300 qemu-system-x86_64 -accel "$accel" -cpu max -machine q35 \
	-bios /usr/share/qemu/qboot.rom -smp 2 -m 512 -nodefaults -display none \
	-no-reboot -serial "file:$WORKDIR/restart.console" -pidfile "$WORKDIR/qemu-r.pid" \
	-kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
	-append "console=ttyS0 quiet panic=-1 vstor.test=vhost-blk vstor.args=restart,4" \
	$(vhost_args | sed 's/path=[^ ]*/&,reconnect=1/') >"$WORKDIR/restart.qemu.out" 2>&1 &
QEMU_R=$!
VS_PIDS+=("$QEMU_R")
wait_for 120 grep -q "round 1 ok" "$WORKDIR/restart.console"
kill -KILL "$VH"
# A killed io_uring user's image lock goes a moment after it.
unlocked() { [[ -z $(inode_locks disk3.raw) ]]; }
wait_for 20 unlocked
start_daemon "$WORKDIR/vhr2.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f raw \
	--num-queues 2 --pid-file "$WORKDIR/vhr2.pid" disk3.raw
VH=$DAEMON_PID
ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
wait "$QEMU_R" || true
grep -q "VSTOR-RESULT: PASS" "$WORKDIR/restart.console" || {
	tail -n 20 "$WORKDIR/restart.console" "$WORKDIR/restart.qemu.out" >&2
	fail "the guest did not survive a back-end restart"
}
assert_grep "inflight area" "$ERR" "the restarted daemon's log"
stop_pid "$VH"

# Kill QEMU in the middle of writes (on a fresh image, whose growth shows them).
qemu_img create -f qcow2 disk2.qcow2 64M >/dev/null
start_daemon "$WORKDIR/vh2.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" -f qcow2 \
	--num-queues 2 --pid-file "$WORKDIR/vh2.pid" disk2.qcow2
VH=$DAEMON_PID
ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
accel=$(vm_accel)
# shellcheck disable=SC2046
timeout --kill-after=5 120 qemu-system-x86_64 -accel "$accel" -cpu max -machine q35 \
	-bios /usr/share/qemu/qboot.rom -smp 2 -m 512 -nodefaults -display none \
	-no-reboot -serial "file:$WORKDIR/kill.console" -pidfile "$WORKDIR/qemu.pid" \
	-kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
	-append "console=ttyS0 quiet panic=-1 vstor.test=vhost-blk vstor.args=kill" \
	$(vhost_args) >"$WORKDIR/kill.qemu.out" 2>&1 &
VS_PIDS+=("$!")
wait_for 120 grep -q "writing until killed" "$WORKDIR/kill.console"
# Some MiB of guest writes have reached the image: kill the front end.
image_grew() { (($(stat -c %s disk2.qcow2) > 8 << 20)); }
wait_for 60 image_grew
kill -KILL "$(cat "$WORKDIR/qemu.pid")"
wait_for 20 grep -q "front end gone" "$ERR"
kill -0 "$VH" 2>/dev/null || fail "vstor-vhost died with its front end"
# The next front end is served.
timeout 60 "$VHOST_CLIENT" "$WORKDIR/vh.sock" conformance 2 || fail "no service after QEMU was killed"
stop_pid "$VH"
qemu_img check disk2.qcow2 >check.out || { cat check.out >&2; fail "qemu-img check after the kill"; }
log "ok"
