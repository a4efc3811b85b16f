#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Backing chains at the documented limit (256 levels below the image) in
# every program: vstor-img (info --backing-chain, convert, compare, check),
# vstor-nbd (read through the chain over NBD, qemu-img compare as the
# client), vstor-vhost (the conformance run of tests/tools/vhost-client, which needs 8 MiB, on
# the top image) and a pool (vstor-nbd --pool, vol-create-as --backing-vol
# on the deepest volume). One level more is a clean error, never a crash.
# Chains used to open by recursion and overflowed the coroutine stack at
# about 47 levels (SIGSEGV).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img nbdinfo python3 cmp
require_vstor_img
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
DEPTH=256

# chain DIR: c0.qcow2 (data) <- c1 <- ... <- c$DEPTH in DIR, relative names.
# -u: qemu-img would otherwise open the whole chain for every level.
chain()
{
	mkdir -p "$1"
	qemu_img create -q -f qcow2 "$1/c0.qcow2" 8M
	qemu-io -f qcow2 -c "write -P 0x5a 0 64k" -c "write -P 0x33 3M 64k" "$1/c0.qcow2" >/dev/null
	for ((i = 1; i <= DEPTH; i++)); do
		qemu_img create -q -f qcow2 -u -b "c$((i - 1)).qcow2" -F qcow2 "$1/c$i.qcow2" 8M
	done
	# One layer in the middle has its own data, over the base's.
	qemu-io -f qcow2 -c "write -P 0x77 1M 64k" "$1/c128.qcow2" >/dev/null
}

chain img
top=img/c$DEPTH.qcow2
qemu_img convert -O raw "$top" expect.raw

# --- vstor-img ---
assert_rc 0 vstor_img info --backing-chain "$top"
assert_eq "$(grep -c '^image:' out)" $((DEPTH + 1)) "images listed by info --backing-chain"
assert_rc 0 vstor_img info --backing-chain --output=json "$top"
python3 -c 'import json,sys; assert len(json.load(open(sys.argv[1]))) == int(sys.argv[2])' \
	out $((DEPTH + 1)) || fail "info --backing-chain --output=json"
assert_rc 0 vstor_img convert -O raw "$top" got.raw
cmp got.raw expect.raw || fail "convert of a $DEPTH-deep chain reads wrong data"
assert_rc 0 vstor_img compare "$top" expect.raw
assert_rc 0 vstor_img check "$top"
assert_rc 0 vstor_img map --output=json "$top"

# One level more than the limit: a clean error.
qemu_img create -q -f qcow2 -u -b "c$DEPTH.qcow2" -F qcow2 img/over.qcow2 8M
assert_fails vstor_img info --backing-chain img/over.qcow2
assert_grep "deeper than $DEPTH" err "one level past the limit"
assert_fails vstor_img convert -O raw img/over.qcow2 over.raw
assert_grep "deeper than $DEPTH" err "convert one level past the limit"

# --- vstor-nbd ---
start_daemon nbd.pid 60 "$VSTOR_NBD" -t -r -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" \
	-f qcow2 "$top"
assert_rc 0 qemu_img compare -f raw "nbd+unix:///?socket=$WORKDIR/nbd.sock" expect.raw
timeout 60 nbdinfo --map "nbd+unix:///?socket=$WORKDIR/nbd.sock" >map.out ||
	fail "nbdinfo --map through a deep chain"
stop_pid "$DAEMON_PID"

# --- vstor-vhost: writes land in the top image, reads go through 256 levels ---
cp -r img vimg
start_daemon vh.pid 60 "$VSTOR_VHOST" --socket "$WORKDIR/vh.sock" -f qcow2 \
	--pid-file "$WORKDIR/vh.pid" "vimg/c$DEPTH.qcow2"
timeout 300 "$VHOST_CLIENT" "$WORKDIR/vh.sock" conformance >vh.out 2>&1 || {
	cat vh.out >&2
	fail "vhost-client conformance on a $DEPTH-deep chain"
}
stop_pid "$DAEMON_PID"
qemu_img check -q "vimg/c$DEPTH.qcow2" || fail "qemu-img check after vhost I/O"

# --- a pool: the chain as volumes, and one more level by vol-create-as ---
timeout 120 "$VSTOR" pool-define-as deep dir --target "$WORKDIR/img" >/dev/null
timeout 120 "$VSTOR" pool-start deep >/dev/null
rm img/over.qcow2
assert_rc 0 timeout 120 "$VSTOR" vol-create-as deep next.qcow2 8M --format qcow2 \
	--backing-vol "c$DEPTH.qcow2" --backing-vol-format qcow2
assert_fails vstor_img info --backing-chain vol:deep/next.qcow2
assert_grep "deeper than $DEPTH" err "a pool volume one level past the limit"
assert_rc 0 vstor_img convert -O raw "vol:deep/c$DEPTH.qcow2" pool.raw
cmp pool.raw expect.raw || fail "a $DEPTH-deep chain of pool volumes reads wrong data"
log "ok"
