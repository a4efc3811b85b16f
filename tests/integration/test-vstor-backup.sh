#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor backup / vstor restore (cli/vstor-backup.c) against a running
# vstord whose disk is exported over NBD and written with qemu-io between
# backups:
# 1. A full backup, then an incremental one, a clean restart of vstord
#    (the bitmap persists in the qcow2), another incremental one: each
#    increment holds exactly the granules written (qemu-img map), the
#    chain has relative backing names and is clean (qemu-img check), and
#    the disk restored at every checkpoint equals a copy taken then
#    (qemu-img compare), restored into a new file or a pool's volume.
# 2. Failures leave the chain intact: a bad backup directory; an NBD
#    address that does not answer (after the checkpoint was taken: the new
#    bitmap goes back into the previous one, so the next increment still
#    holds those writes); vstord killed -9 in the middle of a backup (no
#    new file, the manifest unchanged), and the increment after it refused
#    (the bitmap is in-use) with a message that says to start a new chain.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io
find_built VSTOR cli/vstor
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
"$VSTOR" help backup >/dev/null 2>&1 || skip_or_fail "vstor built without libnbd"
export VSTOR_STATE_DIR=$WORKDIR/state
W=$WORKDIR
B=$W/backups
NBDSOCK=$W/nbd.sock
URI="nbd+unix:///disk?socket=$NBDSOCK"
GRAN=65536

backup() { timeout 60 "$VSTOR" backup disk --to "${B}" --nbd "${NBD_ADDR:-$NBDSOCK}" --vstord "$W/vd.sock" \
	--scratch-dir "$W" "$@"; }
# The same in the background, as the vstor process itself ($! is its pid).
backup_bg() { exec "$VSTOR" backup disk --to "${B}" --nbd "$NBDSOCK" --vstord "$W/vd.sock" \
	--scratch-dir "$W" --incremental --bandwidth 1; }
nbd_io() { qemu-io -f raw "${@/#/-c}" -c flush "$URI" >/dev/null || fail "qemu-io $*"; }
snapshot() { qemu_img convert -f raw -O raw "$URI" "$W/$1.raw" || fail "copy of the disk"; }
manifest_len() { python3 -c 'import json, sys
print(len(json.load(open(sys.argv[1]))["chain"]))' "$B/vstor-backup.json"; }
last_file() { python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["chain"][-1]["file"])' "$B/vstor-backup.json"; }
# The granules the top layer of FILE holds (data or zeroes), space-separated.
top_granules() {
	qemu_img map --output=json "$1" | python3 -c '
import json, sys
g = set()
for e in json.load(sys.stdin):
    if e["depth"] == 0:
        g.update(range(e["start"] // '$GRAN', (e["start"] + e["length"]) // '$GRAN'))
print(" ".join(map(str, sorted(g))))'
}

start_vstord() {
	start_daemon "$W/vd.pid" 30 "$VSTORD" --pidfile "$W/vd.pid" --monitor "$W/vd.sock" \
		--blockdev "{\"driver\": \"qcow2\", \"node-name\": \"disk\", \"file\": {\"driver\": \"file\", \"filename\": \"$W/disk.qcow2\"}}" \
		--nbd-server "addr.type=unix,addr.path=$NBDSOCK" \
		--export type=nbd,id=disk,node-name=disk,writable=on
	VD_PID=$DAEMON_PID
}
stop_vstord() {
	python3 -c 'import sys; sys.path.insert(0, sys.argv[2])
from qmp import QMP
QMP(sys.argv[1]).execute("quit")' "$W/vd.sock" "$VSTOR_SOURCE_DIR/tests/integration" ||
		fail "quit"
	wait_for 20 bash -c "! kill -0 $VD_PID"
	rm -f "$W/vd.pid"
}

qemu_img create -q -f qcow2 "$W/disk.qcow2" 16M
qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 12M 1M' "$W/disk.qcow2" >/dev/null
start_vstord

# 1. Full, then incremental backups.
backup --output=json >"$W/full.json" || fail "full backup"
python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))
assert s["type"] == "full" and s["size"] == 16 << 20, s
assert s["bytes-read"] == 5 << 20, s' "$W/full.json" || fail "full backup summary"
snapshot ref0
assert_eq "$(manifest_len)" 1 "chain length after the full backup"
assert_fails backup
assert_grep "holds a backup chain already" "$W/err" "a second full backup"

nbd_io "write -P 10 1M 64k" "write -P 11 14M 4k" "write -z 2M 64k"
snapshot ref1
backup --incremental -p >"$W/inc1.out" || fail "first incremental backup"
assert_grep "100 %" "$W/inc1.out" "progress"
assert_eq "$(top_granules "$B/$(last_file)")" "16 32 224" "granules of the first increment"

# The bitmap persists in the qcow2 across a clean restart.
stop_vstord
start_vstord
nbd_io "write -P 12 0 4k" "write -P 13 15M 128k"
snapshot ref2
# (the NBD server given as a URI this time)
NBD_ADDR="nbd+unix:///?socket=$NBDSOCK" backup --incremental --output=json >"$W/inc2.json" ||
	fail "second incremental backup"
python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))
assert s["type"] == "incremental" and s["bytes-read"] == 3 * 65536, s' "$W/inc2.json" ||
	fail "second increment's summary"
assert_eq "$(top_granules "$B/$(last_file)")" "0 240 241" "granules of the second increment"
qemu_img info --backing-chain --output=json "$B/$(last_file)" | python3 -c '
import json, sys
chain = json.load(sys.stdin)
assert len(chain) == 3, chain
for img in chain[:-1]:
    assert "/" not in img["backing-filename"], img
    assert img["backing-filename-format"] == "qcow2", img
' || fail "the chain's backing names"

# Restore at each checkpoint: equal to the disk then.
i=0
for ck in $(python3 -c 'import json, sys
print(" ".join(e["checkpoint"] for e in json.load(open(sys.argv[1]))["chain"]))' "$B/vstor-backup.json"); do
	qemu_img check -q "$B/$ck.qcow2" || fail "qemu-img check $ck"
	"$VSTOR" restore "$B" --checkpoint "$ck" --to "$W/r$i.raw" >/dev/null || fail "restore $ck"
	qemu_img compare -q -f raw -F raw "$W/r$i.raw" "$W/ref$i.raw" || fail "restored $ck differs"
	i=$((i + 1))
done
assert_eq "$i" 3 "checkpoints restored"
# Into an existing volume (its old data overwritten, zeroes too).
mkdir "$W/pool"
"$VSTOR" pool-define-as p dir --target "$W/pool" >/dev/null && "$VSTOR" pool-build p >/dev/null &&
	"$VSTOR" pool-start p >/dev/null && "$VSTOR" vol-create-as p v.raw 16M --format raw >/dev/null ||
	fail "a pool and a volume to restore into"
qemu-io -f raw -c "write -P 99 0 16M" "$W/pool/v.raw" >/dev/null
"$VSTOR" restore "$B" --to vol:p/v.raw >/dev/null || fail "restore into a volume"
qemu_img compare -q -f raw -F raw "$W/pool/v.raw" "$W/ref2.raw" || fail "the restored volume differs"
assert_fails "$VSTOR" restore "$B" --to "$W/r0.raw"
assert_grep "exists already" "$W/err" "restore over a file"
assert_fails "$VSTOR" restore "$B" --checkpoint nope --to "$W/rx.raw"
[[ ! -e $W/rx.raw ]] || fail "a failed restore left its file"

# 2. Failures leave the chain as it was.
snap_dir() { ls -A "$B" | sort; }
before=$(snap_dir)
: >"$W/notadir"
assert_fails timeout 60 "$VSTOR" backup disk --to "$W/notadir" --nbd "$NBDSOCK" \
	--vstord "$W/vd.sock" --incremental
assert_grep "Not a directory" "$W/err" "backup into a file"
nbd_io "write -P 14 8M 64k"
NBD_ADDR=$W/nothing.sock assert_fails backup --incremental
assert_grep "cannot connect" "$W/err" "backup with a dead NBD address"
assert_eq "$(snap_dir)" "$before" "the backup directory after failed backups"
nbd_io "write -P 15 9M 64k"
snapshot ref3
backup --incremental >/dev/null || fail "incremental backup after a failed one"
assert_eq "$(top_granules "$B/$(last_file)")" "128 144" \
	"the increment after a failed one (both writes)"
"$VSTOR" restore "$B" --to "$W/r3.raw" >/dev/null || fail "restore after the failure"
qemu_img compare -q -f raw -F raw "$W/r3.raw" "$W/ref3.raw" || fail "restore 3 differs"

# The client killed -9 in the middle leaves its .part (and its
# checkpoint); one stopped by SIGTERM cleans up; the next run removes the
# .part, undoes the stale checkpoint and holds the writes of all three.
nbd_io "write -P 16 10M 2M"
snapshot ref4
before=$(snap_dir)
n=$(manifest_len)
backup_bg >/dev/null 2>&1 &
BK=$!
wait_for 20 bash -c "ls -A '$B' | grep -q '\.part$'"
kill -9 "$BK"
wait "$BK" || true
ls -A "$B" | grep -q '\.part$' || fail "a killed backup left no .part file"
assert_eq "$(manifest_len)" "$n" "the chain after a killed backup"
backup_bg >/dev/null 2>"$W/term.err" &
BK=$!
# (the stale checkpoint undone, the stale .part gone, its own .part there)
wait_for 20 bash -c "grep -q 'interrupted backup' '$W/term.err' && ls -A '$B' | grep -q '\.part$'"
kill -TERM "$BK"
rc=0
wait "$BK" || rc=$?
[[ $rc != 0 ]] || fail "a backup stopped by SIGTERM succeeded"
assert_grep "interrupted" "$W/term.err" "the stopped backup's error"
assert_eq "$(snap_dir)" "$before" "the backup directory after SIGTERM"
backup --incremental >/dev/null || fail "incremental backup after a killed one"
assert_eq "$(top_granules "$B/$(last_file)")" "$(seq -s ' ' 160 191)" \
	"the increment after a killed one"
"$VSTOR" restore "$B" --to "$W/r4.raw" >/dev/null || fail "restore after the killed backup"
qemu_img compare -q -f raw -F raw "$W/r4.raw" "$W/ref4.raw" || fail "restore 4 differs"

# kill -9 of vstord in the middle of a slow backup.
nbd_io "write -P 18 10M 2M"
before=$(snap_dir)
n=$(manifest_len)
backup_bg >"$W/killed.out" 2>"$W/killed.err" &
BK=$!
wait_for 20 bash -c "ls -A '$B' | grep -q '\.part$'"
kill -9 "$VD_PID"
rc=0
wait "$BK" || rc=$?
[[ $rc != 0 ]] || fail "a backup whose daemon died succeeded"
assert_grep "NBD read|block status" "$W/killed.err" "the killed backup's error"
assert_eq "$(snap_dir)" "$before" "the backup directory after the daemon died"
assert_eq "$(manifest_len)" "$n" "the chain after the daemon died"
"$VSTOR" restore "$B" --to "$W/r5.raw" >/dev/null || fail "restore after the kill"
qemu_img compare -q -f raw -F raw "$W/r5.raw" "$W/ref4.raw" || fail "restore 5 differs"

# After the crash the bitmap is in-use: no increment on it, a clear
# message, the chain untouched; a new chain starts with a full backup.
rm -f "$W/vd.pid"
start_vstord
assert_fails backup --incremental
assert_grep "start a new chain with a full backup" "$W/err" "an increment after a crash"
assert_eq "$(snap_dir)" "$before" "the backup directory after the refused increment"
B=$W/backups2 backup >/dev/null || fail "a full backup into a new directory after the crash"
log "ok"
