#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The nfs protocol driver (nfs:// URIs, libnfs on the reactor, no kernel
# mount) against nfs-ganesha's VFS backend in a private network namespace:
# qcow2 and raw images on the export are created, written, resized and
# served over NBD through vstor; what vstor writes reads back through
# qemu-img and nfs-cat on the exported directory, and the reverse.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io nbdcopy
require_vstor_io
require_vstor_img
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
nfs_enter_netns "$@"
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir exp
nfs_start_server "$WORKDIR/exp"
U="$NFS_URL"
Q="$NFS_OPTS"

# --- qemu-img writes on the export, vstor reads over NFS, and back ---
qemu_img create -f qcow2 exp/a.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x5a 1M 1M' -c 'write -P 0x21 60M 64K' exp/a.qcow2 >/dev/null
vstor_io -c size -c 'readb 1M 1M 0x5a' -c 'readb 60M 64K 0x21' -c 'readb 2M 1M 0' \
	-c 'writeb 4M 3M 0x33' -c 'writeb 12345 1000 0x44 fua' -c 'write 9M 2500K 7' \
	-c 'read 9M 2500K 7' -c flush "$U/a.qcow2$Q" >io.out || fail "I/O on a qcow2 image over NFS"
assert_eq "$(head -1 io.out)" 67108864 "virtual size over NFS"
qemu_img check exp/a.qcow2 >/dev/null || fail "qemu-img check after writes over NFS"
qemu-io -f qcow2 -c 'read -P 0x33 4M 3M' -c 'read -P 0x44 12345 1000' -c 'read -P 0x5a 1M 1M' \
	exp/a.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "writes over NFS did not land"

# --- every cache mode (FILE_SYNC, UNSTABLE + COMMIT, no COMMIT) writes a
#     qcow2 that qemu-img checks and reads back ---
for cache in writeback none writethrough directsync unsafe; do
	qemu_img create -q -f qcow2 exp/cm.qcow2 16M
	vstor_io -t "$cache" -c 'writeb 0 1M 0x61' -c 'write 3M 300000 5' -c 'writeb 8M 4K 0x62 fua' \
		-c flush -c 'readb 0 1M 0x61' -c 'read 3M 300000 5' "$U/cm.qcow2$Q" >/dev/null ||
		fail "I/O with cache=$cache over NFS"
	qemu_img check exp/cm.qcow2 >/dev/null || fail "qemu-img check after cache=$cache"
	qemu-io -f qcow2 -c 'read -P 0x61 0 1M' -c 'read -P 0x62 8M 4K' exp/cm.qcow2 >qio.out
	grep -q "Pattern verification failed" qio.out && fail "cache=$cache: writes did not land"
done

# --- vstor-img creates both formats on the export (portmapper URL, no ports) ---
vstor_img create -f qcow2 "$U/c.qcow2" 1G >/dev/null || fail "vstor-img create qcow2 on NFS"
vstor_img create -f raw "$U/c.raw" 8M >/dev/null || fail "vstor-img create raw on NFS"
qemu_img info --output=json exp/c.qcow2 >info.json
python3 -c "import json; d = json.load(open('info.json')); \
assert d['format'] == 'qcow2' and d['virtual-size'] == 1 << 30, d" ||
	fail "qemu-img info on a qcow2 created over NFS"
qemu_img check exp/c.qcow2 >/dev/null || fail "qemu-img check on a qcow2 created over NFS"
assert_eq "$(stat -c %s exp/c.raw)" 8388608 "size of a raw file created over NFS"

# --- convert to and from NFS, compared by qemu-img ---
qemu_img create -f qcow2 src.qcow2 32M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x11 0 5M' -c 'write -P 0x12 20M 1M' src.qcow2 >/dev/null
vstor_img convert -f qcow2 -O qcow2 src.qcow2 "$U/conv.qcow2" || fail "convert to NFS"
qemu_img compare -f qcow2 -F qcow2 src.qcow2 exp/conv.qcow2 >/dev/null ||
	fail "image converted onto NFS differs"
vstor_img convert -O raw "$U/conv.qcow2" back.raw || fail "convert from NFS"
qemu_img compare -f qcow2 -F raw src.qcow2 back.raw >/dev/null ||
	fail "image converted from NFS differs"

# --- raw data through vstor, read with nfs-cat; nfs-cp's data read by vstor ---
vstor_io -f raw -c 'writeb 0 8M 0x6b' "$U/c.raw$Q" >/dev/null || fail "raw write over NFS"
timeout 60 nfs-cat "$U/c.raw" >cat.out || fail "nfs-cat"
python3 -c "import sys; d = open('cat.out', 'rb').read(); \
sys.exit(0 if d == b'\x6b' * (8 << 20) else 1)" || fail "nfs-cat does not see vstor's writes"
head -c 3M /dev/urandom >rnd.bin
timeout 60 nfs-cp rnd.bin "$U/rnd.raw" >/dev/null || fail "nfs-cp"
vstor_img compare -q -f raw -F raw "$U/rnd.raw" rnd.bin || fail "vstor reads nfs-cp's file wrongly"

# --- resize over NFS ---
vstor_img resize -f raw "$U/c.raw" 16M >/dev/null || fail "resize raw over NFS"
assert_eq "$(stat -c %s exp/c.raw)" 16777216 "raw size after a resize over NFS"
vstor_img resize "$U/c.qcow2" 2G >/dev/null || fail "resize qcow2 over NFS"
assert_eq "$(qemu-img info --output=json exp/c.qcow2 | python3 -c \
	'import json, sys; print(json.load(sys.stdin)["virtual-size"])')" 2147483648 \
	"qcow2 size after a resize over NFS"

# --- an NFS qcow2 served over NBD: nbdcopy reads what qemu-img reads ---
SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -k "$SOCK" --pid-file "$WORKDIR/nbd.pid" \
	"$U/conv.qcow2$Q"
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK" nbd.raw || fail "nbdcopy from an NFS-backed export"
qemu_img compare -f raw -F qcow2 nbd.raw src.qcow2 >/dev/null ||
	fail "NBD export of an NFS image differs"
stop_pid "$DAEMON_PID"

# --- errors are clear and non-zero ---
assert_fails vstor_io -c size "$U/missing.qcow2"
assert_grep "No such file|not found|NOENT" err "error for a missing file"
assert_fails vstor_io -c size "nfs://127.0.0.1/nosuchexport/x.raw"
assert_grep "mount" err "error for a missing export"
assert_fails vstor_io -c size "$U/a.qcow2?version=4"
assert_grep "NFSv4" err "error for NFSv4"

# --- find-storage-pool-sources: the server's exports, through its MOUNT service ---
assert_rc 0 vstor find-storage-pool-sources-as netfs 127.0.0.1
python3 - out <<'PY' || fail "find-storage-pool-sources-as netfs"
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
found = [(s.find("host").get("name"), s.find("dir").get("path"), s.find("format").get("type"))
         for s in r.findall("source")]
assert r.tag == "sources" and ("127.0.0.1", "/export", "nfs") in found, found
PY
printf "<source><host name='127.0.0.1'/></source>" >spec.xml
assert_rc 0 vstor find-storage-pool-sources netfs spec.xml
assert_grep "<dir path='/export'/>" out
assert_fails vstor find-storage-pool-sources-as netfs
assert_grep "hostname must be specified" err
assert_fails vstor find-storage-pool-sources-as dir 127.0.0.1
assert_grep "does not support source discovery" err

# --- the netfs pool through the vstor CLI (portmapper, then fixed ports) ---
assert_rc 0 vstor pool-define-as np netfs --source-host 127.0.0.1 --source-path /export
assert_fails vstor pool-define-as np2 netfs --source-path /export
assert_grep "source-host" err "netfs pool without a host"
assert_rc 0 vstor pool-build np
assert_rc 0 vstor pool-start np
assert_rc 0 vstor pool-info np
assert_grep '^State: +running' out
assert_rc 0 vstor vol-create-as np pv1.qcow2 256M --format qcow2
assert_rc 0 vstor vol-create-as np pv2.raw 8M --format raw
qemu_img check exp/pv1.qcow2 >/dev/null || fail "qemu-img check of a netfs qcow2 volume"
assert_eq "$(stat -c %s exp/pv2.raw)" 8388608 "netfs raw volume size"
# An encrypted netfs volume (LUKS in qcow2) with a secret of the store: qemu-io
# writes it with the passphrase, vstor-img reads it through the pool's secret.
printf '<secret/>\n' >sec.xml
assert_rc 0 vstor secret-define sec.xml
SEC_UUID=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
printf 'netfs-pass' >sec.key
chmod 600 sec.key
assert_rc 0 vstor secret-set-value "$SEC_UUID" --file sec.key --plain
assert_rc 0 vstor vol-create-as np pe.qcow2 8M --format qcow2 --encryption-secret "$SEC_UUID" \
	--encryption-iter-time 20
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=sec.key --image-opts \
	driver=qcow2,encrypt.key-secret=s,file.filename=exp/pe.qcow2 -c 'write -P 0x77 0 64k'
assert_rc 0 vstor_img convert -O raw vol:np/pe.qcow2 pe.out
assert_rc 0 timeout 60 qemu-io -f raw -c 'read -P 0x77 0 64k' pe.out
assert_rc 0 vstor vol-delete pe.qcow2 --pool np
# Modes as libvirt sets them: 0600 by default, <permissions> of a volume XML
# (SETATTR over NFS); the volume is built under a hidden name and linked
# into place, so no temporary is left on the export.
assert_eq "$(stat -c %a exp/pv2.raw)" 600 "mode of a new netfs volume"
cat >pv4.xml <<'EOF'
<volume><name>pv4.raw</name><capacity>1048576</capacity>
<target><permissions><mode>0640</mode><owner>1234</owner><group>4321</group></permissions></target></volume>
EOF
assert_rc 0 vstor vol-create np pv4.xml
assert_eq "$(stat -c '%a %u %g' exp/pv4.raw)" "640 1234 4321" "netfs volume from a volume XML"
assert_rc 0 vstor vol-dumpxml pv4.raw --pool np
assert_grep '<mode>0640</mode>' out
assert_grep '<owner>1234</owner>' out
assert_rc 0 vstor vol-clone pv4.raw pv5.raw --pool np
assert_eq "$(stat -c '%a %u %g' exp/pv5.raw)" "640 1234 4321" "netfs clone keeps the permissions"
if compgen -G "exp/.*vstor-tmp-*" >/dev/null; then fail "a temporary file left on the export"; fi
assert_rc 0 vstor vol-delete pv4.raw --pool np
assert_rc 0 vstor vol-delete pv5.raw --pool np
assert_rc 0 vstor vol-list np --details --output=json
python3 - out <<'PY' || fail "vol-list --output=json of the netfs pool"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert vols["pv1.qcow2"]["format"] == "qcow2" and vols["pv1.qcow2"]["capacity"] == 256 << 20, vols
assert vols["pv2.raw"]["format"] == "raw" and vols["pv2.raw"]["capacity"] == 8 << 20, vols
assert vols["pv1.qcow2"]["path"].startswith("nfs://127.0.0.1/export/pv1.qcow2"), vols
assert "a.qcow2" in vols and vols["a.qcow2"]["format"] == "qcow2", vols
PY
# vstor writes, qemu-img/nfs-cat read; qemu-io writes, vstor reads.
head -c 2M /dev/urandom >up.bin
assert_rc 0 vstor vol-upload pv2.raw up.bin --pool np --offset 1M
dd if=exp/pv2.raw of=chk.bin bs=1M skip=1 count=2 status=none
cmp chk.bin up.bin || fail "vol-upload to a netfs volume"
timeout 60 nfs-cat "$U/pv2.raw" | cmp -s - exp/pv2.raw || fail "nfs-cat of a netfs volume"
qemu-io -f qcow2 -c 'write -P 0x3c 5M 1M' exp/pv1.qcow2 >/dev/null
vstor_img compare -q vol:np/pv1.qcow2 exp/pv1.qcow2 || fail "vstor reads vol:np/pv1.qcow2"
qemu_img create -q -f raw pat.raw 256M
qemu-io -f raw -c 'write -P 0x3d 9M 1M' pat.raw >/dev/null
vstor_img convert -n -f raw -O qcow2 pat.raw vol:np/pv1.qcow2 || fail "convert into vol:np/pv1.qcow2"
qemu-io -f qcow2 -c 'read -P 0x3d 9M 1M' -c 'read -P 0 5M 1M' exp/pv1.qcow2 >qio.out
grep -q "Pattern verification failed" qio.out && fail "vol: write did not land on NFS"
assert_rc 0 vstor vol-download pv1.qcow2 dl.qcow2 --pool np
qemu_img compare -f qcow2 -F qcow2 dl.qcow2 exp/pv1.qcow2 >/dev/null ||
	fail "vol-download of a netfs qcow2 volume"
assert_rc 0 vstor vol-resize pv1.qcow2 512M --pool np
assert_eq "$(qemu-img info --output=json exp/pv1.qcow2 | python3 -c \
	'import json, sys; print(json.load(sys.stdin)["virtual-size"])')" 536870912 \
	"netfs qcow2 volume after vol-resize"
assert_rc 0 vstor vol-create-as np pv3.qcow2 0 --format qcow2 --backing-vol pv1.qcow2 \
	--backing-vol-format qcow2
qemu-io -f qcow2 -c 'read -P 0x3d 9M 1M' exp/pv3.qcow2 >qio3.out
grep -q "Pattern verification failed" qio3.out && fail "netfs clone reads its backing volume"
assert_fails vstor vol-delete pv1.qcow2 --pool np
assert_grep "backing file of volume 'pv3.qcow2'" err "vol-delete of a netfs backing volume"
assert_rc 0 vstor vol-delete pv3.qcow2 --pool np
assert_rc 0 vstor vol-delete pv2.raw --pool np
[[ ! -e exp/pv2.raw ]] || fail "vol-delete left the file on the export"
assert_fails vstor vol-create-as np ../evil 1M
assert_fails vstor vol-create-as np 'a?b' 1M
assert_grep "nfs:// URL" err "a volume name libnfs cannot parse"
# A volume served over NBD (its lease held) keeps the pool from being destroyed.
start_daemon "$WORKDIR/nbd2.pid" 20 "$VSTOR_NBD" -t -k "$WORKDIR/nbd2.sock" \
	--pid-file "$WORKDIR/nbd2.pid" vol:np/pv1.qcow2
assert_fails vstor pool-destroy np
assert_grep "cannot destroy storage pool 'np'.*'pv1.qcow2' is open" err "pool-destroy under an export"
stop_pid "$DAEMON_PID"
assert_rc 0 vstor pool-destroy np
assert_rc 0 vstor pool-undefine np
# Fixed ports instead of the portmapper.
assert_rc 0 vstor pool-define-as np3 netfs --source-host 127.0.0.1 --source-path /export \
	--extra nfsport=20490 --extra mountport=20048
assert_rc 0 vstor pool-start np3
assert_rc 0 vstor vol-info pv1.qcow2 --pool np3
assert_grep 'Capacity: +512' out
assert_rc 0 vstor pool-destroy np3
assert_rc 0 vstor pool-undefine np3

# --- the server dies under I/O: requests fail in bounded time, no hang, no signal ---
reads=()
for ((i = 0; i < 200; i++)); do reads+=(-c 'readb 0 8M 0x6b'); done
rc=0
(
	sleep 0.3
	kill -KILL "$(cat "$WORKDIR/ganesha/ganesha.pid")"
) &
timeout 120 "$VSTOR_IO" -f raw "${reads[@]}" "$U/c.raw$Q" >/dev/null 2>dead.err || rc=$?
assert_eq "$rc" 1 "exit status of I/O whose NFS server died"
assert_grep "error" dead.err "error of I/O whose NFS server died"
grep -q mismatch dead.err && fail "wrong data before the NFS server died"
log "ok"
