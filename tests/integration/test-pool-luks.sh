#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Encrypted pool volumes (issue 17): the secret store (secret-define,
# secret-set-value --file --plain, secret-list) with its value file refused
# when others may read it; vol-create with libvirt's <encryption
# format='luks'> (qcow2) and vol-create-as --encryption-secret (raw LUKS);
# qemu-io writes and reads them with the same passphrase, cryptsetup checks
# the raw one's header and passphrase; vstor-img (vol:), vstor-nbd --pool
# and vstor-vhost --pool read and write plaintext while the files hold none
# of it;
# vol-dumpxml/vol-info/vol-list show the encryption, never the value;
# vol-clone keeps it, vol-wipe formats it encrypted again; a chain of two pool volumes with two secrets reads
# through; and the passphrase is nowhere in the state directory (but its
# value file) nor in any output or log.
. "$(dirname "$0")/lib.sh"

require_tool qemu-io qemu-img cryptsetup nbdinfo
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
find_built VHOST_CLIENT tests/tools/vhost-client
require_vstor_img
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
PASS=pluks-Secret-4c1f9e
PASS2=pluks-Other-77ab02
POOL=$WORKDIR/pool

mkdir "$POOL"
vstor pool-define-as p dir --target "$POOL" >/dev/null
vstor pool-start p >/dev/null

# ---- the secret store
cat >sec.xml <<EOF
<secret ephemeral='no' private='yes'>
  <description>test volume passphrase</description>
  <usage type='volume'><volume>$POOL/enc.qcow2</volume></usage>
</secret>
EOF
assert_rc 0 vstor secret-define sec.xml
U=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
[[ ${#U} == 36 ]] || fail "secret-define printed no uuid"
assert_rc 0 vstor secret-list
assert_grep "$U +volume $POOL/enc.qcow2" out "secret-list"
printf '%s' "$PASS" >val
chmod 644 val
assert_fails vstor secret-set-value "$U" --file val --plain
assert_grep "other users" err "a world-readable value file"
chmod 600 val
assert_rc 0 vstor secret-set-value "$U" --file val --plain
# The second secret: its value as base64 in a file (virsh's default).
printf '<secret><description>base</description></secret>\n' >sec2.xml
assert_rc 0 vstor secret-define sec2.xml
U2=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
printf '%s' "$PASS2" | base64 >val2
chmod 600 val2
assert_rc 0 vstor secret-set-value "$U2" --file val2
printf '%s' "$PASS" >key1
printf '%s' "$PASS2" >key2
chmod 600 key1 key2
[[ $(stat -c %a state/secrets) == 700 ]] || fail "the secret directory is not 0700"
for f in state/secrets/*.value; do
	[[ $(stat -c %a "$f") == 600 ]] || fail "$f is not 0600"
done

# ---- vol-create (libvirt XML) and vol-create-as
cat >vol.xml <<EOF
<volume>
  <name>enc.qcow2</name>
  <capacity unit='M'>16</capacity>
  <target>
    <format type='qcow2'/>
    <encryption format='luks' iter-time='50'>
      <secret type='passphrase' uuid='$U'/>
    </encryption>
  </target>
</volume>
EOF
assert_rc 0 vstor vol-create p vol.xml
assert_rc 0 vstor vol-create-as p enc.raw 8M --format raw --encryption-secret "$U2" \
	--encryption-iter-time 50
assert_rc 0 vstor vol-dumpxml enc.qcow2 --pool p
assert_grep "<encryption format='luks'>" out "vol-dumpxml"
assert_grep "<secret type='passphrase' uuid='$U'/>" out "vol-dumpxml"
assert_rc 0 vstor vol-dumpxml enc.raw --pool p
assert_grep "<format type='raw'/>" out "vol-dumpxml of the raw LUKS volume"
assert_grep "uuid='$U2'" out "vol-dumpxml of the raw LUKS volume"
assert_rc 0 vstor vol-info enc.raw --pool p
assert_grep "^Encryption: +luks" out "vol-info"
assert_grep "^Capacity: +8.00 MiB" out "vol-info (the payload's size)"
assert_rc 0 vstor vol-list p --details
assert_grep "enc.qcow2 .* luks" out "vol-list --details"
# A volume without a secret, or with an unknown one, is not created.
assert_fails vstor vol-create-as p bad 1M --encryption-secret 00000000-0000-4000-8000-000000000000
assert_grep "secret not found" err "an unknown secret"

# ---- the image formats as QEMU and cryptsetup read them
Q1=(--object "secret,id=s,file=key1" --image-opts "driver=qcow2,encrypt.key-secret=s,file.filename=$POOL/enc.qcow2")
Q2=(--object "secret,id=s,file=key2" --image-opts "driver=luks,key-secret=s,file.filename=$POOL/enc.raw")
assert_rc 0 timeout 60 qemu-img info "${Q1[@]}"
assert_grep "encrypted: yes" out "qemu-img info"
assert_rc 0 timeout 60 qemu-io "${Q1[@]}" -c 'write -P 0x3c 0 1M'
assert_rc 0 timeout 60 qemu-io "${Q2[@]}" -c 'write -P 0x4d 64k 1M'
assert_rc 0 cryptsetup luksDump "$POOL/enc.raw"
assert_grep "^Version:[[:space:]]+1" out "luksDump"
assert_rc 0 cryptsetup open --test-passphrase --key-file key2 "$POOL/enc.raw"

# vstor-img reads vol: with the pool's secret (no --object).
assert_rc 0 vstor_img convert -O raw vol:p/enc.qcow2 q.out
assert_rc 0 timeout 60 qemu-io -f raw -c 'read -P 0x3c 0 1M' -c 'read -P 0 1M 1M' q.out
assert_rc 0 vstor_img convert -O raw vol:p/enc.raw r.out
assert_rc 0 timeout 60 qemu-io -f raw -c 'read -P 0x4d 64k 1M' r.out
[[ $(stat -c %s r.out) == 8388608 ]] || fail "the raw LUKS volume reads with a wrong size"

# ---- vstor-nbd --pool serves plaintext
start_daemon nbd.pid 60 "$VSTOR_NBD" -t -e 0 -k "$WORKDIR/nbd.sock" \
	--pid-file "$WORKDIR/nbd.pid" --pool p
NBD=(-f raw "nbd+unix:///enc.qcow2?socket=$WORKDIR/nbd.sock")
assert_rc 0 timeout 60 qemu-io "${NBD[@]}" -c 'read -P 0x3c 0 1M'
# A distinctive plaintext written through NBD lands encrypted.
printf 'PLAINTEXT-MARKER-%.0s' $(seq 64) >marker
assert_rc 0 timeout 60 python3 - "$WORKDIR/nbd.sock" <<'EOF'
import sys, nbd
h = nbd.NBD()
h.connect_uri("nbd+unix:///enc.raw?socket=" + sys.argv[1])
data = open("marker", "rb").read()
data += b"\0" * (4096 - len(data) % 4096)
h.pwrite(data, 2 << 20)
h.flush()
assert h.pread(len(data), 2 << 20) == data
h.shutdown()
EOF
stop_pid "$DAEMON_PID"
if grep -q PLAINTEXT-MARKER "$POOL/enc.raw"; then
	fail "the plaintext written over NBD is in the volume's file"
fi
assert_rc 0 timeout 60 qemu-img convert "${Q2[@]}" -O raw q2.out
grep -q PLAINTEXT-MARKER q2.out || fail "qemu-img does not read what vstor-nbd wrote"

# ---- vstor-vhost --pool: the front end's writes go through the cipher
start_daemon vh.pid 60 "$VSTOR_VHOST" --socket "$WORKDIR/vh.sock" --pid-file "$WORKDIR/vh.pid" \
	--pool p enc.raw
assert_rc 0 timeout 60 "$VHOST_CLIENT" "$WORKDIR/vh.sock" write 8192 65536 0x5a
stop_pid "$DAEMON_PID"
assert_rc 0 timeout 60 qemu-io "${Q2[@]}" -c 'read -P 0x5a 4M 64k' -c 'read -P 0x4d 64k 64k'

# vol-resize of the raw LUKS volume: the payload grows behind the header.
assert_rc 0 vstor vol-resize enc.raw 12M --pool p
assert_rc 0 vstor vol-info enc.raw --pool p
assert_grep "^Capacity: +12.00 MiB" out "vol-info after vol-resize"
assert_rc 0 timeout 60 qemu-img info "${Q2[@]}"
assert_grep "^virtual size: 12 MiB" out "qemu-img info after vol-resize"
assert_rc 0 timeout 60 qemu-io "${Q2[@]}" -c 'read -P 0x5a 4M 64k'
# ... and of the qcow2+luks one, opened with the pool's secret.
assert_rc 0 vstor vol-resize enc.qcow2 20M --pool p
assert_rc 0 timeout 60 qemu-img info "${Q1[@]}"
assert_grep "^virtual size: 20 MiB" out "qemu-img info after vol-resize (qcow2)"
assert_rc 0 timeout 60 qemu-img check "${Q1[@]}"

# ---- vol-clone keeps the encryption and its secret
assert_rc 0 vstor vol-clone enc.qcow2 clone.qcow2 --pool p
assert_rc 0 vstor vol-dumpxml clone.qcow2 --pool p
assert_grep "uuid='$U'" out "the clone's secret"
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=key1 --image-opts \
	"driver=qcow2,encrypt.key-secret=s,file.filename=$POOL/clone.qcow2" -c 'read -P 0x3c 0 1M'

# vol-wipe formats an encrypted volume again, encrypted with its secret.
assert_rc 0 vstor vol-wipe clone.qcow2 --pool p
assert_rc 0 vstor vol-info clone.qcow2 --pool p
assert_grep "^Encryption: +luks" out "vol-info after vol-wipe"
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=key1 --image-opts \
	"driver=qcow2,encrypt.key-secret=s,file.filename=$POOL/clone.qcow2" -c 'read -P 0 0 1M'

# ---- a chain of two pool volumes with two secrets
assert_rc 0 vstor vol-create-as p top.qcow2 16M --format qcow2 --backing-vol enc.qcow2 \
	--backing-vol-format qcow2 --encryption-secret "$U2" --encryption-iter-time 50
assert_rc 0 vstor_img convert -O raw vol:p/top.qcow2 t.out
cmp q.out t.out || fail "the overlay with its own secret does not read its base"
assert_rc 0 timeout 60 qemu-img convert --object secret,id=a,file=key1 \
	--object secret,id=b,file=key2 --image-opts \
	"driver=qcow2,encrypt.key-secret=b,backing.encrypt.key-secret=a,file.filename=$POOL/top.qcow2" \
	-O raw qt.out
cmp q.out qt.out || fail "qemu-img reads the two-secret chain differently"

# ---- a value file that others may read is refused when it is used
chmod 644 "state/secrets/$U.value"
assert_fails vstor_img convert -O raw vol:p/enc.qcow2 x.out
assert_grep "other users" err "a world-readable value file in the store"
chmod 600 "state/secrets/$U.value"

# ---- no leak: the passphrases are in their value files and nowhere else
for p in "$PASS" "$PASS2"; do
	leaks=$(grep -rlF --exclude='*.value' -e "$p" state || true)
	[[ -z $leaks ]] || fail "a passphrase is in the state directory: $leaks"
	leaks=$(grep -lF -e "$p" daemon.*.out daemon.*.err out err || true)
	[[ -z $leaks ]] || fail "a passphrase is in a log or an output: $leaks"
done
assert_rc 0 vstor secret-dumpxml "$U"
if grep -qF "$PASS" out; then fail "secret-dumpxml shows the value"; fi

# ---- undefine
assert_rc 0 vstor secret-undefine "$U2"
[[ ! -e state/secrets/$U2.value ]] || fail "secret-undefine left the value file"
log "ok"
