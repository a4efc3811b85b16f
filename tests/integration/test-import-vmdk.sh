#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vmdk images made by qemu-img in every subformat it writes (monolithicSparse,
# monolithicFlat, twoGbMaxExtentSparse/Flat, streamOptimized: what VMware
# and OVA exports hold) read through vstor as qemu-img reads them (info,
# map, compare, convert, check); a twoGbMaxExtentSparse disk past 2 GiB
# (two extent files) with data across the extent boundary; a delta disk
# over its parent; refusals: writing, an unsupported extent type, a missing
# extent file, a grain directory past the end of the file.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-import.sh"

import_pattern 13M
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat \
	streamOptimized; do
	qemu_img convert -f raw -O vmdk -o subformat=$sub src.raw $sub.vmdk
	# Both targets for the sparse layouts, qcow2 alone for the rest (time).
	case $sub in
	monolithicSparse | streamOptimized) IMPORT_CONVERT_TO="raw qcow2" ;;
	*) IMPORT_CONVERT_TO=qcow2 ;;
	esac
	import_same $sub vmdk $sub.vmdk check
	vstor_img info --output=json $sub.vmdk | grep -q '"format": "vmdk"' ||
		fail "$sub does not probe as vmdk"
done

# Two extents (2 GiB and 64 MiB); data straddles the boundary.
qemu_img create -q -f vmdk -o subformat=twoGbMaxExtentSparse big.vmdk 2112M
qemu-io -f vmdk -c 'write -P 0x66 2047M 2M' big.vmdk >/dev/null
for o in human json; do
	diff -u <(qemu_img map --output=$o big.vmdk) <(vstor_img map --output=$o big.vmdk) >&2 ||
		fail "map of a 2-extent disk differs"
done
vstor_img convert -f vmdk -O qcow2 big.vmdk big.qcow2
qemu_img compare -q big.vmdk big.qcow2 || fail "convert of a 2-extent disk differs"
rm -f big.qcow2

# A delta disk: unallocated grains come from the parent.
qemu_img create -q -f vmdk -b monolithicSparse.vmdk -F vmdk delta.vmdk
qemu-io -f vmdk -c 'write -P 0x88 64k 64k' -c 'write -P 0x99 3M 4k' delta.vmdk >/dev/null
qemu_img info --output=json delta.vmdk >q-delta.info
vstor_img info --output=json delta.vmdk >v-delta.info
import_same_json q-delta.info v-delta.info || fail "info of a delta disk differs"
diff -u <(qemu_img map --output=json delta.vmdk) <(vstor_img map --output=json delta.vmdk) >&2 ||
	fail "map of a delta disk differs"
vstor_img convert -O raw delta.vmdk delta.raw
qemu_img compare -q delta.vmdk delta.raw || fail "convert of a delta disk differs"

# convert's options work from an import format as from any other.
vstor_img convert -c -O qcow2 streamOptimized.vmdk c.qcow2
qemu_img compare -q streamOptimized.vmdk c.qcow2 || fail "convert -c differs"
qemu_img convert -f raw -O qcow2 src.raw base.qcow2
vstor_img convert -O qcow2 -B base.qcow2 -F qcow2 monolithicSparse.vmdk b.qcow2
qemu_img compare -q monolithicSparse.vmdk b.qcow2 || fail "convert -B differs"
qemu_img create -q -f qcow2 n.qcow2 13M
vstor_img convert -n -m 4 -W -O qcow2 twoGbMaxExtentFlat.vmdk n.qcow2
qemu_img compare -q twoGbMaxExtentFlat.vmdk n.qcow2 || fail "convert -n -m 4 -W differs"

import_refuses_create vmdk
assert_fails vstor_img resize -f vmdk monolithicSparse.vmdk 20M
assert_grep "Format 'vmdk' is read-only in vstor" "$WORKDIR/err"

# Extent types vstor does not read are named in the refusal.
sed 's/ FLAT / VMFSRDM /' monolithicFlat.vmdk >rdm.vmdk
assert_fails vstor_img info rdm.vmdk
assert_grep "extents of type 'VMFSRDM' are not supported" "$WORKDIR/err"
sed 's/monolithicFlat-flat.vmdk/missing-flat.vmdk/' monolithicFlat.vmdk >missing.vmdk
assert_fails vstor_img info missing.vmdk
assert_grep "Could not open VMDK extent" "$WORKDIR/err"
# The grain directory (header offset 56) said to lie far past the end.
cp monolithicSparse.vmdk bad.vmdk
printf '\x00\x00\x00\x00\x00\x10\x00\x00' | dd of=bad.vmdk bs=1 seek=56 conv=notrunc status=none
assert_fails vstor_img info bad.vmdk
assert_grep "beyond the end of the file" "$WORKDIR/err"
log "ok"
