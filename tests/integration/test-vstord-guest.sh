#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A real QEMU guest on a vstord vhost-user-blk export (vhost-user-blk-pci)
# sees block_resize at once: vstord sends the config-change message on the
# back-end channel, QEMU reads the new capacity and tells the guest, whose
# /sys/block/vda/size changes without a reboot; the guest then writes and
# reads the new last MiB, and the image passes qemu-img check.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
require_tool qemu-img python3
find_built VSTORD vstord/vstord
vm_prepare

qemu_img create -q -f qcow2 disk.qcow2 32M
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock" \
	--blockdev "driver=file,node-name=f,filename=$WORKDIR/disk.qcow2" \
	--blockdev driver=qcow2,node-name=q,file=f \
	--export "type=vhost-user-blk,id=v,node-name=q,addr.type=unix,addr.path=$WORKDIR/vh.sock,writable=on"

vm_run guest 300 vhost-blk resize,$(((48 << 20) / 512)) -- \
	-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
	-chardev "socket,id=c0,path=$WORKDIR/vh.sock" -device vhost-user-blk-pci,chardev=c0,num-queues=1 &
GUEST=$!
deadline=$((SECONDS + 240))
until grep -q "waiting for a resize" "$WORKDIR/guest.console" 2>/dev/null; do
	kill -0 "$GUEST" 2>/dev/null || { wait "$GUEST"; fail "the guest stopped before the resize"; }
	((SECONDS < deadline)) || fail "the guest did not come up in 240 s"
	sleep 0.2
done
python3 - "$WORKDIR" <<'PY' || fail "block_resize under the guest"
import sys
from qmp import QMP
r = QMP(sys.argv[1] + "/vd.sock").execute("block_resize", {"node-name": "q", "size": 48 << 20})
sys.exit(r != {"return": {}})
PY
wait "$GUEST" || fail "the guest did not see the new size"
assert_grep "resize ok" "$WORKDIR/guest.console" "the guest's console"
stop_pid "$(<"$WORKDIR/vd.pid")"
qemu_img check -q disk.qcow2 || fail "qemu-img check after the guest"
[[ $(qemu_img info --output=json disk.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == $((48 << 20)) ]] ||
	fail "the image was not resized"
log "ok"
