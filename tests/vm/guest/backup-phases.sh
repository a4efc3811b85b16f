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
. "$(dirname "$0")/lib-ctl.sh"
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
