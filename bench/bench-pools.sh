#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The pool backends' data paths against each peer's own client on the same
# server, in one private network namespace (the test helpers start the
# servers):
#
#   nfs:   nfs-cp (read into a local file, write from one: nfs-cp cannot
#          write to /dev/null, so its read includes a page-cache copy) vs
#          `vstor-img bench` on the nfs:// URL (1 MiB, QD16), plus 4 KiB QD32
#          reads through vstor (libnfs's tools have no random-I/O mode)
#   iscsi: iscsi-perf (4 KiB random reads at QD32, 1 MiB at QD16) vs
#          `vstor-img bench` on the iscsi:// URL (same sizes and depths,
#          as many requests as the peer did in its BENCH_TIME seconds)
#   lvm:   fio with io_uring and O_DIRECT on the LV's extent range of the loop
#          device vs `vstor-img bench -t none` on the mapped LV (vol:POOL/LV)
#
# Prints one line per cell: backend, row, peer, vstor, vstor/peer. The
# target is >= 0.9. Not a test: it asserts nothing. Needs root.
#
# Environment: BENCH_DIR (default var/bench; not tmpfs), BENCH_SIZE in MiB
# (default 1024), BENCH_TIME seconds per peer cell (default 10),
# BENCH_ONLY (nfs, iscsi or lvm: one backend only), BENCH_REPS (default 3:
# each cell is the median of that many alternating runs of each side).
# vstor's 4 KiB rows use `vstor-img bench --random` (uniform offsets), as
# the peers' random modes do.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export VSTOR_BUILD_DIR=${VSTOR_BUILD_DIR:-$SRC/build}
BENCH_DIR=${BENCH_DIR:-$SRC/var/bench}
mkdir -p "$BENCH_DIR"
export TMPDIR=$BENCH_DIR VS_DAEMON_TIMEOUT=3600 VS_NFS_TIMEOUT=3600
. "$SRC/tests/integration/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-iscsi.sh"
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
require_vstor_img
find_built VSTOR cli/vstor
nfs_enter_netns "$@"
ip link set lo up

MIB=${BENCH_SIZE:-1024}
SECS=${BENCH_TIME:-10}
REPS=${BENCH_REPS:-3}
ONLY=${BENCH_ONLY:-}
export VSTOR_STATE_DIR=$WORKDIR/state

now() { date +%s.%N; }
# mibs BYTES T0 T1 -> MiB/s
mibs() { awk -v b="$1" -v a="$2" -v z="$3" 'BEGIN { printf "%.1f", b / 1048576 / (z - a) }'; }
row()
{
	awk -v be="$1" -v r="$2" -v p="$3" -v v="$4" -v u="$5" 'BEGIN {
		printf "%-6s %-22s peer %10s %-5s vstor %10s %-5s ratio %s\n", be, r, p, u, v, u,
			(p > 0 ? sprintf("%.2f", v / p) : "-") }'
}
# vbench ARGS... -> MiB/s of `vstor-img bench` (its "Run completed in S seconds")
vbench()
{
	local count=$1 size=$2
	shift 2
	local t
	t=$("$VSTOR_IMG" bench -c "$count" -s "$size" "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
	awk -v c="$count" -v s="$size" -v t="$t" 'BEGIN { printf "%.1f", c * s / 1048576 / t }'
}
# turns BACKEND ROW UNIT PEER_CMD VSTOR_CMD: run the peer's and vstor's
# commands (each prints its rate) in turn, REPS times each, and print the
# row with each side's median, so that a burst of load on the machine lands
# on both sides rather than on one run. PEER_CMD "-" means no peer.
turns()
{
	local be=$1 name=$2 unit=$3 pc=$4 vc=$5 ps=() vs=()
	for ((rep = 0; rep < REPS; rep++)); do
		if [[ $pc == - ]]; then ps+=(0); else ps+=("$($pc)"); fi
		echo "${ps[-1]} $unit" >"$WORKDIR/peer.last"
		vs+=("$($vc)")
	done
	row "$be" "$name" "$(median "${ps[@]}")" "$(median "${vs[@]}")" "$unit"
}
# vcount SIZE: how many SIZE-byte requests vstor runs so that its run lasts
# about as long as the peer's last one (SECS seconds at the peer's rate),
# and at least BENCH_SIZE MiB's worth.
vcount()
{
	local rate unit
	read -r rate unit <"$WORKDIR/peer.last"
	awk -v r="$rate" -v u="$unit" -v s="$1" -v t="$SECS" -v m="$MIB" 'BEGIN {
		n = (u == "IOPS") ? r * t : r * t * 1048576 / s
		f = m * 1048576 / s
		printf "%d", (n > f ? n : f) }'
}
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
iops() { awk -v m="$1" -v s="$2" 'BEGIN { printf "%.0f", m * 1048576 / s }'; }

# perf_avg LINE N: iscsi-perf's last "iops average X (Y MB/s)": N=1 -> X, N=2 -> Y.
perf_avg()
{
	sed -n 's/.*iops average \([0-9]*\) (\([0-9]*\) MB\/s).*/\1 \2/p' <<<"$1" |
		awk -v n="$2" '{ print $n }'
}

fill() { dd if=/dev/urandom of="$1" bs=1M count="$MIB" status=none; }

# --- NFS ---
if [[ -z $ONLY || $ONLY == nfs ]]; then
	mkdir -p "$WORKDIR/exp"
	nfs_start_server "$WORKDIR/exp" >/dev/null
	fill "$WORKDIR/exp/f.raw"
	fill "$WORKDIR/local.raw"
	sync
	U="$NFS_URL"
	nfs_read_peer() {
		local t0 t1
		rm -f "$WORKDIR/cp.out" # nfs-cp does not overwrite
		t0=$(now)
		nfs-cp "$U/f.raw" "$WORKDIR/cp.out" >/dev/null
		t1=$(now)
		mibs $((MIB << 20)) "$t0" "$t1"
	}
	nfs_write_peer() {
		local t0 t1
		t0=$(now)
		rm -f "$WORKDIR/exp/w.raw" # nfs-cp does not overwrite
		nfs-cp "$WORKDIR/local.raw" "$U/w.raw" >/dev/null
		t1=$(now)
		mibs $((MIB << 20)) "$t0" "$t1"
	}
	nfs_read_vstor() { vbench $((MIB)) 1048576 -f raw -t none -d 16 "$U/f.raw"; }
	nfs_write_vstor() { vbench $((MIB)) 1048576 -f raw -t none -d 16 -w "$U/w.raw"; }
	nfs_rand_vstor() { iops "$(vbench $((MIB * 64)) 4096 -f raw -t none -d 32 --random "$U/f.raw")" 4096; }
	turns nfs "read 1M" MiB/s nfs_read_peer nfs_read_vstor
	turns nfs "write 1M" MiB/s nfs_write_peer nfs_write_vstor
	turns nfs "read 4K QD32 (IOPS)" IOPS - nfs_rand_vstor
fi

# --- iSCSI ---
if [[ -z $ONLY || $ONLY == iscsi ]]; then
	fill "$WORKDIR/lun.raw"
	iscsi_start_target
	IQN=iqn.2026-01.org.vstor.bench:lun
	iscsi_add_target 1 "$IQN"
	iscsi_add_lun 1 1 "$WORKDIR/lun.raw"
	iscsi_bind 1
	L="iscsi://127.0.0.1:$ISCSI_PORT/$IQN/1"
	# iscsi-perf prints its own rate line; vstor runs about as many
	# requests as the peer did in its SECS seconds.
	iscsi_rand_peer() {
		local p
		p=$( (timeout $((SECS + 30)) iscsi-perf -t "$SECS" -m 32 -b 8 -r "$L" 2>&1 || true) |
			tr '\r' '\n' | grep -E '^iops average' | tail -1)
		perf_avg "$p" 1
	}
	iscsi_rand_vstor() { iops "$(vbench "$(vcount 4096)" 4096 -f raw -t none -d 32 --random "$L")" 4096; }
	iscsi_seq_peer() {
		local p
		p=$( (timeout $((SECS + 30)) iscsi-perf -t "$SECS" -m 16 -b 2048 "$L" 2>&1 || true) |
			tr '\r' '\n' | grep -E '^iops average' | tail -1)
		perf_avg "$p" 2
	}
	iscsi_seq_vstor() { vbench "$(vcount 1048576)" 1048576 -f raw -t none -d 16 "$L"; }
	iscsi_write_vstor() { vbench $((MIB)) 1048576 -f raw -t none -d 16 -w "$L"; }
	turns iscsi "read 4K QD32 (IOPS)" IOPS iscsi_rand_peer iscsi_rand_vstor
	turns iscsi "read 1M QD16" MiB/s iscsi_seq_peer iscsi_seq_vstor
	turns iscsi "write 1M QD16" MiB/s - iscsi_write_vstor
fi

# --- LVM (user-space mapping) vs direct I/O on the PV ---
if [[ -z $ONLY || $ONLY == lvm ]]; then
	require_tool losetup lvm fio
	truncate -s $((MIB + 256))M "$WORKDIR/pv.img"
	LOOP=$(losetup --find --show "$WORKDIR/pv.img") || fail "no free loop device"
	at_exit "losetup -d $LOOP"
	mkdir -p "$WORKDIR/lvm/lock"
	cat >"$WORKDIR/lvm/lvm.conf" <<-EOF
		devices { filter = [ "a|^$LOOP\$|", "r|.*|" ] global_filter = [ "a|^$LOOP\$|", "r|.*|" ]
			use_devicesfile = 0 obtain_device_list_from_udev = 0 hints = "none" }
		global { activation = 0 locking_dir = "$WORKDIR/lvm/lock" use_lvmlockd = 0 }
		activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
		backup { backup = 0 archive = 0 }
	EOF
	export LVM_SYSTEM_DIR=$WORKDIR/lvm LVM_SUPPRESS_FD_WARNINGS=1
	VG=vstorbench$$
	"$VSTOR" pool-define-as bp logical --source-name "$VG" --source-dev "$LOOP" \
		--extra "lvm_system_dir=$WORKDIR/lvm" >/dev/null
	"$VSTOR" pool-build bp >/dev/null
	"$VSTOR" pool-start bp >/dev/null
	"$VSTOR" vol-create-as bp lv "${MIB}M" --format raw >/dev/null
	off=$(lvm pvs --noheadings --units b --nosuffix -o pe_start "$LOOP" 2>/dev/null | tr -d ' ')
	dd if=/dev/urandom of="$LOOP" bs=1M seek=$((off >> 20)) count="$MIB" oflag=direct \
		status=none
	lvm_peer() {
		fio --name=p --filename="$LOOP" --offset="$off" --size="${MIB}M" --rw="$1" \
			--bs="$2" --iodepth="$3" --ioengine=io_uring --direct=1 --time_based \
			--runtime="$SECS" --output-format=terse --terse-version=3 | awk -F';' -v w="$1" '
			{ print (w == "write" ? $48 : $7) / 1024 }'
	}
	lvm_read_peer() { lvm_peer read 1M 16; }
	lvm_write_peer() { lvm_peer write 1M 16; }
	lvm_rand_peer() { lvm_peer randread 4K 32; }
	lvm_read_vstor() { vbench "$(vcount 1048576)" 1048576 -f raw -t none -d 16 vol:bp/lv; }
	lvm_write_vstor() { vbench "$(vcount 1048576)" 1048576 -f raw -t none -d 16 -w vol:bp/lv; }
	lvm_rand_vstor() { vbench "$(vcount 4096)" 4096 -f raw -t none -d 32 --random vol:bp/lv; }
	turns lvm "read 1M" MiB/s lvm_read_peer lvm_read_vstor
	turns lvm "write 1M" MiB/s lvm_write_peer lvm_write_vstor
	turns lvm "randread 4K" MiB/s lvm_rand_peer lvm_rand_vstor
	"$VSTOR" pool-destroy bp >/dev/null
	"$VSTOR" pool-delete bp >/dev/null
fi
