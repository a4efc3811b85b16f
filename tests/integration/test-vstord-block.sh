#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's block graph against qemu-storage-daemon: the same blockdev-add,
# blockdev-del and query-named-block-nodes sequence (separate protocol and
# format nodes as libvirt adds them, inline children, backing chains opened
# by name, "backing": null, a backing node given by name) gives the same
# replies and the same graph; the errors carry the same messages. Then a
# pool volume as a node (vstor's "vol" driver), and nodes that stay shared.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon qemu-img
find_built VSTORD vstord/vstord
require_vstor_img
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration

qemu_img create -q -f qcow2 base.qcow2 64M
qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 top2.qcow2
qemu_img create -q -f qcow2 other.qcow2 64M
qemu_img create -q -f raw r.raw 1M

start_qsd_and_vstord

log "the same commands, the same replies and graph as qemu-storage-daemon"
python3 - "$WORKDIR" <<'PY' || fail "vstord's block graph differs from qemu-storage-daemon's"
import sys
from qmp import QMP
d = sys.argv[1]

steps = [
    ("blockdev-add", {"driver": "file", "node-name": "f", "filename": d + "/top.qcow2"}),
    ("blockdev-add", {"driver": "file", "node-name": "f", "filename": d + "/top.qcow2"}),
    ("blockdev-add", {"driver": "file", "filename": d + "/top.qcow2"}),
    ("blockdev-add", {"driver": "file", "node-name": "g", "filename": d + "/nonexistent"}),
    ("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f"}),
    ("blockdev-add", {"driver": "qcow2", "node-name": "q2", "file": "nonode"}),
    ("blockdev-add", {"driver": "raw", "node-name": "r",
                      "file": {"driver": "file", "filename": d + "/r.raw"}}),
    ("blockdev-add", {"driver": "foo", "node-name": "z"}),
    ("blockdev-add", {"driver": "file", "node-name": "z"}),
    ("blockdev-add", {"driver": "file", "node-name": "z", "filename": d + "/r.raw", "bogus": 1}),
    ("blockdev-add", {"driver": "file", "node-name": "z", "filename": 5}),
    ("blockdev-add", {"driver": "file", "node-name": "ro", "read-only": True,
                      "filename": d + "/other.qcow2"}),
    ("blockdev-add", {"driver": "qcow2", "node-name": "o", "file": "ro", "read-only": True}),
    ("blockdev-add", {"driver": "qcow2", "node-name": "nb", "backing": None,
                      "file": {"driver": "file", "filename": d + "/base.qcow2"}}),
    ("blockdev-add", {"driver": "file", "node-name": "f2", "filename": d + "/top2.qcow2",
                      "read-only": True}),
    ("blockdev-add", {"driver": "qcow2", "node-name": "q3", "file": "f2", "backing": "o",
                      "read-only": True}),
    ("query-named-block-nodes", None),
    ("query-named-block-nodes", {"flat": True}),
    ("blockdev-del", {"node-name": "f"}),
    ("blockdev-del", {"node-name": "nope"}),
    ("blockdev-del", {}),
    ("blockdev-del", {"node-name": "o"}),
    ("blockdev-del", {"node-name": "q3"}),
    ("blockdev-del", {"node-name": "o"}),
    ("blockdev-del", {"node-name": "f2"}),
    ("blockdev-del", {"node-name": "q"}),
    ("blockdev-del", {"node-name": "f"}),
    ("query-named-block-nodes", None),
]

json_named = {"q3"}  # a backing node given by name: QEMU's filename is "json:{...}"

def graph(nodes):
    """What must agree of a node list: named nodes with their properties,
    the number of unnamed ones. (QEMU rounds a file node's size up to 512.)"""
    named, unnamed = {}, 0
    for n in nodes:
        img = n["image"]
        props = (n["drv"], n["ro"], n["backing_file_depth"], n.get("backing_file"),
                 img["format"],
                 # QEMU names an image whose backing node was given "json:{...}"
                 None if n.get("node-name") in json_named else img["filename"],
                 img["virtual-size"] if n["drv"] != "file" else None,
                 sorted(n.keys()), sorted(n["cache"].items()),
                 sorted(k for k in img.keys() if k != "actual-size"),
                 "backing-image" in img)
        if n["node-name"].startswith("#"):
            unnamed += 1
        else:
            named[n["node-name"]] = props
    return named, unnamed

def run(path, qsd):
    c = QMP(path)
    out = []
    for i, (name, args) in enumerate(steps):
        r = c.execute(name, args)
        # The same message; vstord may say more after it (which file, why).
        if "error" in r:
            if qsd:
                descs[i] = r["error"]["desc"]
            elif r["error"]["desc"].startswith(descs.get(i, "\0")):
                r["error"]["desc"] = descs[i]
        if name == "query-named-block-nodes" and "return" in r:
            r = graph(r["return"])
        out.append((name, args, r))
    return out

descs = {}
bad = 0
for a, b in zip(run(d + "/qsd.sock", True), run(d + "/vd.sock", False)):
    if a != b:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

log "a pool volume as a node; a node shared by two parents stays open until both go"
VSTOR_STATE_DIR=$WORKDIR/state
export VSTOR_STATE_DIR

timeout 60 "$VSTOR" pool-define-as p dir --target "$WORKDIR/pool" >/dev/null
timeout 60 "$VSTOR" pool-build p >/dev/null
timeout 60 "$VSTOR" pool-start p >/dev/null
timeout 60 "$VSTOR" vol-create-as p v.qcow2 16M --format qcow2 >/dev/null
stop_pid "$(<"$WORKDIR/vd.pid")"
start_daemon "$WORKDIR/vd2.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd2.pid" \
	--monitor "$WORKDIR/vd2.sock"
python3 - "$WORKDIR" <<'PY' || fail "vol nodes and shared nodes"
import sys
from qmp import QMP, QMPError
d = sys.argv[1]
c = QMP(d + "/vd2.sock")
c.cmd("blockdev-add", driver="vol", node_name="vf", pool="p", volume="v.qcow2")
c.cmd("blockdev-add", driver="qcow2", node_name="vq", file="vf")
nodes = {n["node-name"]: n for n in c.cmd("query-named-block-nodes")}
assert nodes["vq"]["image"]["virtual-size"] == 16 << 20, nodes["vq"]
assert nodes["vf"]["file"] == d + "/pool/v.qcow2", nodes["vf"]
# A volume that does not exist, a pool that does not: an error, nothing added.
for pool, vol in (("p", "nope"), ("nopool", "v")):
    try:
        c.cmd("blockdev-add", driver="vol", node_name="x", pool=pool, volume=vol)
        raise SystemExit("vol:%s/%s was added" % (pool, vol))
    except QMPError:
        pass
assert "x" not in {n["node-name"] for n in c.cmd("query-named-block-nodes")}
# Two format nodes on one protocol node (read-only): the protocol node is in
# use until both are gone.
c.cmd("blockdev-add", driver="file", node_name="bf", filename=d + "/base.qcow2", read_only=True)
c.cmd("blockdev-add", driver="qcow2", node_name="b1", file="bf", read_only=True)
c.cmd("blockdev-add", driver="qcow2", node_name="b2", file="bf", read_only=True)
c.cmd("blockdev-del", node_name="b1")
try:
    c.cmd("blockdev-del", node_name="bf")
    raise SystemExit("a node in use was deleted")
except QMPError as e:
    assert "in use" in str(e), e
c.cmd("blockdev-del", node_name="b2")
c.cmd("blockdev-del", node_name="bf")
c.cmd("blockdev-del", node_name="vq")
c.cmd("blockdev-del", node_name="vf")
assert c.cmd("query-named-block-nodes") == []
PY
# The daemon let go of every file: qemu-img may write them.
qemu_img check -q base.qcow2
qemu_img check -q "$WORKDIR/pool/v.qcow2"
qemu_img resize -q "$WORKDIR/pool/v.qcow2" 32M
log ok
