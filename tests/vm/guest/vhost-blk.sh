#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# vhost-user-blk checks: the disk has 2 queues; with "writethrough" it starts
# write-through and is switched to write back through cache_type (the
# CONFIG_WCE path), so that the guest sends flushes; then the disk pattern.
# With "kill" it writes without end, for the host to kill QEMU mid-I/O;
# with "restart" it writes and verifies in rounds while the host restarts
# the back end.
set -e
mode=$1
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
