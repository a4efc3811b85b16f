#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The rows of issue 14's Benchmark section that vstor backup measures, on
# one vstord exporting a qcow2 disk of BENCH_SIZE MiB filled with data:
#   full        wall seconds of `vstor backup` (full) of the whole disk
#   incr-1pct   wall seconds of an incremental backup after 1% of the disk
#               (random 64 KiB granules) was rewritten; the ratio
#               full / incr-1pct should be >= 20
#   tracking    4k random-write IOPS (fio's nbd engine) on the export
#               without and with an enabled dirty bitmap; overhead <= 3%
#   during-bk   4k random-write IOPS while a checkpointed backup reads the
#               view, against the runs without one (goal >= 0.9), with the
#               checkpoint's copy-before-write counters (bytes copied per
#               guest write: the copy unit at work)
#   qsd-fleece  the anchor of during-bk: qemu-storage-daemon's own
#               fleecing (QEMU's recipe: a qcow2 scratch over the disk, a
#               copy-before-write filter, snapshot-access, NBD exports of
#               both) under the same fio load on the filter's export while a
#               reader pulls the view at the backup's rate; and qsd without
#               fleecing, so that the ratios read side by side
#   bs-status   block-status throughput (GiB of disk described per second)
#               of qemu:dirty-bitmap:NAME: vstord's export against qemu-nbd
#               -B on a copy of the same image with the same bitmap; each
#               side describes the whole disk again and again on one
#               connection for BENCH_BS_SECS; the ratio should be >= 1.0
# Prints one line per row. Not a test: it asserts nothing. On a machine
# that other work loads, the numbers are indicative only.
#
# Environment:
#   VSTOR, VSTORD  binaries to measure (default: build/cli/vstor, build/vstord/vstord)
#   BENCH_DIR      where the images go (default: var/bench)
#   BENCH_SIZE     disk size in MiB (default 4096)
#   BENCH_SECS     seconds of each fio run (default 10)
#   BENCH_REPS     alternating runs of the tracking row (default 3)
#   BENCH_BK_BW    MiB/s of the backup under the during-bk row (default: half the disk per run)
#   BENCH_BS_SECS  seconds of each block-status measurement (default 2)
#   BENCH_QSD      0: leave out the qsd-fleece row (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR=${VSTOR:-build/cli/vstor}
VSTORD=${VSTORD:-build/vstord/vstord}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-4096}
BENCH_SECS=${BENCH_SECS:-10}

for t in qemu-img qemu-io qemu-nbd nbdinfo fio python3 qemu-storage-daemon; do
	command -v $t >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
done
for b in "$VSTOR" "$VSTORD"; do
	[[ -x $b ]] || { echo "bench: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
mkdir -p "$BENCH_DIR"
W=$(mktemp -d "$BENCH_DIR/backup.XXXXXX")
W=$(cd "$W" && pwd)
VD_PID=
QN_PID=
QS_PID=
RD_PID=
cleanup()
{
	[[ -z $VD_PID ]] || kill "$VD_PID" 2>/dev/null || true
	[[ -z $QN_PID ]] || kill "$QN_PID" 2>/dev/null || true
	[[ -z $QS_PID ]] || kill "$QS_PID" 2>/dev/null || true
	[[ -z $RD_PID ]] || kill "$RD_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

qmp() { # qmp COMMAND JSON-ARGS (QMP_SOCK: another daemon's monitor)
	python3 -c 'import json, sys; sys.path.insert(0, "tests/integration")
from qmp import QMP
r = QMP(sys.argv[1]).execute(sys.argv[2], json.loads(sys.argv[3]))
assert "return" in r, r' "${QMP_SOCK:-$W/vd.sock}" "$1" "${2:-{\}}"
}
qmp_get() { # qmp_get COMMAND: the return value, as JSON
	python3 -c 'import json, sys; sys.path.insert(0, "tests/integration")
from qmp import QMP
print(json.dumps(QMP(sys.argv[1]).cmd(sys.argv[2])))' "${QMP_SOCK:-$W/vd.sock}" "$1"
}
wait_file() { for _ in $(seq 500); do [[ -e $1 ]] && return 0; sleep 0.02; done; return 1; }
now() { date +%s.%N; }

# A disk full of data (not zeroes: a backup skips those).
disk=$W/disk.qcow2
qemu-img create -q -f qcow2 "$disk" "${BENCH_SIZE}M"
# (qemu-io takes at most 2 GiB per request: 512 MiB at a time)
fill=()
for ((m = 0; m < BENCH_SIZE; m += 512)); do
	fill+=(-c "write -P 0x5a ${m}M $((BENCH_SIZE - m < 512 ? BENCH_SIZE - m : 512))M")
done
qemu-io -f qcow2 "${fill[@]}" "$disk" >/dev/null

"$VSTORD" --pidfile "$W/vd.pid" --monitor "$W/vd.sock" \
	--blockdev "{\"driver\": \"qcow2\", \"node-name\": \"disk\", \"file\": {\"driver\": \"file\", \"filename\": \"$disk\"}}" \
	--nbd-server "addr.type=unix,addr.path=$W/nbd.sock" \
	--export type=nbd,id=disk,node-name=disk,writable=on >"$W/vd.log" 2>&1 &
wait_file "$W/vd.pid" || { cat "$W/vd.log" >&2; exit 1; }
VD_PID=$(<"$W/vd.pid")
uri="nbd+unix:///disk?socket=$W/nbd.sock"

# 4k random writes for BENCH_SECS over NBD (default: vstord's export): IOPS.
iops() {
	fio --name=w --ioengine=nbd --uri="${1:-$uri}" --rw=randwrite --bs=4k --iodepth=16 \
		--size="${BENCH_SIZE}M" --time_based --runtime="$BENCH_SECS" --output-format=json \
		--output="$W/fio.json" >/dev/null
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
assert not j["error"], j["error"]
print(int(j["write"]["iops"]))' "$W/fio.json"
}

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# Tracking overhead: runs without and with an enabled bitmap, alternating
# (BENCH_REPS each, default 3), medians.
offs=() ons=()
for ((rep = 0; rep < ${BENCH_REPS:-3}; rep++)); do
	offs+=("$(iops)")
	qmp block-dirty-bitmap-add '{"node": "disk", "name": "bench"}'
	ons+=("$(iops)")
	qmp block-dirty-bitmap-remove '{"node": "disk", "name": "bench"}'
done
iops_off=$(median "${offs[@]}")
iops_on=$(median "${ons[@]}")
python3 -c 'import sys; a, b = map(float, sys.argv[1:3])
print("tracking    iops without %d  with bitmap %d  overhead %.1f%%  (runs: %s / %s)" %
      (a, b, 100 * (a - b) / a, sys.argv[3], sys.argv[4]))' \
	"$iops_off" "$iops_on" "${offs[*]}" "${ons[*]}"

backup() {
	"$VSTOR" backup disk --to "$W/chain" --nbd "$W/nbd.sock" --vstord "$W/vd.sock" \
		--scratch-dir "$W" --output=json "$@"
}
t0=$(now)
backup >"$W/full.json"
t1=$(now)
# 1% of the granules, rewritten at random places.
python3 - "$BENCH_SIZE" >"$W/io.cmds" <<'PY'
import random, sys
g = int(sys.argv[1]) * 16  # 64 KiB granules
random.seed(14)
for x in random.sample(range(g), max(1, g // 100)):
    print("write -P 0xa5 %d 65536" % (x * 65536))
PY
mapfile -t cmds <"$W/io.cmds"
qemu-io -f raw "${cmds[@]/#/-c}" "$uri" >/dev/null
t2=$(now)
backup --incremental >"$W/inc.json"
t3=$(now)
python3 -c 'import json, sys
f, i = float(sys.argv[2]) - float(sys.argv[1]), float(sys.argv[4]) - float(sys.argv[3])
print("full        %.2f s  %s bytes read" % (f, json.load(open(sys.argv[5]))["bytes-read"]))
print("incr-1pct   %.2f s  %s bytes read  full/incr %.1fx (goal >= 20)" %
      (i, json.load(open(sys.argv[6]))["bytes-read"], f / i))' \
	"$t0" "$t1" "$t2" "$t3" "$W/full.json" "$W/inc.json"

# Guest writes during a checkpointed backup: the same fio run while a full
# backup (into a new chain, rate-limited so it lasts the whole run) reads the
# checkpoint's view, against the median without one (above).
"$VSTOR" backup disk --to "$W/chain2" --nbd "$W/nbd.sock" --vstord "$W/vd.sock" \
	--scratch-dir "$W" --bandwidth "${BENCH_BK_BW:-$((BENCH_SIZE / BENCH_SECS / 2 + 1))}" >/dev/null 2>"$W/bk2.err" &
BK=$!
for _ in $(seq 500); do
	qmp_get query-checkpoints | grep -q '"name"' && break
	sleep 0.02
done
iops_bk=$(iops)
ck_stats=$(qmp_get query-checkpoints)
if kill -0 "$BK" 2>/dev/null; then
	# Still reading: stop it (vstor backup removes its part file and checkpoint).
	bk_state="still running at the end, stopped"
	kill -TERM "$BK"
	wait "$BK" || true
else
	bk_state="ended before the run did"
	wait "$BK" || { cat "$W/bk2.err" >&2; exit 1; }
fi
python3 -c 'import sys; a, b = map(float, sys.argv[1:3])
print("during-bk   iops without %d  during a backup %d  ratio %.2f (goal >= 0.9; backup %s)" %
      (a, b, b / a, sys.argv[3]))' "$iops_off" "$iops_bk" "$bk_state"
python3 -c 'import json, sys
c = json.loads(sys.argv[1])
s = c[0].get("copy-before-write") if c else None
if s:
    print("during-bk   copy unit %d B  writes %d  copies %d  copied %.1f KiB per write  waits %d" %
          (s["copy-unit"], s["writes"], s["copies"], s["copied-bytes"] / 1024 / max(1, s["writes"]),
           s["waits"]))
else:
    print("during-bk   (the checkpoint was gone before its counters were read)")' "$ck_stats"

# Block status of the dirty-bitmap context: the checkpoint's bitmap,
# exported by vstord, against qemu-nbd -B on a copy with the same bitmap.
bm=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"])' "$W/inc.json")
qemu-io -f raw "${cmds[@]/#/-c}" "$uri" >/dev/null
qmp block-dirty-bitmap-disable "{\"node\": \"disk\", \"name\": \"$bm\"}"
qmp block-export-add "{\"type\": \"nbd\", \"id\": \"bm\", \"name\": \"bm\", \"node-name\": \"disk\", \"bitmaps\": [\"$bm\"]}"
mapspeed() { # URI: GiB/s of block status of the bitmap, the whole disk again and again
	python3 - "$1" "qemu:dirty-bitmap:$bm" "${BENCH_BS_SECS:-2}" <<'EOF'
import sys, time
import nbd
h = nbd.NBD()
h.add_meta_context(sys.argv[2])
h.connect_uri(sys.argv[1])
size, secs = h.get_size(), float(sys.argv[3])
pos = [0]
def cb(ctx, offset, entries, err):
    if ctx == sys.argv[2]:
        pos[0] = offset + sum(entries[0::2])
    return 0
described, t0 = 0, time.monotonic()
while True:
    pos[0] = 0
    while pos[0] < size:
        h.block_status(min(size - pos[0], 1 << 31), pos[0], cb)
    described += size
    t = time.monotonic() - t0
    if t >= secs:
        break
print(described / t / (1 << 30))
EOF
}
vd_speed=$(mapspeed "nbd+unix:///bm?socket=$W/nbd.sock")
# qemu-nbd needs the bitmap in the file: stop vstord cleanly (it writes the
# bitmaps back), copy, and serve the copy.
qmp quit '{}' || true
for _ in $(seq 500); do kill -0 "$VD_PID" 2>/dev/null || break; sleep 0.02; done
VD_PID=
cp --sparse=always "$disk" "$W/copy.qcow2"
qemu-nbd -t -f qcow2 -r -B "$bm" -k "$W/qn.sock" --pid-file="$W/qn.pid" "$W/copy.qcow2" &
wait_file "$W/qn.pid" && wait_file "$W/qn.sock"
QN_PID=$(<"$W/qn.pid")
qn_speed=$(mapspeed "nbd+unix:///?socket=$W/qn.sock")
python3 -c 'import sys; a, b = map(float, sys.argv[1:])
print("bs-status   vstord %.1f GiB/s  qemu-nbd %.1f GiB/s  ratio %.2f (goal >= 1.0)" % (a, b, a / b))' \
	"$vd_speed" "$qn_speed"

# The anchor of the during-bk row: qsd's own fleecing of the same disk
# (vstord has quit), the same fio load on the copy-before-write filter's
# export while a reader pulls the snapshot-access view at the backup's
# rate; and qsd without fleecing, on the disk's own export.
[[ ${BENCH_QSD:-1} = 0 ]] && exit 0
kill "$QN_PID" 2>/dev/null || true
wait "$QN_PID" 2>/dev/null || true
QN_PID=
qemu-img create -q -f qcow2 -b "$disk" -F qcow2 "$W/qfl.qcow2"
qemu-storage-daemon --pidfile "$W/qs.pid" \
	--chardev "socket,id=m0,path=$W/qs.sock,server=on,wait=off" --monitor chardev=m0 \
	--blockdev "{\"driver\": \"qcow2\", \"node-name\": \"disk\", \"file\": {\"driver\": \"file\", \"filename\": \"$disk\"}}" \
	--nbd-server "addr.type=unix,addr.path=$W/qnbd.sock" \
	--export type=nbd,id=disk,node-name=disk,writable=on >"$W/qs.log" 2>&1 &
wait_file "$W/qs.pid" && wait_file "$W/qs.sock" || { cat "$W/qs.log" >&2; exit 1; }
QS_PID=$(<"$W/qs.pid")
export QMP_SOCK=$W/qs.sock
qs_off=$(iops "nbd+unix:///disk?socket=$W/qnbd.sock")
qmp block-export-del '{"id": "disk"}'
for _ in $(seq 500); do
	[[ $(qmp_get query-block-exports) = "[]" ]] && break
	sleep 0.02
done
qmp blockdev-add "{\"driver\": \"qcow2\", \"node-name\": \"tmp\", \"file\": {\"driver\": \"file\", \"filename\": \"$W/qfl.qcow2\"}, \"backing\": \"disk\"}"
qmp blockdev-add '{"driver": "copy-before-write", "node-name": "cbw", "file": "disk", "target": "tmp"}'
qmp blockdev-add '{"driver": "snapshot-access", "node-name": "acc", "file": "cbw"}'
qmp block-export-add '{"type": "nbd", "id": "guest", "name": "guest", "node-name": "cbw", "writable": true}'
qmp block-export-add '{"type": "nbd", "id": "fleece", "name": "fleece", "node-name": "acc"}'
unset QMP_SOCK
# The reader: 1 MiB reads of the view at the backup's rate (BENCH_BK_BW).
python3 - "nbd+unix:///fleece?socket=$W/qnbd.sock" \
	"${BENCH_BK_BW:-$((BENCH_SIZE / BENCH_SECS / 2 + 1))}" <<'EOF' &
import sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size, bw, t0, off = h.get_size(), float(sys.argv[2]), time.monotonic(), 0
while off < size:
    n = min(1 << 20, size - off)
    h.pread(n, off)
    off += n
    ahead = off / (bw * (1 << 20)) - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
EOF
RD_PID=$!
qs_bk=$(iops "nbd+unix:///guest?socket=$W/qnbd.sock")
if kill -0 "$RD_PID" 2>/dev/null; then
	rd_state="still running at the end, stopped"
	kill "$RD_PID"
	wait "$RD_PID" 2>/dev/null || true
else
	rd_state="ended before the run did"
	wait "$RD_PID" || exit 1
fi
RD_PID=
python3 -c 'import sys; a, b, v = map(float, sys.argv[1:4])
print("qsd-fleece  qsd iops without %d  during fleecing %d  ratio %.2f (reader %s)" %
      (a, b, b / a, sys.argv[4]))
print("during-bk   vstord during a backup / qsd during fleecing: %.2f" % (v / b))' \
	"$qs_off" "$qs_bk" "$iops_bk" "$rd_state"
