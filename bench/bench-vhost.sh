#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vhost-user-blk back ends side by side in one run: vstor-vhost and
# qemu-storage-daemon's vhost-user-blk export (aio=io_uring), driven by
# tests/tools/vhost-client, a host-side front end (memfd memory, split rings
# with event idx) that measures the back end without a guest in the way.
# Rows: 4 KiB random read and write at QD32, 1 MiB sequential read and
# write at QD8, one queue, on the same raw and fully allocated qcow2 images,
# cache none and writeback.
#
# For each cell: IOPS, MiB/s and the back end's CPU time per request
# (utime+stime of the daemon over the run / requests). The client and the
# daemon share the CPU on 2 cores: CPU per request is the fairer comparison.
# Not a test: it asserts nothing.
#
# Environment: VSTOR_VHOST (default build/vhost-user-blk/vstor-vhost),
# VHOST_CLIENT (default build/tests/tools/vhost-client), BENCH_DIR (default
# var/bench; not tmpfs), BENCH_SIZE (default 1G), BENCH_RUNTIME seconds per
# cell (default 5), BENCH_ROWS (default "randread randwrite read write"),
# BENCH_CACHES (default "none writeback"), BENCH_ANCHORS (default 1; 0
# skips qemu-storage-daemon), VSTOR_VHOST_BASE (a second vstor-vhost, e.g. a
# build of the previous commit: measured next to VSTOR_VHOST, alternating,
# and a before/after table of medians and ratios printed at the end),
# BENCH_REPEAT (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_VHOST=${VSTOR_VHOST:-build/vhost-user-blk/vstor-vhost}
VHOST_CLIENT=${VHOST_CLIENT:-build/tests/tools/vhost-client}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_RUNTIME=${BENCH_RUNTIME:-5}
read -r -a rows <<<"${BENCH_ROWS:-randread randwrite read write}"
read -r -a caches <<<"${BENCH_CACHES:-none writeback}"
for t in fio qemu-img qemu-storage-daemon; do
	command -v "$t" >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
done
for b in "$VSTOR_VHOST" "$VHOST_CLIENT"; do
	[[ -x $b ]] || { echo "bench: $b not built" >&2; exit 1; }
done

mkdir -p "$BENCH_DIR"
raw=$BENCH_DIR/vhost.raw
qcow2=$BENCH_DIR/vhost.qcow2
sock=$BENCH_DIR/bench-vhost.sock
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
	"$@" >"$BENCH_DIR/bench-vhost.server.log" 2>&1 &
	server_pid=$!
	for ((i = 0; i < 500; i++)); do
		[[ -S $sock ]] && return 0
		sleep 0.01
	done
	echo "bench: server did not start: $*" >&2
	cat "$BENCH_DIR/bench-vhost.server.log" >&2
	exit 1
}
stop_server()
{
	[[ -n $server_pid ]] || return 0
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
	rm -f "$sock"
}
trap stop_server EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '%-36s %-10s %10s %9s %12s\n' "back end" row IOPS "MiB/s" "CPU us/req"
# measure_one LABEL ROW CMD...: one cell.
measure_one()
{
	local label=$1 row=$2 bs=4k qd=32
	shift 2
	[[ $row == read || $row == write ]] && bs=1M && qd=8
	# Dirty pages of an earlier cell must not slow the next one.
	sync
	start_server "$@"
	local t0 t1 out
	t0=$(cpu_ticks "$server_pid")
	out=$(timeout $((BENCH_RUNTIME + 60)) "$VHOST_CLIENT" "$sock" bench "$row" "$bs" "$qd" \
		"$BENCH_RUNTIME" 1)
	t1=$(cpu_ticks "$server_pid")
	stop_server
	read -r _ iops _ mibs _ reqs <<<"$out"
	python3 -c "
t = ($t1 - $t0) / $hz * 1e6
print('%-36s %-10s %10s %9s %12.2f' % ('$label', '$row', '$iops', '$mibs', t / max($reqs, 1)))
open('$cells', 'a').write('\t'.join(['$label', '$row', '', '$iops', '%.2f' % (t / max($reqs, 1))]) + '\n')"
}
cells=$BENCH_DIR/bench-vhost.cells
: >"$cells"

# The two back ends run each row back to back, in alternating order: the
# disk is still busy after 1 MiB writes, and whoever comes first after them
# would pay for it (the first version of this script ran all rows of one back
# end, then all of the other, and its random reads measured that).
n=0
for ((round = 0; round < ${BENCH_REPEAT:-1}; round++)); do
for img in raw qcow2; do
	file=$raw
	[[ $img == qcow2 ]] && file=$qcow2
	for cache in "${caches[@]}"; do
		direct=off
		[[ $cache == none ]] && direct=on
		fmt_args=()
		node=f
		if [[ $img == qcow2 ]]; then
			fmt_args=(--blockdev driver=qcow2,node-name=q,file=f)
			node=q
		fi
		vstor=("vstor-vhost $img cache=$cache" "$VSTOR_VHOST" --socket "$sock" -f "$img"
			--cache="$cache" "$file")
		qsd=("qemu-storage-daemon $img cache=$cache" qemu-storage-daemon
			--blockdev "driver=file,node-name=f,filename=$file,cache.direct=$direct,aio=io_uring"
			"${fmt_args[@]}"
			--export "type=vhost-user-blk,id=e,node-name=$node,addr.type=unix,addr.path=$sock,writable=on,num-queues=1")
		other=("${qsd[@]}")
		if [[ -n ${VSTOR_VHOST_BASE:-} ]]; then
			other=("base ${vstor[0]}" "$VSTOR_VHOST_BASE" "${vstor[@]:2}")
		elif [[ ${BENCH_ANCHORS:-1} != 1 ]]; then
			other=()
		fi
		for row in "${rows[@]}"; do
			if ((n++ % 2 == 0)); then
				measure_one "${vstor[0]}" "$row" "${vstor[@]:1}"
				((${#other[@]})) && measure_one "${other[0]}" "$row" "${other[@]:1}"
			else
				((${#other[@]})) && measure_one "${other[0]}" "$row" "${other[@]:1}"
				measure_one "${vstor[0]}" "$row" "${vstor[@]:1}"
			fi
			if [[ -n ${VSTOR_VHOST_BASE:-} && ${BENCH_ANCHORS:-1} == 1 ]]; then
				measure_one "${qsd[0]}" "$row" "${qsd[@]:1}"
			fi
		done
	done
done
done
[[ -n ${VSTOR_VHOST_BASE:-} ]] && python3 "$(dirname "$0")/ab-table.py" "$cells" "base "
