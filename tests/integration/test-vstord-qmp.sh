#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstord's QMP monitor, with qemu-storage-daemon as the protocol oracle: the
# same messages sent to both get the same replies (the envelope, the
# negotiation, unknown commands and arguments, ids); then what only vstord
# promises: a 0600 socket, bounded clients, oversized messages, a client that
# never reads, clients that vanish mid-command, quit, signals, --daemonize.
. "$(dirname "$0")/lib.sh"

require_tool python3 qemu-storage-daemon
find_built VSTORD vstord/vstord
export PATH=/usr/bin:/bin:$PATH
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration

start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd.pid" \
	--chardev socket,id=m0,path="$WORKDIR/qsd.sock",server=on,wait=off --monitor chardev=m0
start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
	--chardev socket,id=m0,path="$WORKDIR/vd.sock",server=on,wait=off --monitor chardev=m0
VD_PID=$DAEMON_PID

log "the monitor socket is private to the daemon's user"
assert_eq "$(stat -c %a "$WORKDIR/vd.sock")" 600

log "the same messages, the same replies as qemu-storage-daemon"
python3 - "$WORKDIR/qsd.sock" "$WORKDIR/vd.sock" <<'PY' || fail "replies differ from qemu-storage-daemon's"
import sys
from qmp import QMP

# Sent raw, before and after negotiation. (message, compare the desc too)
before = [
    (b'{"execute":"query-version"}', True),
    (b'{"execute":"no-such-command"}', True),
    (b'{"execute":"qmp_capabilities","arguments":{"enable":"x"}}', True),
]
after = [
    (b'{"execute":"qmp_capabilities"}', True),
    (b'[1]', True),
    (b'"text"', True),
    (b'{"foo":1}', True),
    (b'{"execute":1}', True),
    (b'{"arguments":{}}', True),
    (b'{"execute":"no-such-command","id":"x1"}', True),
    (b'{"execute":"query-version","arguments":[]}', True),
    (b'{"execute":"query-version","bar":1}', True),
    (b'{"execute":"query-version","arguments":{"x":1}}', True),
    (b'{"exec-oob":"query-version"}', True),
    (b'{"execute":"query-version","control":{}}', True),
    (b'{"execute" "x"}', False),  # JSON parse errors: the class only
    (b'}', False),
]

def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    return type(v).__name__

def run(path):
    c = QMP(path, negotiate=False)
    # vstord offers no out-of-band execution: its capabilities list is empty.
    assert isinstance(c.greeting["QMP"]["capabilities"], list)
    c.greeting["QMP"]["capabilities"] = []
    out = [shape(c.greeting)]
    for phase in (before, [(b'{"execute":"qmp_capabilities","id":{"a":[1,"b"]}}', True)], after):
        for msg, desc in phase:
            c.send_raw(msg + b"\n")
            r = c.reply()
            if "error" in r and not desc:
                r["error"]["desc"] = "(parse error)"
            out.append((msg, r))
    for name in ("query-version", "query-commands"):
        out.append((name, shape(c.execute(name, id=5))))
    out.append(("query-commands", "query-version" in [x["name"] for x in c.cmd("query-commands")]))
    return out

q, v = run(sys.argv[1]), run(sys.argv[2])
bad = 0
for a, b in zip(q, v):
    if a != b:
        print("qsd:   ", a, "\nvstord:", b, file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

log "bounded clients, oversized messages, a client that never reads"
python3 - "$WORKDIR/vd.sock" <<'PY' || fail "monitor bounds"
import socket, sys, time
from qmp import QMP, QMPError
path = sys.argv[1]

clients = [QMP(path) for _ in range(16)]
# The 17th is refused (closed without a greeting); the others still answer.
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(path)
assert s.recv(4096) == b"", "a 17th client was served"
s.close()
for c in clients:
    assert c.cmd("query-version")["package"].startswith("vstor")
for c in clients[1:]:
    c.close()

def connect(path):
    """A client, once the daemon has seen the closed ones go (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return QMP(path)
        except QMPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)

# A message larger than 1 MiB: an error, then the connection closes.
big = connect(path)
try:
    big.send_raw(b'{"execute":"query-version","id":"' + b"x" * (2 << 20) + b'"}')
except (BrokenPipeError, ConnectionResetError):
    pass
r = big.reply()
assert r["error"]["class"] == "GenericError" and "too large" in r["error"]["desc"], r
assert big.readline() is None, "the connection stayed open"
big.close()

# A client that sends commands but never reads its replies is dropped once
# its outbox is full; meanwhile another client is answered at once.
slow = socket.socket(socket.AF_UNIX)
slow.connect(path)
slow.sendall(b'{"execute":"qmp_capabilities"}')
flood = b'{"execute":"query-commands"}' * 20000
other = clients[0]
t0 = time.monotonic()
dropped = False
for i in range(200):
    try:
        slow.sendall(flood)
    except (BrokenPipeError, ConnectionResetError):
        dropped = True
        break
    assert other.cmd("query-version")
assert dropped, "a client that never reads was never dropped"
slow.close()
assert time.monotonic() - t0 < 120

# A client that goes away in the middle of a message, and one that sends a
# command and leaves before the reply.
for tail in (b'{"execute":"query-ver', b'{"execute":"query-version"}'):
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.sendall(b'{"execute":"qmp_capabilities"}' + tail)
    c.close()
assert other.cmd("query-version")
other.close()
PY

log "quit answers, then the daemon exits 0 and removes its socket and pid file"
python3 - "$WORKDIR/vd.sock" <<'PY' || fail "quit"
import sys
from qmp import QMP
c = QMP(sys.argv[1])
assert c.cmd("quit") == {}
assert c.readline() is None
PY
wait_for 30 bash -c "! kill -0 $VD_PID"
stop_pid "$VD_PID"
[[ ! -e $WORKDIR/vd.sock && ! -e $WORKDIR/vd.pid ]] || fail "socket or pid file left behind"

log "--daemonize: the parent returns once the monitor serves; SIGTERM stops it"
assert_rc 0 timeout 30 "$VSTORD" --daemonize --pidfile "$WORKDIR/d.pid" \
	--monitor "$WORKDIR/d.sock"
[[ -S $WORKDIR/d.sock && -s $WORKDIR/d.pid ]] || fail "not serving when the parent returned"
DPID=$(<"$WORKDIR/d.pid")
register_pid "$DPID"
python3 -c "import sys; from qmp import QMP; assert QMP(sys.argv[1]).cmd('query-version')" \
	"$WORKDIR/d.sock" || fail "the daemonized monitor does not answer"
kill -TERM "$DPID"
wait_for 30 bash -c "! kill -0 $DPID"
[[ ! -e $WORKDIR/d.sock ]] || fail "socket left behind after SIGTERM"

log "a bad command line is a message and exit 1"
assert_fails "$VSTORD" --monitor chardev=nope
assert_fails "$VSTORD" --chardev socket,id=m,path="$WORKDIR/x.sock" --monitor m
assert_fails "$VSTORD" --chardev file,id=m,path="$WORKDIR/x.sock"
assert_fails "$VSTORD" --daemonize --monitor "$WORKDIR/no/such/dir/m.sock"
assert_fails "$VSTORD" stray-argument
log ok
