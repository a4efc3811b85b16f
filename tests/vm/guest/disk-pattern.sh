#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Write a pattern over the whole disk through the page cache and with
# O_DIRECT, flush, drop caches, read it back; then discard and write-zeroes
# (BLKDISCARD / BLKZEROOUT) and check what reads back.
set -e
dev=/dev/vda
sz=$(cat /sys/block/vda/size)            # 512-byte sectors
mb=$((sz / 2048))
echo "disk: $mb MiB, cache_type $(cat /sys/block/vda/queue/write_cache 2>/dev/null)"
# A virtio-blk disk that reports write-through never sends flushes: make it write back.
echo "write back" >/sys/block/vda/queue/write_cache 2>/dev/null || true
# A 1 MiB pattern block (not compressible, not zero), written over the whole disk.
dd if=/dev/urandom of=/tmp/p bs=1M count=1 2>/dev/null
want=$(md5sum /tmp/p | cut -d' ' -f1)
i=0
while [ $i -lt $mb ]; do
	dd if=/tmp/p of=$dev bs=1M seek=$i count=1 conv=notrunc 2>/dev/null
	i=$((i + 1))
done
sync
blockdev --flushbufs $dev
echo 3 >/proc/sys/vm/drop_caches
i=0
while [ $i -lt $mb ]; do
	got=$(dd if=$dev bs=1M skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	if [ "$got" != "$want" ]; then echo "mismatch at MiB $i"; exit 1; fi
	i=$((i + 1))
done
echo "pattern ok"
# O_DIRECT write of a second pattern into MiB 1, read back.
dd if=/dev/urandom of=/tmp/q bs=1M count=1 2>/dev/null
dd if=/tmp/q of=$dev bs=1M seek=1 count=1 oflag=direct conv=notrunc 2>/dev/null
got=$(dd if=$dev bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$(md5sum /tmp/q | cut -d' ' -f1)" ] || { echo "direct write mismatch"; exit 1; }
echo "direct ok"
zero=$(dd if=/dev/zero bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)
# Write-zeroes over MiB 2.
/usr/sbin/blkdiscard -z -o $((2 << 20)) -l $((1 << 20)) $dev
got=$(dd if=$dev bs=1M skip=2 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$zero" ] || { echo "write-zeroes did not zero"; exit 1; }
echo "write-zeroes ok"
# Discard over MiB 3 (reads then return zeroes on our exports, which punch holes).
if [ "$(cat /sys/block/vda/queue/discard_max_bytes)" != 0 ]; then
	/usr/sbin/blkdiscard -o $((3 << 20)) -l $((1 << 20)) $dev
	echo "discard ok"
fi
# The rest of the disk still holds the pattern.
got=$(dd if=$dev bs=1M skip=4 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "pattern lost after discard"; exit 1; }
sync
echo "all ok"
