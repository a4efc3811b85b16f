#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# One NBD export served from every reactor (issue 16): vstord --reactors 2
# and 4, a qcow2 node exported with x-multi-reactor, connections spread
# over the reactors in turn (query-block-exports' x-clients-per-reactor:
# 2 on each for 2 x N connections; without the spread all sit on the
# export's home). Through connections on other reactors than the node's:
# writes, reads, a structured read over a hole, block status, trim, write
# zeroes and flush, checked through the home connection; then qemu-io
# writers, one per connection, in parallel on their own regions while
# blockdev-snapshot-sync moves the export to an overlay (a drain across
# reactors), every region read back; a connection away from home that had
# mapped clusters of the old top before the snapshot writes after it into
# the overlay only (the old top's file holds none of those writes), and
# its rewrites of allocated clusters go straight to the file
# (x-direct-path: none home); block-export-del in hard mode drops
# the clients on every reactor. Then a vhost-user-blk export of N queues
# with x-multi-reactor: queue i on reactor home + i (x-queue-reactors),
# tests/tools/vhost-client's conformance checks on every queue and a write
# load over all of them. quit exits 0 and qemu-img check finds the images
# clean, with every region's data.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img qemu-io
find_built VSTORD vstord/vstord
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3 libnbd bindings (python3-libnbd) missing"
unset VSTORD_REACTORS

gone() { ! kill -0 "$1"; }

for n in 2 4; do
	log "--reactors $n: one export, its connections on every reactor"
	rm -f a.qcow2 a-snap.qcow2 v.qcow2 a-base.raw
	qemu_img create -q -f qcow2 a.qcow2 64M
	qemu_img create -q -f qcow2 v.qcow2 64M
	start_daemon "$WORKDIR/vd$n.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd$n.pid" \
		--monitor "$WORKDIR/vd$n.sock" --reactors "$n"
	pid=$DAEMON_PID
	python3 - "$WORKDIR" "$n" "$VHOST_CLIENT" <<'PY' || fail "--reactors $n: one export over every reactor"
import subprocess, sys, time
import nbd
from qmp import QMP
d, n, vhost_client = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = QMP("%s/vd%d.sock" % (d, n))
sock = "%s/nbd%d.sock" % (d, n)
uri = "nbd+unix:///a?socket=%s" % sock
MiB = 1 << 20

c.cmd("blockdev-add", driver="file", node_name="fa", filename=d + "/a.qcow2")
c.cmd("blockdev-add", driver="qcow2", node_name="a", file="fa")
c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
r = c.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "a",
                                   "writable": True, "x-multi-reactor": "yes"})
assert "error" in r, "a non-boolean x-multi-reactor was accepted"
c.cmd("block-export-add", type="nbd", id="e", node_name="a", writable=True,
      x_multi_reactor=True)

def per_reactor():
    ex = {e["id"]: e for e in c.cmd("query-block-exports")}
    return ex["e"]["x-clients-per-reactor"], ex["e"]["x-reactor"]

# A client that probes with a first connection and closes it: its real
# connection still runs at home (the fewest connections, home first).
probe = nbd.NBD()
probe.connect_uri(uri)
probe.shutdown()

def no_clients():
    deadline = time.monotonic() + 20
    while sum(per_reactor()[0]):  # a closed client's end reaches its reactor
        assert time.monotonic() < deadline, "a closed client still counted"

no_clients()
lone = nbd.NBD()
lone.connect_uri(uri)
counts, home = per_reactor()
assert counts[home] == 1 and sum(counts) == 1, "a lone client away from home: %s" % counts
lone.shutdown()
no_clients()

hs = []
for i in range(2 * n):
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    hs.append(h)
deadline = time.monotonic() + 20
while sum(per_reactor()[0]) < 2 * n:  # a connection reaches its reactor after its handshake
    assert time.monotonic() < deadline, "connections missing: %s" % per_reactor()[0]
counts, home = per_reactor()
print("clients per reactor:", counts, "home:", home)
assert counts == [2] * n, "connections not spread over %d reactors: %s" % (n, counts)
assert h.can_multi_conn()

# hs[0] is on the home reactor; hs[1] on the next one.
far, near = hs[1], hs[0]
far.pwrite(b"\x5a" * MiB, 8 * MiB)
assert near.pread(MiB, 8 * MiB) == b"\x5a" * MiB
near.pwrite(b"\xa5" * 65536, 9 * MiB)
assert far.pread(65536, 9 * MiB) == b"\xa5" * 65536
# A structured read over a hole and data, on the far reactor.
buf = far.pread(2 * MiB, 7 * MiB)
assert buf == b"\0" * MiB + b"\x5a" * MiB, "structured read over a hole"
ext = []
far.block_status(4 * MiB, 6 * MiB,
                 lambda meta, off, e, err: ext.extend(e) if meta == "base:allocation" else None)
assert ext[0] == 2 * MiB and ext[1] & nbd.STATE_HOLE, "block status of the hole: %s" % ext
assert ext[2] == MiB + 65536 and not ext[3] & nbd.STATE_HOLE, "block status of the data: %s" % ext
far.zero(65536, 8 * MiB)
assert near.pread(65536, 8 * MiB) == b"\0" * 65536
far.trim(65536, 8 * MiB + 65536)
far.flush()
assert near.pread(65536, 8 * MiB + 65536) in (b"\0" * 65536, b"\x5a" * 65536)
for h in hs:
    h.shutdown()
counts, _ = per_reactor()
assert counts == [0] * n, "clients left after their disconnect: %s" % counts

# A connection away from home maps clusters of the old top: written twice
# (allocated at home, then straight through the port's window).
def spot(k):  # in the writers' regions
    return (16 + k % (2 * n)) * MiB + (k // (2 * n)) * 65536
pre = [nbd.NBD() for _ in range(2)]
for h in pre:
    h.connect_uri(uri)
for k in range(64):
    pre[1].pwrite(b"\xf0" * 65536, spot(k))
    pre[1].pwrite(b"\xf0" * 65536, spot(k))
for h in pre:
    h.shutdown()
no_clients()

# Writers in parallel, one connection each (they spread in turn), while a
# snapshot moves the export to an overlay: a drain over every reactor.
writers = []
for i in range(2 * n):
    cmds = []
    for k in range(16):
        cmds += ["-c", "write -P %d %d 64k" % (i + 1, (16 + i) * MiB + k * 65536)]
    writers.append(subprocess.Popen(["qemu-io", "-f", "raw"] + cmds + [uri],
                                    stdout=subprocess.DEVNULL))
c.cmd("blockdev-snapshot-sync", node_name="a", snapshot_file=d + "/a-snap.qcow2",
      snapshot_node_name="snap", format="qcow2")
for w in writers:
    assert w.wait(timeout=120) == 0, "a writer failed"
for i in range(2 * n):
    r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                        "read -P %d %d 1M" % (i + 1, (16 + i) * MiB), uri],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert r.returncode == 0 and b"Pattern verification failed" not in r.stdout, \
        "region %d: %s" % (i, r.stdout)

def direct_path(eid):
    return {e["id"]: e for e in c.cmd("query-block-exports")}[eid]["x-direct-path"]

# Away from home, reads and rewrites of allocated clusters go straight to
# the file (x-direct-path): once the port's window knows them (the first
# request of a window, or of a cluster allocated since, goes home), none
# goes home while nothing changes the image.
far = nbd.NBD()
near = nbd.NBD()
near.connect_uri(uri)
far.connect_uri(uri)
assert per_reactor()[0][per_reactor()[1]] == 1, "the first connection is not at home"
for k in range(64):  # allocated in the overlay (a writer may have run before the snapshot)
    near.pwrite(b"\xee" * 65536, spot(k))
for k in range(64):
    far.pwrite(b"\xef" * 65536, spot(k))
before = direct_path("e")
for k in range(64):
    far.pwrite(bytes([k]) * 65536, spot(k))
    assert far.pread(65536, spot(k)) == bytes([k]) * 65536
after = direct_path("e")
print("direct path:", before, "->", after)
assert after["direct"] - before["direct"] == 128, "mapped requests went home: %s" % after
assert after["home"] == before["home"], "mapped requests went home: %s" % after
for k in range(64):
    assert near.pread(65536, spot(k)) == bytes([k]) * 65536
near.shutdown()
far.shutdown()
no_clients()

# Hard delete drops the clients on every reactor.
hs = []
for i in range(n):
    h = nbd.NBD()
    h.connect_uri(uri)
    hs.append(h)
assert sum(per_reactor()[0]) == n
c.cmd("block-export-del", id="e", mode="hard")
for h in hs:
    try:
        h.pread(4096, 0)
        raise AssertionError("a client on a reactor stayed connected after a hard delete")
    except nbd.Error:
        pass

# vhost-user-blk: N queues, queue i on reactor home + i.
vsock = "%s/vh%d.sock" % (d, n)
c.cmd("blockdev-add", driver="file", node_name="fv", filename=d + "/v.qcow2")
c.cmd("blockdev-add", driver="qcow2", node_name="v", file="fv")
c.cmd("block-export-add", type="vhost-user-blk", id="ev", node_name="v", writable=True,
      num_queues=n, x_multi_reactor=True, addr={"type": "unix", "path": vsock})
ev = {e["id"]: e for e in c.cmd("query-block-exports")}["ev"]
vh = ev["x-reactor"]
assert ev["x-queue-reactors"] == [(vh + i) % n for i in range(n)], ev
for args in (["conformance", str(n)], ["bench", "randwrite", "4k", "16", "1", str(n)],
             ["conformance", str(n)], ["bench", "randread", "4k", "16", "1", str(n)]):
    r = subprocess.run([vhost_client, vsock] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    assert r.returncode == 0, "vhost-client %s: %s" % (args, r.stdout.decode())
dp = direct_path("ev")
print("vhost direct path:", dp)
assert dp["direct"] > 0, "no queue away from home read straight from the file: %s" % dp
c.cmd("block-export-del", id="ev", mode="hard")  # the last client may not be gone yet
c.cmd("quit")
PY
	wait_for 20 gone "$pid" # vstord exits after quit
	qemu_img check -q a-snap.qcow2 || fail "--reactors $n: the overlay is not clean"
	# What went straight to the file after the snapshot reached the overlay,
	# never the old top (its window was revoked by the switch's drain).
	qemu_img convert -U -f qcow2 -O raw a.qcow2 a-base.raw
	python3 - a-base.raw <<'PY' || fail "--reactors $n: a write after the snapshot reached the old top"
import sys
data = open(sys.argv[1], "rb").read()
for v in [0xef] + list(range(9, 64)):
    assert bytes([v]) * 65536 not in data, "pattern %#x in the snapshot's base" % v
PY
	qemu_img check -q v.qcow2 || fail "--reactors $n: the vhost export's image is not clean"
	for i in $(seq 1 $((2 * n))); do
		qemu-io -f qcow2 -c "read -P $i $(((15 + i) << 20)) 1M" a-snap.qcow2 | grep -q "Pattern verification failed" &&
			fail "--reactors $n: region $i lost its data"
	done
done
if grep -E "AddressSanitizer|runtime error|ThreadSanitizer" "$WORKDIR"/daemon.*.err; then
	fail "vstord reported a sanitizer error"
fi
log "ok"
