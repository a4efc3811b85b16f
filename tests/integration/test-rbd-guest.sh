#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A QEMU guest on a Ceph RBD volume (issue 18): a private cluster (lib-ceph.sh),
# an rbd pool, a volume created by vstor, served by vstor-nbd (rbd driver,
# cache=none: librbd's cache off) to a TCG guest that writes a pattern over
# the whole disk, flushes, reads it back, zeroes and discards. Afterwards
# the image read through Ceph's own tools (rbd export) and through qemu-img's
# rbd driver holds what the guest left, and the zeroed and discarded MiBs
# read as zeroes. Long tier: the guest boots under TCG.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-ceph.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img nbdcopy cmp rbd
find_built VSTOR_NBD nbd-server/vstor-nbd
grep -q 'HAVE_LIBRBD' "$VS_BUILD_DIR/config.h" 2>/dev/null ||
	skip_or_fail "vstor was built without librbd (the rbd driver)"
qemu-img --help | grep -qw rbd || skip_or_fail "qemu-img has no rbd driver (qemu-block-extra)"
vm_prepare

ceph_start_cluster
ceph_create_pool vs
log "cluster up after $SECONDS s"
find_built VSTOR cli/vstor
export VSTOR_STATE_DIR=$WORKDIR/state
# vstor's pool definition carries the monitor and the user: no ceph.conf.
vstor() { env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR" "$@"; }
printf '%s\n' "$CEPH_ADMIN_KEY" >admin.key
chmod 600 admin.key
vstor pool-define-as cp rbd --source-host "127.0.0.1:$CEPH_MON_PORT" --source-name vs \
	--auth-type ceph --auth-username admin --auth-secret-file "$WORKDIR/admin.key" >/dev/null ||
	fail "pool-define-as rbd"
vstor pool-start cp >/dev/null || fail "pool-start"
vstor vol-create-as cp gdisk 64M --format raw >/dev/null || fail "vol-create-as on rbd"

SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 30 env -u CEPH_CONF -u CEPH_ARGS "$VSTOR_NBD" -t -f raw -k "$SOCK" --cache=none --discard=unmap \
	--pid-file "$WORKDIR/nbd.pid" vol:cp/gdisk
NBD=$DAEMON_PID
vm_run guest 600 disk-pattern "" -- \
	-drive "file=nbd:unix:$SOCK,format=raw,if=none,id=d0,cache=none,discard=unmap" \
	-device virtio-blk-pci,drive=d0
grep -q "write-zeroes ok" "$WORKDIR/guest.console" || fail "write-zeroes not exercised"
grep -q "discard ok" "$WORKDIR/guest.console" || fail "discard not exercised"
timeout 120 nbdcopy "nbd+unix:///?socket=$SOCK" nbd.raw || fail "nbdcopy after the guest"
stop_pid "$NBD"

rbd export vs/gdisk rbd.raw >/dev/null 2>&1 || fail "rbd export"
cmp nbd.raw rbd.raw || fail "what the export served differs from what Ceph holds"
qemu-img compare -f raw -F raw rbd.raw "rbd:vs/gdisk:conf=$CEPH_CONF" >/dev/null ||
	fail "qemu-img's rbd driver reads other bytes"
# MiB 2 was zeroed, MiB 3 discarded; the pattern is elsewhere.
cmp -n $((2 << 20)) -i $((2 << 20)):0 rbd.raw /dev/zero || fail "zeroed/discarded MiBs do not read as zero"
cmp -s -n $((1 << 20)) -i $((5 << 20)):0 rbd.raw /dev/zero && fail "the guest's pattern is missing"
log "done after $SECONDS s"
