#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord against its anchors in one run (issue 13).
#
# Export rows: 4 KiB random read and write at QD32 and QD1, raw and fully
# allocated qcow2, cache=none (O_DIRECT, aio=io_uring), one after the other
# for each row in an order that rotates, three servers per protocol:
#   NBD (fio's nbd engine, unix socket): vstord, vstor-nbd, qsd;
#   vhost-user-blk (tests/tools/vhost-client bench, one queue): vstord,
#   vstor-vhost, qsd.
# vstord and qemu-storage-daemon get the same command line (--blockdev,
# --nbd-server, --export). Each cell: IOPS and the server's CPU time per
# request (utime+stime from /proc/PID/stat over the run / requests). The
# device limit is fio (io_uring, O_DIRECT) on the raw file with the same row.
#
# Job rows: live mirror (sync=full of the raw image to a new raw file) and
# live active commit (a qcow2 overlay holding data over the first half of
# the image into its raw base) while fio writes 4 KiB at random at QD8 over
# NBD into the exported node, vstord against qsd with the same QMP commands
# (tests/integration/qmp.py): the job's wall time from the QMP command to
# BLOCK_JOB_READY, its throughput (the data it had to copy / that time) and
# the client's write IOPS during the job (the writes fio's IOPS log counts
# in 100 ms windows between the command and READY, / that time).
#
# Every round runs every cell; the tables print medians over the rounds of
# each cell and of the per-round ratios (vstord / anchor: IOPS and
# throughput > 1 vstord faster, CPU < 1 vstord cheaper). Not a test: it
# asserts nothing.
#
# Environment: VSTORD (default build/vstord/vstord), VSTOR_NBD, VSTOR_VHOST,
# VHOST_CLIENT (build/ paths), BENCH_DIR (default var/bench; not tmpfs),
# BENCH_SIZE (default 2G; 512M for a quick run), BENCH_RUNTIME seconds per
# export cell (default 5), BENCH_REPEAT rounds (default 3; use >= 5 when
# the jobs take under a second), BENCH_PARTS (default "nbd vhost jobs"),
# BENCH_IMAGES (default "raw qcow2"), BENCH_JOB_QD (default 8),
# BENCH_JOB_RATE (fio's rate_iops for the load; default 0, unlimited),
# BENCH_JOB_KINDS (default "mirror mirror-wb commit"; mirror-wb is
# blockdev-mirror with copy-mode=write-blocking),
# BENCH_JOB_TIMEOUT (seconds a job may take to get ready; default 120: a
# job that is not ready by then is cancelled and its row marked),
# BENCH_ANCHORS (default 1; 0 runs vstord alone).
set -euo pipefail
cd "$(dirname "$0")/.."

VSTORD=${VSTORD:-build/vstord/vstord}
VSTOR_NBD=${VSTOR_NBD:-build/nbd-server/vstor-nbd}
VSTOR_VHOST=${VSTOR_VHOST:-build/vhost-user-blk/vstor-vhost}
VHOST_CLIENT=${VHOST_CLIENT:-build/tests/tools/vhost-client}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-2G}
BENCH_RUNTIME=${BENCH_RUNTIME:-5}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_JOB_QD=${BENCH_JOB_QD:-8}
BENCH_JOB_TIMEOUT=${BENCH_JOB_TIMEOUT:-120}
read -r -a job_kinds <<<"${BENCH_JOB_KINDS:-mirror mirror-wb commit}"
anchors=${BENCH_ANCHORS:-1}
read -r -a parts <<<"${BENCH_PARTS:-nbd vhost jobs}"
read -r -a images <<<"${BENCH_IMAGES:-raw qcow2}"
rows=(randread:32 randwrite:32 randread:1 randwrite:1)
need=(fio qemu-img qemu-io python3)
((anchors)) && need+=(qemu-storage-daemon)
for t in "${need[@]}"; do
	command -v "$t" >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
done
for b in "$VSTORD" "$VSTOR_NBD" "$VSTOR_VHOST" "$VHOST_CLIENT"; do
	[[ -x $b ]] || { echo "bench: $b not built" >&2; exit 1; }
done

mkdir -p "$BENCH_DIR"
raw=$BENCH_DIR/vstord-$BENCH_SIZE.raw
qcow2=$BENCH_DIR/vstord-$BENCH_SIZE.qcow2
sock=$BENCH_DIR/bench-vstord.sock
qmp=$BENCH_DIR/bench-vstord.qmp
log=$BENCH_DIR/bench-vstord.server.log
cells=$BENCH_DIR/bench-vstord.cells
if [[ ! -f $raw ]]; then
	echo "bench: writing $raw ($BENCH_SIZE of random data)" >&2
	fio --name=fill --filename="$raw" --size="$BENCH_SIZE" --rw=write --bs=1M --ioengine=psync \
		--refill_buffers --output=/dev/null
fi
[[ -f $qcow2 ]] || qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
size_bytes=$(stat -c %s "$raw")

server_pid=
export_name=
start_server()
{
	rm -f "$sock" "$qmp"
	"$@" >"$log" 2>&1 &
	server_pid=$!
	for ((i = 0; i < 1000; i++)); do
		[[ -S $sock ]] && return 0
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.01
	done
	echo "bench: server did not start: $*" >&2
	cat "$log" >&2
	exit 1
}
stop_server()
{
	[[ -n $server_pid ]] || return 0
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
	rm -f "$sock" "$qmp"
}
trap stop_server EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# daemon_args PROGRAM IMG FILE EXPORT-TYPE: a qsd command line for PROGRAM
# (vstord or qemu-storage-daemon) serving FILE as node "d" over SOCK.
daemon_args()
{
	local prog=$1 img=$2 file=$3 type=$4
	args=("$prog" --blockdev "driver=file,node-name=f,filename=$file,cache.direct=on,aio=io_uring")
	if [[ $img == qcow2 ]]; then
		args+=(--blockdev "driver=qcow2,node-name=d,file=f")
	else
		args+=(--blockdev "driver=raw,node-name=d,file=f")
	fi
	if [[ $type == nbd ]]; then
		args+=(--nbd-server "addr.type=unix,addr.path=$sock"
			--export "type=nbd,id=e,node-name=d,name=d,writable=on")
	else
		args+=(--export "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$sock,writable=on,num-queues=1")
	fi
}

# client PROTO ROW QD -> "IOPS REQUESTS" against the server on $sock (or
# the device with PROTO=device, FILE in $devfile).
client()
{
	local proto=$1 row=$2 qd=$3 out
	case $proto in
	nbd | device)
		local target=(--ioengine=nbd --uri="nbd+unix:///$export_name?socket=$sock")
		[[ $proto == device ]] && target=(--ioengine=io_uring --direct=1 --filename="$devfile")
		fio --name=b "${target[@]}" --rw="$row" --bs=4k --iodepth="$qd" --time_based \
			--runtime="$BENCH_RUNTIME" --size="$size_bytes" --output-format=json \
			--output="$BENCH_DIR/fio.json" >/dev/null 2>&1
		python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
io = j["read"] if j["read"]["total_ios"] else j["write"]
print("%.0f %d" % (io["iops"], io["total_ios"]))' "$BENCH_DIR/fio.json"
		;;
	vhost)
		out=$(timeout $((BENCH_RUNTIME + 60)) "$VHOST_CLIENT" "$sock" bench "$row" 4k "$qd" \
			"$BENCH_RUNTIME" 1)
		read -r _ iops _ _ _ reqs <<<"$out"
		echo "$iops $reqs"
		;;
	esac
}

# cell ROUND PROTO IMG ROW QD LABEL CMD...: one export cell.
cell()
{
	local round=$1 proto=$2 img=$3 row=$4 qd=$5 label=$6 t0 t1 iops reqs us=0
	shift 6
	sync
	if [[ $proto == device ]]; then
		read -r iops reqs < <(client device "$row" "$qd")
	else
		start_server "$@"
		t0=$(cpu_ticks "$server_pid")
		read -r iops reqs < <(client "$proto" "$row" "$qd")
		t1=$(cpu_ticks "$server_pid")
		stop_server
		us=$(python3 -c "print('%.2f' % (($t1 - $t0) / $hz * 1e6 / max($reqs, 1)))")
	fi
	printf '%-6s %-6s %-6s %-10s %-3s %-20s %10s %10s\n' "$round" "$proto" "$img" "$row" "$qd" \
		"$label" "$iops" "$us"
	printf '%s\t' export "$round" "$proto" "$img" "$row" "$qd" "$label" "$iops" >>"$cells"
	printf '%s\n' "$us" >>"$cells"
}

# job ROUND KIND SERVER: one live job under the fio load; appends
# "job ROUND KIND SERVER SECONDS BYTES OFFSET CLIENT-IOPS CPU-S" to $cells.
job()
{
	local round=$1 kind=$2 srv=$3 prog=qemu-storage-daemon node=d file=$raw
	[[ $srv == vstord ]] && prog=$VSTORD
	local d=$BENCH_DIR/bench-vstord-job
	rm -rf "$d"
	mkdir -p "$d"
	args=("$prog")
	if [[ $kind == commit ]]; then
		# top over base: data in the first half of the image, written
		# before the server starts.
		qemu-img create -q -f qcow2 -b "$(realpath "$raw")" -F raw "$d/top.qcow2"
		qemu-io -f qcow2 -c "write -P 0x5a 0 $((size_bytes / 2))" "$d/top.qcow2" >/dev/null
		file=$d/top.qcow2
		args+=(--blockdev "driver=file,node-name=bf,filename=$raw,cache.direct=on,aio=io_uring"
			--blockdev "driver=raw,node-name=base,file=bf"
			--blockdev "driver=file,node-name=f,filename=$file,cache.direct=on,aio=io_uring"
			--blockdev "driver=qcow2,node-name=d,file=f,backing=base")
	else
		qemu-img create -q -f raw "$d/target.raw" "$size_bytes"
		args+=(--blockdev "driver=file,node-name=f,filename=$raw,cache.direct=on,aio=io_uring"
			--blockdev "driver=raw,node-name=d,file=f"
			--blockdev "driver=file,node-name=tf,filename=$d/target.raw,cache.direct=on,aio=io_uring"
			--blockdev "driver=raw,node-name=t,file=tf")
	fi
	args+=(--nbd-server "addr.type=unix,addr.path=$sock"
		--export "type=nbd,id=e,node-name=$node,name=d,writable=on"
		--chardev "socket,id=m0,path=$qmp,server=on,wait=off" --monitor chardev=m0)
	sync
	start_server "${args[@]}"
	PYTHONPATH=tests/integration python3 - "$d" "$kind" "$srv" "$round" "$server_pid" "$qmp" \
		"$sock" "$size_bytes" "$BENCH_JOB_QD" "$cells" "$hz" "$BENCH_JOB_TIMEOUT" \
		"${BENCH_JOB_RATE:-0}" <<'PY'
import glob, os, signal, socket, subprocess, sys, time
from qmp import QMP
d, kind, srv, rnd, pid, qmp, sock, size, qd, cells, hz, timeout, rate = sys.argv[1:]
size, pid, hz, timeout = int(size), int(pid), int(hz), float(timeout)
def ticks():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
deadline = time.time() + 10
while not os.path.exists(qmp):
    assert time.time() < deadline, "no QMP socket"
    time.sleep(0.01)
c = QMP(qmp, timeout=600)
fio = subprocess.Popen(["fio", "--name=load", "--ioengine=nbd",
                        "--uri=nbd+unix:///d?socket=" + sock, "--rw=randwrite", "--bs=4k",
                        "--iodepth=" + qd, "--time_based", "--runtime=3600",
                        "--size=%d" % size, "--write_iops_log=" + d + "/load",
                        "--log_avg_msec=100", "--log_unix_epoch=1", "--output=/dev/null"] +
                       (["--rate_iops=" + rate] if rate != "0" else []),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)  # the load runs before the job starts
cpu0 = ticks()
t0 = time.time()
if kind.startswith("mirror"):
    c.cmd("blockdev-mirror", job_id="j", device="d", target="t", sync="full",
          copy_mode="write-blocking" if kind == "mirror-wb" else "background")
    copy = size
else:
    c.cmd("block-commit", job_id="j", device="d")
    copy = size // 2
c.sock.settimeout(timeout)
try:
    offset = c.event("BLOCK_JOB_READY")["data"]["offset"]
    ready = 1
except socket.timeout:
    ready = 0
t1 = time.time()
cpu1 = ticks()
c.sock.settimeout(600)
if not ready:
    offset = c.cmd("query-block-jobs")[0]["offset"]
time.sleep(0.3)  # the log's last sample covers the job's end
fio.send_signal(signal.SIGINT)
fio.wait(timeout=60)
samples = []
for path in glob.glob(d + "/load_iops*.log"):
    for line in open(path):
        f = line.split(",")
        ms, v = int(f[0]), int(f[1])
        if t0 * 1000 + 100 <= ms <= t1 * 1000:
            samples.append(v)
# Each sample is the IOPS of a 100 ms window; fio logs no window without
# a completion, so count operations over the job's time, not mean samples.
iops = sum(samples) * 0.1 / (t1 - t0)
c.cmd("block-job-cancel", device="j", force=not ready)
c.event("BLOCK_JOB_COMPLETED" if ready else "BLOCK_JOB_CANCELLED")
row = ["job", rnd, kind, srv, "%.3f" % (t1 - t0), str(copy), str(offset),
       "%.0f" % iops, "%.2f" % ((cpu1 - cpu0) / hz), str(ready)]
open(cells, "a").write("\t".join(row) + "\n")
print("%-6s %-7s %-8s %8.2f s%s %9.1f MiB/s  copied %6.0f MiB  client %7.0f IOPS (%d samples)"
      "  server CPU %.2f s" % (rnd, kind, srv, t1 - t0, "" if ready else " (not ready)",
                              copy / (t1 - t0) / 2**20, offset / 2**20, iops, len(samples),
                              (cpu1 - cpu0) / hz))
c.cmd("quit")
PY
	for ((i = 0; i < 1000; i++)); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.01
	done
	stop_server
}

: >"$cells"
echo "# $(date -u '+%F %T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), BENCH_SIZE=$BENCH_SIZE"
printf '%-6s %-6s %-6s %-10s %-3s %-20s %10s %10s\n' round proto image row QD server IOPS "us/req"
n=0
for ((round = 0; round < BENCH_REPEAT; round++)); do
	[[ " ${parts[*]} " == *" nbd "* || " ${parts[*]} " == *" vhost "* ]] || images=()
	for img in "${images[@]}"; do
		file=$raw
		[[ $img == qcow2 ]] && file=$qcow2
		for r in "${rows[@]}"; do
			row=${r%:*} qd=${r#*:}
			if [[ $img == raw ]]; then
				devfile=$raw
				cell "$round" device raw "$row" "$qd" "device (fio)"
			fi
			for proto in nbd vhost; do
				[[ " ${parts[*]} " == *" $proto "* ]] || continue
				servers=(vstord alone)
				((anchors)) && servers+=(qsd)
				# Rotate who goes first, cell by cell.
				k=$((n++ % ${#servers[@]}))
				servers=("${servers[@]:k}" "${servers[@]:0:k}")
				for s in "${servers[@]}"; do
					case $s in
					vstord) daemon_args "$VSTORD" "$img" "$file" "$proto" && export_name=d ;;
					qsd) daemon_args qemu-storage-daemon "$img" "$file" "$proto" && export_name=d ;;
					alone)
						if [[ $proto == nbd ]]; then
							args=("$VSTOR_NBD" -t -e 0 -k "$sock" -f "$img" --cache=none "$file")
							export_name=
						else
							args=("$VSTOR_VHOST" --socket "$sock" -f "$img" --cache=none "$file")
						fi
						s=vstor-$proto
						;;
					esac
					cell "$round" "$proto" "$img" "$row" "$qd" "$s" "${args[@]}"
				done
			done
		done
	done
	if [[ " ${parts[*]} " == *" jobs "* ]]; then
		for kind in "${job_kinds[@]}"; do
			servers=(vstord)
			((anchors)) && servers+=(qsd)
			((round % 2 && ${#servers[@]} == 2)) && servers=(qsd vstord)
			for s in "${servers[@]}"; do
				job "$round" "$kind" "$s"
			done
		done
	fi
done

python3 - "$cells" <<'PY'
import statistics as st, sys
med = st.median
ex, jobs = {}, {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "export":
        _, rnd, proto, img, row, qd, srv, iops, us = f
        ex.setdefault((proto, img, row, qd), {}).setdefault(srv, {})[rnd] = (float(iops), float(us))
    elif f[0] == "job":
        _, rnd, kind, srv, secs, copy, off, iops, cpu, ready = f
        jobs.setdefault(kind, {}).setdefault(srv, {})[rnd] = (float(secs), int(copy), int(off),
                                                              float(iops), float(cpu), int(ready))
def ratio(a, b, i):
    rs = [a[r][i] / b[r][i] for r in a if r in b and b[r][i] > 0]
    return "%6.2f" % med(rs) if rs else "     -"
if ex:
    print("\nExport rows: medians over the rounds; ratios are medians of per-round ratios"
          "\n(vstord/alone and vstord/qsd: IOPS > 1 vstord faster, CPU < 1 vstord cheaper)")
    print("%-6s %-6s %-10s %-3s %8s %8s %8s %8s %7s %7s %7s %7s %7s %7s %7s" %
          ("proto", "image", "row", "QD", "device", "vstord", "alone", "qsd", "v/alone", "v/qsd",
           "us vd", "us alone", "us qsd", "v/alone", "v/qsd"))
    for (proto, img, row, qd), s in ex.items():
        if proto == "device":
            continue
        dev = ex.get(("device", "raw", row, qd), {}).get("device (fio)", {})
        alone = "vstor-" + proto
        def m(name, i):
            v = s.get(name)
            return med(x[i] for x in v.values()) if v else float("nan")
        v = s.get("vstord", {})
        print("%-6s %-6s %-10s %-3s %8.0f %8.0f %8.0f %8.0f %7s %7s %7.2f %7.2f %7.2f %7s %7s" %
              (proto, img, row, qd, med(x[0] for x in dev.values()) if dev else float("nan"),
               m("vstord", 0), m(alone, 0), m("qsd", 0), ratio(v, s.get(alone, {}), 0),
               ratio(v, s.get("qsd", {}), 0), m("vstord", 1), m(alone, 1), m("qsd", 1),
               ratio(v, s.get(alone, {}), 1), ratio(v, s.get("qsd", {}), 1)))
if jobs:
    print("\nJob rows under a 4 KiB random-write load over NBD: medians over the rounds"
          "\n(time from the command to BLOCK_JOB_READY; MiB/s = data to copy / time;"
          "\nclient IOPS = fio's write IOPS during the job; ratios vstord/qsd, medians of per-round ratios)")
    print("%-7s %-8s %8s %9s %10s %9s %12s %6s" % ("job", "server", "seconds", "MiB/s",
                                                 "copied MiB", "client", "server CPU s", "ready"))
    for kind, s in jobs.items():
        for srv, v in s.items():
            print("%-7s %-8s %8.2f %9.1f %10.0f %9.0f %12.2f %3d/%d" %
                  (kind, srv, med(x[0] for x in v.values()),
                   med(x[1] / x[0] / 2**20 for x in v.values()),
                   med(x[2] / 2**20 for x in v.values()), med(x[3] for x in v.values()),
                   med(x[4] for x in v.values()), sum(x[5] for x in v.values()), len(v)))
        if "vstord" in s and "qsd" in s:
            a, b = s["vstord"], s["qsd"]
            tp = [b[r][0] / a[r][0] for r in a if r in b]
            cl = [a[r][3] / b[r][3] for r in a if r in b and b[r][3] > 0]
            print("%-7s vstord/qsd: throughput %.2f%s, client IOPS %s" %
                  (kind, med(tp), "" if all(x[5] for x in a.values()) else
                   " (at most: vstord not ready within the timeout)",
                   "%.2f" % med(cl) if cl else "-"))
PY
