#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# libstore's nbd protocol driver (NBD URIs in every tool) against real
# servers: qemu-nbd (unix socket and TCP), nbdkit's memory plugin, and
# vstor-nbd. Writes through the driver must land (checked with qemu-io on
# the image afterwards), reads must match, errors must be clean.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-nbd qemu-io qemu-img nbdkit
require_vstor_io
find_built VSTOR_NBD nbd-server/vstor-nbd

# Exercise one server: write, read back, zero, flush, map, through $1 (a URI).
exercise()
{
	local uri=$1
	vstor_io -f raw -c size -c 'writeb 4M 64K 0x33 fua' -c 'readb 4M 64K 0x33' \
		-c 'write 5M 300K 17' -c 'read 5M 300K 17' -c 'zero 8M 1M' -c 'readb 8M 1M 0' \
		-c 'writeb 12345 1000 0x44' -c 'readb 12345 1000 0x44' -c flush -c map "$uri" \
		>io.out || fail "I/O through $uri"
	assert_eq "$(head -1 io.out)" 67108864 "size through $uri"
}

# --- qemu-nbd over a unix socket, qcow2 underneath ---
qemu_img create -f qcow2 q.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x5a 1M 1M' q.qcow2 >/dev/null
start_daemon "$WORKDIR/qn.pid" 20 qemu-nbd -t -k "$WORKDIR/qn.sock" -f qcow2 \
	--pid-file="$WORKDIR/qn.pid" q.qcow2
QN=$DAEMON_PID
exercise "nbd+unix:///?socket=$WORKDIR/qn.sock"
vstor_io -f raw -r -c 'readb 1M 1M 0x5a' -c 'readb 2M 1M 0' "nbd:unix:$WORKDIR/qn.sock" ||
	fail "legacy nbd:unix: URI"
grep -q '^1048576 1048576 data' io.out || { cat io.out >&2; fail "block status from qemu-nbd"; }
stop_pid "$QN"
qemu-io -f qcow2 -c 'read -P 0x33 4M 64K' -c 'read -P 0 8M 1M' -c 'read -P 0x44 12345 1000' \
	q.qcow2 >qio.out || { cat qio.out >&2; fail "writes through the NBD driver did not land"; }
grep -q "Pattern verification failed" qio.out && fail "pattern mismatch after NBD writes"
qemu_img check q.qcow2 >/dev/null || fail "qemu-img check after writes over NBD"

# --- vstor-img on NBD URIs (qemu-nbd serving a qcow2 with data and a hole) ---
require_vstor_img
qemu_img create -f qcow2 m.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x21 1M 2M' -c 'write -P 0x22 40M 64K' m.qcow2 >/dev/null
qemu_img convert -f qcow2 -O raw m.qcow2 m.raw
start_daemon "$WORKDIR/qm.pid" 20 qemu-nbd -t -r -e 4 -k "$WORKDIR/qm.sock" -f qcow2 \
	--pid-file="$WORKDIR/qm.pid" m.qcow2
MURI="nbd+unix:///?socket=$WORKDIR/qm.sock"
vstor_img info -f raw --output=json "$MURI" >vi.json || fail "vstor-img info on an NBD URI"
python3 -c "import json; assert json.load(open('vi.json'))['virtual-size'] == 64 << 20" ||
	fail "vstor-img info: wrong size over NBD"
vstor_img compare -f raw -F raw "$MURI" m.raw || fail "vstor-img compare over NBD"
vstor_img map -f raw --output=json "$MURI" >vm.json || fail "vstor-img map on an NBD URI"
qemu_img map -f raw --output=json "$MURI" >qm.json
python3 "$VS_LIB_DIR/interop.py" map-cmp vm.json qm.json ||
	fail "vstor-img map and qemu-img map disagree on an NBD export"
# convert from an NBD export: the hole stays a hole, the data is the same.
vstor_img convert -f raw -O qcow2 "$MURI" from-nbd.qcow2 || fail "vstor-img convert from NBD"
qemu_img check -q from-nbd.qcow2 || fail "qemu-img check of a convert from NBD"
qemu_img compare -q m.raw from-nbd.qcow2 || fail "convert from NBD: content differs"
qemu_img map --output=json from-nbd.qcow2 | python3 -c '
import json, sys
d = sum(e["length"] for e in json.load(sys.stdin) if e["data"])
assert d <= (3 << 20), d' || fail "convert from NBD allocated the holes"
stop_pid "$DAEMON_PID"

# --- qemu-nbd over TCP on a free port, read-only export ---
PORT=$(free_port)
start_daemon "$WORKDIR/qt.pid" 20 qemu-nbd -t -r -b 127.0.0.1 -p "$PORT" -x exp -f qcow2 \
	--pid-file="$WORKDIR/qt.pid" q.qcow2
vstor_io -f raw -r -c 'readb 4M 64K 0x33' "nbd://127.0.0.1:$PORT/exp" || fail "nbd:// over TCP"
vstor_io -f raw -r -c 'readb 4M 64K 0x33' "nbd:127.0.0.1:$PORT:exportname=exp" ||
	fail "legacy nbd:HOST:PORT URI"
assert_fails "$VSTOR_IO" -f raw -c 'writeb 0 512 1' "nbd://127.0.0.1:$PORT/exp"
assert_grep "read-only" "$WORKDIR/err" "opening a read-only export for writing"
assert_fails "$VSTOR_IO" -f raw -r -c size "nbd://127.0.0.1:$PORT/missing"
assert_grep "not found" "$WORKDIR/err" "unknown export"

# --- nbdkit memory plugin ---
start_daemon "$WORKDIR/nk.pid" 20 nbdkit -f -U "$WORKDIR/nk.sock" -P "$WORKDIR/nk.pid" memory 64M
exercise "nbd+unix:///?socket=$WORKDIR/nk.sock"
vstor_img info -f raw "nbd+unix:///?socket=$WORKDIR/nk.sock" >nki.txt ||
	fail "vstor-img info on nbdkit"
assert_grep "virtual size: 64 MiB" nki.txt "vstor-img info on nbdkit"
# convert -n into an NBD export (nbdkit; it holds data written above, which
# the zeroes of the source must replace), then read it back with qemu-img.
vstor_img convert -n -f qcow2 -O raw m.qcow2 "nbd+unix:///?socket=$WORKDIR/nk.sock" ||
	fail "vstor-img convert -n to an NBD export"
qemu_img compare -q -f raw -F raw m.raw "nbd+unix:///?socket=$WORKDIR/nk.sock" ||
	fail "convert to NBD: content differs"

# --- vstor-nbd serving the bytes of a qcow2 image: the driver probes qcow2 over NBD ---
qemu_img create -f qcow2 v.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x61 3M 128K' v.qcow2 >/dev/null
start_daemon "$WORKDIR/vn.pid" 20 "$VSTOR_NBD" -t -e 0 -r -k "$WORKDIR/vn.sock" -f raw \
	--pid-file "$WORKDIR/vn.pid" v.qcow2
vstor_io -r -c size -c 'readb 3M 128K 0x61' -c 'readb 0 3M 0' \
	"nbd+unix:///?socket=$WORKDIR/vn.sock" >io.out || fail "qcow2 over vstor-nbd"
assert_eq "$(head -1 io.out)" 67108864 "virtual size of the qcow2 read over NBD"
stop_pid "$DAEMON_PID"

# Nobody listening: a clear error.
assert_fails "$VSTOR_IO" -f raw -r -c size "nbd+unix:///?socket=$WORKDIR/none.sock"
assert_grep "connect" "$WORKDIR/err" "connection refused"
assert_fails "$VSTOR_IO" -f raw -r -c size "nbd+unix://host/x?socket=a"
assert_grep "Invalid NBD URI" "$WORKDIR/err" "malformed URI"
log "ok"
