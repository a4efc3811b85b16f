#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The rbd protocol driver (rbd: names, librbd's async API on the reactor)
# against a private single-node Ceph cluster (lib-ceph.sh): images created
# and written through vstor read back with `rbd export` and qemu-img's rbd
# driver, and the reverse; discard and write-zeroes; block status through
# fast-diff; vstor-img info/convert/compare/map; a qcow2 image on RBD
# checked by qemu-img; an NBD export of an image read with nbdcopy; cephx
# users with a key file and a key secret, and a wrong key; two writers of
# one image exclude each other through the exclusive lock.
#
# The rbd pool (vstor pool-define-as NAME rbd ...): define with a key file
# (a world-readable one refused), start, pool-info, vol-create-as (thin),
# vol-list with allocation, vol-resize, vol-clone, vol-wipe, vol-upload and
# vol-download, an NBD export of vol:POOL/VOL, vol-delete. vstord's
# blockdev-add driver=rbd against qemu-storage-daemon's, and its NBD export.
#
# Images without the exclusive-lock feature in a pool with sanlock leases
# (--extra sanlock_leases=DIR): two sanlock daemons (host ids 1 and 2, as in
# test-pool-sanlock), host 2 is refused while host 1 writes, then takes it
# (rbd-full only).
#
# The default tier runs a smoke subset (VSTOR_RBD_FULL unset: create, I/O
# both ways, the exclusive lock); rbd-full in the long tier runs it all.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-ceph.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io nbdcopy cmp
require_vstor_io
require_vstor_img
find_built VSTOR_NBD nbd-server/vstor-nbd
grep -q 'HAVE_LIBRBD' "$VS_BUILD_DIR/config.h" 2>/dev/null ||
	skip_or_fail "vstor was built without librbd (the rbd driver)"
qemu-img --help | grep -qw rbd || skip_or_fail "qemu-img has no rbd driver (qemu-block-extra)"

# The programs load librbd when an rbd name is first used, not at start
# (libstore/rbd-lib.h): Ceph's fifty libraries stay out of every other run.
for prog in "$VSTOR_IMG" "$VSTOR_NBD"; do
	if ldd "$prog" | grep -E 'lib(rbd|rados)\.so'; then
		fail "$(basename "$prog") links librbd/librados; they must be loaded on first use"
	fi
done

ceph_start_cluster
ceph_create_pool vs
log "cluster up after $SECONDS s"
Q="conf=$CEPH_CONF"
assert_pattern() # FILE OFFSET LEN BYTE
{
	qemu-io -f raw -c "read -P $4 $2 $3" "$1" | grep -q 'Pattern verification failed' &&
		fail "$1: not $4 at $2+$3"
	return 0
}

# --- create and write through vstor; read back with rbd export and qemu-img ---
vstor_img create -f raw rbd:vs/a 64M >/dev/null || fail "vstor-img create rbd:vs/a"
assert_eq "$(rbd info vs/a --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" \
	67108864 "size of the created image"
vstor_io -f raw -c size -c 'writeb 1M 1M 0x5a' -c 'readb 1M 1M 0x5a' -c 'writeb 12345 1000 0x44 fua' \
	-c 'readb 12345 1000 0x44' -c 'write 9M 2500K 7' -c 'read 9M 2500K 7' -c 'writeb 20M 4M 0x11' \
	-c 'zero 20M 2M' -c 'readb 20M 2M 0' -c 'readb 22M 2M 0x11' -c 'writeb 40M 8M 0x22' \
	-c 'discard 40M 4M' -c 'readb 40M 4M 0' -c flush rbd:vs/a >io.out || fail "I/O on rbd:vs/a"
assert_eq "$(head -1 io.out)" 67108864 "size of rbd:vs/a"
rbd export vs/a a.raw >/dev/null 2>&1 || fail "rbd export"
assert_pattern a.raw 1M 1M 0x5a
assert_pattern a.raw 12345 1000 0x44
assert_pattern a.raw 20M 2M 0
assert_pattern a.raw 22M 2M 0x11
assert_pattern a.raw 40M 4M 0
assert_pattern a.raw 44M 4M 0x22
qemu-img compare -f raw -F raw a.raw "rbd:vs/a:$Q" >/dev/null || fail "qemu-img sees other bytes"

full() { [[ ${VSTOR_RBD_FULL:-0} == 1 ]]; }

# --- the reverse: qemu-io writes through its rbd driver, vstor reads ---
qemu-io -f raw -c 'write -P 0x66 30M 3M' "rbd:vs/a:$Q" >/dev/null || fail "qemu-io write"
vstor_io -f raw -r -c 'readb 30M 3M 0x66' -c 'readb 1M 1M 0x5a' rbd:vs/a >/dev/null ||
	fail "vstor does not read what qemu wrote"

if full; then

# --- info, map (fast-diff), convert, compare ---
vstor_img info --output=json rbd:vs/a >info.json || fail "vstor-img info"
python3 -c "import json; d=json.load(open('info.json')); assert d['virtual-size'] == 64 << 20, d" ||
	fail "info: virtual size"
vstor_img create -f raw rbd:vs/sparse 64M >/dev/null || fail "create rbd:vs/sparse"
vstor_io -f raw -c 'writeb 8M 4M 0x77' rbd:vs/sparse >/dev/null || fail "write rbd:vs/sparse"
vstor_img map --output=json -f raw rbd:vs/sparse >map.json || fail "vstor-img map"
python3 - map.json <<'EOF' || fail "map of rbd:vs/sparse: $(cat map.json)"
import json, sys
m = json.load(open(sys.argv[1]))
data = [(e["start"], e["length"]) for e in m if e["data"]]
assert data == [(8 << 20, 4 << 20)], data
assert sum(e["length"] for e in m) == 64 << 20
EOF
qemu-img create -q -f qcow2 src.qcow2 32M
qemu-io -f qcow2 -c 'write -P 0x3c 0 5M' -c 'write -P 0x3d 20M 1M' src.qcow2 >/dev/null
vstor_img convert -f qcow2 -O raw src.qcow2 rbd:vs/conv || fail "convert to rbd"
vstor_img compare -f qcow2 -F raw src.qcow2 rbd:vs/conv >/dev/null || fail "vstor-img compare"
qemu-img compare -f qcow2 -F raw src.qcow2 "rbd:vs/conv:$Q" >/dev/null || fail "qemu-img compare"
vstor_img convert -f raw -O qcow2 rbd:vs/conv back.qcow2 || fail "convert from rbd"
qemu-img compare src.qcow2 back.qcow2 >/dev/null || fail "round trip through rbd"

# --- qcow2 on RBD, checked by qemu-img through its rbd driver ---
vstor_img create -f qcow2 rbd:vs/q 32M >/dev/null || fail "create qcow2 on rbd"
vstor_io -f qcow2 -c 'writeb 3M 1M 0x42' rbd:vs/q >/dev/null || fail "write qcow2 on rbd"
qemu-img check -f qcow2 "rbd:vs/q:$Q" >/dev/null || fail "qemu-img check of qcow2 on rbd"
qemu-io -f qcow2 -c 'read -P 0x42 3M 1M' "rbd:vs/q:$Q" | grep -q 'verification failed' &&
	fail "qcow2 on rbd: data"

# --- resize ---
vstor_img resize -f raw rbd:vs/sparse 96M >/dev/null || fail "resize"
assert_eq "$(rbd info vs/sparse --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" \
	100663296 "size after resize"

# --- cephx: a user of its own with a key file, with a key secret, a wrong key ---
key=$(ceph_add_client vstor vs)
printf '%s\n' "$key" >vstor.key
chmod 600 vstor.key
(
	unset CEPH_ARGS
	vstor_io -f raw -r -c 'readb 1M 1M 0x5a' "rbd:vs/a:id=vstor:$Q:keyring=/nonexistent:keyfile=$WORKDIR/vstor.key" \
		>/dev/null || fail "read as client.vstor with a key file"
	vstor_img info --object "secret,id=k0,data=$key,format=base64" -f raw \
		"rbd:vs/a:id=vstor:$Q:keyring=/nonexistent:key-secret=k0" >/dev/null ||
		fail "info as client.vstor with a key secret"
	printf 'AQBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB==\n' >wrong.key
	assert_fails vstor_io -f raw -r -c 'readb 0 512 0' \
		"rbd:vs/a:id=vstor:$Q:keyring=/nonexistent:keyfile=$WORKDIR/wrong.key:client_mount_timeout=5"
)
assert_fails vstor_io -f raw -r -c 'readb 0 512 0' rbd:vs/nosuch

# --- NBD export of an image: nbdcopy reads the image's bytes ---
SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 30 "$VSTOR_NBD" -t -f raw -k "$SOCK" --pid-file "$WORKDIR/nbd.pid" \
	rbd:vs/a
HOLDER=$DAEMON_PID
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK" nbd.raw || fail "nbdcopy"
rbd export vs/a a2.raw >/dev/null 2>&1
cmp nbd.raw a2.raw || fail "NBD export differs from rbd export"

fi

# --- an encrypted pool volume: raw LUKS over the RBD image (QEMU's luks
# driver over rbd), opened through vol:POOL/VOL with the pool's secret ---
find_built VSTOR cli/vstor
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR" "$@"; }
printf '%s\n' "$CEPH_ADMIN_KEY" >admin.key
chmod 600 admin.key
assert_rc 0 vstor pool-define-as ep rbd --source-host "127.0.0.1:$CEPH_MON_PORT" --source-name vs \
	--auth-type ceph --auth-username admin --auth-secret-file "$WORKDIR/admin.key"
assert_rc 0 vstor pool-start ep
printf 'rbd-Luks-pass-9c2' >luks.key
chmod 600 luks.key
printf '<secret><description>rbd luks</description></secret>\n' >sec.xml
assert_rc 0 vstor secret-define sec.xml
U=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
assert_rc 0 vstor secret-set-value "$U" --file luks.key --plain
assert_fails vstor vol-create-as ep eq 8M --format qcow2 --encryption-secret "$U"
assert_rc 0 vstor vol-create-as ep enc 8M --format raw --encryption-secret "$U" \
	--encryption-iter-time 10
assert_rc 0 vstor vol-info enc --pool ep --bytes
assert_grep "^Encryption: +luks" out "vol-info of the encrypted RBD volume"
assert_grep "^Capacity: +8388608 " out "vol-info: the payload's capacity"
printf 'RBD-PLAINTEXT-%.0s' $(seq 256) >rmark
env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR_IMG" convert -n -f raw -O luks rmark vol:ep/enc ||
	fail "write through vol: with the pool's secret"
rbd export vs/enc enc.img >/dev/null 2>&1 || fail "rbd export of the encrypted volume"
grep -q RBD-PLAINTEXT enc.img && fail "the RBD image holds plaintext"
if command -v cryptsetup >/dev/null; then
	assert_rc 0 cryptsetup open --test-passphrase --key-file luks.key enc.img
fi
# QEMU's luks driver over its rbd driver reads the plaintext.
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=luks.key --image-opts \
	"driver=luks,key-secret=s,file.driver=rbd,file.pool=vs,file.image=enc,file.conf=$CEPH_CONF" \
	-c "read -P 0x52 0 1" -c "read -P 0x2d 13 1"
env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR_IMG" convert -O raw vol:ep/enc enc.out ||
	fail "read through vol: with the pool's secret"
cmp -n "$(stat -c %s rmark)" rmark enc.out || fail "the encrypted volume reads back other bytes"
assert_eq "$(stat -c %s enc.out)" 8388608 "size of the encrypted volume's plaintext"
assert_rc 0 vstor vol-resize enc 16M --pool ep
assert_rc 0 vstor vol-info enc --pool ep --bytes
assert_grep "^Capacity: +16777216 " out "vol-info after the resize"
assert_rc 0 vstor vol-delete enc --pool ep
assert_rc 0 vstor pool-destroy ep
assert_rc 0 vstor pool-undefine ep

if full; then
# --- the rbd pool through the vstor CLI: the definition carries the monitor
# and the user; no ceph.conf and no CEPH_ARGS for vstor ---
find_built VSTOR cli/vstor
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR" "$@"; }
printf '%s\n' "$CEPH_ADMIN_KEY" >admin.key
chmod 644 admin.key
assert_rc 0 vstor pool-define-as rp rbd --source-host "127.0.0.1:$CEPH_MON_PORT" --source-name vs \
	--auth-type ceph --auth-username admin --auth-secret-file "$WORKDIR/admin.key"
assert_fails vstor pool-start rp
assert_grep 'admin.key' err "a world-readable key file is refused"
chmod 600 admin.key
assert_rc 0 vstor pool-start rp
assert_fails vstor pool-define-as rp2 rbd --source-host 127.0.0.1
assert_grep 'source-name' err "rbd pool without a Ceph pool"
assert_rc 0 vstor vol-create-as rp v1 16M
assert_rc 0 vstor vol-create-as rp v2 8M --format raw
assert_fails vstor vol-create-as rp v3 8M --format qcow2
assert_eq "$(rbd info vs/v1 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" \
	16777216 "size of a volume made by vol-create-as"
head -c 1M /dev/urandom >up.bin
assert_rc 0 vstor vol-upload v2 up.bin --pool rp --offset 1M
rbd export vs/v2 v2.raw >/dev/null 2>&1
dd if=v2.raw of=chk.bin bs=1M skip=1 count=1 status=none
cmp chk.bin up.bin || fail "vol-upload to an rbd volume"
assert_rc 0 vstor vol-download v2 dl.bin --pool rp --offset 1M --length 1M
cmp dl.bin up.bin || fail "vol-download from an rbd volume"
assert_rc 0 vstor vol-list rp --details --output=json
python3 - out <<'PY' || fail "vol-list of the rbd pool"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert vols["v1"]["capacity"] == 16 << 20 and vols["v1"]["format"] == "raw", vols
assert vols["v1"]["allocation"] == 0, vols          # thin, nothing written (fast-diff)
assert vols["v2"]["allocation"] == 4 << 20, vols    # one 4 MiB object written
assert vols["v2"]["path"].startswith("rbd:vs/v2:"), vols
assert "AQ" not in open(sys.argv[1]).read()         # never the key
PY
grep -rq "$CEPH_ADMIN_KEY" "$VSTOR_STATE_DIR" && fail "the key is in the state directory"
assert_rc 0 vstor pool-info rp
assert_grep '^State: +running' out
assert_grep '^Capacity: +[1-9]' out
assert_rc 0 vstor vol-resize v1 32M --pool rp
assert_eq "$(rbd info vs/v1 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" \
	33554432 "size after vol-resize"
assert_rc 0 vstor vol-clone v2 v2c --pool rp
rbd export vs/v2c v2c.raw >/dev/null 2>&1
cmp v2.raw v2c.raw || fail "vol-clone of an rbd volume"
rbd info vs/v2c --format json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["parent"]["image"] == "v2" and d["parent"]["snapshot"].startswith("vstor-clone-"), d' ||
	fail "vol-clone is not an RBD layered clone"
assert_rc 0 vstor vol-wipe v2c --pool rp
rbd export vs/v2c v2w.raw >/dev/null 2>&1
cmp v2w.raw <(head -c 8M /dev/zero) || fail "vol-wipe of an rbd volume"
SOCK3=$WORKDIR/nbd3.sock
start_daemon "$WORKDIR/nbd3.pid" 30 env -u CEPH_CONF -u CEPH_ARGS "$VSTOR_NBD" -t -k "$SOCK3" \
	--pid-file "$WORKDIR/nbd3.pid" --state-dir "$VSTOR_STATE_DIR" -f raw vol:rp/v2
timeout 60 nbdcopy "nbd+unix:///?socket=$SOCK3" nbd3.raw || fail "nbdcopy of vol:rp/v2"
cmp nbd3.raw v2.raw || fail "NBD export of vol:rp/v2"
stop_pid "$DAEMON_PID"
assert_fails vstor vol-delete v2 --pool rp
assert_grep 'clones' err "vol-delete of a volume with clones"
assert_rc 0 vstor vol-delete v2c --pool rp
assert_rc 0 vstor vol-delete v2 --pool rp
assert_rc 0 vstor vol-delete v1 --pool rp
rbd info vs/v1 >/dev/null 2>&1 && fail "vol-delete left the image"
assert_rc 0 vstor pool-destroy rp
# libvirt's rbd pool XML.
cat >rx.xml <<EOF
<pool type='rbd'><name>rx</name><source><host name='127.0.0.1' port='$CEPH_MON_PORT'/>
<name>vs</name><auth type='ceph' username='admin'><secret file='$WORKDIR/admin.key'/></auth>
</source></pool>
EOF
assert_rc 0 vstor pool-define rx.xml
assert_rc 0 vstor pool-start rx
assert_rc 0 vstor vol-list rx
assert_grep '^ *sparse ' out
assert_rc 0 vstor pool-destroy rx
fi

if full; then
# --- vstord: blockdev-add driver=rbd as qemu-storage-daemon takes it, served over NBD ---
find_built VSTORD vstord/vstord
require_tool qemu-storage-daemon
export PYTHONPATH=$VSTOR_SOURCE_DIR/tests/integration
start_qsd_and_vstord
python3 - "$WORKDIR" "$CEPH_CONF" "$CEPH_MON_PORT" <<'PY' || fail "vstord's rbd nodes differ from qemu-storage-daemon's"
import sys
from qmp import QMP
d, conf, port = sys.argv[1], sys.argv[2], sys.argv[3]
steps = [
    ("blockdev-add", {"driver": "rbd", "node-name": "r", "pool": "vs", "image": "conv",
                      "conf": conf, "read-only": True}),
    ("blockdev-add", {"driver": "rbd", "node-name": "r2", "pool": "vs", "image": "sparse",
                      "conf": conf, "user": "admin",
                      "server": [{"host": "127.0.0.1", "port": port}]}),
    ("blockdev-add", {"driver": "rbd", "node-name": "bad", "pool": "vs", "image": "nosuch",
                      "conf": conf}),
    ("blockdev-add", {"driver": "rbd", "node-name": "bad2", "image": "x"}),
]
out = {}
for who in ("qsd", "vd"):
    q = QMP(d + "/" + who + ".sock", timeout=120)
    res = []
    for name, args in steps:
        r = q.execute(name, args)
        res.append("return" if "return" in r else r["error"]["class"])
    nodes = {n["node-name"]: n["image"]["virtual-size"] for n in q.cmd("query-named-block-nodes")}
    res.append(sorted(nodes.items()))
    for n in ("r", "r2"):
        q.cmd("blockdev-del", node_name=n)
    out[who] = res
    q.close()
assert out["qsd"] == out["vd"], out
assert out["vd"][:4] == ["return", "return", "GenericError", "GenericError"], out
PY
python3 - "$WORKDIR" "$CEPH_CONF" <<'PY' || fail "vstord: an NBD export of an rbd node"
import sys
from qmp import QMP
d, conf = sys.argv[1], sys.argv[2]
q = QMP(d + "/vd.sock", timeout=120)
q.cmd("blockdev-add", driver="raw", node_name="rr",
      file={"driver": "rbd", "pool": "vs", "image": "conv", "conf": conf, "read-only": True},
      read_only=True)
q.cmd("nbd-server-start", addr={"type": "unix", "path": d + "/vd-nbd.sock"})
q.cmd("block-export-add", type="nbd", id="e", node_name="rr")
PY
timeout 60 nbdcopy "nbd+unix:///rr?socket=$WORKDIR/vd-nbd.sock" vd.raw || fail "nbdcopy from vstord"
qemu-img compare -f qcow2 -F raw src.qcow2 vd.raw >/dev/null || fail "vstord's export of rbd:vs/conv"
stop_pid "$VD_PID"
stop_pid "$QSD_PID"
fi

# --- exclusive lock: the exporter holds rbd:vs/a, a second writer is refused ---
if ! full; then
	SOCK=$WORKDIR/nbd.sock
	start_daemon "$WORKDIR/nbd.pid" 30 "$VSTOR_NBD" -t -f raw -k "$SOCK" \
		--pid-file "$WORKDIR/nbd.pid" rbd:vs/a
	HOLDER=$DAEMON_PID
fi
vstor_io -f raw -c 'writeb 0 512 0x01' rbd:vs/a 2>lock.err && fail "second writer got in"
assert_grep 'exclusive lock' lock.err
assert_fails qemu-io -f raw -c 'write -P 0x01 0 512' "rbd:vs/a:$Q"
if full; then # another client id, as another host would be
	(
		unset CEPH_ARGS
		assert_fails vstor_io -f raw -c 'writeb 0 512 0x01' \
			"rbd:vs/a:id=vstor:$Q:keyring=/nonexistent:keyfile=$WORKDIR/vstor.key"
		assert_grep 'exclusive lock' "$WORKDIR/err"
	)
fi
vstor_io -f raw -r -c 'readb 1M 1M 0x5a' rbd:vs/a >/dev/null || fail "a reader is kept out"
stop_pid "$HOLDER"
vstor_io -f raw -c 'writeb 0 512 0x01' rbd:vs/a >/dev/null || fail "writer refused after release"

# --- sanlock leases for an image without exclusive-lock (root: the daemons'
#     mount namespaces; full only: two daemons, their lockspace joins and ten
#     librbd-loading vstor runs cost 10-25 s on a loaded machine) ---
if full && ((EUID == 0)); then
	log "leases from $SECONDS s"
	. "$VS_LIB_DIR/lib-sanlock.sh"
	sanlock_require
	find_built VSTOR cli/vstor
	require_tool nbdsh
	vstorl() { env -u CEPH_CONF -u CEPH_ARGS timeout 120 "$VSTOR" "$@"; }
	rbd create vs/nolock --size 16M --image-feature layering || fail "rbd create vs/nolock"
	sanlock_start_host 1
	sanlock_start_host 2
	printf '%s\n' "$CEPH_ADMIN_KEY" >lease-admin.key
	chmod 600 lease-admin.key
	for h in 1 2; do
		assert_rc 0 on_host $h vstorl pool-define-as rl rbd --source-host "127.0.0.1:$CEPH_MON_PORT" --source-name vs \
			--auth-type ceph --auth-username admin --auth-secret-file "$WORKDIR/lease-admin.key" \
			--extra sanlock_leases="$WORKDIR/rleases" --extra sanlock_io_timeout=1
		assert_rc 0 on_host $h vstorl pool-build rl
		assert_rc 0 on_host $h vstorl pool-start rl
	done
	start_on_host 1 nbdl1.pid 60 "$VSTOR_NBD" -t -f raw -k "$WORKDIR/nbdl1.sock" \
		--pid-file "$WORKDIR/nbdl1.pid" vol:rl/nolock
	NBDL1=$DAEMON_PID
	nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbdl1.sock" \
		-c 'h.pwrite(b"\x6b" * 4096, 0); h.flush()' || fail "write through host 1 (rbd)"
	assert_fails on_host 2 vstor_img resize -f raw vol:rl/nolock 32M
	assert_grep "'nolock' of pool 'rl' is in use by host 1" err "host 2's write open (rbd)"
	assert_rc 0 on_host 2 vstorl vol-lease nolock --pool rl
	assert_grep '^Lease holder: +host 1$' out "vol-lease of the rbd image on host 2"
	stop_pid "$NBDL1"
	start_on_host 2 nbdl2.pid 60 "$VSTOR_NBD" -t -f raw -k "$WORKDIR/nbdl2.sock" \
		--pid-file "$WORKDIR/nbdl2.pid" vol:rl/nolock
	nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbdl2.sock" -c '
assert h.pread(4096, 0) == b"\x6b" * 4096
h.pwrite(b"\x2e" * 4096, 4096)
h.flush()' || fail "host 2 reads host 1's data and writes (rbd)"
	stop_pid "$DAEMON_PID"
	rbd export vs/nolock nolock.raw >/dev/null 2>&1 || fail "rbd export vs/nolock"
	cmp -n 4096 nolock.raw <(head -c 4096 /dev/zero | tr '\0' '\153') || fail "host 1's data"
	cmp -n 4096 -i 4096:0 nolock.raw <(head -c 4096 /dev/zero | tr '\0' '\056') ||
		fail "host 2's data"
fi
log "done after $SECONDS s"
exit 0
