#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor's block verbs (cli/vstor-block.c) driving a running daemon over QMP:
# first qemu-storage-daemon 7.2, the oracle of the QMP shapes (blockresize,
# snapshot-create-as, blockcommit, blockpull, blockcopy to a file and to a
# dir-pool volume, blockjob, blkdeviotune, domblkstat, blklist), with the
# resulting chains and data checked by qemu-img and qemu-io; then vstord,
# with the verbs it has (blockresize, both kinds of snapshot, domblkstat).
# The job and throttle verbs run against vstord too once it has the
# commands; until then each such sub-case checks the CLI's "not supported"
# error and says it skipped. Errors: a dead socket, a daemon that never
# greets, an unknown export, a bad size: a clear message and exit 1.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io qemu-storage-daemon
find_built VSTOR cli/vstor
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }

# A byte of an image at OFFSET, read with its backing chain (-U: the daemon holds it).
byte_at()
{
	qemu-io -U -r -f "${3:-qcow2}" -c "read -v $2 1" "$1" | awk 'NR == 1 { print $2 }'
}
# nbd_write SOCK EXPORT PATTERN OFFSET LEN
# (with a flush: the daemon's qcow2 metadata cache reaches the file, so that
# qemu-io reads what the daemon wrote)
nbd_write()
{
	qemu-io -f raw -c "write -P $3 $4 $5" -c flush "nbd+unix:///$2?socket=$1" >/dev/null ||
		fail "NBD write to $2"
}
nbd_flush() { qemu-io -f raw -c flush "nbd+unix:///$2?socket=$1" >/dev/null || fail "NBD flush"; }
backing_of() { qemu-img info -U --output=json "$1" | python3 -c 'import json, sys
print(json.load(sys.stdin).get("backing-filename", ""))'; }
commands_of() { python3 -c 'import sys
from qmp import QMP
c = QMP(sys.argv[1])
print(" ".join(x["name"] for x in c.cmd("query-commands")))' "$1"; }

# ---- qemu-storage-daemon ---------------------------------------------------------
log "qemu-storage-daemon"
qemu_img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" base.qcow2 >/dev/null
truncate -s 4M r.img
start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon \
	--blockdev "driver=file,node-name=f,filename=$WORKDIR/base.qcow2" \
	--blockdev driver=qcow2,node-name=q,file=f \
	--blockdev "driver=file,node-name=r,filename=$WORKDIR/r.img" \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/nbd.sock" \
	--export type=nbd,id=e1,node-name=q,writable=on \
	--chardev "socket,id=m0,path=$WORKDIR/qsd.sock,server=on,wait=off" --monitor chardev=m0 \
	--pidfile "$WORKDIR/qsd.pid"
QSD_PID=$DAEMON_PID
export VSTORD_SOCKET=$WORKDIR/qsd.sock

assert_rc 0 vstor blklist --all
assert_grep '^ e1 +q +.*/base.qcow2' "$WORKDIR/out" "blklist"
assert_rc 0 vstor blklist --output=json
python3 -c 'import json, sys
e = json.load(open(sys.argv[1]))
assert e[0]["export"] == "e1" and e[0]["node"] == "q", e' "$WORKDIR/out" || fail "blklist json"

log "errors: a clear message and exit 1"
assert_rc 1 vstor --connect "$WORKDIR/nosuch.sock" blockresize e1 1M
assert_grep "cannot connect to the daemon at '.*nosuch.sock'" "$WORKDIR/err"
assert_rc 1 vstor -c "$WORKDIR/nosuch.sock" blklist
assert_grep "cannot connect" "$WORKDIR/err"
python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[2], "w").write("1")
c, _ = s.accept()
time.sleep(30)' "$WORKDIR/mute.sock" "$WORKDIR/mute.ready" &
MUTE_PID=$!
register_pid "$MUTE_PID"
wait_for 10 test -s "$WORKDIR/mute.ready"
SECONDS_BEFORE=$SECONDS
VSTOR_QMP_TIMEOUT=1 assert_rc 1 vstor --connect "$WORKDIR/mute.sock" domblkstat e1
assert_grep "no greeting from the daemon" "$WORKDIR/err"
((SECONDS - SECONDS_BEFORE < 10)) || fail "a mute daemon held the CLI for too long"
kill "$MUTE_PID" 2>/dev/null || true
assert_rc 1 vstor blockresize nosuch 1M
assert_grep "no export or block node named 'nosuch'" "$WORKDIR/err"
assert_rc 1 vstor blockresize e1 12XB
assert_grep "malformed or out of range" "$WORKDIR/err"
assert_rc 1 vstor blockcommit e1
assert_grep "requires active flag" "$WORKDIR/err"

log "blockresize: a node without an export; qsd 7.2 refuses it under an export"
assert_rc 0 vstor blockresize r 8M
assert_grep "Block device 'r' is resized" "$WORKDIR/out"
assert_eq "$(stat -c %s r.img)" 8388608 "r.img's size"
assert_rc 0 vstor blockresize r 12288
assert_eq "$(stat -c %s r.img)" $((12288 * 1024)) "r.img's size (KiB by default)"
assert_rc 1 vstor blockresize e1 128M
assert_grep "unable to execute QEMU command 'block_resize'" "$WORKDIR/err"

log "domblkstat"
assert_rc 0 vstor domblkstat e1
assert_grep '^e1 wr_req [0-9]+$' "$WORKDIR/out" "domblkstat"
assert_grep '^e1 flush_total_times [0-9]+$' "$WORKDIR/out" "domblkstat"
assert_rc 0 vstor domblkstat e1 --human
assert_grep '^Device: e1' "$WORKDIR/out" "domblkstat --human"
assert_grep 'number of bytes written: +[0-9]+' "$WORKDIR/out" "domblkstat --human"

log "snapshot-create-as --disk-only, then blockcommit --active --pivot"
assert_rc 0 vstor snapshot-create-as e1 s1 --disk-only --diskspec "$WORKDIR/ov1.qcow2" --no-metadata
assert_grep "Domain snapshot s1 created" "$WORKDIR/out"
assert_eq "$(backing_of ov1.qcow2)" "$WORKDIR/base.qcow2" "ov1's backing file"
nbd_write "$WORKDIR/nbd.sock" q 0x22 1M 1M
assert_eq "$(byte_at base.qcow2 1M)" 00 "base before the commit"
assert_rc 0 vstor blockcommit e1 --active --pivot --wait --verbose
assert_grep "Successfully pivoted" "$WORKDIR/out"
assert_grep "Active Block Commit: \[100 %\]" "$WORKDIR/err" "progress"
assert_eq "$(byte_at base.qcow2 1M)" 22 "the committed data in base"
assert_rc 0 vstor blklist
assert_grep '^ e1 +q ' "$WORKDIR/out" "the export after the pivot"

log "snapshot-create-as (default overlay path), then blockpull --wait"
assert_rc 0 vstor snapshot-create-as e1 s2 --disk-only
[[ -f base.s2 ]] || fail "the default overlay base.s2 is missing"
assert_eq "$(backing_of base.s2)" "$WORKDIR/base.qcow2" "base.s2's backing file"
nbd_write "$WORKDIR/nbd.sock" q 0x33 2M 1M
assert_rc 0 vstor blockpull e1 --wait
assert_grep "Pull complete" "$WORKDIR/out"
assert_eq "$(backing_of base.s2)" "" "base.s2's backing file after the pull"
nbd_flush "$WORKDIR/nbd.sock" q
assert_eq "$(byte_at base.s2 0)" 11 "pulled data"
assert_eq "$(byte_at base.s2 1M)" 22 "pulled data"
assert_eq "$(byte_at base.s2 2M)" 33 "overlay data"

log "blockcopy --pivot to a file"
assert_rc 0 vstor blockcopy e1 --dest "$WORKDIR/copy.qcow2" --pivot --wait
assert_grep "Successfully pivoted" "$WORKDIR/out"
qemu-img compare -U base.s2 copy.qcow2 >/dev/null || fail "the copy differs from its source"
assert_rc 0 vstor blklist
assert_grep '^ e1 .*/copy.qcow2' "$WORKDIR/out" "the export after the copy"
nbd_write "$WORKDIR/nbd.sock" q 0x44 3M 64k
assert_eq "$(byte_at copy.qcow2 3M)" 44 "a write after the pivot lands in the copy"
assert_eq "$(byte_at base.s2 3M)" 00 "a write after the pivot stays out of the source"

log "blockcopy --pivot to a dir-pool volume"
mkdir -p pool
assert_rc 0 vstor pool-define-as p1 dir --target "$WORKDIR/pool"
assert_rc 0 vstor pool-start p1
assert_rc 0 vstor blockcopy e1 --dest-vol p1/v1.qcow2 --pivot --wait
assert_grep "Successfully pivoted" "$WORKDIR/out"
assert_rc 0 vstor vol-list p1
assert_grep 'v1.qcow2' "$WORKDIR/out" "vol-list"
qemu-img compare -U copy.qcow2 pool/v1.qcow2 >/dev/null || fail "the volume differs from its source"
[[ $(qemu-img info -U --output=json pool/v1.qcow2) == *'"virtual-size": 67108864'* ]] ||
	fail "the volume's size"
assert_rc 0 vstor blklist
assert_grep '^ e1 .*/pool/v1.qcow2' "$WORKDIR/out" "the export after the copy to a volume"

log "blockjob --info/--bandwidth/--abort on a slow copy"
assert_rc 0 vstor blockcopy e1 --dest "$WORKDIR/slow.qcow2" --bandwidth 1
assert_grep "Block Copy started" "$WORKDIR/out"
assert_rc 0 vstor blockjob e1 --info
assert_grep '^Block Copy: \[ *[0-9]+ %\]' "$WORKDIR/out" "blockjob --info"
assert_rc 0 vstor blockjob e1 --bandwidth 2
assert_rc 0 vstor blockjob e1 --raw
assert_grep '^ type=Block Copy' "$WORKDIR/out" "blockjob --raw"
assert_grep '^ bandwidth=2097152' "$WORKDIR/out" "blockjob --raw after --bandwidth"
assert_rc 0 vstor blockjob e1 --abort
assert_rc 0 vstor blockjob e1
assert_grep "No current block job for e1" "$WORKDIR/out"
assert_rc 0 vstor blklist --all
grep -q slow.qcow2 "$WORKDIR/out" && fail "the aborted copy's node is still there"
assert_rc 1 vstor blockjob e1 --abort
assert_grep "No active block job" "$WORKDIR/err"

log "blockcommit --top (an inner layer), --keep-overlay"
assert_rc 0 vstor snapshot-create-as e1 t1 --disk-only --diskspec "$WORKDIR/t1.qcow2"
nbd_write "$WORKDIR/nbd.sock" q 0x55 4M 64k
assert_rc 0 vstor snapshot-create-as e1 t2 --disk-only --diskspec "$WORKDIR/t2.qcow2"
nbd_write "$WORKDIR/nbd.sock" q 0x66 5M 64k
assert_rc 0 vstor blockcommit e1 --top "$WORKDIR/t1.qcow2" --wait
assert_grep "^Commit complete$" "$WORKDIR/out"
assert_eq "$(backing_of t2.qcow2)" "$WORKDIR/pool/v1.qcow2" "t2's backing file after the commit of t1"
assert_eq "$(byte_at pool/v1.qcow2 4M)" 55 "t1's data committed to the volume"
assert_rc 0 vstor blockcommit e1 --active --keep-overlay
assert_grep "Commit complete, overlay image kept" "$WORKDIR/out"
assert_rc 0 vstor blklist
assert_grep '^ e1 .*/t2.qcow2' "$WORKDIR/out" "the export keeps its overlay"
nbd_flush "$WORKDIR/nbd.sock" q
assert_eq "$(byte_at pool/v1.qcow2 5M)" 66 "t2's data committed to the volume"

log "blockcopy --finish, --shallow --pivot, --timeout"
assert_rc 0 vstor blockcopy e1 --dest "$WORKDIR/fin.qcow2" --finish
assert_grep "Successfully copied" "$WORKDIR/out"
assert_rc 0 vstor blklist --all
assert_grep '^ e1 .*/t2.qcow2' "$WORKDIR/out" "the export stays after --finish"
grep -q fin.qcow2 "$WORKDIR/out" && fail "the finished copy's node is still there"
nbd_flush "$WORKDIR/nbd.sock" q
qemu-img compare -U t2.qcow2 fin.qcow2 >/dev/null || fail "the finished copy differs"
assert_rc 0 vstor blockcopy e1 --dest "$WORKDIR/sh.qcow2" --shallow --pivot
assert_grep "Successfully pivoted" "$WORKDIR/out"
assert_eq "$(backing_of sh.qcow2)" "$WORKDIR/pool/v1.qcow2" "the shallow copy's backing file"
assert_rc 0 vstor blklist
assert_grep '^ e1 .*/sh.qcow2' "$WORKDIR/out" "the export after the shallow copy"
qemu-img compare -U t2.qcow2 sh.qcow2 >/dev/null || fail "the shallow copy's chain differs"
assert_rc 1 vstor blockcopy e1 --dest "$WORKDIR/to.qcow2" --bandwidth 64K --timeout 1
assert_grep "Copy aborted \(timeout\)" "$WORKDIR/err"
assert_rc 0 vstor blockjob e1
assert_grep "No current block job for e1" "$WORKDIR/out"
assert_rc 0 vstor blockcommit e1 --active --bandwidth 64K --output=json
assert_grep '"job": "vstor-e1"' "$WORKDIR/out" "blockcommit --output=json"
assert_rc 0 vstor blockjob e1 --output=json
python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
assert j["device"] == "vstor-e1" and j["type"] == "commit" and j["speed"] == 65536, j' \
	"$WORKDIR/out" || fail "blockjob --output=json"
assert_rc 0 vstor blockjob e1 --abort
assert_rc 0 vstor blklist
assert_grep '^ e1 .*/sh.qcow2' "$WORKDIR/out" "the export after an aborted commit"

log "blkdeviotune: the limits show; qsd 7.2 has no block_set_io_throttle"
assert_rc 0 vstor blkdeviotune e1
assert_grep '^total_bytes_sec: 0' "$WORKDIR/out" "blkdeviotune"
assert_rc 1 vstor blkdeviotune e1 --total-bytes-sec 10M
assert_grep "no command 'block_set_io_throttle'" "$WORKDIR/err"

python3 -c 'import sys
from qmp import QMP
QMP(sys.argv[1]).cmd("quit")' "$WORKDIR/qsd.sock" || true
wait_for 30 bash -c "! kill -0 $QSD_PID"
for f in base.qcow2 ov1.qcow2 base.s2 copy.qcow2 pool/v1.qcow2 t2.qcow2 fin.qcow2 sh.qcow2; do
	qemu_img check -q "$f" || fail "qemu-img check $f"
done
assert_eq "$(byte_at pool/v1.qcow2 0)" 11 "the volume's data"
assert_eq "$(byte_at pool/v1.qcow2 3M)" 44 "the volume's data"

# ---- vstord ------------------------------------------------------------------------
log "vstord"
qemu_img create -q -f qcow2 vbase.qcow2 64M
qemu-io -f qcow2 -c "write -P 0x55 0 1M" vbase.qcow2 >/dev/null
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" \
	--blockdev "driver=file,node-name=f,filename=$WORKDIR/vbase.qcow2" \
	--blockdev driver=qcow2,node-name=q,file=f \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/vnbd.sock" \
	--export type=nbd,id=e1,node-name=q,writable=on \
	--monitor "$WORKDIR/vd.sock" --pidfile "$WORKDIR/vd.pid"
VD_PID=$DAEMON_PID
export VSTORD_SOCKET=$WORKDIR/vd.sock
VD_COMMANDS=" $(commands_of "$WORKDIR/vd.sock") "

assert_rc 0 vstor blockresize e1 128M
assert_grep "Block device 'e1' is resized" "$WORKDIR/out"
nbd_write "$WORKDIR/vnbd.sock" q 0x66 1M 64k
assert_rc 0 vstor domblkstat e1
assert_grep '^e1 wr_req [1-9][0-9]*$' "$WORKDIR/out" "vstord's domblkstat"
assert_grep '^e1 wr_bytes (6553[6-9]|65[5-9][0-9]{2}|6[6-9][0-9]{3}|[7-9][0-9]{4}|[0-9]{6,})$' \
	"$WORKDIR/out" "vstord's domblkstat"
assert_rc 0 vstor snapshot-create-as e1 i1
assert_grep "Domain snapshot i1 created" "$WORKDIR/out"
assert_rc 1 vstor snapshot-create-as e1 i1
assert_grep "already exists" "$WORKDIR/err"
assert_rc 0 vstor snapshot-create-as e1 x1 --disk-only --diskspec "vda,snapshot=external,file=$WORKDIR/vx1.qcow2"
assert_eq "$(backing_of vx1.qcow2)" "$WORKDIR/vbase.qcow2" "vx1's backing file"
nbd_write "$WORKDIR/vnbd.sock" q 0x77 2M 64k
assert_eq "$(byte_at vx1.qcow2 2M)" 77 "a write after the snapshot lands in the overlay"

# The job and throttle verbs, once vstord has the commands. They name the
# overlay's node (snap-x1), which is the top of the chain on either daemon.
vd_has() { [[ $VD_COMMANDS == *" $1 "* ]]; }
vd_absent()
{
	log "SKIP sub-case: vstord has no $1 yet (the CLI's error is checked instead)"
	assert_grep "no command '$1'" "$WORKDIR/err"
}
rc=0
vstor blockjob snap-x1 >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
if vd_has query-block-jobs; then
	assert_eq "$rc" 0 "blockjob on vstord"
	assert_grep "No current block job" "$WORKDIR/out"
else
	assert_eq "$rc" 1 "blockjob without query-block-jobs"
	vd_absent query-block-jobs
fi
rc=0
vstor blockpull snap-x1 --wait >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
if vd_has block-stream; then
	assert_eq "$rc" 0 "blockpull on vstord"
	assert_grep "Pull complete" "$WORKDIR/out"
	nbd_flush "$WORKDIR/vnbd.sock" q
	assert_eq "$(byte_at vx1.qcow2 0)" 55 "pulled data on vstord"
else
	assert_eq "$rc" 1 "blockpull without block-stream"
	vd_absent block-stream
fi
rc=0
vstor blockcopy snap-x1 --dest "$WORKDIR/vcopy.qcow2" --pivot >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
if vd_has blockdev-mirror; then
	assert_eq "$rc" 0 "blockcopy on vstord"
	assert_grep "Successfully pivoted" "$WORKDIR/out"
	nbd_flush "$WORKDIR/vnbd.sock" q
	qemu-img compare -U vx1.qcow2 vcopy.qcow2 >/dev/null || fail "vstord's copy differs"
else
	assert_eq "$rc" 1 "blockcopy without blockdev-mirror"
	vd_absent blockdev-mirror
	[[ ! -e vcopy.qcow2 ]] || fail "blockcopy left a file behind"
fi
rc=0
vstor blkdeviotune e1 --total-bytes-sec 10M --read-iops-sec 100 >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
if vd_has block_set_io_throttle; then
	assert_eq "$rc" 0 "blkdeviotune on vstord"
	assert_rc 0 vstor blkdeviotune e1
	assert_grep '^total_bytes_sec: 10485760' "$WORKDIR/out" "vstord's limits"
	assert_grep '^read_iops_sec +: 100' "$WORKDIR/out" "vstord's limits"
else
	assert_eq "$rc" 1 "blkdeviotune without block_set_io_throttle"
	vd_absent block_set_io_throttle
fi

python3 -c 'import sys
from qmp import QMP
QMP(sys.argv[1]).cmd("quit")' "$WORKDIR/vd.sock" || true
wait_for 30 bash -c "! kill -0 $VD_PID"
stop_pid "$VD_PID"
qemu_img check -q vbase.qcow2 || fail "qemu-img check vbase.qcow2"
qemu_img check -q vx1.qcow2 || fail "qemu-img check vx1.qcow2"
qemu-img snapshot -l vbase.qcow2 | grep -q ' i1 ' || fail "the internal snapshot i1 is missing"
[[ $(qemu-img info --output=json vbase.qcow2) == *'"virtual-size": 134217728'* ]] ||
	fail "vstord's resize did not reach the image"
log ok
