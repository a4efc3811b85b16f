#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Write-and-verify under a host that changes the disk's graph live (issue 13).
# Two disks: the data disk and a 1 MiB control disk the host writes commands
# to (first bytes: "P2" ends the rounds, "T1" starts a throttled measure,
# "T0" an unthrottled one). Every console line the host waits on starts
# with "VSTOR-LIVE:".
#   live-verify SECTORS   rounds until "P2", then expect the data disk to
#                         have SECTORS sectors (0: no resize expected)
# A round writes 8 MiB, 1 MiB at a time with O_DIRECT and fsync, each MiB
# filled with a byte that depends on the round and the MiB, then reads the
# 8 MiB back (O_DIRECT) and compares. After the rounds: the rate of 8 MiB of
# O_DIRECT writes, throttled and not, then a last round whose pattern the
# host reads from the final image, and its checksum.
set -e
want_size=${1:-0}
. "$(dirname "$0")/lib-ctl.sh"
dev=${disk#/dev/}
echo "data disk $disk, control disk $ctl"
# The byte of MiB $2 in round $1, as three octal digits (1..250).
pat() { printf '%03o' $((($1 * 31 + $2 * 7) % 250 + 1)); }
round()
{
	m=0
	while [ $m -lt 8 ]; do
		dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\0' "\\$(pat "$1" $m)" >/tmp/p$m
		dd if=/tmp/p$m of="$disk" bs=1M seek=$m count=1 oflag=direct conv=notrunc,fsync 2>/dev/null ||
			{ echo "write failed in round $1 at MiB $m"; exit 1; }
		m=$((m + 1))
	done
	m=0
	while [ $m -lt 8 ]; do
		dd if="$disk" of=/tmp/q bs=1M skip=$m count=1 iflag=direct 2>/dev/null ||
			{ echo "read failed in round $1 at MiB $m"; exit 1; }
		cmp -s /tmp/p$m /tmp/q || { echo "mismatch in round $1 at MiB $m"; exit 1; }
		m=$((m + 1))
	done
	echo "VSTOR-LIVE: round $1 ok"
}
centisecs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
# Bytes per second of 8 MiB of O_DIRECT writes (after 1 MiB that takes a
# throttle's initial burst), timed with the guest's own clock.
rate()
{
	dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
	dd if=/tmp/r of="$disk" bs=64k count=16 seek=256 oflag=direct conv=notrunc 2>/dev/null
	t0=$(centisecs)
	m=0
	while [ $m -lt 8 ]; do
		dd if=/tmp/r of="$disk" bs=64k count=16 seek=$((272 + m * 16)) oflag=direct conv=notrunc 2>/dev/null ||
			{ echo "write failed while measuring" >&2; exit 1; }
		m=$((m + 1))
	done
	t1=$(centisecs)
	echo $((8 * 1048576 * 100 / (t1 - t0 + 1)))
}

r=1
while [ "$(ctl_cmd)" != P2 ]; do
	[ $r -le 2000 ] || { echo "no 'P2' from the host"; exit 1; }
	round $r
	r=$((r + 1))
done
if [ "$want_size" != 0 ]; then
	n=0
	while [ "$(cat /sys/block/"$dev"/size)" != "$want_size" ]; do
		[ $n -lt 1200 ] || { echo "size $(cat /sys/block/"$dev"/size), expected $want_size"; exit 1; }
		sleep 0.05
		n=$((n + 1))
	done
	# The new end is usable.
	last=$((want_size / 2048 - 1))
	dd if=/dev/urandom of=/tmp/e bs=1M count=1 2>/dev/null
	dd if=/tmp/e of="$disk" bs=1M seek=$last count=1 oflag=direct conv=notrunc,fsync 2>/dev/null
	dd if="$disk" of=/tmp/q bs=1M skip=$last count=1 iflag=direct 2>/dev/null
	cmp -s /tmp/e /tmp/q || { echo "the new end does not read back"; exit 1; }
	echo "VSTOR-LIVE: resized $want_size"
fi
echo "VSTOR-LIVE: throttle-wait"
wait_cmd T1
bps=$(rate)
echo "VSTOR-LIVE: throttled-rate $bps"
wait_cmd T0
bps=$(rate)
echo "VSTOR-LIVE: unthrottled-rate $bps"
round $r
echo "VSTOR-LIVE: last-round $r"
echo "VSTOR-LIVE: md5 $(dd if="$disk" bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
exit 0
