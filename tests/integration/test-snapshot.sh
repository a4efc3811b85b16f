#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img snapshot: snapshots created and deleted by vstor are what
# qemu-img snapshot -l lists, vstor-img snapshot -l prints exactly qemu-img's
# table (for vstor's and qemu's own snapshots), the data of a snapshot is
# kept, qemu-img check stays clean, and errors are qemu-img's.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io
require_vstor_img

same_list()
{
	vstor_img snapshot -l "$@" >vs.list || fail "vstor-img snapshot -l $*"
	qemu_img snapshot -l "$@" >qemu.list || fail "qemu-img snapshot -l $*"
	diff -u qemu.list vs.list >&2 || fail "snapshot -l output differs ($*)"
}

clean()
{
	qemu_img check "$1" >check.out 2>&1 || {
		cat check.out >&2
		fail "qemu-img check $1 ($2)"
	}
}

qemu_img create -f qcow2 s.qcow2 16M >/dev/null
same_list s.qcow2
[[ ! -s vs.list ]] || fail "an image without snapshots lists something"
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x12 9M 64K' s.qcow2 >/dev/null
qemu_img convert -f qcow2 -O raw s.qcow2 first.raw

vstor_img snapshot -c first s.qcow2 || fail "snapshot -c first"
clean s.qcow2 "after -c first"
qemu-io -f qcow2 -c 'write -P 0x22 0 512K' -c 'write -z 9M 64K' s.qcow2 >/dev/null
qemu_img convert -f qcow2 -O raw s.qcow2 second.raw
vstor_img snapshot -q -f qcow2 -c second s.qcow2 || fail "snapshot -c second"
qemu_img snapshot -c third s.qcow2
clean s.qcow2 "after -c second"

qemu_img snapshot -l s.qcow2 >qemu.list
assert_grep '^Snapshot list:$' qemu.list "qemu-img snapshot -l"
assert_grep '^1 +first ' qemu.list "qemu-img sees first"
assert_grep '^2 +second ' qemu.list "qemu-img sees second"
assert_grep '^3 +third ' qemu.list "qemu-img sees third"
# ICOUNT as qemu-img snapshot -c writes it: 0 (qemu-img prints a blank for -1).
assert_grep '^1 +first .* 0$' qemu.list "first's icount"
same_list s.qcow2
same_list -U s.qcow2
# qemu-img 7.2 snapshot has no -f; vstor-img accepts it.
vstor_img snapshot -l -f qcow2 s.qcow2 >vs-f.list || fail "snapshot -l -f qcow2"
cmp vs-f.list qemu.list || fail "snapshot -l -f qcow2 output differs"

qemu_img convert -f qcow2 -O raw -l first s.qcow2 got-first.raw
cmp got-first.raw first.raw || fail "snapshot first does not hold the data"
qemu_img convert -f qcow2 -O raw -l second s.qcow2 got-second.raw
cmp got-second.raw second.raw || fail "snapshot second does not hold the data"

# Delete by name and by id; the others keep their data.
vstor_img snapshot -d first s.qcow2 || fail "snapshot -d first"
clean s.qcow2 "after -d first"
vstor_img snapshot -d 3 s.qcow2 || fail "snapshot -d 3"
clean s.qcow2 "after -d 3"
qemu_img snapshot -l s.qcow2 >qemu.list
assert_grep '^2 +second ' qemu.list "second survives"
grep -qE '^(1|3) ' qemu.list && fail "deleted snapshots still listed"
same_list s.qcow2
qemu_img convert -f qcow2 -O raw -l second s.qcow2 got-second.raw
cmp got-second.raw second.raw || fail "second changed by the deletions"
vstor_img snapshot -d second s.qcow2 || fail "snapshot -d second"
clean s.qcow2 "after the last -d"
same_list s.qcow2
[[ ! -s vs.list ]] || fail "snapshots left after deleting all"
qemu_img convert -f qcow2 -O raw s.qcow2 active.raw
qemu_img compare -f raw -F raw active.raw second.raw >/dev/null ||
	fail "the active image changed"

# -a: vstor-img and qemu-img revert copies of one image alike, to the
# contents (and size) it had at snapshot time.
qemu_img create -f qcow2 a.qcow2 16M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x12 9M 64K' a.qcow2 >/dev/null
vstor_img snapshot -c snap a.qcow2 || fail "snapshot -c snap"
cp a.qcow2 at-snap.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 0 512K' -c 'write -z 9M 64K' -c 'write -P 0x33 15M 1M' \
	a.qcow2 >/dev/null
qemu_img resize a.qcow2 32M >/dev/null
cp a.qcow2 a-qemu.qcow2
vstor_img snapshot -a snap a.qcow2 || fail "snapshot -a snap"
qemu_img snapshot -a snap a-qemu.qcow2
clean a.qcow2 "after -a"
qemu_img compare -s at-snap.qcow2 a.qcow2 >/dev/null || fail "-a did not revert the image"
qemu_img compare a-qemu.qcow2 a.qcow2 >/dev/null || fail "-a differs from qemu-img's"
same_list a.qcow2
qemu-io -f qcow2 -c 'write -P 0x44 0 2M' a.qcow2 >/dev/null
clean a.qcow2 "writing after -a"
qemu_img convert -f qcow2 -O raw -l snap a.qcow2 got-snap.raw
qemu_img compare -F qcow2 got-snap.raw at-snap.qcow2 >/dev/null ||
	fail "writing after -a changed the snapshot"
vstor_img snapshot -d 1 a.qcow2 || fail "snapshot -d after -a"
clean a.qcow2 "-d after -a"
assert_rc 1 "$VSTOR_IMG" snapshot -a nope a.qcow2
assert_grep "^vstor-img: Could not apply snapshot 'nope': " "$WORKDIR/err" "-a unknown"

# Errors, as qemu-img reports them.
assert_rc 1 "$VSTOR_IMG" snapshot -d nope s.qcow2
assert_grep "^vstor-img: Could not delete snapshot 'nope': " "$WORKDIR/err" "unknown snapshot"
assert_rc 1 "$VSTOR_IMG" snapshot -l -c x s.qcow2
assert_grep "Cannot mix '-l', '-a', '-c', '-d'" "$WORKDIR/err" "two actions"
assert_rc 1 "$VSTOR_IMG" snapshot -U -c x s.qcow2
assert_grep "force-share=on can only be used with read-only images" "$WORKDIR/err" "-U -c"
assert_rc 1 "$VSTOR_IMG" snapshot -l
assert_grep "Expecting one image file name" "$WORKDIR/err" "no file name"
assert_rc 1 "$VSTOR_IMG" snapshot -l nonexistent.qcow2
assert_grep "^vstor-img: Could not open 'nonexistent.qcow2'" "$WORKDIR/err" "missing image"
qemu_img create -f raw r.raw 1M >/dev/null
assert_rc 1 "$VSTOR_IMG" snapshot -f raw -c x r.raw
assert_grep "^vstor-img: Could not create snapshot 'x': " "$WORKDIR/err" "raw -c"
assert_rc 0 "$VSTOR_IMG" snapshot -f raw -l r.raw
[[ ! -s $WORKDIR/out ]] || fail "raw -l lists something"
qemu_img snapshot -l s.qcow2 >/dev/null
clean s.qcow2 "at the end"
