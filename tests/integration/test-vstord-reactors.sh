#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord --reactors 2 (issue 13): two exports land on two I/O reactors
# (x-reactor differs; a second export of a node joins its reactor); a heavy
# NBD load on one (QD32 writes, tests/integration/nbd_load.py) while
# query-block-exports, query-block-jobs (a mirror job runs on the busy
# export's node) and query-named-block-nodes answer within a bound
# (VS_QMP_BOUND, 1 s) every time of at least 20, and the other export keeps
# serving;
# then, on the export homed on reactor 1, block_resize (a new connection
# sees the size), a bitmap, blockdev-snapshot-sync (the export follows the
# overlay) and a drive-mirror job run there (events reach the monitor), the
# data read back over NBD; quit stops the threads and exits 0. A bad
# --reactors is refused.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3 libnbd bindings (python3-libnbd) missing"
unset VSTORD_REACTORS

log "a bad --reactors is refused"
for bad in 0 x 257 -1; do
	if "$VSTORD" --reactors "$bad" >"$WORKDIR/bad.out" 2>&1; then
		fail "--reactors $bad was accepted"
	fi
	grep -q "reactors" "$WORKDIR/bad.out" || fail "--reactors $bad: no message"
done
"$VSTORD" --help | grep -q -- "--reactors" || fail "--help does not list --reactors"

qemu_img create -q -f qcow2 a.qcow2 64M
qemu_img create -q -f qcow2 b.qcow2 64M

start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock" --reactors 2
pid=$DAEMON_PID

python3 - "$WORKDIR" "${VS_QMP_BOUND:-1.0}" <<'PY' || fail "vstord --reactors 2"
import subprocess, sys, time
import nbd
from qmp import QMP
d, bound = sys.argv[1], float(sys.argv[2])
c = QMP(d + "/vd.sock")
sock = d + "/nbd.sock"

def q(cmd, **args):
    r = c.execute(cmd, {k.replace("_", "-"): v for k, v in args.items()})
    assert "error" not in r, "%s: %s" % (cmd, r["error"])
    return r["return"]

def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, sock)

for n in ("a", "b"):
    c.cmd("blockdev-add", driver="file", node_name="f" + n, filename="%s/%s.qcow2" % (d, n))
    c.cmd("blockdev-add", driver="qcow2", node_name=n, file="f" + n)
c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
c.cmd("block-export-add", type="nbd", id="ea", node_name="a", writable=True)
c.cmd("block-export-add", type="nbd", id="eb", node_name="b", writable=True)
q("block-export-add", type="nbd", id="ea2", node_name="a", name="a-again")
ex = {e["id"]: e for e in c.cmd("query-block-exports")}
r = {i: ex[i]["x-reactor"] for i in ex}
print("reactors:", r)
assert r["ea"] != r["eb"], r
assert sorted((r["ea"], r["eb"])) == [0, 1], r
assert r["ea2"] == r["ea"], "a second export of a node joins its reactor: %s" % r
c.cmd("block-export-del", id="ea2")

# A job on ea's node, kept running by its speed limit: query-block-jobs
# reads it on ea's reactor, the busy one.
c.cmd("drive-mirror", job_id="am", device="a", target=d + "/a-mirror.qcow2", format="qcow2",
      sync="full", speed=1 << 20)

# Heavy load on ea (QD32 writes), for a few seconds, from another process
# (longer with a looser bound: a sanitizer build is slower at everything).
load = subprocess.Popen([sys.executable, "-c",
                         "import sys, json; from nbd_load import load; "
                         "t = load(sys.argv[1], float(sys.argv[2]), qd=32, size=65536, "
                         "write=True); print(len(t))", uri("a"), str(3 + 3 * bound)],
                        stdout=subprocess.PIPE)
time.sleep(0.3)  # not synchronisation: lets the load ramp up before measuring
hb = nbd.NBD()
hb.connect_uri(uri("b"))
worst = {"query-block-exports": 0.0, "query-block-jobs": 0.0,
         "query-named-block-nodes": 0.0}
worst_b, nq, nb = 0.0, 0, 0
end = time.monotonic() + 3
while (time.monotonic() < end or nq < 20) and time.monotonic() < end + 10:
    for cmd in worst:
        t0 = time.monotonic()
        ret = c.cmd(cmd)
        worst[cmd] = max(worst[cmd], time.monotonic() - t0)
        if cmd == "query-block-jobs":
            assert [j["device"] for j in ret] == ["am"], ret
    nq += 1
    t0 = time.monotonic()
    hb.pwrite(b"B" * 4096, (nb % 256) * 4096)
    hb.pread(4096, (nb % 256) * 4096)
    worst_b = max(worst_b, time.monotonic() - t0)
    nb += 1
assert load.poll() is None, "the load ended before the queries did"
out, _ = load.communicate(timeout=60)
assert load.returncode == 0, "the load failed"
done = int(out)
print("load: %d requests; %d rounds of queries, worst %s; eb: %d, worst %.3f s"
      % (done, nq, {k: round(v, 3) for k, v in worst.items()}, nb, worst_b))
assert done > 0
for cmd, t in worst.items():
    assert t < bound, "%s took %.3f s under load" % (cmd, t)
assert worst_b < bound, "the other export stalled %.3f s under load" % worst_b
assert nq >= 20 and nb >= 20, (nq, nb)
c.cmd("block-job-cancel", device="am", force=True)
ev = c.event("BLOCK_JOB_CANCELLED")
assert ev["data"]["device"] == "am", ev
c.events = [e for e in c.events if e.get("data", {}).get("device") != "am"]
hb.shutdown()

stats = {s["node-name"]: s["stats"] for s in c.cmd("query-blockstats")}
assert stats["a"]["wr_operations"] >= done, stats["a"]
assert stats["b"]["wr_operations"] >= nb, stats["b"]

# Commands on the export homed on reactor 1.
one = "ea" if r["ea"] == 1 else "eb"
node = ex[one]["node-name"]
nbdname = node  # the export's name on the server: its node's
h = nbd.NBD()
h.connect_uri(uri(nbdname))
h.pwrite(b"R1" * 32768, 0)
h.flush()
h.shutdown()
c.cmd("block_resize", node_name=node, size=128 << 20)
h = nbd.NBD()
h.connect_uri(uri(nbdname))
assert h.get_size() == 128 << 20, h.get_size()
h.shutdown()
q("block-dirty-bitmap-add", node=node, name="bm")
c.cmd("blockdev-snapshot-sync", node_name=node, snapshot_file=d + "/over.qcow2",
      snapshot_node_name="over", format="qcow2")
ex = {e["id"]: e for e in c.cmd("query-block-exports")}
assert ex[one]["node-name"] == "over", ex[one]
assert ex[one]["x-reactor"] == 1, ex[one]
c.cmd("drive-mirror", job_id="m", device="over", target=d + "/mirror.qcow2", format="qcow2",
      sync="full")
ev = c.event("BLOCK_JOB_READY")
assert ev["data"]["device"] == "m", ev
c.cmd("block-job-complete", device="m")
ev = c.event("BLOCK_JOB_COMPLETED")
assert "error" not in ev["data"], ev
deadline = time.monotonic() + 20
while c.cmd("query-block-jobs") and time.monotonic() < deadline:
    time.sleep(0.05)
assert not c.cmd("query-block-jobs")
h = nbd.NBD()
h.connect_uri(uri(nbdname))
assert h.pread(65536, 0) == b"R1" * 32768
h.shutdown()
ex = {e["id"]: e for e in c.cmd("query-block-exports")}
assert ex[one]["x-reactor"] == 1, ex[one]
c.cmd("block-export-del", id="ea")
c.cmd("block-export-del", id="eb")
c.cmd("quit")
PY

wait_exit() {
	local deadline=$((SECONDS + 20))
	while kill -0 "$1" 2>/dev/null; do
		((SECONDS < deadline)) || fail "vstord did not exit after quit"
		sleep 0.05
	done
}
wait_exit "$pid"
if grep -E "AddressSanitizer|runtime error|ThreadSanitizer" "$WORKDIR"/daemon.*.err; then
	fail "vstord reported a sanitizer error"
fi
log "ok"
