#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd --pool keeps its exports in step with the pool (issue 13): a
# volume created with `vstor vol-create-as` while the server runs is listed
# (NBD_OPT_LIST) and served (NBD_OPT_GO) to the next client, without a
# restart; a volume deleted (--force: it is in use) disappears for new
# clients, and a client connected to it is disconnected cleanly. The server
# starts on an empty pool too. nbdinfo and qemu-io are the clients.
. "$(dirname "$0")/lib.sh"

require_tool nbdinfo qemu-io python3
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
URI="nbd+unix:///?socket=$WORKDIR/nbd.sock"
listed() { timeout 30 nbdinfo --list "$URI" >list.out && grep -q "export=\"$1\"" list.out; }

mkdir pool
vstor pool-define-as p1 dir --target "$WORKDIR/pool" >/dev/null
vstor pool-start p1 >/dev/null

# An empty pool is served; its first volume comes later.
start_daemon nbd.pid 30 "$VSTOR_NBD" -t -e 0 -k "$WORKDIR/nbd.sock" \
	--pid-file "$WORKDIR/nbd.pid" --pool p1
NBD_PID=$DAEMON_PID
assert_rc 0 timeout 30 nbdinfo --list "$URI"
grep -q 'export=' out && fail "an empty pool lists exports"

assert_rc 0 vstor vol-create-as p1 a.qcow2 16M --format qcow2
listed a.qcow2 || { cat list.out >&2; fail "a volume created after the start is not listed"; }
assert_rc 0 vstor vol-create-as p1 b.img 8M
listed b.img || fail "a second new volume is not listed"
listed a.qcow2 || fail "a.qcow2 is gone from the list"
# Served with its data path (NBD_OPT_GO), and its size.
assert_rc 0 timeout 60 qemu-io -f raw -c 'write -P 0x6b 0 64k' \
	"nbd+unix:///a.qcow2?socket=$WORKDIR/nbd.sock"
assert_rc 0 timeout 60 qemu-io -r -f raw -c 'read -P 0x6b 0 64k' \
	"nbd+unix:///a.qcow2?socket=$WORKDIR/nbd.sock"
assert_rc 0 timeout 30 nbdinfo --size "nbd+unix:///b.img?socket=$WORKDIR/nbd.sock"
assert_eq "$(cat out)" 8388608 "size of the new b.img export"

# A client connected to b.img while it is deleted is disconnected cleanly;
# new clients no longer see the volume.
python3 - "$WORKDIR" <<'PY' &
import sys, time
import nbd
d = sys.argv[1]
h = nbd.NBD()
h.connect_uri("nbd+unix:///b.img?socket=%s/nbd.sock" % d)
open(d + "/connected", "w").close()
deadline = time.monotonic() + 60
try:
    while time.monotonic() < deadline:
        h.pread(4096, 0)
        time.sleep(0.05)
    sys.exit("still served after the volume was deleted")
except nbd.Error:
    open(d + "/dropped", "w").close()
PY
CLIENT=$!
wait_for 30 test -e "$WORKDIR/connected"
assert_fails vstor vol-delete b.img --pool p1
assert_grep 'in use' err
assert_rc 0 vstor vol-delete b.img --pool p1 --force
if listed b.img; then fail "a deleted volume is still listed"; fi
listed a.qcow2 || fail "a.qcow2 went with b.img"
assert_fails timeout 30 nbdinfo --size "nbd+unix:///b.img?socket=$WORKDIR/nbd.sock"
wait "$CLIENT" || fail "the client of the deleted volume"
[[ -e $WORKDIR/dropped ]] || fail "the client of the deleted volume was not disconnected"

# A volume deleted and created again under the same name is served anew.
assert_rc 0 vstor vol-create-as p1 b.img 4M
listed b.img || fail "b.img created again is not listed"
assert_rc 0 timeout 30 nbdinfo --size "nbd+unix:///b.img?socket=$WORKDIR/nbd.sock"
assert_eq "$(cat out)" 4194304 "size of b.img created again"
stop_pid "$NBD_PID"
