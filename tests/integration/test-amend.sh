#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img amend against qemu-img: compat up and down (zero clusters
# expanded, with and without a backing file), lazy_refcounts on and off (a
# dirty image made clean), refcount_bits rebuilt at every width and back,
# refused where qemu-img refuses it, with its messages; after each step the
# image passes qemu-img check, reads the same, and qemu-img reads the header
# the same way. qemu-img amends what vstor amended.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3
require_vstor_img

same() { qemu_img compare -q "$1" "$2" || fail "${3:-}: $1 and $2 differ"; }
clean() { qemu_img check -q "$1" || fail "${2:-}: qemu-img check $1"; }
field() { qemu_img info --output=json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin)["format-specific"]["data"]; print(d.get(sys.argv[1]))' "$2"; }

qemu_img create -q -f qcow2 a.qcow2 10M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 1M' -c 'write -P 2 5M 64k' -c 'write -z -u 5M 64k' a.qcow2 >/dev/null
cp a.qcow2 ref.qcow2

step()
{
	vstor_img amend -o "$1" a.qcow2 || fail "amend -o $1"
	clean a.qcow2 "amend -o $1"
	same a.qcow2 ref.qcow2 "amend -o $1"
}
step compat=0.10
assert_eq "$(field a.qcow2 compat)" 0.10 "compat after downgrade"
step compat=1.1
assert_eq "$(field a.qcow2 compat)" 1.1 "compat after upgrade"
step lazy_refcounts=on
assert_eq "$(field a.qcow2 lazy-refcounts)" True "lazy refcounts on"
for bits in 1 2 4 8 32 64 16; do
	step refcount_bits=$bits
	assert_eq "$(field a.qcow2 refcount-bits)" "$bits" "refcount bits $bits"
	qemu-io -c "write -P $bits 8M 128k" a.qcow2 >/dev/null
	qemu-io -c "write -P $bits 8M 128k" ref.qcow2 >/dev/null
	clean a.qcow2 "write after refcount_bits=$bits"
done
step lazy_refcounts=off
assert_eq "$(field a.qcow2 lazy-refcounts)" False "lazy refcounts off"
# compat=0.10 on a lazy-refcounts image clears them, as qemu-img does.
step lazy_refcounts=on
step compat=0.10
step compat=1.1,lazy_refcounts=on,refcount_bits=8
assert_eq "$(field a.qcow2 refcount-bits)" 8 "combined amend"
step refcount_bits=16
# A bigger image and size.
vstor_img amend -o size=20M a.qcow2 || fail "amend -o size"
assert_eq "$(qemu_img info --output=json a.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" $((20 << 20)) "amend size"
clean a.qcow2 "amend size"

step lazy_refcounts=off

# qemu-img's refusals and messages.
expect_err() # OPTS MESSAGE
{
	assert_rc 1 "$VSTOR_IMG" amend -o "$1" a.qcow2
	assert_grep "$2" "$WORKDIR/err" "amend -o $1"
	clean a.qcow2 "refused amend -o $1"
}
expect_err compat=0.10,refcount_bits=8 "Refcount widths other than 16 bits require compatibility level 1.1"
expect_err compat=0.10,lazy_refcounts=on "Lazy refcounts only supported with compatibility level 1.1"
expect_err cluster_size=4k "Invalid parameter 'cluster_size'"
expect_err foo=bar "Invalid parameter 'foo'"
expect_err compat=2 "Unknown compatibility level 2"
expect_err refcount_bits=3 "Refcount width must be a power of two"
expect_err lazy_refcounts=maybe "Parameter 'lazy_refcounts' expects 'on' or 'off'"
assert_rc 1 "$VSTOR_IMG" amend a.qcow2
assert_grep "Must specify options \(-o\)" "$WORKDIR/err" "amend without -o"
qemu_img create -q -f raw r.raw 1M
assert_rc 1 "$VSTOR_IMG" amend -f raw -o size=2M r.raw
assert_grep "Format driver 'raw' does not support option amendment" "$WORKDIR/err" "amend raw"
qemu_img create -q -f qcow2 -o extended_l2=on x.qcow2 1M
assert_rc 1 "$VSTOR_IMG" amend -o compat=0.10 x.qcow2
assert_grep "Cannot downgrade an image with incompatible features 0x10 set" "$WORKDIR/err" "downgrade extl2"
qemu_img create -q -f qcow2 -o refcount_bits=8 x.qcow2 1M
assert_rc 1 "$VSTOR_IMG" amend -o compat=0.10 x.qcow2
assert_grep "compat=0.10 requires refcount_bits=16" "$WORKDIR/err" "downgrade refcount_bits=8"
# A snapshot shares clusters: refcount 2 does not fit one bit.
qemu_img create -q -f qcow2 s.qcow2 1M
qemu-io -c 'write -P 1 0 64k' s.qcow2 >/dev/null
qemu_img snapshot -c snap s.qcow2
assert_rc 1 "$VSTOR_IMG" amend -o refcount_bits=1 s.qcow2
assert_grep "Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x[0-9a-f]+ has a refcount of 2" "$WORKDIR/err" "refcount too wide"
clean s.qcow2 "refused narrowing"
vstor_img amend -o refcount_bits=2 s.qcow2 || fail "refcount_bits=2 with a snapshot"
clean s.qcow2 "refcount_bits=2 with a snapshot"
qemu_img snapshot -l s.qcow2 | grep -q snap || fail "snapshot lost"
vstor_img amend -o compat=0.10 s.qcow2 2>/dev/null && fail "compat=0.10 with refcount_bits=2"
vstor_img amend -o refcount_bits=16 s.qcow2 && vstor_img amend -o compat=0.10 s.qcow2 || fail "downgrade with a snapshot"
clean s.qcow2 "downgrade with a snapshot"
qemu_img amend -o compat=1.1 s.qcow2 || fail "qemu-img upgrades what vstor downgraded"
clean s.qcow2 "qemu-img upgrade"

# Zero clusters over a backing file become zeroed data clusters in v2.
qemu_img create -q -f qcow2 b.qcow2 4M
qemu-io -c 'write -P 9 0 4M' b.qcow2 >/dev/null
qemu_img create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2
qemu-io -c 'write -z 64k 128k' -c 'write -P 3 1M 64k' -c 'write -z -u 1M 64k' o.qcow2 >/dev/null
cp o.qcow2 o.ref.qcow2
vstor_img amend -o compat=0.10 o.qcow2 || fail "downgrade over a backing file"
clean o.qcow2 "downgrade over a backing file"
same o.qcow2 o.ref.qcow2 "downgrade over a backing file"
assert_eq "$(field o.qcow2 compat)" 0.10 "overlay downgraded"

# A dirty lazy-refcounts image (killed writer) is repaired on open and amended.
qemu_img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 4M
qemu-io -c 'write -P 4 0 1M' -c 'sigraise 9' d.qcow2 >/dev/null 2>&1 || true
vstor_img amend -o lazy_refcounts=off d.qcow2 2>/dev/null || fail "amend a dirty image"
clean d.qcow2 "amend a dirty image"
qemu-io -c 'read -P 4 0 1M' d.qcow2 | grep -q "Pattern verification failed" && fail "dirty image data"

# qemu-img amends what vstor amended, and the reverse.
vstor_img amend -o refcount_bits=4 a.qcow2
qemu_img amend -o refcount_bits=16 a.qcow2 || fail "qemu-img amend after vstor"
clean a.qcow2 "qemu-img after vstor"
qemu_img amend -o refcount_bits=32,compat=1.1 a.qcow2
vstor_img amend -o refcount_bits=16 a.qcow2 || fail "vstor amend after qemu-img"
clean a.qcow2 "vstor after qemu-img"
# A preallocated zero cluster shared with a snapshot (write -z without unmap
# after the snapshot): the downgrade writes its zeroes elsewhere, so the
# snapshot keeps its data (a regression: it was zeroed in place).
qemu_img create -q -f qcow2 z.qcow2 1M
qemu-io -c 'write -P 0x5a 0 128k' z.qcow2 >/dev/null
qemu_img snapshot -c keep z.qcow2
qemu-io -c 'write -z 0 64k' z.qcow2 >/dev/null
qemu_img convert -l snapshot.name=keep -O raw z.qcow2 keep.raw
qemu_img convert -O raw z.qcow2 active.raw
vstor_img amend -o compat=0.10 z.qcow2 || fail "downgrade with a shared zero cluster"
clean z.qcow2 "downgrade with a shared zero cluster"
qemu_img convert -l snapshot.name=keep -O raw z.qcow2 keep2.raw
cmp keep.raw keep2.raw || fail "downgrade changed the snapshot's data"
qemu_img compare -q active.raw z.qcow2 || fail "downgrade changed the active image"
# A snapshot taken at another disk size cannot be described by a v2 entry.
qemu_img create -q -f qcow2 g.qcow2 1M
qemu_img snapshot -c small g.qcow2
qemu_img resize -q g.qcow2 2M
assert_rc 1 "$VSTOR_IMG" amend -o compat=0.10 g.qcow2
assert_grep "Internal snapshots prevent downgrade of image" "$WORKDIR/err" "downgrade with a resized snapshot"
# backing_file / backing_fmt may only repeat what the header holds, as in
# qemu-img (changing them is rebase's job): the image is left as it was.
qemu_img create -q -f qcow2 bb.qcow2 1M
qemu_img create -q -f qcow2 -b bb.qcow2 -F qcow2 bo.qcow2
cp bo.qcow2 bo-ref.qcow2
for o in backing_file=x backing_file=bb.qcow2 backing_fmt=raw backing_file=bb.qcow2,backing_fmt=raw; do
	assert_rc 1 qemu-img amend -o "$o" bo.qcow2
	assert_rc 1 "$VSTOR_IMG" amend -o "$o" bo.qcow2
	assert_grep "Cannot amend the backing file" "$WORKDIR/err" "amend -o $o"
	cmp bo.qcow2 bo-ref.qcow2 || fail "amend -o $o changed the image"
done
vstor_img amend -o backing_file=bb.qcow2,backing_fmt=qcow2 bo.qcow2 || fail "amend repeating the backing file"
assert_rc 1 "$VSTOR_IMG" amend -o backing_file=bb.qcow2 z.qcow2
# An empty value is not "none": refused on an image without a backing file too.
cp bb.qcow2 bb-ref.qcow2
for o in backing_file= backing_fmt=; do
	assert_rc 1 qemu-img amend -o "$o" bb.qcow2
	assert_rc 1 "$VSTOR_IMG" amend -o "$o" bb.qcow2
	assert_grep "Cannot amend the backing file" "$WORKDIR/err" "amend -o $o without a backing file"
	cmp bb.qcow2 bb-ref.qcow2 || fail "amend -o $o changed the image"
done
# Both tools on the same input give the same result: a narrowing to 16 bits
# and a downgrade in one call; a shrink of a v3 image with snapshots (they
# keep their clusters and size); a v2 image with snapshots cannot change size.
for spec in "refcount_bits=64|compat=0.10,refcount_bits=16|" \
	"refcount_bits=8|refcount_bits=16,compat=0.10|" \
	"|size=32M|snap" "|size=16M,compat=0.10|snap" "compat=0.10|size=32M|snap"; do
	IFS='|' read -r copts aopts snap <<<"$spec"
	for who in q v; do
		qemu_img create -q -f qcow2 ${copts:+-o "$copts"} am-$who.qcow2 64M
		qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 60M 1M' am-$who.qcow2 >/dev/null
		if [[ -n $snap ]]; then
			qemu_img snapshot -c s1 am-$who.qcow2
			qemu-io -c 'write -P 3 61M 64k' -c 'write -P 4 1M 64k' am-$who.qcow2 >/dev/null
		fi
	done
	qrc=0 vrc=0
	qemu-img amend -o "$aopts" am-q.qcow2 >q.out 2>q.err || qrc=$?
	"$VSTOR_IMG" amend -o "$aopts" am-v.qcow2 >v.out 2>v.err || vrc=$?
	assert_eq "$vrc" "$qrc" "amend -o $aopts on ${copts:-default}${snap:+ with a snapshot}: exit code"
	sed -i 's/^qemu-img: //' q.err
	sed -i 's/^vstor-img: //' v.err
	cmp -s q.err v.err || fail "amend -o $aopts: stderr '$(cat v.err)', qemu-img's '$(cat q.err)'"
	qemu_img check -q am-v.qcow2 || fail "amend -o $aopts: check"
	qemu_img compare -q am-q.qcow2 am-v.qcow2 || fail "amend -o $aopts: data differs"
	for f in compat refcount-bits virtual-size; do
		assert_eq "$(qemu_img info --output=json am-v.qcow2 | grep "\"$f\"")" \
			"$(qemu_img info --output=json am-q.qcow2 | grep "\"$f\"")" "amend -o $aopts: $f"
	done
	if [[ -n $snap && $qrc == 0 ]]; then
		qemu_img convert -l snapshot.name=s1 -O raw am-q.qcow2 snq.raw
		qemu_img convert -l snapshot.name=s1 -O raw am-v.qcow2 snv.raw
		cmp snq.raw snv.raw || fail "amend -o $aopts: the snapshot reads differently"
	fi
done
log "ok"
