#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qcow (version 1) images made by qemu-img read through vstor as qemu-img
# reads them (info, map, compare, convert): plain, compressed clusters, and
# an overlay over a backing file; writing and encrypted images are
# refused; an L1 table past the end of the file is an error.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-import.sh"

import_pattern 13M
qemu_img convert -f raw -O qcow src.raw plain.qcow
import_same plain qcow plain.qcow check
# Compressed clusters (qemu 7.2 compresses one qcow cluster a write).
qemu_img create -q -f qcow compressed.qcow 1M
qemu-io -f qcow -c 'write -c -P 0x11 0 4k' -c 'write -c -P 0x12 8k 4k' \
	-c 'write -P 0x13 12k 4k' -c 'write -c -P 0x14 64k 4k' compressed.qcow >/dev/null
for o in human json; do
	qrc=0 vrc=0
	qemu_img map --output=$o compressed.qcow >q-c.$o 2>q-c.err || qrc=$?
	vstor_img map --output=$o compressed.qcow >v-c.$o 2>v-c.err || vrc=$?
	assert_eq "$vrc" "$qrc" "exit code of map --output=$o of compressed clusters"
	diff -u q-c.$o v-c.$o >&2 || fail "map --output=$o of compressed clusters differs"
done
vstor_img convert -O qcow2 compressed.qcow c.qcow2
qemu_img compare -q compressed.qcow c.qcow2 || fail "convert of compressed clusters differs"
vstor_img info --output=json plain.qcow | grep -q '"format": "qcow"' ||
	fail "a qcow image does not probe as qcow"

# An overlay: unallocated clusters come from the backing file.
qemu_img create -q -f qcow -b plain.qcow -F qcow top.qcow
qemu-io -f qcow -c 'write -P 0x99 64k 8k' -c 'write -P 0xaa 3M 4k' top.qcow >/dev/null
qemu_img info --output=json top.qcow >q-top.info
vstor_img info --output=json top.qcow >v-top.info
import_same_json q-top.info v-top.info || fail "info of an overlay differs"
for o in human json; do
	diff -u <(qemu_img map --output=$o top.qcow) <(vstor_img map --output=$o top.qcow) >&2 ||
		fail "map --output=$o of an overlay differs"
done
vstor_img convert -O raw top.qcow top.raw
qemu_img compare -q top.qcow top.raw || fail "convert of an overlay differs"

import_refuses_create qcow
assert_fails vstor_img resize -f qcow plain.qcow 20M
assert_grep "Format 'qcow' is read-only in vstor" "$WORKDIR/err"

# crypt_method (offset 36) = AES.
cp plain.qcow aes.qcow
printf '\x00\x00\x00\x01' | dd of=aes.qcow bs=1 seek=36 conv=notrunc status=none
assert_fails vstor_img info aes.qcow
assert_grep "Encrypted qcow images are not supported" "$WORKDIR/err"
# The L1 table (offset 40) said to lie far past the end of the file.
cp plain.qcow bad.qcow
printf '\x00\x00\x01\x00\x00\x00\x00\x00' | dd of=bad.qcow bs=1 seek=40 conv=notrunc status=none
assert_fails vstor_img info bad.qcow
assert_grep "beyond the end of the file" "$WORKDIR/err"
log "ok"
