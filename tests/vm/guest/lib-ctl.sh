#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by the guest tests that take commands from the host: the data
# disk and the 1 MiB control disk (told apart by size), and the host's
# two-byte commands on the control disk.
#   $disk, $ctl   the two block devices
#   ctl_cmd       the command the host wrote last
#   wait_cmd CMD  wait (bounded: 5 minutes) until the host writes CMD
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
