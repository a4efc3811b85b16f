#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# NBD servers side by side in one run, with fio's nbd engine over a unix
# socket: vstor-nbd, qemu-nbd (--aio=io_uring, cache none and writeback),
# nbdkit's file plugin, and `nbdkit null` as the ceiling of client and
# protocol. Rows: 4 KiB random read and write at QD32 and 1 MiB sequential
# read and write, with one and two connections, on the same raw and fully
# allocated qcow2 images (nbdkit serves raw only).
#
# For each cell: IOPS (or MiB/s) and the server's CPU time per request
# (utime+stime of the server process over the run / requests served). On 2
# cores fio and the server share the CPU, so the client can be the limit:
# CPU per request is the fairer comparison. Not a test: it asserts nothing.
#
# Environment: VSTOR_NBD (default build/nbd-server/vstor-nbd), BENCH_DIR
# (default var/bench; not tmpfs), BENCH_SIZE (default 1G), BENCH_RUNTIME
# seconds per cell (default 5), BENCH_ROWS (default "randread randwrite read write"),
# BENCH_CONNS (default "1 2"), BENCH_IMAGES (default "raw qcow2"),
# BENCH_CACHES (default "none writeback"), BENCH_REPEAT (default 1: rounds
# over all cells, alternating; with more than one, a table of medians over
# the rounds ends the run), BENCH_ANCHORS (default 1; 0 skips qemu-nbd and
# nbdkit), BENCH_DEVICE (default 1: fio with io_uring and O_DIRECT on the
# raw file itself, the same row and queue depth, the device's ceiling;
# 0 skips it), VSTOR_NBD_BASE (a second vstor-nbd, e.g. a build of the
# previous commit: measured next to VSTOR_NBD in every round, and a
# before/after table of medians and ratios printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_NBD=${VSTOR_NBD:-build/nbd-server/vstor-nbd}
BENCH_DIR=$(realpath -m "${BENCH_DIR:-var/bench}") # qemu-nbd wants an absolute socket path
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_RUNTIME=${BENCH_RUNTIME:-5}
read -r -a rows <<<"${BENCH_ROWS:-randread randwrite read write}"
read -r -a conns <<<"${BENCH_CONNS:-1 2}"
read -r -a images <<<"${BENCH_IMAGES:-raw qcow2}"
read -r -a cache_modes <<<"${BENCH_CACHES:-none writeback}"
for t in fio qemu-nbd qemu-img nbdkit; do
	command -v "$t" >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $VSTOR_NBD ]] || { echo "bench: $VSTOR_NBD not built" >&2; exit 1; }

mkdir -p "$BENCH_DIR"
raw=$BENCH_DIR/nbd.raw
qcow2=$BENCH_DIR/nbd.qcow2
sock=$BENCH_DIR/bench-nbd.sock
if [[ ! -f $raw ]]; then
	echo "bench: writing $raw ($BENCH_SIZE of random data)" >&2
	fio --name=fill --filename="$raw" --size="$BENCH_SIZE" --rw=write --bs=1M --ioengine=psync \
		--refill_buffers --output=/dev/null
fi
if [[ ! -f $qcow2 ]]; then
	qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
fi

server_pid=
start_server()
{
	rm -f "$sock"
	"$@" &
	server_pid=$!
	for ((i = 0; i < 500; i++)); do
		[[ -S $sock ]] && return 0
		sleep 0.01
	done
	echo "bench: server did not start: $*" >&2
	exit 1
}
stop_server()
{
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	rm -f "$sock"
}
trap stop_server EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_fio ROW CONNS [FILE] -> prints "IOPS MiBps REQUESTS"; with FILE, fio
# reads and writes it directly (io_uring, O_DIRECT) instead of the export.
run_fio()
{
	local row=$1 nconn=$2 bs=4k depth=32 target
	[[ $row == read || $row == write ]] && bs=1M && depth=8
	if [[ -n ${3:-} ]]; then
		target=(--ioengine=io_uring --direct=1 --filename="$3")
	else
		target=(--ioengine=nbd --uri="nbd+unix:///?socket=$sock")
	fi
	fio --name=b "${target[@]}" --rw="$row" --bs="$bs" \
		--iodepth=$((depth / nconn)) --numjobs="$nconn" --group_reporting --time_based \
		--runtime="$BENCH_RUNTIME" --size="$BENCH_SIZE" --output-format=json \
		--output="$BENCH_DIR/fio.json" >/dev/null 2>&1
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
io = j["read"] if j["read"]["total_ios"] else j["write"]
print("%.0f %.1f %d" % (io["iops"], io["bw"] / 1024.0, io["total_ios"]))' "$BENCH_DIR/fio.json"
}

hz=$(getconf CLK_TCK)
printf '%-34s %-10s %-5s %12s %10s %14s\n' server row conns "IOPS" "MiB/s" "CPU us/req"
measure()
{
	local label=$1
	shift
	for row in "${rows[@]}"; do
		for c in "${conns[@]}"; do
			# Dirty pages of an earlier cell (or of the image fill) being
			# written back would slow the disk for whoever runs next.
			sync
			start_server "$@"
			local t0 t1 out
			t0=$(cpu_ticks "$server_pid")
			out=$(run_fio "$row" "$c")
			t1=$(cpu_ticks "$server_pid")
			stop_server
			read -r iops mibs reqs <<<"$out"
			python3 -c "
t = ($t1 - $t0) / $hz * 1e6
print('%-34s %-10s %-5s %12s %10s %14.2f' % ('$label', '$row', '$c', '$iops', '$mibs', t / max($reqs, 1)))
open('$cells', 'a').write('\t'.join(['$label', '$row', '$c', '$iops', '%.2f' % (t / max($reqs, 1))]) + '\n')"
		done
	done
}

# The device's ceiling for each row: fio on the raw file, no server (CPU: -).
measure_device()
{
	for row in "${rows[@]}"; do
		for c in "${conns[@]}"; do
			sync
			read -r iops mibs _ <<<"$(run_fio "$row" "$c" "$raw")"
			printf '%-34s %-10s %-5s %12s %10s %14s\n' "device (fio io_uring direct)" "$row" "$c" "$iops" "$mibs" -
			printf '%s\t%s\t%s\t%s\t%s\n' "device (fio io_uring direct)" "$row" "$c" "$iops" nan >>"$cells"
		done
	done
}

cells=$BENCH_DIR/bench-nbd.cells
: >"$cells"
for ((round = 0; round < ${BENCH_REPEAT:-1}; round++)); do
	[[ ${BENCH_DEVICE:-1} == 1 ]] && measure_device
	for img in "${images[@]}"; do
		file=$raw
		[[ $img == qcow2 ]] && file=$qcow2
		for cache in "${cache_modes[@]}"; do
			vstor=("vstor-nbd $img cache=$cache" "$VSTOR_NBD")
			base=("base vstor-nbd $img cache=$cache" "${VSTOR_NBD_BASE:-}")
			# The two builds alternate which goes first, round by round.
			if ((round % 2)); then
				tmp=("${vstor[@]}") vstor=("${base[@]}") base=("${tmp[@]}")
			fi
			for b in vstor base; do
				declare -n srv=$b
				[[ -n ${srv[1]} ]] || continue
				measure "${srv[0]}" "${srv[1]}" -t -e 0 -k "$sock" -f "$img" \
					--cache="$cache" "$file"
			done
			[[ ${BENCH_ANCHORS:-1} == 1 ]] || continue
			measure "qemu-nbd $img cache=$cache io_uring" qemu-nbd -t -e 0 -k "$sock" \
				-f "$img" --cache="$cache" --aio=io_uring "$file"
		done
	done
	[[ ${BENCH_ANCHORS:-1} == 1 ]] || continue
	measure "nbdkit file raw" nbdkit -f -U "$sock" file "$raw"
	[[ ${BENCH_NULL:-1} == 1 ]] || continue
	measure "nbdkit null (ceiling)" nbdkit -f -U "$sock" null "$BENCH_SIZE"
done
((${BENCH_REPEAT:-1} > 1)) && python3 "$(dirname "$0")/median-table.py" "$cells"
[[ -n ${VSTOR_NBD_BASE:-} ]] && python3 "$(dirname "$0")/ab-table.py" "$cells" "base "
