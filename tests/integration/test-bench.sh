#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img bench against qemu-img bench: the same write run (offset, step,
# count, pattern) leaves the same bytes in the same places, in raw and
# qcow2; --random (a vstor addition) spreads its requests over the image,
# the same seed gives the same image, and bad arguments fail as qemu-img's do.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img
require_vstor_img

for fmt in raw qcow2; do
	qemu_img create -q -f "$fmt" "q.$fmt" 8M
	qemu_img create -q -f "$fmt" "v.$fmt" 8M
	qemu_img bench -q -f "$fmt" -w -c 300 -d 8 -o 65536 -S 12288 -s 4096 --pattern=0x5a "q.$fmt" ||
		fail "$fmt: qemu-img bench"
	vstor_img bench -q -f "$fmt" -w -c 300 -d 8 -o 65536 -S 12288 -s 4096 --pattern=0x5a "v.$fmt" ||
		fail "$fmt: vstor-img bench"
	qemu_img compare -q -f "$fmt" -F "$fmt" "q.$fmt" "v.$fmt" ||
		fail "$fmt: a stepped write run differs from qemu-img bench's"
	[[ $fmt == qcow2 ]] && { qemu_img check -q v.qcow2 || fail "qcow2: check after bench -w"; }
	# Reads of what was written succeed, and report their run.
	vstor_img bench -f "$fmt" -c 100 -d 4 "v.$fmt" >out.txt || fail "$fmt: read bench"
	assert_grep "Run completed in" out.txt "$fmt: read bench output"
done

# --random: 200 writes of 4 KiB over 1 GiB land in (nearly) 200 places, not
# in one 800 KiB run as stepping would.
qemu_img create -q -f raw r1.raw 1G
qemu_img create -q -f raw r2.raw 1G
vstor_img bench -w -c 200 -d 8 --random=42 --pattern=0x33 r1.raw >out.txt || fail "random write bench"
assert_grep "random offsets from 0, seed 42" out.txt "random bench banner"
extents=$(qemu_img map -f raw --output=json r1.raw |
	python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["data"]))')
((extents >= 150)) || fail "--random wrote $extents data extents for 200 requests"
vstor_img bench -q -w -c 200 -d 1 --random=42 --pattern=0x33 r2.raw || fail "random write bench (QD1)"
qemu_img compare -q -f raw -F raw r1.raw r2.raw || fail "the same seed gave a different image"

# Bad arguments: exit 1 with a message, as qemu-img.
assert_rc 1 "$VSTOR_IMG" bench --random=seven r1.raw
assert_grep "Invalid random seed" "$WORKDIR/err" "bad seed"
assert_rc 1 "$VSTOR_IMG" bench -d 0 r1.raw
assert_grep "Invalid queue depth" "$WORKDIR/err" "zero depth"
assert_rc 1 "$VSTOR_IMG" bench --random -o 2G r1.raw
assert_grep "smaller than offset" "$WORKDIR/err" "--random past the end"
exit 0
