#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A real QEMU guest boots with a virtio-blk disk served by vstor-nbd (QEMU's
# NBD client), writes a pattern over the whole disk, flushes, reads it back,
# and checks write-zeroes and discard. Afterwards the qcow2 image passes
# qemu-img check and holds what the guest wrote.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img
find_built VSTOR_NBD nbd-server/vstor-nbd
vm_prepare

qemu_img create -f qcow2 disk.qcow2 64M >/dev/null
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" -f qcow2 --discard=unmap \
	--cache=none --pid-file "$WORKDIR/nbd.pid" disk.qcow2
vm_run guest 300 disk-pattern "" -- \
	-drive "file=nbd:unix:$WORKDIR/nbd.sock,format=raw,if=none,id=d0,cache=none,discard=unmap" \
	-device virtio-blk-pci,drive=d0
grep -q "write-zeroes ok" "$WORKDIR/guest.console" || fail "write-zeroes not exercised"
grep -q "discard ok" "$WORKDIR/guest.console" || fail "discard not exercised"
stop_pid "$DAEMON_PID"
qemu_img check disk.qcow2 >check.out || { cat check.out >&2; fail "qemu-img check after the guest"; }
# MiB 2 was zeroed, MiB 3 discarded: both read as zeroes; MiB 4 still holds data.
qemu-io -f qcow2 -c 'read -P 0 2M 2M' disk.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "zeroed/discarded ranges do not read as zero"
qemu_img map --output=json disk.qcow2 >map.json
python3 - <<'PY' || fail "the discarded MiB is still allocated"
import json
for r in json.load(open("map.json")):
    s, e = r["start"], r["start"] + r["length"]
    if s < (4 << 20) and e > (3 << 20) and r["data"]:
        raise SystemExit("data at %d..%d" % (s, e))
PY
log "ok"
