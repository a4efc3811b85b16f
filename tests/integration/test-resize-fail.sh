#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A preallocated resize that fails leaves the image as it was, and one that
# cannot fallocate writes zeroes instead, as qemu-img (the oracle) does:
#   - on a full filesystem (tmpfs size=), 'vstor-img resize
#     --preallocation=falloc|full' of qcow2 and raw fails with ENOSPC; then
#     qemu-img check is clean (no corruption, no leak), qemu-img info shows
#     the old size, qemu-img compare finds the old data, a raw file has its
#     old length, and a smaller resize on the same filesystem still works;
#     the same for 'vstor vol-resize --allocate' on a dir pool there;
#   - on a filesystem without fallocate (ext2: EOPNOTSUPP) both modes
#     succeed where qemu-img's do, allocating the space by writing zeroes;
#     where that runs out of space, the image is unchanged as above.
# Needs root (tmpfs and loop mounts).
. "$(dirname "$0")/lib.sh"

((EUID == 0)) || skip_or_fail "needs root to mount a tmpfs and a loop filesystem"
require_tool qemu-img qemu-io mount umount mkfs.ext2 python3
require_vstor_img

size_of() { qemu_img info -f "$1" --output=json "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# mount_fs DIR ARGS...: mount, and unmount on exit.
mount_fs()
{
	local dir=$1
	shift
	mkdir -p "$dir"
	mount "$@" "$dir" || skip_or_fail "cannot mount $*"
	at_exit "umount '$dir' || umount -l '$dir'"
}

# make_image FMT PATH: a 4 MiB image with data at its start and end, and a
# copy of it outside the filesystem under test (PATH.ref).
make_image()
{
	local fmt=$1 img=$2
	rm -f "$img"
	qemu_img create -q -f "$fmt" "$img" 4M
	qemu-io -f "$fmt" -c 'write -P 0x41 0 1M' -c 'write -P 0x42 3M 1M' "$img" >/dev/null
	cp "$img" "$WORKDIR/ref.$fmt"
}

# assert_unchanged FMT PATH WHAT: clean, old size, old data (and a raw file its old length).
assert_unchanged()
{
	local fmt=$1 img=$2 what=$3 rc=0
	if [[ $fmt == qcow2 ]]; then
		qemu_img check "$img" >check.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat check.out >&2; fail "$what: qemu-img check exited $rc after the failed resize"; }
	else
		assert_eq "$(stat -c %s "$img")" $((4 << 20)) "$what: raw file length after the failed resize"
	fi
	assert_eq "$(size_of "$fmt" "$img")" $((4 << 20)) "$what: virtual size after the failed resize"
	qemu_img compare -f "$fmt" -F "$fmt" "$WORKDIR/ref.$fmt" "$img" >/dev/null ||
		fail "$what: data changed by the failed resize"
}

# --- a full filesystem ---
FULL=$WORKDIR/full
mount_fs "$FULL" -t tmpfs -o size=8m tmpfs
for fmt in qcow2 raw; do
	for mode in falloc full; do
		what="$fmt $mode on a full tmpfs"
		make_image "$fmt" "$FULL/img.$fmt"
		# qemu-img fails the same way (the oracle), on its own copy.
		cp "$FULL/img.$fmt" "$WORKDIR/q.$fmt"
		assert_fails "$VSTOR_IMG" resize -f "$fmt" --preallocation="$mode" "$FULL/img.$fmt" 64M
		assert_unchanged "$fmt" "$FULL/img.$fmt" "$what"
		assert_grep "No space left on device" "$WORKDIR/err" "$what: error"
		# The space is given back: a resize that fits still works.
		vstor_img resize -q -f "$fmt" --preallocation="$mode" "$FULL/img.$fmt" 5M ||
			fail "$what: a resize that fits after the failed one"
		assert_eq "$(size_of "$fmt" "$FULL/img.$fmt")" $((5 << 20)) "$what: size after growing to 5M"
		if [[ $fmt == qcow2 ]]; then
			qemu_img check -q "$FULL/img.$fmt" || fail "$what: qemu-img check after growing to 5M"
		fi
		qemu_img compare -f "$fmt" -F "$fmt" "$WORKDIR/ref.$fmt" "$FULL/img.$fmt" >/dev/null ||
			fail "$what: data after growing to 5M"
		rm -f "$FULL/img.$fmt"
		cp "$WORKDIR/q.$fmt" "$FULL/q.$fmt"
		assert_fails qemu_img resize -f "$fmt" --preallocation="$mode" "$FULL/q.$fmt" 64M
		rm -f "$FULL/q.$fmt" "$WORKDIR/q.$fmt"
	done
done

# vol-resize --allocate reaches the same engine code: a dir pool on the full tmpfs.
if [[ -x ${VSTOR:-$VS_BUILD_DIR/cli/vstor} ]]; then
	VSTOR=${VSTOR:-$VS_BUILD_DIR/cli/vstor}
	export VSTOR_STATE_DIR=$WORKDIR/state
	mkdir "$FULL/pool"
	assert_rc 0 timeout 120 "$VSTOR" pool-define-as p dir --target "$FULL/pool"
	assert_rc 0 timeout 120 "$VSTOR" pool-start p
	make_image qcow2 "$FULL/pool/v.qcow2"
	make_image raw "$FULL/pool/v.raw"
	assert_rc 0 timeout 120 "$VSTOR" pool-refresh p
	for fmt in qcow2 raw; do
		assert_fails timeout 120 "$VSTOR" vol-resize "v.$fmt" 64M --allocate --pool p
		assert_unchanged "$fmt" "$FULL/pool/v.$fmt" "vol-resize --allocate of $fmt on a full tmpfs"
		assert_grep "No space left on device" "$WORKDIR/err" "vol-resize --allocate of $fmt: error"
	done
	rm -rf "$FULL/pool"
fi

# --- a filesystem without fallocate (ext2 files have no extents: EOPNOTSUPP) ---
NOFALLOC=$WORKDIR/nofalloc
truncate -s 48M "$WORKDIR/ext2.img"
mkfs.ext2 -q -F "$WORKDIR/ext2.img"
mount_fs "$NOFALLOC" -o loop "$WORKDIR/ext2.img"
if fallocate -l 1M "$NOFALLOC/probe" 2>/dev/null; then
	skip_or_fail "fallocate works on ext2 here: no filesystem without fallocate to test on"
fi
rm -f "$NOFALLOC/probe"
for fmt in qcow2 raw; do
	for mode in falloc full; do
		what="$fmt $mode without fallocate"
		make_image "$fmt" "$NOFALLOC/q.$fmt"
		qemu_img resize -q -f "$fmt" --preallocation="$mode" "$NOFALLOC/q.$fmt" 12M ||
			fail "$what: qemu-img resize failed (the oracle)"
		rm -f "$NOFALLOC/q.$fmt"
		make_image "$fmt" "$NOFALLOC/img.$fmt"
		assert_rc 0 "$VSTOR_IMG" resize -f "$fmt" --preallocation="$mode" "$NOFALLOC/img.$fmt" 12M
		assert_eq "$(size_of "$fmt" "$NOFALLOC/img.$fmt")" $((12 << 20)) "$what: size"
		if [[ $fmt == qcow2 ]]; then
			qemu_img check -q "$NOFALLOC/img.$fmt" || fail "$what: qemu-img check"
		fi
		# The old data, and zeroes in the new part (compare checks the longer image's tail).
		qemu_img compare -f "$fmt" -F "$fmt" "$WORKDIR/ref.$fmt" "$NOFALLOC/img.$fmt" >/dev/null ||
			fail "$what: data after the resize"
		alloc=$(($(stat -c %b "$NOFALLOC/img.$fmt") * $(stat -c %B "$NOFALLOC/img.$fmt")))
		((alloc >= 8 << 20)) || fail "$what: only $alloc bytes allocated for the grown 8 MiB"
		rm -f "$NOFALLOC/img.$fmt"
		# Writing zeroes runs out of space: nothing changes.
		what="$fmt $mode without fallocate, out of space"
		make_image "$fmt" "$NOFALLOC/img.$fmt"
		assert_fails "$VSTOR_IMG" resize -f "$fmt" --preallocation="$mode" "$NOFALLOC/img.$fmt" 256M
		assert_unchanged "$fmt" "$NOFALLOC/img.$fmt" "$what"
		assert_grep "No space left on device" "$WORKDIR/err" "$what: error"
		rm -f "$NOFALLOC/img.$fmt"
	done
done
log "ok"
