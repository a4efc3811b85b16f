#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img resize against qemu-img: absolute and relative sizes, growing
# raw and qcow2 images (with preallocation), shrinking only with --shrink,
# data below the new end kept, images clean for qemu-img check; a
# preallocated growth over a backing file keeps the backing data of the
# old last cluster.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io
require_vstor_img

size_of() { qemu_img info -f "$1" --output=json "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

for fmt in raw qcow2; do
	img=img.$fmt
	qemu_img create -q -f "$fmt" "$img" 16M
	qemu-io -f "$fmt" -c 'write -P 0x41 0 1M' -c 'write -P 0x42 15M 1M' "$img" >/dev/null
	vstor_img resize -f "$fmt" "$img" 64M >out.txt || fail "$fmt: grow"
	assert_grep "Image resized" out.txt "resize message"
	assert_eq "$(size_of "$fmt" "$img")" $((64 << 20)) "$fmt: size after growing"
	vstor_img resize -q -f "$fmt" "$img" +16M || fail "$fmt: relative grow"
	assert_eq "$(size_of "$fmt" "$img")" $((80 << 20)) "$fmt: size after +16M"
	# Shrinking needs --shrink; without it nothing changes.
	assert_rc 1 "$VSTOR_IMG" resize -f "$fmt" "$img" 8M
	assert_grep "Use the --shrink option" "$WORKDIR/err" "$fmt: shrink without --shrink"
	assert_eq "$(size_of "$fmt" "$img")" $((80 << 20)) "$fmt: size after a refused shrink"
	vstor_img resize -q -f "$fmt" --shrink "$img" -- -72M 2>/dev/null || fail "$fmt: relative shrink"
	assert_eq "$(size_of "$fmt" "$img")" $((8 << 20)) "$fmt: size after -72M"
	qemu-io -f "$fmt" -c 'read -P 0x41 0 1M' -c 'read -P 0 1M 7M' "$img" >qio.out
	grep -q "Pattern verification failed" qio.out && fail "$fmt: data below the new end changed"
	# Growing again reads zeroes where the cut-off data was.
	vstor_img resize -q -f "$fmt" "$img" 16M
	qemu-io -f "$fmt" -c 'read -P 0 15M 1M' "$img" >qio.out
	grep -q "Pattern verification failed" qio.out && fail "$fmt: old data reappeared after regrowing"
	if [[ $fmt == qcow2 ]]; then
		qemu_img check "$img" >/dev/null || fail "qcow2: qemu-img check after resizing"
	fi
	assert_rc 1 "$VSTOR_IMG" resize -f "$fmt" "$img" 12Q
	assert_grep "expects a non-negative number below 2\^64" "$WORKDIR/err" "$fmt: bad size (qemu-img's words)"
	assert_rc 1 "$VSTOR_IMG" resize -f "$fmt" "$img"
done

# --preallocation=full on a raw image allocates the grown part.
qemu_img create -q -f raw p.raw 1M
vstor_img resize -q -f raw --preallocation=full p.raw 9M || fail "preallocation=full"
alloc=$(( $(stat -c %b p.raw) * $(stat -c %B p.raw) ))
(( alloc >= 8 << 20 )) || fail "preallocation=full allocated only $alloc bytes"
assert_rc 1 "$VSTOR_IMG" resize -f raw --preallocation=bogus p.raw 10M
# Growing over a longer backing file: the new area reads zeroes, as it did
# past the old end, not the backing file's data (v3 and v2), as qemu-img.
qemu_img create -q -f qcow2 gb.qcow2 4M
qemu-io -c 'write -P 0x66 0 4M' gb.qcow2 >/dev/null
for compat in 1.1 0.10; do
	qemu_img create -q -f qcow2 -o compat=$compat -b gb.qcow2 -F qcow2 go.qcow2 1M
	vstor_img resize go.qcow2 3M >/dev/null || fail "resize over a backing file ($compat)"
	qemu-io -c 'read -P 0x66 0 1M' -c 'read -P 0 1M 2M' go.qcow2 >io.out
	grep -q "Pattern verification failed" io.out &&
		fail "growing over a longer backing file shows its data ($compat)"
	qemu_img check -q go.qcow2 || fail "qemu-img check after growing over a backing file"
done
# A preallocated growth from a size inside a cluster: the bytes of that
# cluster below the old end still read from the backing file (qemu-img
# copies them into the new cluster), the grown part reads zeroes.
for compat in 1.1 0.10; do
	for mode in full falloc metadata; do
		qemu_img create -q -f qcow2 -o compat=$compat -b gb.qcow2 -F qcow2 go.qcow2 1000K
		qemu-io -c 'write -P 0x11 0 4k' go.qcow2 >/dev/null
		vstor_img resize -q --preallocation=$mode go.qcow2 3M ||
			fail "preallocated resize over a backing file ($compat, $mode)"
		rc=0
		qemu-io -c 'read -P 0x11 0 4k' -c 'read -P 0x66 4k 996k' -c 'read -P 0 1000k 2000k' \
			go.qcow2 >io.out || rc=$?
		if [[ $rc != 0 ]] || grep -q "Pattern verification failed" io.out; then
			cat io.out >&2
			fail "preallocated resize over a backing file lost or showed backing data ($compat, $mode)"
		fi
		qemu_img check -q go.qcow2 || fail "qemu-img check after a preallocated resize ($compat, $mode)"
	done
done
# A v2 image with snapshots cannot be resized either way (a v2 snapshot
# entry has no size to revert to): qemu-img's message, the image untouched.
qemu_img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
qemu_img snapshot -c s v2.qcow2
cp v2.qcow2 v2-ref.qcow2
for size in 2M 512K; do
	assert_rc 1 qemu-img resize --shrink v2.qcow2 $size
	assert_rc 1 "$VSTOR_IMG" resize --shrink v2.qcow2 $size
	assert_grep "Can't resize a v2 image which has snapshots" "$WORKDIR/err" "resize v2 with snapshots to $size"
	cmp v2.qcow2 v2-ref.qcow2 || fail "resize of a v2 image with snapshots changed it"
done
# A shrink gives the space back as qemu-img does: the L2 tables and the
# refcount blocks of the cut range go, and the file ends after the last
# cluster in use (it kept its old length). Same data, clean, no larger.
for spec in "64M|write -P 1 60M 4M|2M|" "3G|write -P 1 2G 64M|1G|cluster_size=4k" \
	"1G|write -P 1 1020M 4M|100M|refcount_bits=64,cluster_size=4k" \
	"64M|write -P 1 0 64M|3M|extended_l2=on" "64M|write -c -P 1 0 64M|5M|"; do
	IFS='|' read -r size io new opts <<<"$spec"
	for who in q v; do
		qemu_img create -q -f qcow2 ${opts:+-o "$opts"} sh-$who.qcow2 "$size"
		qemu-io -c "$io" sh-$who.qcow2 >/dev/null
	done
	qemu_img resize -q --shrink sh-q.qcow2 "$new"
	vstor_img resize -q --shrink sh-v.qcow2 "$new" 2>/dev/null || fail "shrink $spec"
	qemu_img check -q sh-v.qcow2 || fail "qemu-img check after shrink $spec"
	qemu_img compare -q sh-q.qcow2 sh-v.qcow2 || fail "shrink $spec: data differs from qemu-img's"
	(($(stat -c %s sh-v.qcow2) <= $(stat -c %s sh-q.qcow2))) ||
		fail "shrink $spec: file $(stat -c %s sh-v.qcow2) bytes, qemu-img's $(stat -c %s sh-q.qcow2)"
done
# A v3 image with internal snapshots shrinks as with qemu-img: the snapshot
# keeps its size and data, the active image loses the cut range.
for who in q v; do
	qemu_img create -q -f qcow2 ss-$who.qcow2 64M
	qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 60M 1M' ss-$who.qcow2 >/dev/null
	qemu_img snapshot -c s1 ss-$who.qcow2
	qemu-io -c 'write -P 3 61M 64k' -c 'write -P 4 20M 64k' ss-$who.qcow2 >/dev/null
done
qemu_img resize -q --shrink ss-q.qcow2 16M
vstor_img resize -q --shrink ss-v.qcow2 16M 2>/dev/null || fail "shrink with a snapshot"
qemu_img check -q ss-v.qcow2 || fail "qemu-img check after a shrink with a snapshot"
qemu_img compare -q ss-q.qcow2 ss-v.qcow2 || fail "shrink with a snapshot: data differs"
assert_eq "$(qemu_img map --output=json ss-v.qcow2)" "$(qemu_img map --output=json ss-q.qcow2)" \
	"shrink with a snapshot: map"
assert_eq "$(stat -c %s ss-v.qcow2)" "$(stat -c %s ss-q.qcow2)" "shrink with a snapshot: file size"
qemu_img convert -l snapshot.name=s1 -O raw ss-q.qcow2 ssq.raw
qemu_img convert -l snapshot.name=s1 -O raw ss-v.qcow2 ssv.raw
cmp ssq.raw ssv.raw || fail "shrink with a snapshot: the snapshot reads differently"
log "ok"
