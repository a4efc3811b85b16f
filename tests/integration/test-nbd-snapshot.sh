#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd -l: an internal snapshot made by qemu-img is exported read-only,
# by name and by id, and reads exactly what `qemu-img convert -l` extracts;
# the active image is untouched; an unknown snapshot is a clear error.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io nbdinfo nbdcopy
find_built VSTOR_NBD nbd-server/vstor-nbd

qemu_img create -f qcow2 s.qcow2 16M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x12 9M 64K' s.qcow2 >/dev/null
qemu_img snapshot -c first s.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 0 512K' -c 'write -P 0x33 4M 1M' -c 'write -z 9M 64K' \
	s.qcow2 >/dev/null
qemu_img snapshot -c second s.qcow2
qemu_img convert -f qcow2 -O raw -l first s.qcow2 first.raw
qemu_img convert -f qcow2 -O raw s.qcow2 active.raw

for key in first 1 snapshot.name=first snapshot.id=1; do
	rm -f "$WORKDIR/l.sock" "$WORKDIR/l.pid"
	start_daemon "$WORKDIR/l.pid" 20 "$VSTOR_NBD" -t -l "$key" -k "$WORKDIR/l.sock" -f qcow2 \
		--pid-file "$WORKDIR/l.pid" s.qcow2
	nbdcopy "nbd+unix:///?socket=$WORKDIR/l.sock" "got-$key.raw"
	cmp "got-$key.raw" first.raw || fail "-l $key does not read the snapshot"
	nbdinfo --json "nbd+unix:///?socket=$WORKDIR/l.sock" >info.json
	python3 -c "import json; assert json.load(open('info.json'))['exports'][0]['is_read_only']" ||
		fail "-l $key export is writable"
	stop_pid "$DAEMON_PID"
done
qemu_img convert -f qcow2 -O raw s.qcow2 after.raw
cmp after.raw active.raw || fail "the active image changed"
qemu_img check s.qcow2 >/dev/null || fail "qemu-img check after -l"
assert_fails "$VSTOR_NBD" -l nope -k "$WORKDIR/x.sock" -f qcow2 s.qcow2
assert_grep "no snapshot 'nope'" "$WORKDIR/err" "unknown snapshot"
qemu_img create -f raw r.raw 1M >/dev/null
assert_fails "$VSTOR_NBD" -l first -k "$WORKDIR/x.sock" -f raw r.raw
assert_grep "no internal snapshots" "$WORKDIR/err" "snapshot of a raw image"
log "ok"
