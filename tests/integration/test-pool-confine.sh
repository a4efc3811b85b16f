#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A pool user reaches nothing the pools do not hold (libvirt's rule for
# backing chains). A qcow2 uploaded byte for byte into a pool may name any
# backing file; opened as a pool volume (vol:POOL/VOLUME, vstor-nbd --pool),
# its backing file must be a volume of an active pool:
#  - a host path (with and without a backing format), a relative name that
#    climbs out of the pool, and an nbd:// URI are refused, for that volume
#    alone: vstor-nbd --pool serves the pool's other volumes and names the
#    bad one;
#  - a backing volume named by its path (vol-create-as --backing-vol), by a
#    relative name, or living in another pool is followed;
#  - a backing format that is not recorded may only be probed as raw;
#  - the same file opened by its plain path keeps qemu-img's behaviour.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-nbd nbdinfo nbdsh python3 cmp
require_vstor_img
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }

# A host file no pool holds, with bytes we can recognise.
mkdir -p host
python3 -c 'import sys; sys.stdout.buffer.write(b"HOST-SECRET-" * 87381)' >host/secret
truncate -s 1M host/secret

assert_rc 0 vstor pool-define-as p1 dir --target "$WORKDIR/p1"
assert_rc 0 vstor pool-build p1
assert_rc 0 vstor pool-start p1
assert_rc 0 vstor pool-define-as p2 dir --target "$WORKDIR/p2"
assert_rc 0 vstor pool-build p2
assert_rc 0 vstor pool-start p2

# drop_backing_fmt FILE: make the backing format unrecorded (qemu-img 7.2 no
# longer creates such images; older ones did). The extension's type becomes
# one no reader knows, which every reader skips.
drop_backing_fmt()
{
	python3 - "$1" <<'PY'
import sys
f = open(sys.argv[1], "r+b")
h = f.read(4096)
i = h.index(bytes.fromhex("e2792aca"))
f.seek(i)
f.write(bytes.fromhex("7a7a7a7a"))
PY
}

# upload NAME FILE: a volume of p1 with FILE's bytes, as a pool user makes it.
upload()
{
	assert_rc 0 vstor vol-create-as p1 "$1" 1M --format raw
	assert_rc 0 vstor vol-upload "$1" "$2" --pool p1
}

# --- good volumes: a base in p1 and one in p2, with data ---
assert_rc 0 vstor vol-create-as p1 base.raw 1M --format raw
qemu_img create -q -f raw pat.raw 1M
python3 -c 'import sys; sys.stdout.buffer.write(b"POOL-BASE-DATA" * 74898)' >pat.raw
truncate -s 1M pat.raw
assert_rc 0 vstor vol-upload base.raw pat.raw --pool p1
assert_rc 0 vstor vol-create-as p2 other.raw 1M --format raw
assert_rc 0 vstor vol-upload other.raw pat.raw --pool p2

# vol-create-as --backing-vol records the backing volume's path: followed.
assert_rc 0 vstor vol-create-as p1 top.qcow2 1M --format qcow2 --backing-vol base.raw \
	--backing-vol-format raw
assert_rc 0 vstor_img convert -O raw vol:p1/top.qcow2 top.out
cmp top.out pat.raw || fail "a backing volume of the same pool was not followed"

# A relative name, uploaded: followed (the pool's own directory).
qemu_img create -q -f qcow2 -u -b base.raw -F raw rel.qcow2 1M
upload rel.qcow2 rel.qcow2
assert_rc 0 vstor_img convert -O raw vol:p1/rel.qcow2 rel.out
cmp rel.out pat.raw || fail "a relative backing volume name was not followed"

# A volume of another active pool, by its path: followed.
qemu_img create -q -f qcow2 -u -b "$WORKDIR/p2/other.raw" -F raw cross.qcow2 1M
upload cross.qcow2 cross.qcow2
assert_rc 0 vstor_img convert -O raw vol:p1/cross.qcow2 cross.out
cmp cross.out pat.raw || fail "a backing volume of another pool was not followed"
assert_rc 0 vstor_img info --backing-chain vol:p1/cross.qcow2
assert_grep '^image: vol:p2/other.raw' out "the chain names the backing volume by pool"

# --backing-vol takes a volume of this pool by name, or of any pool by path,
# never a host file.
assert_fails vstor vol-create-as p1 hostback.qcow2 1M --format qcow2 \
	--backing-vol "$WORKDIR/host/secret" --backing-vol-format raw
assert_grep "Storage volume not found" err "--backing-vol with a host path"
[[ ! -e $WORKDIR/p1/hostback.qcow2 ]] || fail "a refused vol-create-as left a volume"
assert_rc 0 vstor vol-create-as p1 xpool.qcow2 1M --format qcow2 \
	--backing-vol "$WORKDIR/p2/other.raw" --backing-vol-format raw
assert_rc 0 vstor_img convert -O raw vol:p1/xpool.qcow2 xpool.out
cmp xpool.out pat.raw || fail "--backing-vol by the path of another pool's volume"

# --- bad volumes ---
# A host path with a backing format, and without one.
qemu_img create -q -f qcow2 -u -b "$WORKDIR/host/secret" -F raw evil-abs.qcow2 1M
upload evil-abs.qcow2 evil-abs.qcow2
qemu_img create -q -f qcow2 -u -b "$WORKDIR/host/secret" -F raw evil-nofmt.qcow2 1M
drop_backing_fmt evil-nofmt.qcow2
upload evil-nofmt.qcow2 evil-nofmt.qcow2
# A relative name that climbs out of the pool.
qemu_img create -q -f qcow2 -u -b ../host/secret -F raw evil-rel.qcow2 1M
upload evil-rel.qcow2 evil-rel.qcow2
# Another NBD server's data.
start_daemon qnbd.pid 20 qemu-nbd -f raw -r -t -k "$WORKDIR/q.sock" --pid-file "$WORKDIR/qnbd.pid" \
	host/secret
qemu_img create -q -f qcow2 -u -b "nbd+unix:///?socket=$WORKDIR/q.sock" -F raw evil-nbd.qcow2 1M
upload evil-nbd.qcow2 evil-nbd.qcow2

for v in evil-abs evil-nofmt evil-rel evil-nbd; do
	assert_fails vstor_img convert -O raw "vol:p1/$v.qcow2" "$v.out"
	assert_grep "not a volume of an active storage pool" err "$v: convert's error"
	[[ ! -s $v.out ]] || ! grep -q HOST-SECRET "$v.out" || fail "$v: host bytes came out"
	# The plain path of the same file keeps qemu-img's behaviour.
	assert_rc 0 vstor_img convert -O raw "$WORKDIR/p1/$v.qcow2" "$v.plain"
	qemu_img convert -O raw "$WORKDIR/p1/$v.qcow2" "$v.qemu"
	cmp "$v.plain" "$v.qemu" || fail "$v: the plain path reads differently from qemu-img"
done

# A backing volume whose format is not recorded and probes as qcow2.
assert_rc 0 vstor vol-create-as p1 inner.qcow2 1M --format qcow2
qemu_img create -q -f qcow2 -u -b inner.qcow2 -F qcow2 probed.qcow2 1M
drop_backing_fmt probed.qcow2
upload probed.qcow2 probed.qcow2
assert_fails vstor_img info --backing-chain vol:p1/probed.qcow2
assert_grep "was not specified" err "a probed qcow2 backing volume"
# ... and one that probes as raw is fine.
qemu_img create -q -f qcow2 -u -b base.raw -F raw probed-raw.qcow2 1M
drop_backing_fmt probed-raw.qcow2
upload probed-raw.qcow2 probed-raw.qcow2
assert_rc 0 vstor_img convert -O raw vol:p1/probed-raw.qcow2 probed-raw.out
cmp probed-raw.out pat.raw || fail "a backing volume probed as raw was not followed"

# --- vstor-nbd --pool: the good volumes are served, the bad ones named ---
start_daemon nbd.pid 30 "$VSTOR_NBD" -t -r -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" \
	--pool p1
nbderr=$WORKDIR/daemon.$VS_NDAEMONS.err
for v in evil-abs evil-nofmt evil-rel evil-nbd probed; do
	assert_grep "volume '$v.qcow2' of pool 'p1' is not exported" "$nbderr" "vstor-nbd on $v"
done
timeout 60 nbdinfo --list "nbd+unix:///?socket=$WORKDIR/nbd.sock" >list.out
for v in base.raw top.qcow2 rel.qcow2 cross.qcow2 xpool.qcow2; do
	assert_grep "export=\"?$v\"?\$|^export=$v|$v" list.out "export $v"
done
if grep -q evil list.out; then
	cat list.out >&2
	fail "a volume with a host backing file was exported"
fi
timeout 60 nbdsh -u "nbd+unix:///top.qcow2?socket=$WORKDIR/nbd.sock" \
	-c 'import sys; sys.stdout.buffer.write(h.pread(1048576, 0))' >served.out
cmp served.out pat.raw || fail "the served overlay does not read its backing volume"
stop_pid "$DAEMON_PID"

# vstor-nbd on one bad volume refuses to start, with the reason.
assert_fails timeout 60 "$VSTOR_NBD" -t -k "$WORKDIR/bad.sock" vol:p1/evil-abs.qcow2
assert_grep "not a volume of an active storage pool" err "vstor-nbd vol:p1/evil-abs.qcow2"

# With the pool holding host/ as well, the same backing file is a volume.
assert_rc 0 vstor pool-define-as hostpool dir --target "$WORKDIR/host"
assert_rc 0 vstor pool-start hostpool
assert_rc 0 vstor_img convert -O raw vol:p1/evil-abs.qcow2 abs.out
cmp abs.out host/secret || fail "a backing file in another defined pool was not followed"
log "ok"
