#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The daemon plumbing every server shares (libstore/daemon.c): systemd's
# readiness notification (READY=1 on NOTIFY_SOCKET once the server serves)
# and socket activation (LISTEN_PID/LISTEN_FDS), for vstor-nbd and
# vstor-vhost; a live server's socket is never taken over, a stale one is.
. "$(dirname "$0")/lib.sh"

require_tool python3 nbdinfo qemu-img
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
export PATH=/usr/bin:/bin:$PATH

qemu_img create -q -f raw disk.raw 16M
qemu_img create -q -f raw vdisk.raw 16M

# notified NAME CMD...: run CMD in the background with NOTIFY_SOCKET set and
# wait (bounded) for its READY=1 datagram; CMD must also write NAME.pid.
notified()
{
	local name=$1
	shift
	python3 - "$WORKDIR/$name.notify" "$@" <<'PY' &
import os, socket, subprocess, sys
path, cmd = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(30)
env = dict(os.environ, NOTIFY_SOCKET=path)
p = subprocess.Popen(cmd, env=env)
with open(path + ".pid", "w") as f:
    f.write(str(p.pid))
try:
    while True:
        msg = s.recv(4096).decode()
        if "READY=1" in msg.split("\n"):
            open(path + ".ready", "w").write(msg)
            break
except socket.timeout:
    pass
p.wait()
PY
	register_pid $!
	wait_for 30 test -s "$WORKDIR/$name.notify.ready"
	register_pid "$(<"$WORKDIR/$name.notify.pid")"
}

# --- READY=1 once each server serves ---
notified nbd "$VSTOR_NBD" -t -f raw -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" disk.raw
[[ -S $WORKDIR/nbd.sock && -s $WORKDIR/nbd.pid ]] || fail "vstor-nbd notified before it listened"
assert_eq "$(timeout 30 nbdinfo --size "nbd+unix:///?socket=$WORKDIR/nbd.sock")" 16777216 \
	"vstor-nbd after READY=1"

notified vh "$VSTOR_VHOST" --socket "$WORKDIR/vh.sock" -f raw --pid-file "$WORKDIR/vh.pid" vdisk.raw
[[ -S $WORKDIR/vh.sock && -s $WORKDIR/vh.pid ]] || fail "vstor-vhost notified before it listened"

# A live server's socket is not taken over.
assert_fails timeout 30 "$VSTOR_NBD" -t -r -f raw -k "$WORKDIR/nbd.sock" disk.raw
assert_grep "Failed to bind socket to .*nbd.sock: Address already in use" err "a second vstor-nbd"
assert_fails timeout 30 "$VSTOR_VHOST" --socket "$WORKDIR/vh.sock" -f raw -r vdisk.raw
assert_grep "Failed to bind socket to .*vh.sock: Address already in use" err "a second vstor-vhost"
kill -TERM "$(<"$WORKDIR/nbd.notify.pid")" "$(<"$WORKDIR/vh.notify.pid")"
wait_for 30 bash -c "! kill -0 $(<"$WORKDIR/nbd.notify.pid") && ! kill -0 $(<"$WORKDIR/vh.notify.pid")"

# --- socket activation of vstor-vhost (vstor-nbd's is in test-nbd-clients) ---
python3 - "$WORKDIR/act.sock" "$VSTOR_VHOST" "$WORKDIR/disk.raw" "$WORKDIR/act.pid" <<'PY' &
import os, socket, sys
path, prog, img, pidfile = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(4)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(prog, [prog, "-f", "raw", "--pid-file", pidfile, img])  # keeps the pid
PY
register_pid $!
wait_for 30 test -s "$WORKDIR/act.pid"
timeout 120 "$VHOST_CLIENT" "$WORKDIR/act.sock" conformance >act.out 2>&1 || {
	cat act.out >&2
	fail "vhost-client against a socket-activated vstor-vhost"
}
stop_pid "$(<"$WORKDIR/act.pid")"

# A stale socket file (its server is gone) is replaced.
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' \
	"$WORKDIR/stale.sock"
start_daemon stale.pid 30 "$VSTOR_NBD" -t -f raw -k "$WORKDIR/stale.sock" \
	--pid-file "$WORKDIR/stale.pid" disk.raw
assert_eq "$(timeout 30 nbdinfo --size "nbd+unix:///?socket=$WORKDIR/stale.sock")" 16777216 \
	"vstor-nbd on a stale socket file"
log "ok"
