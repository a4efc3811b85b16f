#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img compact (qemu-img has none): images with holes from discards and
# zeroed clusters shrink to about their allocated data, read the same as a
# copy made before (qemu-img compare) and pass qemu-img check; compressed
# clusters, extended L2, an overlay and v2 images too; images with internal
# snapshots and images in use are refused; a compact killed at random
# moments leaves an image that is either the old or the new one (clean,
# same content).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd python3
require_vstor_img

same() { qemu_img compare -q "$1" "$2" || fail "${3:-}: $1 and $2 differ"; }
clean() { qemu_img check -q "$1" || fail "${2:-}: qemu-img check $1"; }
fsize() { stat -c %s "$1"; }
qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }
unlocked() { qemu-img info "$1" >/dev/null 2>&1; }
not_running() { ! kill -0 "$1" 2>/dev/null; }

# compact_case NAME: compact NAME.qcow2, compare with a copy, check the shrink.
compact_case()
{
	local img=$1.qcow2 before after alloc
	cp "$img" "$1.ref.qcow2"
	before=$(fsize "$img")
	vstor_img compact "$img" >out.txt || fail "$1: compact"
	assert_grep "Image compacted: $before -> [0-9]+ bytes" out.txt "$1: message"
	after=$(fsize "$img")
	clean "$img" "$1"
	same "$img" "$1.ref.qcow2" "$1"
	# About the allocated data: the clusters in use plus the few old metadata holes.
	alloc=$(qemu_img check --output=json "$img" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["allocated-clusters"])')
	echo "$1: $before -> $after bytes" >&2
	((after < before)) || fail "$1: the file did not shrink ($before -> $after)"
	printf '%s %s\n' "$after" "$alloc" >"$1.sizes"
}

# Plain: data everywhere, then holes in the middle and at the front.
qemu_img create -q -f qcow2 a.qcow2 64M
qio -c 'write -P 1 0 16M' -c 'write -P 2 16M 16M' -c 'write -P 3 32M 16M' -c 'write -P 4 48M 16M' a.qcow2
qio -c 'discard 0 8M' -c 'write -z -u 20M 8M' -c 'discard 40M 4M' -c 'write -P 5 41M 64k' a.qcow2
compact_case a
read -r after alloc <a.sizes
# 64 KiB clusters: the data clusters, the metadata (header, L1, L2, refcounts) and
# the holes the old metadata left: a dozen clusters at most.
((after <= (alloc + 12) * 65536)) || fail "a: $after bytes for $alloc clusters in use"
# A second run has nothing to move.
vstor_img compact -q a.qcow2 || fail "second compact"
assert_eq "$(fsize a.qcow2)" "$after" "second compact keeps the size"
# qemu-img writes to it afterwards.
qio -c 'write -P 6 60M 4M' a.qcow2
clean a.qcow2 "write after compact"

# Compressed clusters stay in place; the rest moves around them.
qemu_img create -q -f raw src.raw 32M
qio -f raw -c 'write -P 7 0 32M' src.raw
qemu_img convert -c -O qcow2 src.raw c.qcow2
qio -c 'write -P 8 4M 8M' -c 'write -P 9 20M 4M' -c 'discard 0 2M' -c 'discard 4M 4M' c.qcow2
compact_case c

# Extended L2 with subclusters, 4 KiB clusters, v2, lazy refcounts.
qemu_img create -q -f qcow2 -o extended_l2=on,cluster_size=128k e.qcow2 32M
qio -c 'write -P 1 0 32M' -c 'write -P 2 4k 8k' -c 'discard 0 16M' e.qcow2
compact_case e
qemu_img create -q -f qcow2 -o cluster_size=4k s.qcow2 8M
qio -c 'write -P 1 0 8M' -c 'discard 1M 3M' -c 'write -z -u 6M 512k' s.qcow2
compact_case s
# 512-byte clusters: an L1 table of several clusters, many refcount blocks.
qemu_img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 t.qcow2 8M
qio -c 'write -P 1 0 8M' -c 'discard 1M 5M' -c 'write -z -u 7M 200k' t.qcow2
compact_case t
qemu_img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
qio -c 'write -P 1 0 16M' -c 'discard 2M 10M' v2.qcow2
compact_case v2
qemu_img create -q -f qcow2 -o lazy_refcounts=on l.qcow2 16M
qio -c 'write -P 1 0 16M' -c 'discard 0 10M' l.qcow2
compact_case l

# An overlay: its own clusters move, the backing file is not touched.
qemu_img create -q -f qcow2 base.qcow2 16M
qio -c 'write -P 3 0 16M' base.qcow2
qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 o.qcow2
qio -c 'write -P 4 0 12M' -c 'write -z 1M 6M' -c 'discard 8M 2M' o.qcow2
cp base.qcow2 base.ref.qcow2
compact_case o
cmp -s base.qcow2 base.ref.qcow2 || fail "compact of an overlay changed its backing file"

# Refusals.
qemu_img create -q -f qcow2 snap.qcow2 4M
qio -c 'write -P 1 0 4M' -c 'discard 0 2M' snap.qcow2
qemu_img snapshot -c s1 snap.qcow2
assert_rc 1 "$VSTOR_IMG" compact snap.qcow2
assert_grep "internal snapshots" "$WORKDIR/err" "compact with snapshots"
qemu_img create -q -f raw r.raw 1M
assert_rc 1 "$VSTOR_IMG" compact -f raw r.raw
assert_grep "does not support compaction" "$WORKDIR/err" "compact raw"
# Exclusive: a reader (read-only qemu-nbd) keeps compact out.
timeout 60 qemu-nbd --fork --persistent -r --pid-file="$WORKDIR/nbd.pid" \
	-k "$WORKDIR/nbd.sock" -f qcow2 a.qcow2 || fail "qemu-nbd did not start"
nbd_pid=$(<"$WORKDIR/nbd.pid")
register_pid "$nbd_pid"
assert_rc 1 "$VSTOR_IMG" compact a.qcow2
assert_grep "lock" "$WORKDIR/err" "compact of an image in use"
stop_pid "$nbd_pid"
wait_for 10 not_running "$nbd_pid"
# JSON output.
qio -c 'discard 8M 4M' a.qcow2
vstor_img compact --output=json a.qcow2 >out.json || fail "compact --output=json"
python3 -c 'import json,sys; d=json.load(open("out.json")); assert d["new-size"] < d["old-size"], d' ||
	fail "compact JSON"

# Killed at random moments: the image is the old or the new one, never broken.
qemu_img create -q -f qcow2 -o cluster_size=4k k.qcow2 48M
qio -c 'write -P 1 0 48M' -c 'discard 0 20M' -c 'discard 30M 6M' k.qcow2
cp k.qcow2 k.ref.qcow2
for i in 1 2 3 4 5 6; do
	cp k.ref.qcow2 k.qcow2
	"$VSTOR_IMG" compact -q k.qcow2 &
	pid=$!
	sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	# The kernel drops the lock of a killed io_uring user a moment after it is gone.
	wait_for 10 unlocked k.qcow2
	qemu_img check -q k.qcow2 || fail "kill $i: qemu-img check after a killed compact"
	same k.qcow2 k.ref.qcow2 "kill $i"
	vstor_img compact -q k.qcow2 || fail "kill $i: compact again"
	clean k.qcow2 "kill $i: compact again"
	same k.qcow2 k.ref.qcow2 "kill $i: compact again"
done
# Its crash safety needs flushes and an exclusive lock: no -t unsafe, and
# nothing that cannot be locked (here an NBD export).
qemu_img create -q -f qcow2 u.qcow2 16M
assert_rc 1 "$VSTOR_IMG" compact -t unsafe u.qcow2
assert_grep "unsafe" "$WORKDIR/err" "compact -t unsafe"
if command -v qemu-nbd >/dev/null; then
	start_daemon "$WORKDIR/qn.pid" 20 qemu-nbd -t -k "$WORKDIR/qn.sock" -f raw \
		--pid-file="$WORKDIR/qn.pid" u.qcow2
	assert_rc 1 "$VSTOR_IMG" compact "nbd+unix:///?socket=$WORKDIR/qn.sock"
	assert_grep "exclusive lock" "$WORKDIR/err" "compact over NBD"
	stop_pid "$DAEMON_PID"
fi
log "ok"
