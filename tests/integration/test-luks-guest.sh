#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A QEMU guest (TCG) on an encrypted pool volume (issue 17): a qcow2 volume
# with encrypt.format=luks, its secret in the pool's secret store, served by
# vstor-vhost --pool as a vhost-user-blk disk. The guest writes a pattern
# over the whole disk, flushes, reads it back, zeroes and discards
# (disk-pattern). Afterwards the image passes qemu-img check; qemu-img,
# given the passphrase, reads the guest's data; and the image file holds
# none of the plaintext pattern.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img python3
find_built VSTOR cli/vstor
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
vm_prepare

export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
POOL=$WORKDIR/pool
mkdir "$POOL"
vstor pool-define-as gp dir --target "$POOL" >/dev/null || fail "pool-define-as"
vstor pool-start gp >/dev/null || fail "pool-start"
printf 'guest-Luks-pass-7d0e' >key
chmod 600 key
printf '<secret><description>guest disk</description></secret>\n' >sec.xml
assert_rc 0 vstor secret-define sec.xml
U=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
assert_rc 0 vstor secret-set-value "$U" --file key --plain
assert_rc 0 vstor vol-create-as gp disk.qcow2 8M --format qcow2 --encryption-secret "$U" \
	--encryption-iter-time 10

start_daemon "$WORKDIR/vh.pid" 20 "$VSTOR_VHOST" -v --socket "$WORKDIR/vh.sock" --num-queues 2 \
	--discard=unmap --pid-file "$WORKDIR/vh.pid" --pool gp disk.qcow2
VH=$DAEMON_PID
ERR=$WORKDIR/daemon.$VS_NDAEMONS.err
vm_run guest 300 disk-pattern "" -- \
	-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
	-chardev "socket,id=c0,path=$WORKDIR/vh.sock" \
	-device vhost-user-blk-pci,chardev=c0,num-queues=2
grep -q "write-zeroes ok" "$WORKDIR/guest.console" || fail "write-zeroes not exercised"
wait_for 20 grep -q "front end gone" "$ERR"
grep -qE " 0 I/O errors" "$ERR" || { cat "$ERR" >&2; fail "the guest got I/O errors"; }
stop_pid "$VH"

IMG=$POOL/disk.qcow2
OPTS=(--object "secret,id=s0,file=key" --image-opts
	"driver=qcow2,encrypt.key-secret=s0,file.filename=$IMG")
assert_rc 0 timeout 60 qemu-img check "${OPTS[@]}"
assert_rc 0 timeout 60 qemu-img convert "${OPTS[@]}" -O raw plain.raw
# The guest wrote one 1 MiB random block at every MiB, a second one at MiB
# 1, zeroed MiB 2 and discarded MiB 3: qemu-img reads exactly that, and no
# 64-byte piece of any 4 KiB of the block is in the image file.
python3 - plain.raw "$IMG" <<'PY' || fail "the guest's data, read by qemu-img, or plaintext in the file"
import sys
plain = open(sys.argv[1], "rb").read()
enc = open(sys.argv[2], "rb").read()
M = 1 << 20
assert len(plain) == 8 * M, len(plain)
pat = plain[4 * M:5 * M]
assert pat != bytes(M), "MiB 4 reads as zeroes"
for i in [0] + list(range(4, 8)):
    assert plain[i * M:(i + 1) * M] == pat, "MiB %d differs from the pattern" % i
assert plain[M:2 * M] not in (pat, bytes(M)), "MiB 1 lacks the second pattern"
assert plain[2 * M:4 * M] == bytes(2 * M), "zeroed/discarded MiBs"
for block in (pat, plain[M:2 * M]):
    for off in range(0, M, 4096):
        assert block[off:off + 64] not in enc, "plaintext at pattern offset %d" % off
PY
log "done after $SECONDS s"
