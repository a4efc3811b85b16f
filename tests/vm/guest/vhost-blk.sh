#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# vhost-user-blk checks: the disk has 2 queues; with "writethrough" it starts
# write-through and is switched to write back through cache_type (the
# CONFIG_WCE path), so that the guest sends flushes; then the disk pattern.
# With "kill" it writes without end, for the host to kill QEMU mid-I/O.
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
