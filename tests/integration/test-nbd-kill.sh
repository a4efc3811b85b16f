#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# kill -9 of vstor-nbd under a write load, at a random moment (after a
# random number of completed requests), several times per image. After each
# kill: qemu-img check finds no corruption (leaks allowed; a lazy_refcounts
# image is first opened by vstor, which repairs it, as the next user would),
# and every block whose write completed before the last completed flush
# (and was not written again after it) reads back. The image is reused, so
# each round starts from what the previous kill left.
#
#   VSTOR_KILL_ROUNDS   kills per image option set (default 4)
#   VSTOR_KILL_SEED     seed (default: random, printed)
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img python3
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd not installed"
require_vstor_io
find_built VSTOR_NBD nbd-server/vstor-nbd

rounds=${VSTOR_KILL_ROUNDS:-4}
# CI's sample of the long tier (scripts/run-tests.sh) keeps it short.
if [[ -n ${VSTOR_COMBOS_SAMPLE:-} ]] && ((rounds > 6)); then
	rounds=6
fi
seed=${VSTOR_KILL_SEED:-$RANDOM}
log "seed $seed (VSTOR_KILL_SEED=$seed reproduces the kill points), $rounds rounds"
kills=0

for opts in "cluster_size=65536" "cluster_size=4096,lazy_refcounts=on" "cluster_size=16384,compression_type=zstd"; do
	for cache in ${VSTOR_KILL_CACHES:-writeback writethrough}; do
		rm -f img.qcow2 durable.json issued.log
		qemu_img create -f qcow2 -o "$opts" img.qcow2 64M >/dev/null
		echo '{}' >durable.json
		for ((r = 0; r < rounds; r++)); do
			SOCK=$WORKDIR/nbd.$kills.sock
			PIDF=$WORKDIR/nbd.$kills.pid
			start_daemon "$PIDF" 20 "$VSTOR_NBD" -k "$SOCK" -f qcow2 --cache=$cache \
				--pid-file "$PIDF" img.qcow2
			server=$DAEMON_PID
			launcher=${VS_PIDS[-2]}
			target=$(((seed * 7919 + kills * 104729) % 160 + 16))
			rm -f progress
			# The load: 4 writes in flight, a flush every 16 requests, some FUA.
			timeout 120 python3 - "$SOCK" "$((seed + kills))" <<'PY' >client.out 2>&1 &
import json, os, random, sys
import nbd
sock, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
durable = json.load(open("durable.json"))   # block -> pattern, as of the last flush
issued = open("issued.log", "a", buffering=1)
h = nbd.NBD()
h.connect_uri("nbd+unix:///?socket=" + sock)
blocks = h.get_size() // 65536
pending = {}   # block -> pattern written since the last flush
done = 0
try:
    while True:
        inflight = []
        # Distinct blocks: overlapping requests in flight complete in any order.
        for b in rng.sample(range(blocks), 16):
            pat = rng.randrange(1, 256)
            issued.write("%d\n" % b)   # before the request: it may land or not
            fua = rng.randrange(8) == 0 and h.can_fua()
            buf = nbd.Buffer.from_bytearray(bytearray([pat]) * 65536)
            inflight.append((h.aio_pwrite(buf, b * 65536, flags=nbd.CMD_FLAG_FUA if fua else 0), b, pat, buf))
            while h.aio_in_flight() >= 4:
                h.poll(-1)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c, b, pat, _ in inflight:
            h.aio_command_completed(c)
            pending[str(b)] = pat
        if h.can_flush():   # writethrough: completed writes are durable already
            h.flush()
        durable.update(pending)
        pending = {}
        with open("durable.tmp", "w") as f:
            json.dump(durable, f)
        os.rename("durable.tmp", "durable.json")
        issued.write("flush\n")
        done += 16
        with open("progress.tmp", "w") as f:
            f.write(str(done))
        os.rename("progress.tmp", "progress")
except nbd.Error as e:
    print("after", done, "requests:", e)   # the server was killed
PY
			client=$!
			# Kill once the client has completed a random number of requests.
			wait_for 100 bash -c "[[ -s progress ]] && (( \$(<progress) >= $target ))"
			kill -KILL "$server"
			wait "$launcher" 2>/dev/null || true
			wait_for 10 bash -c "! kill -0 $server"
			# The kernel drops the image's OFD locks when the dead process's
			# io_uring is torn down, a moment after the process is gone.
			wait_for 10 bash -c "qemu-img info img.qcow2 >/dev/null 2>&1"
			wait "$client" || { cat client.out >&2; fail "the client failed"; }
			kills=$((kills + 1))

			# A lazy_refcounts image is repaired by the next open, as a user would.
			if [[ $opts == *lazy_refcounts=on* ]]; then
				vstor_io -f qcow2 -c flush img.qcow2 2>/dev/null ||
					fail "the image does not open after kill $kills"
			fi
			rc=0
			qemu_img check img.qcow2 >check.out 2>&1 || rc=$?
			[[ $rc == 0 || $rc == 3 ]] || {
				cat check.out >&2
				fail "qemu-img check after kill $kills ($opts, $cache): exit $rc"
			}
			qemu_img convert -O raw img.qcow2 img.raw
			python3 - <<'PY' || fail "flushed data lost after kill $kills ($opts, $cache)"
import json
durable = json.load(open("durable.json"))
# Blocks issued after the last flush may hold the old or the new data.
after = set()
for line in open("issued.log"):
    line = line.strip()
    if line == "flush":
        after = set()
    elif line:
        after.add(line)
bad = 0
with open("img.raw", "rb") as f:
    for b, pat in durable.items():
        if b in after:
            continue
        f.seek(int(b) * 65536)
        if f.read(65536) != bytes([pat]) * 65536:
            bad += 1
            print("block", b, "does not hold pattern", pat)
    assert not bad, bad
    print("verified", len(durable) - len(after & set(durable)), "blocks")
    # Unflushed writes may have landed (the page cache survives a process
    # kill): the next round starts from what the blocks hold now.
    for b in after:
        f.seek(int(b) * 65536)
        d = f.read(65536)
        if d == bytes([d[0]]) * 65536 and d[0]:
            durable[b] = d[0]
        else:
            durable.pop(b, None)
json.dump(durable, open("durable.json", "w"))
PY
			# The next round starts from this state, with no writes since a flush.
			echo flush >>issued.log
		done
	done
done
log "kills: $kills"
echo "vstor-nbd kills survived: $kills"
