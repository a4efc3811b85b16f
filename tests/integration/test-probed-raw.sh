#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# QEMU's rule for raw images whose format was probed: a write that would make
# the first sector probe as another format is refused (EPERM), so a client
# cannot write a qcow2 header, with a backing file of its choice, into a raw
# image that the next open would then take as qcow2. Checked over NBD
# (vstor-nbd FILE without -f, and a raw volume of vstor-nbd --pool) with
# nbdsh as the client; with -f raw the same write is the user's business.
# The warning qemu-img prints when it probes raw is printed too.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img nbdsh python3 cmp
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state

# A qcow2 header naming a host file as its backing file: what an attacker writes.
qemu_img create -q -f qcow2 -u -b /etc/passwd -F raw evil.qcow2 1M
head -c 4096 evil.qcow2 >evil.hdr

# try_header URI: write the header at 0, print "refused ERRNO" or "written".
try_header()
{
	timeout 60 nbdsh -u "$1" -c '
import sys
hdr = open("evil.hdr", "rb").read()
try:
    h.pwrite(hdr, 0)
    print("written")
except nbd.Error as e:
    print("refused", e.errno)
# Other writes to the first sector go through.
h.pwrite(b"plain data", 0)
h.pwrite(hdr[:8], 4096)
'
}

# --- vstor-nbd FILE, format probed ---
qemu_img create -q -f raw disk.raw 1M
start_daemon nbd.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" disk.raw
assert_grep "probing guessed raw" "$WORKDIR/daemon.$VS_NDAEMONS.err" "the warning on a probed raw image"
assert_eq "$(try_header "nbd+unix:///?socket=$WORKDIR/nbd.sock")" "refused EPERM" "qcow2 header over NBD"
stop_pid "$DAEMON_PID"
assert_eq "$(head -c 10 disk.raw)" "plain data" "the other write to sector 0"
assert_grep '^file format: raw' <(qemu-img info disk.raw) "the image after the attempt"

# --- -f raw: allowed, and no warning ---
qemu_img create -q -f raw given.raw 1M
start_daemon nbd2.pid 30 "$VSTOR_NBD" -t -f raw -k "$WORKDIR/nbd2.sock" --pid-file "$WORKDIR/nbd2.pid" \
	given.raw
if grep -q "probing guessed raw" "$WORKDIR/daemon.$VS_NDAEMONS.err"; then
	fail "the probe warning with -f raw"
fi
assert_eq "$(try_header "nbd+unix:///?socket=$WORKDIR/nbd2.sock")" "written" "header write with -f raw"
stop_pid "$DAEMON_PID"

# --- a raw volume of a pool exported with vstor-nbd --pool ---
timeout 60 "$VSTOR" pool-define-as p dir --target "$WORKDIR/pool" >/dev/null
timeout 60 "$VSTOR" pool-build p >/dev/null
timeout 60 "$VSTOR" pool-start p >/dev/null
timeout 60 "$VSTOR" vol-create-as p vol.raw 1M --format raw >/dev/null
start_daemon nbd3.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd3.sock" --pid-file "$WORKDIR/nbd3.pid" \
	--pool p
assert_eq "$(try_header "nbd+unix:///vol.raw?socket=$WORKDIR/nbd3.sock")" "refused EPERM" \
	"qcow2 header into a pool's raw volume"
stop_pid "$DAEMON_PID"
assert_grep '^file format: raw' <(qemu-img info "$WORKDIR/pool/vol.raw") "the volume after the attempt"
log "ok"
