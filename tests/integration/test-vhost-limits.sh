#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-vhost under sockets that connect and say nothing:
#  - 600 of them (more than the reactor's ring budget would have held, with
#    the connection limit raised) do not keep a real front end
#    (tests/tools/vhost-client) from negotiating and doing I/O: the device
#    goes to the first connection that sends a message;
#  - with the default connection limit (16) the rest of a crowd of 100 is
#    closed at once, and the (shortened) handshake limit drops the silent
#    ones it accepted; a front end is served again afterwards.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool python3 qemu-img
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
client() { timeout 120 "$VHOST_CLIENT" "$@"; }

ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 1200)) || skip_or_fail "cannot raise the descriptor limit to 1200"

# crowd SOCKET N SECONDS: N silent connections, held for SECONDS (or until the
# server closes them); prints how many were closed at once and when the
# others were.
crowd()
{
	timeout 120 python3 - "$@" <<'PY'
import os, sys, time
sys.path.insert(0, os.environ["VS_LIB_DIR"])
import nbd_flood as f
path, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
socks, failed = f.crowd(path, n)
open(os.environ["WORKDIR"] + "/crowd.ready", "w").close()
res = f.fate(socks, hold)
closed = sorted(t for _, t in res if t is not None)
early = sum(1 for t in closed if t < 1.0)
late = [t for t in closed if t >= 1.0]
print("crowd of %d: %d connects failed, %d closed within 1 s, %d closed later%s, %d open"
      % (n, failed, early, len(late),
         " (%.1f..%.1f s)" % (late[0], late[-1]) if late else "", n - failed - len(closed)))
print("EARLY=%d LATE=%d OPEN=%d" % (early, len(late), n - failed - len(closed)))
PY
}
export VS_LIB_DIR WORKDIR

qemu_img create -f qcow2 disk.qcow2 64M >/dev/null

# --- silent connections beyond the ring budget, a real front end beside them ---
start_daemon "$WORKDIR/a.pid" 20 "$VSTOR_VHOST" --socket "$WORKDIR/a.sock" -f qcow2 \
	--max-connections=1000 --handshake-limit=0 --pid-file "$WORKDIR/a.pid" disk.qcow2
crowd "$WORKDIR/a.sock" 600 60 >crowd-a.out &
CROWD=$!
wait_for 60 test -e "$WORKDIR/crowd.ready"
t0=$(date +%s%N)
client "$WORKDIR/a.sock" conformance 1 || fail "a front end beside 600 silent connections"
log "conformance beside 600 silent connections: $((($(date +%s%N) - t0) / 1000000)) ms"
kill -0 "$CROWD" 2>/dev/null || fail "the silent connections were dropped (no limit was set)"
kill "$CROWD" 2>/dev/null || true
wait "$CROWD" || true
stop_pid "$DAEMON_PID"
rm -f "$WORKDIR/crowd.ready"

# --- the default connection limit and a 2 s handshake limit ---
start_daemon "$WORKDIR/b.pid" 20 "$VSTOR_VHOST" --socket "$WORKDIR/b.sock" -f qcow2 \
	--handshake-limit=2 --pid-file "$WORKDIR/b.pid" disk.qcow2
crowd "$WORKDIR/b.sock" 100 30 | tee crowd-b.out
eval "$(grep '^EARLY=' crowd-b.out)"
((EARLY >= 100 - 16)) || fail "only $EARLY of 100 connections were refused (limit 16)"
((OPEN == 0)) || fail "$OPEN silent connections were not dropped by the handshake limit"
client "$WORKDIR/b.sock" conformance 1 || fail "a front end after the crowd"
kill -0 "$DAEMON_PID" || fail "vstor-vhost died"
stop_pid "$DAEMON_PID"
qemu_img check disk.qcow2 >/dev/null || fail "qemu-img check"
log "ok"
