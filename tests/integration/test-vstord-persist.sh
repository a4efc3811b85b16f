#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord --state-dir: what the monitor adds (a secret, nodes of several
# kinds: file, qcow2 over file, a volume of a dir pool; the NBD server,
# NBD and vhost-user-blk exports, an external snapshot that moves an export) survives a kill -9:
# restarted on the same state dir, vstord serves the same exports with the
# same data, and query-named-block-nodes/query-block-exports answer the
# same. The secret's bytes never reach the state dir; a secret given with
# data= is refused; an entry whose file is gone is reported and skipped
# while the rest comes up; a corrupt state file stops the daemon with a
# message. Then the same state under socket activation
# (systemd-socket-activate) with readiness through NOTIFY_SOCKET: READY=1
# comes only once the exports are back; and the unit files pass
# systemd-analyze verify.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-img nbdinfo
find_built VSTORD vstord/vstord
find_built VSTOR cli/vstor
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
export VSTOR_STATE_DIR=$WORKDIR/pools
python3 -c 'import nbd' 2>/dev/null || skip_or_fail "python3-libnbd missing"
vstor() { timeout 120 "$VSTOR" "$@"; }

SD=$WORKDIR/vstord-state
SECRET=PersistProbe-$RANDOM$RANDOM-secret
printf '%s' "$SECRET" >secret.txt
chmod 600 secret.txt
qemu_img create -q -f raw a.raw 16M
qemu_img create -q -f qcow2 b.qcow2 16M
qemu_img create -q -f raw gone.raw 1M
mkdir "$WORKDIR/pool"
vstor pool-define-as p1 dir --target "$WORKDIR/pool" >/dev/null
vstor pool-start p1 >/dev/null
vstor vol-create-as p1 v1.qcow2 16M --format qcow2 >/dev/null

start_vstord()
{
	rm -f vd.pid
	start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
		--monitor "$WORKDIR/vd.sock" --state-dir "$SD" "$@"
	VD_PID=$DAEMON_PID
	VD_ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
}

kill9()
{
	kill -KILL "$VD_PID"
	wait_for 10 eval '! kill -0 '"$VD_PID"
}

# --- build the configuration through the monitor ---
start_vstord
python3 - "$WORKDIR" <<'PY' || fail "configuration through the monitor"
import sys, json
import nbd
from qmp import QMP, QMPError
d = sys.argv[1]
c = QMP(d + "/vd.sock")
c.cmd("object-add", qom_type="secret", id="sec0", file=d + "/secret.txt")
try:
    c.cmd("object-add", qom_type="secret", id="sec1", data="inline-secret")
    raise SystemExit("a data= secret was accepted for the state")
except QMPError as e:
    assert "cannot be kept in the state directory" in str(e), e
c.cmd("blockdev-add", driver="file", node_name="fa", filename=d + "/a.raw")
c.cmd("blockdev-add", driver="file", node_name="fb", filename=d + "/b.qcow2")
c.cmd("blockdev-add", driver="qcow2", node_name="qb", file="fb")
c.cmd("blockdev-add", driver="vol", node_name="fv", pool="p1", volume="v1.qcow2")
c.cmd("blockdev-add", driver="qcow2", node_name="qv", file="fv")
c.cmd("blockdev-add", driver="raw", node_name="rg",
      file={"driver": "file", "filename": d + "/gone.raw"})
c.cmd("blockdev-add", driver="file", node_name="tmp", filename=d + "/gone.raw",
      read_only=True, force_share=True)
c.cmd("blockdev-del", node_name="tmp")
c.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/nbd.sock"}})
c.cmd("block-export-add", type="nbd", id="ea", node_name="fa", writable=True)
def export(**args):  # "name" is also cmd()'s own parameter
    r = c.execute("block-export-add", {k.replace("_", "-"): v for k, v in args.items()})
    assert "error" not in r, r

export(type="nbd", id="eb", node_name="qb", writable=True, name="disk-b")
c.cmd("block-export-add", type="nbd", id="ev", node_name="qv", writable=True)
c.cmd("block-export-add", type="nbd", id="eg", node_name="rg")
export(type="nbd", id="tmp", node_name="rg", name="tmp")
c.cmd("block-export-add", type="vhost-user-blk", id="vh", node_name="qv", writable=True,
      addr={"type": "unix", "path": d + "/vh.sock"})
c.cmd("block-export-del", id="tmp")

def write(name, byte, off):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s/nbd.sock" % (name, d))
    h.pwrite(bytes([byte]) * 65536, off)
    h.flush()
    h.shutdown()

write("fa", 0xa1, 0)
write("disk-b", 0xb1, 0)
write("qv", 0xc1, 1 << 20)
# The export of qb moves to the overlay; what follows lands there.
c.cmd("blockdev-snapshot-sync", node_name="qb", snapshot_file=d + "/b-ov.qcow2",
      snapshot_node_name="qb-ov", format="qcow2")
write("disk-b", 0xb2, 65536)
json.dump({"nodes": c.cmd("query-named-block-nodes"),
           "exports": c.cmd("query-block-exports")}, open(d + "/before.json", "w"))
PY

[[ $(stat -c %a "$SD") == 700 ]] || fail "state dir mode $(stat -c %a "$SD"), not 700"
[[ $(stat -c %a "$SD/vstord.json") == 600 ]] || fail "state file mode is not 600"
if grep -rqF -- "$SECRET" "$SD"; then fail "the secret's bytes are in the state dir"; fi
if grep -rqF -- "inline-secret" "$SD"; then fail "a refused secret reached the state dir"; fi
grep -qF "$WORKDIR/secret.txt" "$SD/vstord.json" || fail "the secret's file is not in the state"
grep -qF '"tmp"' "$SD/vstord.json" && fail "a deleted node or export is still in the state"

# --- kill -9, restart: the same graph, exports and data ---
kill9
start_vstord
python3 - "$WORKDIR" <<'PY' || fail "state after kill -9 and restart"
import sys, json
import nbd
from qmp import QMP, QMPError
d = sys.argv[1]
c = QMP(d + "/vd.sock")
before = json.load(open(d + "/before.json"))
after = {"nodes": c.cmd("query-named-block-nodes"), "exports": c.cmd("query-block-exports")}
for k in ("nodes", "exports"):
    if before[k] != after[k]:
        raise SystemExit("%s differ:\nbefore %s\nafter  %s" % (k, before[k], after[k]))

def read(name, off):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s/nbd.sock" % (name, d))
    data = h.pread(65536, off)
    h.shutdown()
    return data

assert read("fa", 0) == b"\xa1" * 65536
assert read("disk-b", 0) == b"\xb1" * 65536
assert read("disk-b", 65536) == b"\xb2" * 65536
assert read("qv", 1 << 20) == b"\xc1" * 65536
try:  # the secret came back (from its file): its id is taken
    c.cmd("object-add", qom_type="secret", id="sec0", file=d + "/secret.txt")
    raise SystemExit("the secret object was not restored")
except QMPError as e:
    assert "duplicate" in str(e), e
nodes = {n["node-name"]: n for n in after["nodes"]}
assert nodes["qb-ov"]["backing_file_depth"] == 1, nodes["qb-ov"]
PY
nbdinfo --list "nbd+unix:///?socket=$WORKDIR/nbd.sock" >list.out
for e in fa disk-b qv rg; do
	assert_grep "export=\"$e\"|^export: *$e\$|\"$e\"" list.out "nbdinfo --list"
done

# --- an entry whose file is gone is skipped, the rest comes up ---
kill9
rm gone.raw
start_vstord
assert_grep "node 'rg' is not restored" "$VD_ERR" "vstord's stderr"
assert_grep "export 'eg' is not restored" "$VD_ERR" "vstord's stderr"
[[ -s $SD/vstord.json.bak ]] || fail "the state as loaded was not kept"
python3 - "$WORKDIR" <<'PY' || fail "the rest after a skipped entry"
import sys
from qmp import QMP
c = QMP(sys.argv[1] + "/vd.sock")
ids = sorted(e["id"] for e in c.cmd("query-block-exports"))
assert ids == ["ea", "eb", "ev", "vh"], ids
PY
[[ -S $WORKDIR/vh.sock ]] || fail "the vhost-user-blk export's socket is not back"
stop_pid "$VD_PID"

# --- a corrupt state file is an error, never discarded ---
cp "$SD/vstord.json" good.json
head -c 100 good.json >"$SD/vstord.json"
assert_fails "$VSTORD" --monitor "$WORKDIR/vd2.sock" --state-dir "$SD"
assert_grep "is corrupt" err
echo '{"vstord-state": 1, "nodes": [{"driver": 3}]}' >"$SD/vstord.json"
assert_fails "$VSTORD" --monitor "$WORKDIR/vd2.sock" --state-dir "$SD"
assert_grep "entry 0 of \"nodes\" is malformed" err
cmp -s <(echo '{"vstord-state": 1, "nodes": [{"driver": 3}]}') "$SD/vstord.json" ||
	fail "a corrupt state file was rewritten"
cp good.json "$SD/vstord.json"

# --- a second daemon on the same state dir is refused ---
# (and a SIGTERM, unlike blockdev-del, leaves the state as it was)
start_vstord
python3 - "$WORKDIR" <<'PY' || fail "the state after a SIGTERM"
import sys
from qmp import QMP
c = QMP(sys.argv[1] + "/vd.sock")
ids = sorted(e["id"] for e in c.cmd("query-block-exports"))
assert ids == ["ea", "eb", "ev", "vh"], ids
PY
assert_fails "$VSTORD" --monitor "$WORKDIR/vd2.sock" --state-dir "$SD"
assert_grep "in use by another vstord" err
stop_pid "$VD_PID"

# --- the unit files: systemd-analyze verify finds nothing to say ---
if command -v systemd-analyze >/dev/null; then
	mkdir units
	sed "s|@SBINDIR@|$(dirname "$VSTORD")|" "$VS_SOURCE_DIR/vstord/systemd/vstord.service.in" \
		>units/vstord.service
	cp "$VS_SOURCE_DIR/vstord/systemd/vstord.socket.in" units/vstord.socket
	systemd-analyze verify --man=no units/vstord.socket units/vstord.service \
		>verify.out 2>&1 || { cat verify.out >&2; fail "systemd-analyze verify"; }
	[[ ! -s verify.out ]] || { cat verify.out >&2; fail "systemd-analyze verify warns"; }
	grep -q '^Type=notify' units/vstord.service || fail "vstord.service is not Type=notify"
	grep -q -- '--state-dir' units/vstord.service || fail "vstord.service without --state-dir"
else
	[[ ${CI:-} != true ]] || fail "systemd-analyze missing (CI=true)"
	log "systemd-analyze missing: the unit files are not verified"
fi

# --- socket activation of the monitor, readiness after the restore ---
if ! command -v systemd-socket-activate >/dev/null; then
	skip_or_fail "systemd-socket-activate missing"
fi
python3 - "$WORKDIR" "$VSTORD" "$SD" <<'PY' || fail "socket activation and readiness"
import os, socket, subprocess, sys, time
import nbd
from qmp import QMP
d, vstord, sd = sys.argv[1:4]
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(d + "/notify.sock")
ns.settimeout(30)
env = dict(os.environ, NOTIFY_SOCKET=d + "/notify.sock")
# It passes on only the variables named with -E.
p = subprocess.Popen(["systemd-socket-activate", "-l", d + "/mon.sock",
                      "-E", "NOTIFY_SOCKET", "-E", "VSTOR_STATE_DIR", "--",
                      vstord, "--state-dir", sd], env=env,
                     stderr=open(d + "/activated.err", "w"))
try:
    # The listening socket exists before vstord runs; the first client starts it.
    deadline = time.monotonic() + 30
    # The socket file appears at bind(), a moment before listen(): until
    # then a connect is refused.
    while True:
        try:
            c = QMP(d + "/mon.sock")
            break
        except (FileNotFoundError, ConnectionRefusedError):
            assert time.monotonic() < deadline, "no activation socket"
            time.sleep(0.02)
    msg = b""
    while b"READY=1" not in msg:
        msg = ns.recv(4096)
    # Ready means restored: the exports answer at once.
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk-b?socket=%s/nbd.sock" % d)
    assert h.pread(65536, 65536) == b"\xb2" * 65536
    h.shutdown()
    ids = sorted(e["id"] for e in c.cmd("query-block-exports"))
    assert ids == ["ea", "eb", "ev", "vh"], ids
    c.cmd("quit")
    assert p.wait(30) == 0
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
PY
exit 0
