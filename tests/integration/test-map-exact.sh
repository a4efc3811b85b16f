#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img map prints exactly what qemu-img map prints, human and JSON, on
# images whose layouts the two could disagree on: zero clusters with and
# without host storage (preallocated zero clusters keep their offset),
# metadata preallocation, extended L2 subclusters, compressed clusters, a
# backing chain, and a raw file with holes.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io
require_vstor_img

same_map()
{
	local name=$1
	shift
	local qrc vrc
	for o in human json; do
		qrc=0 vrc=0
		qemu-img map --output=$o "$@" >"q-$name.$o" 2>"q-$name.err" || qrc=$?
		"$VSTOR_IMG" map --output=$o "$@" >"v-$name.$o" 2>"v-$name.err" || vrc=$?
		assert_eq "$vrc" "$qrc" "exit code of map --output=$o of $name"
		diff -u "q-$name.$o" "v-$name.$o" >&2 || fail "map --output=$o of $name differs"
		sed 's/^qemu-img: /vstor-img: /' "q-$name.err" | diff -u - "v-$name.err" >&2 ||
			fail "map --output=$o of $name: the messages differ"
	done
}

# Zero clusters: plain, and over data (qemu keeps the host cluster: an offset).
qemu_img create -q -f qcow2 z.qcow2 4M
qemu-io -c 'write -P 1 0 64k' -c 'write -z 128k 64k' -c 'write -P 2 256k 128k' \
	-c 'write -z 256k 128k' -c 'write -P 3 512k 64k' -c 'write -z 576k 64k' \
	-c 'write -P 4 1M 64k' -c 'write -z -u 1M 64k' z.qcow2 >/dev/null
same_map zero z.qcow2

# Metadata preallocation, then zeroes over part of it.
qemu_img create -q -f qcow2 -o preallocation=metadata p.qcow2 2M
qemu-io -c 'write -z 0 64k' -c 'write -P 5 64k 64k' -c 'write -z 1M 192k' p.qcow2 >/dev/null
same_map prealloc p.qcow2

# Extended L2: subclusters of one cluster differ.
qemu_img create -q -f qcow2 -o extended_l2=on,cluster_size=64k e.qcow2 2M
qemu-io -c 'write -P 6 0 4k' -c 'write -z 8k 4k' -c 'write -P 7 64k 64k' \
	-c 'write -z 66k 2k' e.qcow2 >/dev/null
same_map extl2 e.qcow2

# Compressed clusters beside plain ones.
qemu_img create -q -f qcow2 c.qcow2 1M
qemu-io -c 'write -c -P 8 0 64k' -c 'write -c -P 9 64k 64k' -c 'write -P 10 128k 64k' \
	c.qcow2 >/dev/null
same_map compressed c.qcow2

# A chain: depth and which layer holds what.
qemu_img create -q -f qcow2 base.qcow2 1M
qemu-io -c 'write -P 11 0 256k' base.qcow2 >/dev/null
qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 12 64k 64k' -c 'write -z 128k 64k' top.qcow2 >/dev/null
same_map chain top.qcow2

# A raw file with holes.
truncate -s 1M r.raw
qemu-io -f raw -c 'write -P 13 64k 64k' -c 'write -P 14 512k 4k' r.raw >/dev/null
same_map raw -f raw r.raw
log "ok"
