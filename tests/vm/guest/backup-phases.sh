#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The guest side of test-backup-guest (issue 14): writes in phases between
# the host's checkpoints. Two disks, as live-verify: the data disk and a
# 1 MiB control disk the host writes commands to ("Ck": checkpoint k is
# taken). Console lines the host waits on start with "VSTOR-BACKUP:".
#   phase k (1..3): MiBs k, 10+k, 30 and 50+2k filled with byte
#                   (k*31 + m*7) % 250 + 1, O_DIRECT and fsync each;
#                   "phase k written"; wait for "Ck";
#   noise k:        MiBs 40+k, 10+k and 30 filled with byte
#                   (k*53 + m*13) % 250 + 1, while the host backs up
#                   checkpoint k; "noise k written".
# The host computes what the disk held at each checkpoint from this.
set -e
i=0
while [ "$(ls -d /sys/block/vd* 2>/dev/null | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do
	sleep 0.05
	i=$((i + 1))
done
ctl=""
disk=""
for d in /sys/block/vd*; do
	if [ "$(cat "$d/size")" = 2048 ]; then ctl=/dev/${d##*/}; else disk=/dev/${d##*/}; fi
done
[ -n "$ctl" ] && [ -n "$disk" ] || { echo "no data and control disks"; exit 1; }

ctl_cmd() { dd if="$ctl" bs=512 count=1 iflag=direct 2>/dev/null | head -c 2; }
wait_cmd()
{
	n=0
	while [ "$(ctl_cmd)" != "$1" ]; do
		[ $n -lt 6000 ] || { echo "no '$1' from the host"; exit 1; }
		sleep 0.05
		n=$((n + 1))
	done
}
# fill MIB BYTE: MiB MIB of the data disk, every byte BYTE (decimal).
fill()
{
	dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\0' "\\$(printf '%03o' "$2")" >/tmp/p
	dd if=/tmp/p of="$disk" bs=1M seek="$1" count=1 oflag=direct conv=notrunc,fsync 2>/dev/null ||
		{ echo "write failed at MiB $1"; exit 1; }
}
for k in 1 2 3; do
	for m in $k $((10 + k)) 30 $((50 + 2 * k)); do
		fill "$m" $(((k * 31 + m * 7) % 250 + 1))
	done
	echo "VSTOR-BACKUP: phase $k written"
	wait_cmd "C$k"
	for m in $((40 + k)) $((10 + k)) 30; do
		fill "$m" $(((k * 53 + m * 13) % 250 + 1))
	done
	echo "VSTOR-BACKUP: noise $k written"
done
sync
