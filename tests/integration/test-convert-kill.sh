#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A convert to qcow2 killed with SIGKILL at a random moment mid-copy leaves
# a target that qemu-img check and vstor-img check open and find without
# corruption (leaked clusters are allowed: exit 0 or 3), and whose every
# allocated cluster already holds the source's data. The moment is picked
# from the --progress=json lines (a random fraction of the copy), so the
# kill lands mid-copy; compressed (-c), in-order and out-of-order (-W)
# copies are covered.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img python3 nbdkit
require_vstor_img

unlocked() { qemu-img info "$1" >/dev/null 2>&1; }

# The source: 64 MiB, random data, compressible text and zero runs (holes
# the copy skips).
python3 - src.raw <<'PY'
import os, sys
blk = os.urandom(1 << 20)
with open(sys.argv[1], "wb") as f:
    for i in range(64):
        if i % 9 == 4:
            f.write(bytes(1 << 20))
        elif i % 3 == 1:  # compressible, so -c stores compressed clusters
            f.write((b"cluster %d of a killed convert " % i * 40000)[:1 << 20])
        else:
            f.write(i.to_bytes(8, "little") + blk[8:])
PY

# The converts read the source through nbdkit, split into 64 KiB requests
# that each take 5 ms more: a copy lasts long enough (0.6 s with 8
# coroutines) for the kill to land mid-copy however fast the machine is.
# One nbdkit per round: nbdkit 1.32 may abort ("raw_send_socket: Assertion
# `sock >= 0' failed") when a client dies with requests in flight.
serve_source()
{
	NK=$((${NK:-0} + 1))
	start_daemon "$WORKDIR/nk$NK.pid" 20 nbdkit -f -U "$WORKDIR/nk$NK.sock" \
		-P "$WORKDIR/nk$NK.pid" --filter=blocksize --filter=delay file src.raw \
		maxdata=65536 rdelay=5ms
	SRC="nbd+unix:///?socket=$WORKDIR/nk$NK.sock"
}

# allocated_match TARGET: every range qemu-img map calls data reads as in src.raw.
allocated_match()
{
	qemu_img convert -O raw "$1" t.raw || return 1
	qemu_img map --output=json "$1" >map.json || return 1
	python3 - t.raw src.raw map.json <<'PY'
import json, sys
t = open(sys.argv[1], "rb")
s = open(sys.argv[2], "rb")
for e in json.load(open(sys.argv[3])):
    if not e["data"]:
        continue
    t.seek(e["start"]); s.seek(e["start"])
    if t.read(e["length"]) != s.read(e["length"]):
        sys.exit("allocated range at %d (+%d) differs from the source" % (e["start"], e["length"]))
PY
}

killed=0
round()
{
	local name=$1 frac=$((5 + RANDOM % 85)) pid line done=0 total=1 rc
	shift
	rm -f tgt.qcow2 progress.txt
	serve_source
	"$VSTOR_IMG" convert -f raw -O qcow2 --progress=json "$@" "$SRC" tgt.qcow2 2>progress.txt &
	pid=$!
	register_pid "$pid"
	# Kill once the copy has passed a random fraction (bounded wait).
	local deadline=$((SECONDS + 60))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		line=$(tail -n 1 progress.txt 2>/dev/null || true)
		if [[ $line =~ \"done\":\ ([0-9]+),\ \"total\":\ ([0-9]+) ]]; then
			done=${BASH_REMATCH[1]}
			total=${BASH_REMATCH[2]}
			if ((done * 100 >= total * frac && done < total)); then
				kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
				break
			fi
		fi
		sleep 0.005
	done
	wait "$pid" 2>/dev/null || true
	kill "$DAEMON_PID" 2>/dev/null || true
	log "$name: stopped at $done of $total bytes (aimed at $frac%)"
	[[ -e tgt.qcow2 ]] || return 0 # killed before the target existed
	wait_for 10 unlocked tgt.qcow2
	rc=0
	qemu_img check tgt.qcow2 >check.txt 2>&1 || rc=$?
	[[ $rc == 0 || $rc == 3 ]] || { cat check.txt >&2; fail "$name: qemu-img check exited $rc"; }
	rc=0
	"$VSTOR_IMG" check tgt.qcow2 >check.txt 2>&1 || rc=$?
	[[ $rc == 0 || $rc == 3 ]] || { cat check.txt >&2; fail "$name: vstor-img check exited $rc"; }
	allocated_match tgt.qcow2 || fail "$name: data of the killed convert"
	# Leaks repair to a clean image.
	rc=0
	qemu_img check -r leaks tgt.qcow2 >check.txt 2>&1 || rc=$?
	[[ $rc == 0 ]] || { cat check.txt >&2; fail "$name: qemu-img check -r leaks exited $rc"; }
	qemu_img check -q tgt.qcow2 || fail "$name: not clean after repairing the leaks"
}

for i in 1 2 3; do
	round "compressed $i" -c
done
for i in 1 2; do
	round "in order $i" -t writethrough -m 1 -o cluster_size=4k
done
round "out of order" -t writethrough -W -m 8
((killed >= 3)) || fail "only $killed converts were killed mid-copy"
log "ok ($killed killed mid-copy)"
