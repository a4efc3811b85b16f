#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Throttling in vstord. A libnbd client keeps 32 requests in flight against
# NBD exports and counts completions over the wall-clock window (its own
# clock): a throttled export runs within 10% of its iops and bps limits
# while an unthrottled export of the same daemon keeps its speed; a burst
# runs at the burst rate, then at the average; a limit changed live applies
# at once and all-zero limits remove throttling; exports of one group share
# its budget. Argument errors: throttle-group objects answer as
# qemu-storage-daemon's; qsd 7.2 has no block_set_io_throttle at all
# (CommandNotFound), vstord's answers with QEMU's messages.
# VSTOR_THROTTLE_SECS sets each measurement window (default 2 s; the long
# suite runs 10 s).
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon
find_built VSTORD vstord/vstord
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3 libnbd bindings (python3-libnbd) missing"
SECS=${VSTOR_THROTTLE_SECS:-2}

truncate -s 64M a.img b.img c.img

start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd.pid" \
	--chardev socket,id=m0,path="$WORKDIR/qsd.sock",server=on,wait=off --monitor chardev=m0
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--monitor "$WORKDIR/vd.sock" \
	--object throttle-group,id=g0,limits.iops-total=300 \
	--blockdev driver=file,node-name=a,filename="$WORKDIR/a.img" \
	--blockdev driver=file,node-name=b,filename="$WORKDIR/b.img" \
	--blockdev driver=file,node-name=c,filename="$WORKDIR/c.img" \
	--nbd-server addr.type=unix,addr.path="$WORKDIR/nbd.sock" \
	--export type=nbd,id=ea,node-name=a,writable=on \
	--export type=nbd,id=eb,node-name=b,writable=on \
	--export type=nbd,id=ec,node-name=c,writable=on

log "throttle-group objects: the same replies as qemu-storage-daemon"
python3 - "$WORKDIR" <<'PY' || fail "throttle-group replies differ from qemu-storage-daemon's"
import sys
from qmp import QMP
d = sys.argv[1]

def tg(i, **limits):
    return {"qom-type": "throttle-group", "id": "t%d" % i, "limits": limits}

steps = [
    ("object-add", tg(1, **{"iops-total": 10, "iops-read": 5})),
    ("object-add", tg(1, **{"iops-total": 10, "iops-total-max": 5})),
    ("object-add", tg(1, **{"iops-total-max": 5})),
    ("object-add", tg(1, **{"iops-total": 5, "iops-total-max-length": 0})),
    ("object-add", tg(1, **{"iops-total": 5, "iops-total-max-length": 3})),
    ("object-add", tg(1, **{"bps-write": 5000000000000000})),
    ("object-add", tg(1, **{"iops-total": -5})),
    ("object-add", tg(1, **{"iops-total": 5, "iops-total-max": 10 ** 12,
                            "iops-total-max-length": 100000})),
    ("object-add", tg(1, **{"iops-total": 5, "x": 1})),
    ("object-add", tg(1, **{"iops-total": 5, "iops-total-max": 10, "iops-total-max-length": 2,
                            "iops-size": 4096})),
    ("qom-get", {"path": "t1", "property": "limits"}),
    ("qom-get", {"path": "t1", "property": "x-iops-total-max-length"}),
    ("qom-set", {"path": "t1", "property": "limits", "value": {"bps-read": 7}}),
    ("qom-get", {"path": "t1", "property": "limits"}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2", "x-bps-total": 5}),
    ("qom-get", {"path": "t2", "property": "x-bps-total"}),
    ("object-del", {"id": "t2"}),
    ("object-del", {"id": "t2"}),
]

def run(path):
    c = QMP(path)
    return [(n, c.execute(n, a)) for n, a in steps]

q, v = run(d + "/qsd.sock"), run(d + "/vd.sock")
bad = 0
for (n, a), (_, b) in zip(q, v):
    if a != b:
        print("differs: %s\n  qsd:    %s\n  vstord: %s" % (n, a, b), file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

log "block_set_io_throttle: QEMU's arguments and messages (qsd 7.2 has no such command)"
python3 - "$WORKDIR" <<'PY' || fail "block_set_io_throttle argument errors"
import sys
from qmp import QMP
d = sys.argv[1]
z = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
q = QMP(d + "/qsd.sock").execute("block_set_io_throttle", dict(z, id="x"))
assert q["error"]["class"] == "CommandNotFound", q
c = QMP(d + "/vd.sock")
cases = [
    (dict(z, bps=1), "GenericError", "Need exactly one of 'device' and 'id'"),
    (dict(z, id="ea", device="ea"), "GenericError", "Need exactly one of 'device' and 'id'"),
    (dict(z, id="nope"), "DeviceNotFound", "Device 'nope' not found"),
    ({"id": "ea", "bps": 1}, "GenericError", "Parameter 'bps_rd' is missing"),
    (dict(z, id="ea", iops="x"), "GenericError",
     "Invalid parameter type for 'iops', expected: integer"),
    (dict(z, id="ea", iops=5, iops_rd=1), "GenericError",
     "bps/iops/max total values and read/write values cannot be used at the same time"),
    (dict(z, id="ea", bps=-1), "GenericError",
     "bps/iops/max values must be within [0, 1000000000000000]"),
    (dict(z, id="ea", iops=10, iops_max=5), "GenericError",
     "bps_max/iops_max cannot be lower than bps/iops"),
    (dict(z, id="ea", iops=10, iops_max_length=2), "GenericError",
     "burst length set without burst rate"),
    (dict(z, id="ea", x=1), "GenericError", "Parameter 'x' is unexpected"),
    (dict(z, id="nope", bps=-1), "DeviceNotFound", "Device 'nope' not found"),
    (dict(z, id="ea", iops=5, iops_max=10, iops_max_length=-1), "GenericError",
     "burst length too high for this burst rate"),
]
for args, cls, desc in cases:
    r = c.execute("block_set_io_throttle", args)
    assert "error" in r and r["error"]["class"] == cls and r["error"]["desc"] == desc, (args, r)
# Refused input changed nothing: the export has no group.
r = c.execute("qom-get", {"path": "ea", "property": "limits"})
assert r["error"]["class"] == "DeviceNotFound", r
PY

log "limits within 10% over ${SECS}s at QD 32; an unthrottled export keeps its speed"
python3 - "$WORKDIR" "$SECS" <<'PY' || fail "throttling missed its limits"
import sys, threading
from qmp import QMP
from nbd_load import load, rate
d, secs = sys.argv[1], float(sys.argv[2])
c = QMP(d + "/vd.sock")
z = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}

def bsit(**args):
    r = c.execute("block_set_io_throttle", dict(z, **args))
    assert "return" in r, r

uri = lambda e: "nbd+unix:///%s?socket=%s/nbd.sock" % (e, d)

def within(what, got, want, tol=0.10):
    ok = abs(got - want) <= tol * want
    print("%s: %.1f (limit %.1f)%s" % (what, got, want, "" if ok else "  <-- off"), file=sys.stderr)
    assert ok, what

# iops on a, nothing on b, both at once.
bsit(id="ea", iops=200)
res = {}
def run(name, **kw):
    res[name] = load(uri(name), secs, **kw)
ts = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
[t.start() for t in ts]
[t.join() for t in ts]
within("iops, 4 KiB reads", rate(res["a"], 0, secs), 200)
fast = rate(res["b"], 0, secs)
print("unthrottled export: %.0f iops" % fast, file=sys.stderr)
assert fast > 5 * 200, "the unthrottled export was held back"
# The limits are visible in the group named after the export.
assert c.cmd("qom-get", path="ea", property="limits")["iops-total"] == 200

# bps on writes (64 KiB each), through the device name (the node) this time.
bsit(device="a", bps_wr=8 << 20)
t = load(uri("a"), secs, size=65536, write=True)
within("bps, 64 KiB writes", rate(t, 0, secs) * 65536, 8 << 20)
# Reads are not limited by bps_wr.
t = load(uri("a"), 1, size=65536)
assert rate(t, 0, 1) * 65536 > 3 * (8 << 20), "reads were throttled by bps_wr"

# A burst: 500 iops for the burst, then the average of 100.
bsit(id="ea", iops=100, iops_max=500, iops_max_length=2)
total = max(secs, 5)
t = load(uri("a"), total)
within("burst rate, first second", rate(t, 0, 1), 550, 0.15)  # +50: a tenth of the burst at once
within("average after the burst", rate(t, 3, total), 100, 0.15 if secs < 10 else 0.10)

# A live change applies at once; all zero removes throttling.
bsit(id="ea", iops=200)
changed = []
def tick(el):
    if el >= secs / 2 and not changed:
        bsit(id="ea", iops=400)
        changed.append(el)
t = load(uri("a"), secs * 1.5, on_tick=tick)
within("before the change", rate(t, 0.1, secs / 2), 200)  # past the first 10th-second burst
within("after the change", rate(t, changed[0] + 0.2, secs * 1.5), 400)
bsit(id="ea")
t = load(uri("a"), 1)
assert rate(t, 0, 1) > 5 * 400, "all-zero limits did not remove throttling"
r = c.execute("qom-get", {"path": "ea", "property": "limits"})
assert r["error"]["class"] == "DeviceNotFound", r  # the implicit group went with its export

# A group (the --object one) shared by two exports: one budget.
assert c.cmd("qom-get", path="/objects/g0", property="x-iops-total") == 300
bsit(id="ea", iops=300, group="g0")
bsit(id="ec", iops=300, group="g0")
r = c.execute("object-del", {"id": "g0"})
assert r["error"]["desc"] == "object 'g0' is in use, can not be deleted", r
ts = [threading.Thread(target=run, args=(n,)) for n in ("a", "c")]
[t.start() for t in ts]
[t.join() for t in ts]
within("a group of two exports", rate(res["a"], 0, secs) + rate(res["c"], 0, secs), 300)
assert rate(res["a"], 0, secs) > 60 and rate(res["c"], 0, secs) > 60, "one member starved"
c.cmd("qom-set", path="g0", property="x-iops-total", value=600)
t = load(uri("c"), secs)
within("the group after qom-set", rate(t, 0, secs), 600)
bsit(id="ea")
bsit(id="ec")
c.cmd("object-del", id="g0")
PY

log "a vhost-user-blk export is throttled alike (vhost-client at QD 32)"
python3 - "$WORKDIR" "$SECS" "$VHOST_CLIENT" <<'PY' || fail "throttling a vhost-user-blk export"
import subprocess, sys
from qmp import QMP
d, secs, client = sys.argv[1], sys.argv[2], sys.argv[3]
c = QMP(d + "/vd.sock")
z = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
c.cmd("block-export-add", type="vhost-user-blk", id="ev", node_name="c", writable=True,
      addr={"type": "unix", "path": d + "/vh.sock"})

def bench(s):
    out = subprocess.run(["timeout", "120", client, d + "/vh.sock", "bench", "randread", "4096",
                          "32", str(s)], check=True, capture_output=True, text=True).stdout
    return float(out.split()[1])

r = c.execute("block_set_io_throttle", dict(z, id="ev", iops_rd=300))
assert "return" in r, r
got = bench(secs)
print("vhost-user-blk, 4 KiB reads: %.1f (limit 300)" % got, file=sys.stderr)
assert abs(got - 300) <= 30, got
assert "return" in c.execute("block_set_io_throttle", dict(z, id="ev"))
got = bench(1)
print("vhost-user-blk unthrottled: %.0f iops" % got, file=sys.stderr)
assert got > 5 * 300, got
c.cmd("block-export-del", id="ev", mode="hard")  # the client may not be seen gone yet
c.event("BLOCK_EXPORT_DELETED")
PY

log "a throttled export with requests queued is deleted cleanly"
python3 - "$WORKDIR" <<'PY' || fail "deleting a throttled export"
import sys, nbd
from qmp import QMP
d = sys.argv[1]
c = QMP(d + "/vd.sock")
z = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
assert "return" in c.execute("block_set_io_throttle", dict(z, id="eb", iops=20))
h = nbd.NBD()
h.connect_uri("nbd+unix:///b?socket=%s/nbd.sock" % d)
bufs = [nbd.Buffer(4096) for _ in range(16)]
for i, b in enumerate(bufs):
    h.aio_pread(b, i * 4096)
c.cmd("block-export-del", id="eb", mode="hard")
c.event("BLOCK_EXPORT_DELETED")
# Its group (named after it) went with it.
r = c.execute("qom-get", {"path": "eb", "property": "limits"})
assert r["error"]["class"] == "DeviceNotFound", r
assert c.cmd("query-version")  # the monitor still answers
PY
stop_pid "$(<"$WORKDIR/vd.pid")"
