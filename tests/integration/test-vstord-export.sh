#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's exports. qemu-storage-daemon is the oracle for the replies and
# errors of nbd-server-start/stop, block-export-add/del and
# query-block-exports (and the BLOCK_EXPORT_DELETED events); then real
# clients: a vstord started with qsd's command line serves an NBD export
# (nbdcopy, nbdinfo, qemu-io and qemu-img compare over NBD) and a vhost-user-blk export
# (tests/tools/vhost-client) at once, block_resize grows the node under a
# vhost-user-blk front end (a config-change message on the back-end
# channel, then the new capacity) and under a live NBD export (a new
# connection sees the size, the data is intact),
# block-export-del refuses a connected client in safe mode and disconnects
# it in hard mode, blockdev-del refuses an exported node, a bad
# command-line option stops vstord with qsd's message, and the same
# command line with --object tls-creds-x509 serves NBD over TLS only, from
# qsd and from vstord.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon qemu-img qemu-io nbdinfo nbdcopy certtool
find_built VSTORD vstord/vstord
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
qemu_io() { timeout 300 qemu-io "$@"; }
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3 libnbd bindings (python3-libnbd) missing"

qemu_img create -q -f qcow2 a.qcow2 64M
qemu_img create -q -f qcow2 ro.qcow2 16M

start_qsd_and_vstord

log "the same export commands, the same replies and events as qemu-storage-daemon"
python3 - "$WORKDIR" <<'PY' || fail "vstord's export commands differ from qemu-storage-daemon's"
import sys
from qmp import QMP
d = sys.argv[1]

def steps(tag):
    u = lambda p: {"type": "unix", "data": {"path": "%s/%s-%s" % (d, tag, p)}}
    return [
        ("nbd-server-stop", None),
        ("blockdev-add", {"driver": "file", "node-name": "f", "filename": d + "/a.qcow2"}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f"}),
        ("blockdev-add", {"driver": "file", "node-name": "ro", "read-only": True,
                          "filename": d + "/ro.qcow2"}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q"}),
        ("block_resize", {"node-name": "nope", "size": 1}),
        ("block_resize", {"device": "q", "size": 1}),
        ("block_resize", {"size": 1}),
        ("block_resize", {"node-name": "q", "size": "1"}),
        ("block_resize", {"node-name": "q", "size": -1}),
        ("query-blockstats", {"query-nodes": "x"}),
        ("nbd-server-start", {}),
        ("nbd-server-start", {"addr": {"type": "bogus"}}),
        ("nbd-server-start", {"addr": {"type": "unix"}}),
        ("nbd-server-start", {"addr": {"type": "unix", "data": {}}}),
        ("nbd-server-start", {"addr": {"type": "inet", "data": {"host": "127.0.0.1"}}}),
        ("nbd-server-start", {"addr": {"type": "inet", "data": {"host": "::", "port": 5}}}),
        ("nbd-server-start", {"addr": {"type": "inet", "data": {"port": "5"}}}),
        ("nbd-server-start", {"addr": u("n.sock"), "max-connections": "x"}),
        ("nbd-server-start", {"addr": u("n.sock"), "tls-creds": "nope"}),
        ("nbd-server-start", {"addr": u("n.sock"), "bogus": 1}),
        ("nbd-server-start", {"addr": u("n.sock")}),
        ("nbd-server-start", {"addr": u("n2.sock")}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "nonode"}),
        ("block-export-add", {"type": "bogus", "id": "e", "node-name": "q"}),
        ("block-export-add", {"type": "nbd", "node-name": "q"}),
        ("block-export-add", {"type": "nbd", "id": "e"}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q", "bogus": 1}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q", "addr": {}}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q", "writable": "yes"}),
        ("block-export-add", {"type": "nbd", "id": "x", "node-name": "ro", "writable": True}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q", "writable": True}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "q"}),
        ("block-export-add", {"type": "nbd", "id": "e2", "node-name": "q"}),
        ("block-export-add", {"type": "nbd", "id": "e2", "node-name": "q", "name": "other",
                              "description": "the other one"}),
        ("block-export-add", {"type": "nbd", "id": "e3", "node-name": "q", "name": "x" * 5000}),
        ("block-export-add", {"type": "nbd", "id": "e4", "node-name": "q", "name": "four",
                              "allocation-depth": True}),
        ("block-export-add", {"type": "vhost-user-blk", "id": "v", "node-name": "q"}),
        ("block-export-add", {"type": "vhost-user-blk", "id": "v", "node-name": "q",
                              "addr": {"type": "inet", "host": "x", "port": "1"}}),
        ("block-export-add", {"type": "vhost-user-blk", "id": "v", "node-name": "q",
                              "addr": {"type": "unix", "path": d + "/x.sock"},
                              "num-queues": "x"}),
        ("block-export-add", {"type": "vhost-user-blk", "id": "v", "node-name": "q",
                              "addr": {"type": "unix", "path": d + "/x.sock"},
                              "num-queues": 0}),
        ("block-export-add", {"type": "vhost-user-blk", "id": "v", "node-name": "q",
                              "addr": {"type": "unix", "path": "%s/%s-v.sock" % (d, tag)},
                              "writable": True, "num-queues": 2}),
        ("query-block-exports", None),
        ("blockdev-del", {"node-name": "q"}),
        ("block-export-del", {"id": "nope"}),
        ("block-export-del", {"id": "e", "mode": "bogus"}),
        ("block-export-del", {}),
        ("block-export-del", {"id": "e"}),
        ("block-export-del", {"id": "e"}),
        ("query-block-exports", None),
        ("nbd-server-stop", None),
        ("query-block-exports", None),
        ("nbd-server-stop", None),
        ("block-export-del", {"id": "v", "mode": "hard"}),
        ("query-block-exports", None),
        ("blockdev-del", {"node-name": "q"}),
    ]

def run(path, tag, descs, qsd):
    c = QMP(path)
    out = []
    for i, (name, args) in enumerate(steps(tag)):
        r = c.execute(name, args)
        if name == "query-block-exports" and not qsd:
            for x in r.get("return", []):
                x.pop("x-reactor", None)  # vstor's own, with --reactors N > 1
        # The same message; vstord may say more after it (and cuts at 511 bytes).
        if "error" in r:
            r["error"]["desc"] = r["error"]["desc"][:400]
            if qsd:
                descs[i] = r["error"]["desc"]
            elif r["error"]["desc"].startswith(descs.get(i, "\0")):
                r["error"]["desc"] = descs[i]
        out.append((name, args and {k: v[:40] if isinstance(v, str) else v
                                     for k, v in args.items() if k != "addr"}, r))
    c.execute("query-version")  # the events of the last command have arrived
    out.append([(e["event"], e["data"]) for e in c.events])
    return out

descs = {}
bad = 0
for a, b in zip(run(d + "/qsd.sock", "qsd", descs, True), run(d + "/vd.sock", "vd", descs, False)):
    if a != b:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
stop_pid "$(<"$WORKDIR/qsd.pid")"
stop_pid "$(<"$WORKDIR/vd.pid")"

log "a bad --blockdev stops vstord with qsd's message"
if timeout 30 "$VSTORD" --blockdev driver=file,node-name=z >out 2>err; then
	fail "vstord started with a --blockdev that lacks its filename"
fi
assert_grep "^vstord: --blockdev: Parameter 'filename' is missing" err "the --blockdev error"
if timeout 30 "$VSTORD" --nbd-server '{"addr": 5}' >out 2>err; then
	fail "vstord started with a bad --nbd-server"
fi
assert_grep "^vstord: --nbd-server: " err "the --nbd-server error"

log "qsd's command line: an NBD and a vhost-user-blk export at once"
qemu_io -f qcow2 -c "write -P 0x5a 0 4M" -c "write -P 0xa5 32M 1M" a.qcow2 >/dev/null
cp a.qcow2 orig.qcow2
truncate -s 64M v.raw
start_daemon "$WORKDIR/vd2.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd2.pid" \
	--chardev socket,id=m0,path="$WORKDIR/vd2.sock",server=on,wait=off --monitor chardev=m0 \
	--blockdev "driver=file,node-name=f,filename=$WORKDIR/a.qcow2,cache.direct=on" \
	--blockdev '{"driver": "qcow2", "node-name": "q", "file": "f"}' \
	--blockdev "driver=file,node-name=vf,filename=$WORKDIR/v.raw,read-only=off" \
	--nbd-server "addr.type=unix,addr.path=$WORKDIR/nbd.sock,max-connections=8" \
	--export "type=nbd,id=n,node-name=q,writable=on,description=a,,b" \
	--export "vhost-user-blk,id=v,node-name=vf,addr.type=unix,addr.path=$WORKDIR/vh.sock,writable=on,num-queues=2" \

URI="nbd+unix:///q?socket=$WORKDIR/nbd.sock"
[[ $(nbdinfo --size "$URI") == 67108864 ]] || fail "nbdinfo: wrong size"
nbdinfo "$URI" | grep -q "description: a,b" || fail "the description with ',,' is not 'a,b'"
nbdcopy "$URI" copy.raw
qemu_img compare -q -f raw -F qcow2 copy.raw orig.qcow2 || fail "what NBD reads differs"
qemu_io -f raw -c "write -P 0x77 8M 2M" copy.raw >/dev/null
nbdcopy copy.raw "$URI" &
NBDCOPY=$!
timeout 120 "$VHOST_CLIENT" "$WORKDIR/vh.sock" conformance 2 || fail "vhost-client against vstord"
wait "$NBDCOPY" || fail "nbdcopy writing to vstord"
nbdcopy "$URI" back.raw
cmp copy.raw back.raw || fail "what NBD wrote does not read back"
# QEMU's NBD client too: it writes, and reads the whole export back.
qemu_io -f raw -c "write -P 0x33 12M 1M" "$URI" >/dev/null || fail "qemu-io writing over NBD"
qemu_io -f raw -c "write -P 0x33 12M 1M" copy.raw >/dev/null
qemu_img compare -q -f raw -F raw copy.raw "$URI" || fail "qemu-img compare over NBD"

log "block_resize under a vhost-user-blk front end: the config-change message"
timeout 120 "$VHOST_CLIENT" "$WORKDIR/vh.sock" config-change $(((96 << 20) / 512)) >cc.out &
CC=$!
wait_for 30 grep -q ready cc.out
python3 - "$WORKDIR" <<'PY' || fail "block_resize of the vhost-user-blk export's node"
import sys
from qmp import QMP
r = QMP(sys.argv[1] + "/vd2.sock").execute("block_resize", {"node-name": "vf", "size": 96 << 20})
sys.exit(r != {"return": {}})
PY
wait "$CC" || fail "the front end did not see the new capacity"
assert_grep "^capacity 131072" cc.out "the capacity before"
assert_grep "^config changed: capacity 196608" cc.out "the capacity after"
[[ $(stat -c %s v.raw) == $((96 << 20)) ]] || fail "v.raw was not resized"

log "block_resize under a live NBD export; safe and hard block-export-del; blockdev-del refused"
python3 - "$WORKDIR" <<'PY' || fail "resize and delete under live exports"
import sys
import nbd
from qmp import QMP
d = sys.argv[1]
uri = "nbd+unix:///q?socket=%s/nbd.sock" % d
c = QMP(d + "/vd2.sock")

h = nbd.NBD()
h.connect_uri(uri)
assert h.get_size() == 64 << 20, h.get_size()
r = c.execute("block_resize", {"node-name": "q", "size": 128 << 20})
assert r == {"return": {}}, r
# The connected client keeps its size; a new one sees the new size.
assert h.get_size() == 64 << 20
h2 = nbd.NBD()
h2.connect_uri(uri)
assert h2.get_size() == 128 << 20, h2.get_size()
h2.pwrite(b"\x42" * 65536, (128 << 20) - 65536)
assert h2.pread(65536, (128 << 20) - 65536) == b"\x42" * 65536
h2.shutdown()

st = c.execute("query-blockstats")["return"]
q = [s for s in st if s["node-name"] == "q"][0]["stats"]
assert q["rd_operations"] > 0 and q["wr_bytes"] >= 65536 and q["rd_bytes"] > 0, q
assert "x-vstor-latency-histogram-us" in q, q

r = c.execute("blockdev-del", {"node-name": "q"})
assert r["error"]["desc"] == "Node q is in use", r
r = c.execute("block-export-del", {"id": "n"})
assert r["error"]["desc"] == "export 'n' still in use", r
assert h.pread(512, 0) == b"\x5a" * 512
r = c.execute("block-export-del", {"id": "n", "mode": "hard"})
assert r == {"return": {}}, r
try:
    h.pread(512, 0)
    sys.exit("a client of a deleted export still reads")
except nbd.Error:
    pass
c.execute("query-version")
assert ("BLOCK_EXPORT_DELETED", {"id": "n"}) in [(e["event"], e["data"]) for e in c.events]
assert [{k: v for k, v in x.items() if k != "x-reactor"}
        for x in c.execute("query-block-exports")["return"]] == [
    {"type": "vhost-user-blk", "id": "v", "node-name": "vf", "shutting-down": False}]
# Nothing serves q now: it can go, and the vhost-user-blk export still serves.
r = c.execute("blockdev-del", {"node-name": "q"})
assert r == {"return": {}}, r
r = c.execute("block-export-add", {"type": "nbd", "id": "n2", "node-name": "f", "name": "raw"})
assert r == {"return": {}}, r
h3 = nbd.NBD()
h3.connect_uri("nbd+unix:///raw?socket=%s/nbd.sock" % d)
assert h3.is_read_only()
r = c.execute("block-export-del", {"id": "n2", "mode": "safe"})
assert r["error"]["desc"] == "export 'n2' still in use", r
h3.shutdown()
PY
timeout 120 "$VHOST_CLIENT" "$WORKDIR/vh.sock" conformance 1 || fail "vhost-client after the NBD export went"
stop_pid "$(<"$WORKDIR/vd2.pid")"
qemu_img check -q a.qcow2 || fail "the image fails qemu-img check"
[[ $(qemu_img info --output=json a.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == 134217728 ]] ||
	fail "the resize did not reach the image"
qemu_io -f qcow2 -c "read -P 0x5a 0 4M" -c "read -P 0x77 8M 2M" -c "read -P 0x33 12M 1M" \
	-c "read -P 0xa5 32M 1M" \
	-c "read -P 0x42 $(((128 << 20) - 65536)) 64k" a.qcow2 >out || fail "data after the resize"
if grep -q "Pattern verification failed" out; then
	fail "the data changed"
fi
log "--object tls-creds-x509 and nbd-server-start's tls-creds: TLS only, as qsd"
tls_ca
tls_sign server pki/server $'tls_www_server\nencryption_key\nsigning_key'
tls_sign client pki/client $'tls_www_client\nencryption_key\nsigning_key'
qemu_img create -q -f qcow2 t.qcow2 16M
for d in qsd vstord; do
	prog=qemu-storage-daemon
	[[ $d == vstord ]] && prog=$VSTORD
	start_daemon "$WORKDIR/$d-tls.pid" 30 "$prog" --pidfile "$WORKDIR/$d-tls.pid" \
		--object "tls-creds-x509,id=tls0,dir=$WORKDIR/pki/server,endpoint=server" \
		--blockdev "driver=file,node-name=f,filename=$WORKDIR/t.qcow2" \
		--blockdev driver=qcow2,node-name=q,file=f \
		--nbd-server "addr.type=unix,addr.path=$WORKDIR/$d-tls.sock,tls-creds=tls0" \
		--export type=nbd,id=n,node-name=q
	TLS_PID=$DAEMON_PID
	[[ $(nbdinfo --size "nbds+unix:///q?socket=$WORKDIR/$d-tls.sock&tls-certificates=$WORKDIR/pki/client") == 16777216 ]] ||
		fail "$d: nbdinfo over TLS"
	if nbdinfo --size "nbd+unix:///q?socket=$WORKDIR/$d-tls.sock" >/dev/null 2>&1; then
		fail "$d: a client without TLS was served"
	fi
	stop_pid "$TLS_PID"
done
if timeout 30 "$VSTORD" --object "tls-creds-x509,id=t,dir=$WORKDIR/nonexistent,endpoint=server" >out 2>err; then
	fail "vstord started with credentials it cannot read"
fi
assert_grep "^vstord: --object: " err "the --object error"
log "ok"
