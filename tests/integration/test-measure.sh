#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img measure against qemu-img measure: the same required and fully
# allocated sizes (and bitmaps line), human and JSON, for --size and for
# input images (raw with holes, qcow2 with data, zero and compressed
# clusters, a backing chain, a snapshot), over cluster sizes, refcount
# widths, extended L2, compat, preallocation and a backing file; the same
# messages for bad input; and a converted image fits in the required size.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io
require_vstor_img

n=0
same_measure()
{
	local a b
	a=$("$VSTOR_IMG" measure "$@" 2>&1; echo "rc=$?")
	b=$(qemu_img measure "$@" 2>&1; echo "rc=$?")
	[[ $a == "${b//qemu-img/vstor-img}" ]] || fail "measure $*: got '$a', qemu-img says '$b'"
	n=$((n + 1))
}

qemu_img create -q -f raw holes.raw 20M
qemu-io -f raw -c 'write -P 1 0 100k' -c 'write -P 2 5M 3M' -c 'write -P 3 19M 1k' holes.raw >/dev/null
qemu_img create -q -f qcow2 -o cluster_size=4k data.qcow2 30M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 2M' -c 'write -P 4 10M 70k' -c 'write -P 5 29M 1M' data.qcow2 >/dev/null
qemu_img snapshot -c snap data.qcow2
qemu-io -c 'write -P 6 20M 1M' data.qcow2 >/dev/null
qemu_img convert -c -O qcow2 holes.raw compressed.qcow2
qemu_img create -q -f qcow2 -b data.qcow2 -F qcow2 overlay.qcow2 40M
qemu-io -c 'write -P 7 35M 64k' overlay.qcow2 >/dev/null
qemu_img create -q -f qcow2 -o extended_l2=on,cluster_size=128k ext.qcow2 8M
qemu-io -c 'write -P 8 4k 4k' -c 'write -P 9 1M 300k' ext.qcow2 >/dev/null

for o in "" cluster_size=512 cluster_size=4k cluster_size=2M refcount_bits=1 refcount_bits=64 \
	extended_l2=on extended_l2=on,cluster_size=32k preallocation=full preallocation=falloc \
	preallocation=metadata compat=0.10 backing_file=x.qcow2 lazy_refcounts=on; do
	oo=()
	[[ -n $o ]] && oo=(-o "$o")
	for s in 0 1 511 65537 100M 3G 1T; do
		same_measure -O qcow2 "${oo[@]}" --size "$s"
	done
	for f in holes.raw data.qcow2 compressed.qcow2 overlay.qcow2 ext.qcow2; do
		same_measure -O qcow2 "${oo[@]}" "$f"
	done
done
for f in holes.raw data.qcow2 overlay.qcow2; do
	same_measure -O qcow2 --output=json "$f"
	same_measure -O raw "$f"
	same_measure --output=json -O raw "$f"
done
same_measure -O qcow2 -l snap data.qcow2
same_measure -O qcow2 -f raw data.qcow2
same_measure -O qcow2 --output=json --size 7G
same_measure -O qcow2 -o compat=0.10 --output=json data.qcow2
# qemu-img's messages for bad input.
same_measure
same_measure --size 1G holes.raw
same_measure -O qcow2 -o cluster_size=3k --size 1G
same_measure -O qcow2 -o foo=bar --size 1G
same_measure -O qcow2 -o cluster_size=512 --size 1P
same_measure -O qcow2 -o compat=0.10,refcount_bits=8 --size 1G
same_measure -O foo --size 1G
for o in compat=0.10,lazy_refcounts=on compat=0.10,extended_l2=on extended_l2=on,cluster_size=4k \
	refcount_bits=3 compat=0.10,compression_type=zstd compat=2 preallocation=bad \
	lazy_refcounts=maybe cluster_size=foo refcount_bits=x; do
	same_measure -O qcow2 -o "$o" --size 1G
done

# The required size is enough for the converted image.
for f in holes.raw data.qcow2 overlay.qcow2; do
	req=$("$VSTOR_IMG" measure -O qcow2 --output=json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["required"])')
	vstor_img convert -O qcow2 "$f" out.qcow2 || fail "convert $f"
	size=$(stat -c %s out.qcow2)
	((size <= req)) || fail "$f: converted image is $size bytes, measure said $req"
done
log "ok ($n comparisons)"
