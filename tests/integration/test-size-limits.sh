#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Virtual sizes near 2^64, with qemu-img as the oracle: what it opens we
# open, what it refuses we refuse, quickly and with a clear error.
#   - qcow2 headers patched to 2^64 - 1 (whose L1 index used to wrap to 0:
#     vstor-img info showed 16 EiB, compare spun), sizes just past and just
#     under qemu's limits (2^63 - 1 GiB; the L1 table's reach): vstor-img
#     info, check, compare and convert, and vstor-nbd, each under a timeout;
#   - NBD exports (nbd_bad_server.py) of 2^63 - 512 bytes (past the limit)
#     and 2^63 - 1 GiB (at it): vstor-img info as qemu-img info.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img python3
require_vstor_img
VSTOR_NBD=${VSTOR_NBD:-$VS_BUILD_DIR/nbd-server/vstor-nbd}

# craft SRC DST SIZE: a copy of SRC with the header's size field set to SIZE.
craft()
{
	python3 - "$1" "$2" "$3" <<'EOF'
import shutil, struct, sys
src, dst, size = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
shutil.copy(src, dst)
with open(dst, "r+b") as f:
    f.seek(24)
    f.write(struct.pack(">Q", size))
EOF
}

# rc CMD...: the exit status of CMD (bounded: 124 means it ran for 30 s).
rc()
{
	local r=0
	timeout 30 "$@" >"$WORKDIR/out" 2>"$WORKDIR/err" || r=$?
	echo "$r"
}

# 64 KiB clusters, an L1 table of one entry (512 MiB).
qemu_img create -q -f qcow2 small.qcow2 1M
# 2 MiB clusters and the largest L1 table (2^22 entries): 2 EiB, the most
# a qcow2 L1 table can map, under 2^63 - 1 GiB.
qemu_img create -q -f qcow2 -o cluster_size=2M big.qcow2 2E

checked=0
while read -r base size small; do
	img=s-$size.qcow2
	craft "$base" "$img" "$size"
	what="$base with size $size"
	qrc=$(rc qemu-img info "$img")
	[[ $qrc == 0 || $qrc == 1 ]] || fail "$what: qemu-img info exited $qrc"
	for cmd in info check; do
		vrc=$(rc "$VSTOR_IMG" "$cmd" "$img")
		[[ $vrc != 124 ]] || fail "$what: vstor-img $cmd did not finish in 30 s"
		if [[ $qrc == 0 ]]; then
			[[ $vrc == 0 ]] || { cat "$WORKDIR/err" >&2; fail "$what: qemu-img opens it, vstor-img $cmd exited $vrc"; }
		else
			[[ $vrc == 1 ]] || fail "$what: qemu-img refuses it, vstor-img $cmd exited $vrc"
			assert_grep "File too large|too big|L1 table is too small" "$WORKDIR/err" "$what: $cmd error"
		fi
	done
	# Whole-image walks only where the image is small or refused.
	if [[ $small == small || $qrc != 0 ]]; then
		vrc=$(rc "$VSTOR_IMG" compare "$img" "$img")
		[[ $vrc != 124 ]] || fail "$what: vstor-img compare did not finish in 30 s"
		qcrc=$(rc qemu-img compare "$img" "$img")
		assert_eq "$vrc" "$qcrc" "$what: vstor-img compare exit status (qemu-img's)"
		vrc=$(rc "$VSTOR_IMG" convert -O raw "$img" out.raw)
		[[ $vrc != 124 ]] || fail "$what: vstor-img convert did not finish in 30 s"
		if [[ $qrc == 0 ]]; then
			assert_eq "$vrc" 0 "$what: vstor-img convert exit status"
		else
			assert_eq "$vrc" 1 "$what: vstor-img convert exit status"
		fi
		rm -f out.raw
	fi
	if [[ $qrc != 0 && -x $VSTOR_NBD ]]; then
		vrc=$(rc "$VSTOR_NBD" -t -e 0 -r -k "$WORKDIR/n.sock" -f qcow2 "$img")
		[[ $vrc != 0 && $vrc != 124 ]] || fail "$what: vstor-nbd served it (exit $vrc)"
		assert_grep "File too large|too big|L1 table is too small" "$WORKDIR/err" "$what: vstor-nbd error"
	fi
	rm -f "$img"
	checked=$((checked + 1))
done <<'CASES'
small.qcow2 0xffffffffffffffff small
small.qcow2 0xfffffffffffffe00 small
small.qcow2 0xffffffffe0000200 small
small.qcow2 0xffffffffe0000000 small
small.qcow2 0x8000000000000000 small
small.qcow2 0x7fffffffc0000200 small
small.qcow2 0x7fffffffc0000000 small
small.qcow2 0x20000000 small
small.qcow2 0x20000200 small
big.qcow2 0xffffffffffffffff small
big.qcow2 0x7fffffffc0000200 small
big.qcow2 0x7fffffffc0000000 small
big.qcow2 0x2000000000000200 small
big.qcow2 0x2000000000000000 big
CASES
assert_eq "$checked" 14 "cases checked"
# The accepted 2 EiB image shows its size.
vstor_img info --output=json big.qcow2 >big.json
assert_grep '"virtual-size": 2305843009213693952' big.json "size of the 2 EiB image"

# Raw over NBD: past the limit refused, at it accepted, as qemu-img does.
for mode in over-max-size max-size; do
	start_daemon "$WORKDIR/$mode.pid" 20 python3 "$VS_LIB_DIR/nbd_bad_server.py" \
		"$WORKDIR/$mode.sock" "$WORKDIR/$mode.pid" "$mode"
	uri="nbd+unix:///?socket=$WORKDIR/$mode.sock"
	qrc=$(rc qemu-img info -f raw "$uri")
	vrc=$(rc "$VSTOR_IMG" info -f raw "$uri")
	if [[ $mode == max-size ]]; then
		assert_eq "$qrc" 0 "qemu-img info of a 2^63 - 1 GiB export"
		assert_eq "$vrc" 0 "vstor-img info of a 2^63 - 1 GiB export"
		assert_grep "9223372035781033984 bytes" "$WORKDIR/out" "size of the 2^63 - 1 GiB export"
	else
		assert_eq "$qrc" 1 "qemu-img info of a 2^63 - 512 export"
		assert_eq "$vrc" 1 "vstor-img info of a 2^63 - 512 export"
		assert_grep "beyond 2\^63 - 1 GiB" "$WORKDIR/err" "error for a 2^63 - 512 export"
	fi
done
log "ok"
