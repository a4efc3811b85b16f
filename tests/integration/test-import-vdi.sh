#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vdi images made by qemu-img, dynamic and static, read through vstor as
# qemu-img reads them (info, map, compare, convert, check); both probe as
# vdi; writing is refused; a block map entry used twice is found by check
# as qemu-img finds it; a map past the end of the file is an error.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-import.sh"

import_pattern 13M
qemu_img convert -f raw -O vdi src.raw dynamic.vdi
import_same dynamic vdi dynamic.vdi check
qemu_img convert -f raw -O vdi -o static=on src.raw static.vdi
import_same static vdi static.vdi check
for i in dynamic static; do
	vstor_img info --output=json $i.vdi | grep -q '"format": "vdi"' ||
		fail "$i.vdi does not probe as vdi"
done

import_refuses_create vdi
assert_fails vstor_img resize -f vdi dynamic.vdi 20M
assert_grep "Format 'vdi' is read-only in vstor" "$WORKDIR/err"

# Block 1 stored where block 0 is: a corruption for both checkers.
cp dynamic.vdi dup.vdi
dd if=dup.vdi of=dup.vdi bs=1 skip=512 seek=516 count=4 conv=notrunc status=none
qrc=0 vrc=0
qemu_img check -f vdi dup.vdi >q-dup.check 2>&1 || qrc=$?
vstor_img check -f vdi dup.vdi >v-dup.check 2>&1 || vrc=$?
assert_eq "$vrc" "$qrc" "exit code of check of a block used twice"
assert_grep "^1 errors were found on the image" q-dup.check
assert_grep "^1 errors were found on the image" v-dup.check
assert_grep "block index 0 also used by 1" v-dup.check

# The block map (at 512) said to start past the end of the file.
cp dynamic.vdi bad.vdi
printf '\x00\x00\x00\x7f' | dd of=bad.vdi bs=1 seek=$((0x154)) conv=notrunc status=none
assert_fails vstor_img info -f vdi bad.vdi
assert_grep "beyond the end of the file" "$WORKDIR/err"
log "ok"
