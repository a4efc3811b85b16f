#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vpc (VHD) images made by qemu-img, fixed and dynamic, read through vstor
# as qemu-img reads them (info, map, compare, convert); probing tells a
# dynamic image (footer copy at the start) but, as in QEMU, not a fixed one;
# opening for writing, create and convert -O vpc are refused; a damaged
# table is an error, not a crash.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-import.sh"

import_pattern 13M
for sub in dynamic fixed; do
	qemu_img convert -f raw -O vpc -o subformat=$sub src.raw $sub.vhd
	import_same $sub vpc $sub.vhd check
done
# A size that QEMU takes from the footer's size field, not the geometry.
qemu_img convert -f raw -O vpc -o subformat=dynamic,force_size=on src.raw forced.vhd
import_same forced vpc forced.vhd

vstor_img info --output=json dynamic.vhd | grep -q '"format": "vpc"' ||
	fail "a dynamic VHD does not probe as vpc"
vstor_img info --output=json fixed.vhd | grep -q '"format": "raw"' ||
	fail "a fixed VHD probes as something other than raw (QEMU probes raw)"

import_refuses_create vpc
assert_fails vstor_img resize -f vpc dynamic.vhd 20M
assert_grep "Format 'vpc' is read-only in vstor" "$WORKDIR/err"
# The block allocation table pointed past the end of the file.
cp dynamic.vhd bad.vhd
printf '\x7f\xff\xff\xff\xff\xff\x00\x00' | dd of=bad.vhd bs=1 seek=$((512 + 16)) conv=notrunc status=none
assert_fails vstor_img info -f vpc bad.vhd
assert_grep "beyond the end of the file" "$WORKDIR/err"
log "ok"
