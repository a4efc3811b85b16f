#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Out of order for real: on one connection, a read held up in the backing
# chain must not hold back a later read that can be answered at once.
#
# vstor-nbd exports overlay.qcow2 whose backing file is served by a small
# NBD server (nbd_stall_server.py) that stalls reads in a chosen range until
# the test releases them through a FIFO. The client sends a read of an
# unallocated cluster (it stalls in the backing read), then a read of an
# allocated one: the second reply must arrive while the first is stalled.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool python3 qemu-img qemu-io
find_built VSTOR_NBD nbd-server/vstor-nbd

mkfifo release
PYTHONPATH=$VS_LIB_DIR start_daemon "$WORKDIR/stall.pid" 20 python3 "$VS_LIB_DIR/nbd_stall_server.py" \
	"$WORKDIR/backing.sock" "$WORKDIR/stall.pid" $((64 << 20)) $((8 << 20)) $((16 << 20)) release

qemu_img create -u -f qcow2 -F raw -b "nbd+unix:///?socket=$WORKDIR/backing.sock" overlay.qcow2 64M \
	>/dev/null
# An allocated cluster in the overlay at 1 MiB (qemu-io must not touch the backing: -U, no reads).
qemu-io -f qcow2 -c 'write -P 0x77 1M 64K' overlay.qcow2 >/dev/null

start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -e 0 -k "$WORKDIR/nbd.sock" -f qcow2 \
	--pid-file "$WORKDIR/nbd.pid" overlay.qcow2

PYTHONPATH=$VS_LIB_DIR timeout 60 python3 - "$WORKDIR/nbd.sock" <<'PY' || fail "out-of-order replies"
import sys, struct
from nbd_raw_client import *
c = Client(sys.argv[1], timeout=20)
c.greet()
c.go(b"")
c.request(CMD_READ, 8 << 20, 4096, cookie=1)   # unallocated: stalls in the backing read
c.request(CMD_READ, 1 << 20, 4096, cookie=2)   # allocated in the overlay: immediate
cookie, err, chunks = c.read_reply(4096)
assert cookie == 2 and err == 0, ("the fast read waited for the slow one", cookie, err)
assert chunks[0][2] == b"\x77" * 4096
with open("release", "w") as f:                # let the backing read go
    f.write("go\n")
cookie, err, chunks = c.read_reply(4096)
assert cookie == 1 and err == 0, (cookie, err)
assert chunks[0][2] == bytes(4096)
c.request(CMD_DISC, 0, 0)
PY
log "ok"
