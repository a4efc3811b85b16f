#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# vhost-user-blk checks: the disk has 2 queues; with "writethrough" it starts
# write-through and is switched to write back through cache_type (the
# CONFIG_WCE path), so that the guest sends flushes; then the disk pattern.
# With "kill" it writes without end, for the host to kill QEMU mid-I/O;
# with "restart" it writes and verifies in rounds while the host restarts
# the back end; with "resize SECTORS" it waits for the host to resize the
# disk under it (the config-change message) and checks the new size.
set -e
mode=$1
if [ "$mode" = resize ]; then
	before=$(cat /sys/block/vda/size)
	echo "size before: $before"
	echo "waiting for a resize"
	i=0
	while [ "$(cat /sys/block/vda/size)" = "$before" ] && [ $i -lt 2400 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	after=$(cat /sys/block/vda/size)
	echo "size after: $after"
	[ "$after" = "$2" ] || { echo "expected $2 sectors"; exit 1; }
	# The new end is usable: write its last MiB and read it back.
	dd if=/dev/urandom of=/tmp/p bs=1M count=1 2>/dev/null
	last=$((after / 2048 - 1))
	dd if=/tmp/p of=/dev/vda bs=1M seek=$last count=1 oflag=direct conv=notrunc 2>/dev/null
	dd if=/dev/vda of=/tmp/q bs=1M skip=$last count=1 iflag=direct 2>/dev/null
	cmp /tmp/p /tmp/q || { echo "the new end does not read back"; exit 1; }
	echo "resize ok"
	exit 0
fi
if [ "$mode" = kill ]; then
	echo "writing until killed"
	i=0
	while true; do
		dd if=/dev/urandom of=/dev/vda bs=1M count=4 seek=$((i % 16 * 4)) oflag=direct 2>/dev/null
		i=$((i + 1))
	done
fi
if [ "$mode" = restart ]; then
	# Rounds of O_DIRECT writes and read-backs of 8 MiB; the host kills and
	# restarts the back end meanwhile: no request may fail or get lost.
	dd if=/dev/urandom of=/tmp/p bs=1M count=1 2>/dev/null
	want=$(md5sum /tmp/p | cut -d' ' -f1)
	r=1
	while [ $r -le "${2:-20}" ]; do
		i=0
		while [ $i -lt 8 ]; do
			dd if=/tmp/p of=/dev/vda bs=1M seek=$i count=1 oflag=direct conv=notrunc 2>/dev/null ||
				{ echo "write failed in round $r"; exit 1; }
			i=$((i + 1))
		done
		i=0
		while [ $i -lt 8 ]; do
			got=$(dd if=/dev/vda bs=1M skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
			[ "$got" = "$want" ] || { echo "mismatch in round $r at MiB $i"; exit 1; }
			i=$((i + 1))
		done
		echo "round $r ok"
		r=$((r + 1))
	done
	exit 0
fi
nq=$(ls -d /sys/block/vda/mq/* | wc -l)
echo "queues: $nq"
[ "$nq" = 2 ] || { echo "expected 2 queues"; exit 1; }
ct=$(cat /sys/block/vda/cache_type)
echo "cache_type: $ct"
if [ "$mode" = writethrough ]; then
	[ "$ct" = "write through" ] || { echo "expected write through"; exit 1; }
	echo "write back" >/sys/block/vda/cache_type
	[ "$(cat /sys/block/vda/cache_type)" = "write back" ] || { echo "cache_type not switched"; exit 1; }
fi
# fsync on the block device sends a flush to a write-back disk.
dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=100 conv=fsync 2>/dev/null
echo "fsync ok"
exec /tests/disk-pattern.sh
