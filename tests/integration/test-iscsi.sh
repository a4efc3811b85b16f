#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The iscsi protocol driver (iscsi:// URIs, libiscsi on the reactor) against
# tgtd on 127.0.0.1: two LUNs (512-byte and 4 KiB blocks, one thin) without
# CHAP, a target with CHAP and mutual CHAP, and a wrong secret. Data written
# through vstor is checked in the LUNs' backing files, a qcow2 image is
# created on a LUN and checked by qemu-img, and a LUN is exported over NBD
# and read with nbdinfo and nbdcopy, also after a change of the target's
# LUNs (a UNIT ATTENTION, which the driver retries).
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-iscsi.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io nbdinfo nbdcopy
require_vstor_io
require_vstor_img
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }

IQN1=iqn.2026-01.org.vstor.test:open
IQN2=iqn.2026-01.org.vstor.test:chap
truncate -s 64M lun1.img
truncate -s 32M lun2.img
truncate -s 16M lun3.img
iscsi_start_target
iscsi_add_target 1 "$IQN1"
iscsi_add_lun 1 1 "$WORKDIR/lun1.img"
iscsi_add_lun 1 2 "$WORKDIR/lun2.img" --blocksize 4096
tgtadm_ --op update --mode logicalunit --tid 1 --lun 2 --params thin_provisioning=1 ||
	fail "tgtadm: thin provisioning on LUN 2"
iscsi_bind 1
iscsi_add_target 2 "$IQN2"
iscsi_add_lun 2 1 "$WORKDIR/lun3.img"
iscsi_add_account 2 vsuser vs-secret-12345
iscsi_add_account 2 vstarget vs-target-secret-678 --outgoing
iscsi_bind 2
P="iscsi://127.0.0.1:$ISCSI_PORT"

# --- LUN 1 (512-byte blocks): write, read back, check the backing file ---
vstor_io -f raw -c size -c 'writeb 1M 1M 0x5a' -c 'readb 1M 1M 0x5a' \
	-c 'writeb 12345 1000 0x44 fua' -c 'readb 12345 1000 0x44' -c 'write 9M 2500K 7' \
	-c 'read 9M 2500K 7' -c 'zero 20M 4M' -c 'readb 20M 4M 0' -c flush "$P/$IQN1/1" >io.out ||
	fail "I/O on LUN 1"
assert_eq "$(head -1 io.out)" 67108864 "size of LUN 1"
qemu-io -f raw -c 'read -P 0x5a 1M 1M' -c 'read -P 0x44 12345 1000' -c 'read -P 0 20M 4M' \
	lun1.img >qio.out
grep -q "Pattern verification failed" qio.out && fail "writes to LUN 1 did not land"

# --- LUN 2 (4 KiB blocks, thin): unaligned I/O, discard ---
vstor_io -f raw -c size -c 'writeb 100 5000 0x31' -c 'readb 100 5000 0x31' -c 'readb 0 100 0' \
	-c 'writeb 8M 8M 0x77' -c 'discard 8M 4M' -c 'readb 12M 4M 0x77' -c flush \
	"$P/$IQN1/2" >io2.out || fail "I/O on LUN 2"
assert_eq "$(head -1 io2.out)" 33554432 "size of LUN 2"
qemu-io -f raw -c 'read -P 0x31 100 5000' -c 'read -P 0x77 12M 4M' lun2.img >qio2.out
grep -q "Pattern verification failed" qio2.out && fail "writes to LUN 2 did not land"

# --- a qcow2 image on a LUN, checked by qemu-img on the backing file ---
vstor_img create -q -f qcow2 "$P/$IQN1/1" 1G || fail "vstor-img create qcow2 on a LUN"
vstor_io -c 'writeb 3M 2M 0x66' -c flush "$P/$IQN1/1" >/dev/null || fail "qcow2 write on a LUN"
qemu_img check -f qcow2 lun1.img >/dev/null || fail "qemu-img check of a qcow2 on a LUN"
qemu-io -f qcow2 -c 'read -P 0x66 3M 2M' lun1.img >qio3.out
grep -q "Pattern verification failed" qio3.out && fail "qcow2 data on a LUN"
assert_fails vstor_img resize -f raw "$P/$IQN1/2" 64M
assert_grep "resize" err "resize of a LUN"

# --- a LUN over NBD: nbdinfo and nbdcopy see the LUN's bytes ---
qemu_img create -q -f raw lun2.ref 32M
head -c 3M /dev/urandom >rnd.bin
vstor_io -f raw -c 'zero 0 32M' "$P/$IQN1/2" >/dev/null || fail "zero LUN 2"
dd if=rnd.bin of=lun2.img bs=1M seek=5 conv=notrunc status=none
dd if=rnd.bin of=lun2.ref bs=1M seek=5 conv=notrunc status=none
SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -f raw -k "$SOCK" \
	--pid-file "$WORKDIR/nbd.pid" "$P/$IQN1/2"
timeout 60 nbdinfo --json "nbd+unix:///?socket=$SOCK" >nbd.json || fail "nbdinfo"
python3 -c "import json; d = json.load(open('nbd.json')); \
assert d['exports'][0]['export-size'] == 32 << 20, d" || fail "nbdinfo: size of the LUN export"
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK" nbd.raw || fail "nbdcopy from a LUN export"
cmp nbd.raw lun2.ref || fail "nbdcopy: the LUN export's bytes differ"
# The target's LUN inventory changes under the export (LUN 1 removed and
# added back): the next commands on LUN 2 get a UNIT ATTENTION, which the
# driver answers by sending them again, not with an I/O error.
tgtadm_ --op delete --mode logicalunit --tid 1 --lun 1 || fail "tgtadm: delete LUN 1"
iscsi_add_lun 1 1 "$WORKDIR/lun1.img"
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK" nbd-ua.raw ||
	fail "nbdcopy after the target's LUNs changed (UNIT ATTENTION)"
cmp nbd-ua.raw lun2.ref || fail "nbdcopy after a UNIT ATTENTION: the bytes differ"
stop_pid "$DAEMON_PID"

# --- CHAP and mutual CHAP, secrets from files only ---
printf 'vs-secret-12345\n' >secret
printf 'vs-target-secret-678\n' >tsecret
printf 'wrong-secret-000\n' >bad
chmod 600 secret tsecret bad
vstor_io -f raw -c size -c 'writeb 0 64K 0x29' -c 'readb 0 64K 0x29' \
	"iscsi://vsuser@127.0.0.1:$ISCSI_PORT/$IQN2/1?secret-file=$WORKDIR/secret" >chap.out ||
	fail "CHAP login with the right secret"
assert_eq "$(head -1 chap.out)" 16777216 "size of the CHAP LUN"
vstor_io -f raw -c 'readb 0 64K 0x29' \
	"iscsi://vsuser@127.0.0.1:$ISCSI_PORT/$IQN2/1?secret-file=$WORKDIR/secret&target-user=vstarget&target-secret-file=$WORKDIR/tsecret" \
	>/dev/null || fail "mutual CHAP login"
assert_fails vstor_io -f raw -c size \
	"iscsi://vsuser@127.0.0.1:$ISCSI_PORT/$IQN2/1?secret-file=$WORKDIR/bad"
assert_grep "CHAP|authentication" err "error for a wrong CHAP secret"
grep -q wrong-secret err && fail "the secret appears in the error message"
assert_fails vstor_io -f raw -c size "$P/$IQN2/1"
assert_grep "iSCSI|login|authent" err "error for a missing CHAP login"
assert_fails vstor_io -f raw -c size "iscsi://vsuser@127.0.0.1:$ISCSI_PORT/$IQN2/1"
assert_grep "secret" err "error for a user without a secret"
assert_fails vstor_io -f raw -c size "$P/iqn.2026-01.org.vstor.test:nosuch/1"
assert_grep "iSCSI" err "error for a missing target"
assert_fails vstor_io -f raw -c size "$P/$IQN1/9"

# --- the iscsi pool through the vstor CLI: LUNs are the volumes ---
assert_rc 0 vstor pool-define-as ip iscsi --source-host "127.0.0.1:$ISCSI_PORT" \
	--source-dev "$IQN1"
assert_rc 0 vstor pool-start ip
assert_rc 0 vstor vol-list ip --details --output=json
python3 - out <<'PY' || fail "vol-list of the iscsi pool"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert sorted(vols) == ["unit:0:0:1", "unit:0:0:2"], vols
assert vols["unit:0:0:1"]["capacity"] == 1 << 30 and vols["unit:0:0:1"]["format"] == "qcow2", vols
assert vols["unit:0:0:2"]["capacity"] == 32 << 20 and vols["unit:0:0:2"]["format"] == "raw", vols
assert vols["unit:0:0:2"]["path"].startswith("iscsi://127.0.0.1:"), vols
PY
assert_rc 0 vstor pool-info ip
assert_grep '^Capacity: +96' out
assert_fails vstor vol-create-as ip newlun 8M
assert_grep "cannot create volumes.*target" err "vol-create-as on an iscsi pool"
assert_fails vstor vol-delete unit:0:0:2 --pool ip
assert_grep "cannot delete" err "vol-delete on an iscsi pool"
head -c 1M /dev/urandom >up.bin
assert_rc 0 vstor vol-upload unit:0:0:2 up.bin --pool ip --offset 2M
dd if=lun2.img of=chk.bin bs=1M skip=2 count=1 status=none
cmp chk.bin up.bin || fail "vol-upload to a LUN"
assert_rc 0 vstor vol-download unit:0:0:2 dl.bin --pool ip --offset 2M --length 1M
cmp dl.bin up.bin || fail "vol-download from a LUN"
# A LUN exported by pool name over NBD.
SOCK2=$WORKDIR/nbd2.sock
start_daemon "$WORKDIR/nbd2.pid" 20 "$VSTOR_NBD" -t -k "$SOCK2" --pid-file "$WORKDIR/nbd2.pid" \
	-f raw vol:ip/unit:0:0:2
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK2" nbd2.raw || fail "nbdcopy of vol:ip/unit:0:0:2"
cmp nbd2.raw lun2.img || fail "NBD export of a pool LUN differs from the LUN"
stop_pid "$DAEMON_PID"
assert_rc 0 vstor pool-destroy ip

# --- an encrypted LUN, as libvirt has it: the iscsi pool creates no volume
# (encrypted or not); a LUN formatted as raw LUKS elsewhere (here qemu-img
# create -f luks onto the LUN) is listed as raw with luks encryption and
# opened through vol:POOL/LUN with the secret whose usage is its path ---
IQN3=iqn.2026-01.org.vstor.test:luks
truncate -s 16M lun4.img
iscsi_add_target 3 "$IQN3"
iscsi_add_lun 3 1 "$WORKDIR/lun4.img"
iscsi_bind 3
printf 'iscsi-Luks-pass-51' >luks.key
chmod 600 luks.key
assert_rc 0 qemu_img create -f luks --object secret,id=s,file=luks.key \
	-o key-secret=s,iter-time=10 "$P/$IQN3/1" 8M
assert_rc 0 vstor pool-define-as ie iscsi --source-host "127.0.0.1:$ISCSI_PORT" \
	--source-dev "$IQN3"
assert_rc 0 vstor pool-start ie
assert_rc 0 vstor vol-info unit:0:0:1 --pool ie
assert_grep "^Encryption: +luks" out "vol-info of a LUKS LUN"
LPATH=$(vstor vol-path unit:0:0:1 --pool ie)
printf "<secret><usage type='volume'><volume>%s</volume></usage></secret>\n" "$LPATH" >lsec.xml
assert_rc 0 vstor secret-define lsec.xml
LU=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
assert_fails vstor vol-create-as ie enc 1M --encryption-secret "$LU"
assert_grep "cannot create" err "an encrypted volume on an iscsi pool"
assert_rc 0 vstor secret-set-value "$LU" --file luks.key --plain
printf 'ISCSI-PLAINTEXT-%.0s' $(seq 256) >imark
vstor_img convert -n -f raw -O luks imark vol:ie/unit:0:0:1 ||
	fail "write through vol: with the secret of the LUN's path"
grep -q ISCSI-PLAINTEXT lun4.img && fail "the LUN holds plaintext"
vstor_img convert -O raw vol:ie/unit:0:0:1 l4.out || fail "read through vol: of the LUKS LUN"
cmp -n "$(stat -c %s imark)" imark l4.out || fail "the LUKS LUN reads back other bytes"
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=luks.key \
	--image-opts "driver=luks,key-secret=s,file.filename=$WORKDIR/lun4.img" \
	-c "read -P 0x49 0 1" -c "read -P 0x2d 15 1"
assert_rc 0 vstor pool-destroy ie
# The discovery below counts the first two targets only.
tgtadm_ --op delete --force --mode target --tid 3 || fail "tgtadm: delete target 3"
# --- find-storage-pool-sources: SendTargets discovery on the portal ---
assert_rc 0 vstor find-storage-pool-sources-as iscsi 127.0.0.1 "$ISCSI_PORT"
python3 - out "$ISCSI_PORT" "$IQN1" "$IQN2" <<'PY' || fail "find-storage-pool-sources-as iscsi"
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
found = sorted((s.find("host").get("name"), s.find("host").get("port"), s.find("device").get("path"))
               for s in r.findall("source"))
want = sorted(("127.0.0.1", sys.argv[2], iqn) for iqn in sys.argv[3:])
assert r.tag == "sources" and found == want, (found, want)
PY
printf "<source><host name='127.0.0.1' port='%s'/></source>" "$ISCSI_PORT" >spec.xml
assert_rc 0 vstor find-storage-pool-sources iscsi spec.xml
assert_grep "<device path='$IQN1'/>" out
assert_fails vstor find-storage-pool-sources-as iscsi 127.0.0.1 "$(free_port)"
assert_grep "discovery on 127.0.0.1:[0-9]+ failed" err

# CHAP through the pool definition; a wrong secret is a clear error.
assert_rc 0 vstor pool-define-as ic iscsi --source-host "127.0.0.1:$ISCSI_PORT" \
	--source-dev "$IQN2" --auth-type chap --auth-username vsuser \
	--auth-secret-file "$WORKDIR/secret" --extra mutual_username=vstarget \
	--extra "mutual_secret_file=$WORKDIR/tsecret"
assert_rc 0 vstor pool-start ic
assert_rc 0 vstor vol-list ic
assert_grep 'unit:0:0:1' out
assert_rc 0 vstor pool-destroy ic
assert_rc 0 vstor pool-define-as ibad iscsi --source-host "127.0.0.1:$ISCSI_PORT" \
	--source-dev "$IQN2" --auth-type chap --auth-username vsuser --auth-secret-file "$WORKDIR/bad"
assert_fails vstor pool-start ibad
assert_grep "CHAP" err "pool-start with a wrong CHAP secret"

# --- the target dies under I/O: requests fail after the reconnects, no hang ---
reads=()
vstor_io -f raw -c 'writeb 16M 4M 0x42' "$P/$IQN1/2" >/dev/null || fail "write before the kill"
for ((i = 0; i < 200; i++)); do reads+=(-c 'readb 16M 4M 0x42'); done
# read_bytes: bytes the initiator has received on its connection to tgtd.
read_bytes()
{
	local n
	n=$(ss -tinH state established "( dport = :$ISCSI_PORT )" |
		sed -nE 's/.*bytes_received:([0-9]+).*/\1/p' | sort -n | tail -n 1)
	echo "${n:-0}"
}
rc=0
timeout 120 "$VSTOR_IO" -f raw "${reads[@]}" "$P/$IQN1/2" >/dev/null 2>dead.err &
io_pid=$!
# Kill the target once reads are flowing (8 MiB received: logged in, two
# reads done), not at a guessed moment.
wait_for 60 eval '(($(read_bytes) > 8 << 20))'
kill -KILL "$TGTD_PID"
wait "$io_pid" || rc=$?
assert_eq "$rc" 1 "exit status of I/O whose iSCSI target died"
assert_grep "error" dead.err "error of I/O whose iSCSI target died"
grep -q mismatch dead.err && fail "wrong data before the target died"
log "ok"
