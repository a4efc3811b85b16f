#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Issue 13's live-disk test: a real QEMU guest writes and verifies seeded
# patterns in rounds (tests/vm/guest/live-verify.sh, O_DIRECT and fsync) on
# a vstord export while the host, through QMP (vstord_live.py), takes an
# external snapshot, commits it back actively with the pivot, mirrors the
# disk to a qcow2 volume of a dir pool (vol:POOL/VOL) with the pivot,
# resizes it (the guest sees the new size), and throttles the export (the
# guest's own measure of its write rate within 10% of the limit), then
# lifts the limit. The guest verifies every round; its last round reads
# the same from the final image on the host (qemu-io read -P, and the
# checksum the guest printed), and every image passes qemu-img check.
# Run 1: vhost-user-blk (vhost-user-blk-pci); run 2: NBD (QEMU's NBD client
# under virtio-blk), without the resize, which NBD cannot tell a client.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
export VSTOR_STATE_DIR=$WORKDIR/state
require_tool qemu-img qemu-io python3 md5sum
find_built VSTORD vstord/vstord
find_built VSTOR cli/vstor
vm_prepare
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir pool
vstor pool-define-as live dir --target "$WORKDIR/pool" >/dev/null || fail "pool-define-as"
vstor pool-start live >/dev/null || fail "pool-start"

# live_run NAME RESIZE-BYTES VSTORD-ARGS... -- QEMU-DISK-ARGS...
# The export is "v" on node "base"; VSTORD-ARGS make it.
live_run()
{
	local name=$1 resize=$2 vdargs=()
	shift 2
	while [[ $1 != -- ]]; do
		vdargs+=("$1")
		shift
	done
	shift
	local dir=$WORKDIR/$name
	mkdir "$dir"
	qemu_img create -q -f qcow2 "$dir/disk.qcow2" 64M
	vstor vol-create-as live "$name.qcow2" 64M --format qcow2 >/dev/null || fail "vol-create-as"
	truncate -s 1M "$dir/ctl.raw"
	start_daemon "$dir/vd.pid" 30 "$VSTORD" --pidfile "$dir/vd.pid" --monitor "$dir/vd.sock" \
		--blockdev "driver=file,node-name=f,filename=$dir/disk.qcow2" \
		--blockdev driver=qcow2,node-name=base,file=f \
		"${vdargs[@]}"
	local vd_pid=$DAEMON_PID sectors=0
	((resize)) && sectors=$((resize / 512))
	# The guest's console lives in the run's own directory.
	WORKDIR=$dir vm_run guest 600 live-verify "$sectors" -- "$@" \
		-drive "file=$dir/ctl.raw,format=raw,if=none,id=ctl" -device virtio-blk-pci,drive=ctl &
	local guest=$!
	python3 "$VS_SOURCE_DIR/tests/integration/vstord_live.py" "$dir" base v "$name.qcow2" \
		"$resize" >"$dir/final" || {
		# Stop the guest: its QEMU runs under timeout(1), the child of $guest.
		pkill -TERM -P "$guest" 2>/dev/null || true
		wait "$guest" 2>/dev/null || true
		fail "$name: the host side failed"
	}
	wait "$guest" || fail "$name: the guest did not pass"
	[[ $(<"$dir/final") == tgt ]] || fail "$name: the export ends on '$(<"$dir/final")'"
	stop_pid "$vd_pid"

	local console=$dir/guest.console vol=$WORKDIR/pool/$name.qcow2 last md5 m b
	grep -q "mismatch\|failed" "$console" && fail "$name: the guest saw a bad round"
	last=$(sed -n 's/^VSTOR-LIVE: last-round \([0-9]*\).*/\1/p' "$console")
	md5=$(sed -n 's/^VSTOR-LIVE: md5 \([0-9a-f]*\).*/\1/p' "$console")
	[[ -n $last && -n $md5 ]] || fail "$name: no last round or checksum on the console"
	log "$name: $(grep -c 'round [0-9]* ok' "$console") rounds verified"
	for img in "$dir/disk.qcow2" "$dir/ov.qcow2" "$vol"; do
		qemu_img check -q "$img" || fail "$name: qemu-img check $img"
	done
	# The guest's pattern: MiB m of round r is filled with (r*31 + m*7) % 250 + 1.
	for m in 0 1 2 3 4 5 6 7; do
		b=$(((last * 31 + m * 7) % 250 + 1))
		timeout 60 qemu-io -f qcow2 -r -c "read -P $b ${m}M 1M" "$vol" >"$dir/qio.out" 2>&1 ||
			fail "$name: qemu-io on the final image"
		grep -q "Pattern verification failed" "$dir/qio.out" &&
			fail "$name: MiB $m of the final image does not hold the last round"
		grep -q "^read 1048576/1048576 bytes" "$dir/qio.out" || fail "$name: qemu-io did not read MiB $m"
	done
	qemu_img dd -f qcow2 -O raw bs=1M count=8 if="$vol" of="$dir/head.raw" >/dev/null ||
		fail "qemu-img dd"
	[[ $(md5sum <"$dir/head.raw" | cut -d' ' -f1) == "$md5" ]] ||
		fail "$name: the final image's checksum is not the guest's"
	if ((resize)); then
		[[ $(qemu_img info --output=json "$vol" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == "$resize" ]] ||
			fail "$name: the volume was not resized"
	fi
}

live_run vhost $((96 << 20)) \
	--export "type=vhost-user-blk,id=v,node-name=base,addr.type=unix,addr.path=$WORKDIR/vhost/vh.sock,writable=on" -- \
	-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
	-chardev "socket,id=c0,path=$WORKDIR/vhost/vh.sock" -device vhost-user-blk-pci,chardev=c0,num-queues=1
log "vhost-user-blk: ok"

live_run nbd 0 \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/nbd/nbd.sock" \
	--export type=nbd,id=v,node-name=base,writable=on -- \
	-drive "driver=nbd,server.type=unix,server.path=$WORKDIR/nbd/nbd.sock,export=base,if=none,id=d0" \
	-device virtio-blk-pci,drive=d0
log "nbd: ok"
