#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# One export over several reactors (issue 16): NBD, fio's nbd engine with
# 1, 2 and 4 connections (numjobs, QD 32 in all), and vhost-user-blk,
# tests/tools/vhost-client with 1, 2 and 4 queues (QD 32 in all), against
#   vstord --reactors 1,
#   vstord --reactors 2 (the export's connections all on its home),
#   vstord --reactors 2 with x-multi-reactor (connections in turn on both,
#     queue i on reactor home + i),
#   qemu-storage-daemon (the same command line, without x-multi-reactor),
# and fio on the image file itself (io_uring, O_DIRECT, the same jobs and
# depth: the device's ceiling). Cache none (cache.direct=on, aio=io_uring),
# raw and fully allocated qcow2. Each round runs the servers in a rotating
# order; the table at the end has medians over the rounds, CPU per request
# of the server (utime+stime over the run / requests), and each row against
# the device. Not a test: it asserts nothing.
#
# Environment: VSTORD (default build/vstord/vstord), BENCH_DIR (default
# var/bench; not tmpfs), BENCH_SIZE (default 1G), BENCH_RUNTIME (seconds
# per cell, default 4), BENCH_REPEAT (rounds, default 3), BENCH_ROWS
# (default "randread randwrite"), BENCH_CONNS (default "1 2 4"),
# BENCH_IMAGES (default "raw qcow2"), BENCH_PROTOS (default "nbd vhost"),
# BENCH_ANCHORS (default 1; 0 skips qsd), VHOST_CLIENT (default
# build/tests/tools/vhost-client).
set -euo pipefail
cd "$(dirname "$0")/.."

VSTORD=${VSTORD:-build/vstord/vstord}
BENCH_DIR=$(realpath -m "${BENCH_DIR:-var/bench}")
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_RUNTIME=${BENCH_RUNTIME:-4}
read -r -a rows <<<"${BENCH_ROWS:-randread randwrite}"
read -r -a conns <<<"${BENCH_CONNS:-1 2 4}"
read -r -a images <<<"${BENCH_IMAGES:-raw qcow2}"
read -r -a protos <<<"${BENCH_PROTOS:-nbd vhost}"
VHOST_CLIENT=${VHOST_CLIENT:-build/tests/tools/vhost-client}
for t in fio qemu-img; do
	command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 1; }
done
[[ ${BENCH_ANCHORS:-1} == 0 ]] || command -v qemu-storage-daemon >/dev/null ||
	{ echo "bench: qemu-storage-daemon not found" >&2; exit 1; }
[[ -x $VSTORD ]] || { echo "bench: $VSTORD not built" >&2; exit 1; }

mkdir -p "$BENCH_DIR"
raw=$BENCH_DIR/multi.raw
qcow2=$BENCH_DIR/multi.qcow2
sock=$BENCH_DIR/bench-multi.sock
cells=$BENCH_DIR/bench-multi.cells
if [[ ! -f $raw ]]; then
	echo "bench: writing $raw ($BENCH_SIZE of random data)" >&2
	fio --name=fill --filename="$raw" --size="$BENCH_SIZE" --rw=write --bs=1M \
		--ioengine=psync --refill_buffers --output=/dev/null
	rm -f "$qcow2"
fi
[[ -f $qcow2 ]] || qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
size_bytes=$(stat -c %s "$raw")

server_pid=
stop_server()
{
	[[ -n $server_pid ]] || return 0
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
	rm -f "$sock"
}
trap stop_server EXIT

# start SERVER IMG PROTO N: the server on $sock, exporting the image as
# "d" (NBD) or with N queues (vhost-user-blk).
start()
{
	local srv=$1 img=$2 proto=$3 nq=$4 file=$raw fmt=raw extra="" prog=$VSTORD args=() export
	[[ $img == qcow2 ]] && file=$qcow2 fmt=qcow2
	case $srv in
	vstord-r1) args=(--reactors 1) ;;
	vstord-r2) args=(--reactors 2) ;;
	vstord-r2-multi) args=(--reactors 2) extra=",x-multi-reactor=on" ;;
	qsd) prog=qemu-storage-daemon ;;
	esac
	rm -f "$sock"
	if [[ $proto == nbd ]]; then
		args+=(--nbd-server "addr.type=unix,addr.path=$sock")
		export="type=nbd,id=e,node-name=d,name=d,writable=on$extra"
	else
		export="type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$sock"
		export+=",writable=on,num-queues=$nq$extra"
	fi
	"$prog" "${args[@]}" \
		--blockdev "driver=file,node-name=f,filename=$file,cache.direct=on,aio=io_uring" \
		--blockdev "driver=$fmt,node-name=d,file=f" --export "$export" 2>/dev/null &
	server_pid=$!
	for ((i = 0; i < 500; i++)); do
		[[ -S $sock ]] && return 0
		sleep 0.01
	done
	echo "bench: $srv did not start" >&2
	exit 1
}

# run_client PROTO ROW N [FILE] -> "IOPS REQUESTS": fio over NBD with N
# connections, vhost-client with N queues, or fio on FILE with N jobs.
run_client()
{
	local proto=$1 row=$2 n=$3 target out
	shift
	if [[ $proto == vhost && -z ${3:-} ]]; then
		out=$(timeout $((BENCH_RUNTIME + 60)) "$VHOST_CLIENT" "$sock" bench "$row" 4k \
			$((32 / n)) "$BENCH_RUNTIME" "$n")
		read -r _ iops _ _ _ reqs <<<"$out"
		echo "$iops $reqs"
		return
	fi
	run_fio "$@"
}

run_fio()
{
	local row=$1 n=$2 target
	if [[ -n ${3:-} ]]; then
		target=(--ioengine=io_uring --direct=1 --filename="$3")
	else
		target=(--ioengine=nbd --uri="nbd+unix:///d?socket=$sock")
	fi
	fio --name=b "${target[@]}" --rw="$row" --bs=4k --iodepth=$((32 / n)) --numjobs="$n" \
		--group_reporting --time_based --runtime="$BENCH_RUNTIME" --size="$size_bytes" \
		--output-format=json --output="$BENCH_DIR/multi-fio.json" >/dev/null 2>&1
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
io = j["read"] if j["read"]["total_ios"] else j["write"]
print("%.0f %d" % (io["iops"], io["total_ios"]))' "$BENCH_DIR/multi-fio.json"
}

hz=$(getconf CLK_TCK)
servers=(vstord-r1 vstord-r2 vstord-r2-multi)
[[ ${BENCH_ANCHORS:-1} == 1 ]] && servers+=(qsd)
: >"$cells"
printf '%-6s %-22s %-10s %-5s %10s %10s\n' round server row conns IOPS "us/req"
for ((round = 0; round < ${BENCH_REPEAT:-3}; round++)); do
	for row in "${rows[@]}"; do
		for c in "${conns[@]}"; do
			sync
			read -r iops _ <<<"$(run_fio "$row" "$c" "$raw")"
			for img in "${images[@]}"; do
				for proto in "${protos[@]}"; do
					printf '%s\t%s\t%s\t%s\t%s\n' "device" "$proto $img $row" "$c" "$iops" nan >>"$cells"
				done
			done
			printf '%-6s %-28s %-10s %-5s %10s %10s\n' "$round" device "$row" "$c" "$iops" -
			for img in "${images[@]}"; do
				for proto in "${protos[@]}"; do
					for ((k = 0; k < ${#servers[@]}; k++)); do
						srv=${servers[$(((k + round) % ${#servers[@]}))]}
						sync
						start "$srv" "$img" "$proto" "$c"
						t0=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
						read -r iops reqs <<<"$(run_client "$proto" "$row" "$c")"
						t1=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
						stop_server
						us=$(python3 -c "print('%.2f' % (($t1 - $t0) / $hz * 1e6 / max($reqs, 1)))")
						printf '%s\t%s\t%s\t%s\t%s\n' "$srv" "$proto $img $row" "$c" "$iops" "$us" >>"$cells"
						printf '%-6s %-28s %-10s %-5s %10s %10s\n' "$round" "$srv $proto $img" "$row" "$c" "$iops" "$us"
					done
				done
			done
		done
	done
done
python3 "$(dirname "$0")/median-table.py" "$cells"
