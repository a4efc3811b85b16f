#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-vhost --detect-zeroes, as vstor-nbd (and qemu-nbd) spell it: a guest
# write of all zeroes over data becomes write-zeroes through the export layer.
# With unmap and --discard=unmap the host clusters go (zero clusters with no
# host offset in the qcow2 map); with on they stay, reading as zeroes; with
# detect-zeroes off the zeroes are written as data. A real
# vhost-user front end (tests/tools/vhost-client) does the writes.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img python3
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
client() { timeout 120 "$VHOST_CLIENT" "$@"; }

# map_at IMAGE OFFSET: "data" / "nodata" and "host" / "nohost" (a host
# cluster is allocated) of the qcow2 map entry covering OFFSET.
map_at()
{
	qemu_img map --output=json -f qcow2 "$1" | python3 -c '
import json, sys
off = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["start"] <= off < e["start"] + e["length"]:
        print("data" if e["data"] else "nodata", "host" if "offset" in e else "nohost")
        break' "$2"
}

# run MODE: a 64 KiB pattern at 1 MiB, then 64 KiB of zeroes over it.
run()
{
	local img=dz-$1.qcow2 sock=$WORKDIR/dz-$1.sock pid=$WORKDIR/dz-$1.pid
	qemu_img create -f qcow2 "$img" 64M >/dev/null
	start_daemon "$pid" 20 "$VSTOR_VHOST" --socket "$sock" -f qcow2 --discard=unmap \
		--detect-zeroes="$1" --pid-file "$pid" "$img"
	client "$sock" write 2048 64k 0xa5 || fail "detect-zeroes=$1: pattern write"
	client "$sock" write 2048 64k 0 || fail "detect-zeroes=$1: zero write"
	stop_pid "$DAEMON_PID"
	qemu_img check "$img" >check.out || { cat check.out >&2; fail "qemu-img check ($1)"; }
}

run unmap
got=$(map_at dz-unmap.qcow2 1048576)
[[ $got == "nodata nohost" ]] ||
	fail "detect-zeroes=unmap: a zero write left '$got', not a deallocated range"

# on: zeroes without deallocating.
run on
got=$(map_at dz-on.qcow2 1048576)
[[ $got == "nodata host" ]] || fail "detect-zeroes=on: a zero write left '$got'"

# off: the zeroes are written as data (so the pattern was allocated).
run off
got=$(map_at dz-off.qcow2 1048576)
[[ $got == "data host" ]] || fail "detect-zeroes=off: a zero write left '$got'"

# A mode vstor-nbd refuses is refused here too.
assert_fails "$VSTOR_VHOST" --socket "$WORKDIR/x.sock" --detect-zeroes=yes dz-off.qcow2
assert_grep "Invalid detect-zeroes mode" "$WORKDIR/err" "vstor-vhost --detect-zeroes=yes"
log "ok"
