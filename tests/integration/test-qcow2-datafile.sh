#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qcow2 external data files (data_file, data_file_raw) against qemu-img 7.2:
#  - create: the qcow2 file is byte-identical to qemu-img's, the data file
#    has its size;
#  - vstor writes a seeded workload (vstor-io), qemu-img check/compare judge;
#    with data_file_raw the data file itself equals the reference (cmp);
#  - qemu-io writes, vstor reads (convert) the same bytes;
#  - info (human and JSON), map (human, with the data file's name, and JSON)
#    and check equal qemu-img's;
#  - convert to and from an image with a data file, compressed writes and
#    internal snapshots refused as qemu-img refuses them;
#  - bad input: a missing data file (info shows the image, as qemu-img), a relative name with '..' (relative to
#    the current directory, as qemu 7.2 takes it), a name that is too long;
#  - vstor-nbd serves such an image.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3 cmp
require_vstor_img
require_vstor_io
find_built VSTOR_NBD nbd-server/vstor-nbd

INTEROP="$VS_LIB_DIR/interop.py"
SIZE=$((4 << 20))

same()
{
	local what=$1
	shift
	diff -u "$@" >diff.out || {
		cat diff.out >&2
		fail "$what differs from qemu-img's"
	}
}

# --- create: byte-identical metadata, sized data file ---
log "[${SECONDS}s] create: byte-identical metadata, sized data file"
for opts in data_file=d.raw data_file=d.raw,data_file_raw=on \
	data_file=d.raw,preallocation=metadata,extended_l2=on; do
	rm -rf v q
	mkdir v q
	(cd v && vstor_img create -q -f qcow2 -o "$opts" a.qcow2 3M) || fail "create -o $opts"
	(cd q && qemu_img create -q -f qcow2 -o "$opts" a.qcow2 3M)
	# The new-image length differs for every qcow2 (issue 15); compare what both hold.
	n=$(stat -c %s q/a.qcow2)
	cmp -n "$n" v/a.qcow2 q/a.qcow2 || fail "create -o $opts: qcow2 file differs from qemu-img's"
	assert_eq "$(stat -c %s v/d.raw)" "$(stat -c %s q/d.raw)" "data file size ($opts)"
	(cd v && vstor_img info --output=json a.qcow2) | grep -v actual-size >v.json
	(cd v && qemu_img info --output=json a.qcow2) | grep -v actual-size >q.json
	same "info --output=json ($opts)" q.json v.json
done

# --- refusals, as qemu-img words them ---
log "[${SECONDS}s] refusals, as qemu-img words them"
assert_fails vstor_img create -f qcow2 -o data_file_raw=on x.qcow2 1M
assert_grep "data-file-raw requires data-file" err "raw without data file"
assert_fails vstor_img create -f qcow2 -o data_file=x.raw,compat=0.10 x.qcow2 1M
assert_grep "External data files are only supported with compatibility level 1.1" err "v2"
assert_fails vstor_img create -f qcow2 -o data_file=x.raw,data_file_raw=on -b v/d.raw -F raw x.qcow2
assert_grep "Backing file and data-file-raw cannot be used at the same time" err "raw+backing"

# --- vstor writes, qemu judges; qemu writes, vstor reads ---
log "[${SECONDS}s] vstor writes, qemu judges; qemu writes, vstor reads"
n=0
for opts in data_file=d.raw,data_file_raw=on \
	data_file=d.raw,extended_l2=on,lazy_refcounts=on,cluster_size=16384; do
	n=$((n + 1))
	cluster=65536
	[[ $opts == *cluster_size=16384* ]] && cluster=16384
	mkdir "w$n"
	(
		set -e
		cd "w$n"
		qemu_img create -q -f qcow2 -o "$opts" v.qcow2 "$SIZE"
		python3 "$INTEROP" gen "$((n + 4242))" "$SIZE" "$cluster" 40 vstor >v.script
		python3 "$INTEROP" apply v.script ref.raw "$SIZE"
		vstor_io -f qcow2 -s v.script v.qcow2 >io.out 2>io.err || {
			cat io.err >&2
			fail "[$opts] vstor-io failed"
		}
		qemu_img check -q v.qcow2 || fail "[$opts] qemu-img check after vstor wrote"
		qemu_img compare -q -f qcow2 -F raw v.qcow2 ref.raw ||
			fail "[$opts] qemu-img compare: vstor's writes differ"
		if [[ $opts == *data_file_raw=on* ]]; then
			cmp d.raw ref.raw || fail "[$opts] the raw data file is not the guest's view"
		fi
		qemu_img map --output=json v.qcow2 >q-map.json
		vstor_img map --output=json v.qcow2 >v-map.json
		python3 "$INTEROP" map-cmp v-map.json q-map.json || fail "[$opts] map after vstor wrote"

		rm -f d.raw ref.raw
		qemu_img create -q -f qcow2 -o "$opts" q.qcow2 "$SIZE"
		python3 "$INTEROP" gen "$((n + 9000))" "$SIZE" "$cluster" 40 qemu-io >q.script
		python3 "$INTEROP" apply q.script ref.raw "$SIZE"
		args=()
		while read -r line; do args+=(-c "$line"); done <q.script
		qemu-io -f qcow2 "${args[@]}" q.qcow2 >qio.out 2>&1 || fail "[$opts] qemu-io"
		vstor_img compare -f qcow2 -F raw q.qcow2 ref.raw >cmp.out ||
			fail "[$opts] vstor reads something else than qemu-io wrote"
		qemu_img map --output=json q.qcow2 >q-map.json
		vstor_img map --output=json q.qcow2 >v-map.json
		same "[$opts] map --output=json" q-map.json v-map.json
		qemu_img map q.qcow2 >q-map.txt
		vstor_img map q.qcow2 >v-map.txt
		same "[$opts] map" q-map.txt v-map.txt
		grep -q "d.raw" v-map.txt || fail "[$opts] map names no data file"
		qemu_img check q.qcow2 >q-check.txt 2>&1
		vstor_img check q.qcow2 >v-check.txt 2>&1 || fail "[$opts] vstor-img check"
		same "[$opts] check" q-check.txt v-check.txt
		qemu_img info q.qcow2 | grep -v "disk size" >q-info.txt
		vstor_img info q.qcow2 | grep -v "disk size" >v-info.txt
		same "[$opts] info" q-info.txt v-info.txt
	) || fail "workload [$opts]"
done

# --- convert to and from ---
log "[${SECONDS}s] convert to and from"
head -c $((3 << 20)) /dev/urandom >src.raw
truncate -s "$SIZE" src.raw
vstor_img convert -O qcow2 -o data_file=c.raw,data_file_raw=on src.raw c.qcow2
cmp c.raw src.raw || fail "convert -o data_file_raw=on: the data file is not the source"
qemu_img compare -q src.raw c.qcow2 || fail "convert to a data file image"
qemu_img check -q c.qcow2 || fail "check after convert"
vstor_img convert -O qcow2 -o data_file=e.raw src.raw e.qcow2
qemu_img compare -q src.raw e.qcow2 || fail "convert to a data file image (not raw)"
vstor_img convert -O qcow2 e.qcow2 plain.qcow2
qemu_img compare -q src.raw plain.qcow2 || fail "convert from a data file image"
assert_fails vstor_img convert -c -O qcow2 -o data_file=f.raw src.raw f.qcow2
assert_fails vstor_img snapshot -c s1 e.qcow2
assert_grep "Could not create snapshot 's1'" err "snapshot refused"
assert_fails vstor_img compact e.qcow2
assert_grep "external data file cannot be compacted" err "compact refused"
qemu_img check -q e.qcow2 || fail "check after a refused snapshot"

# --- amend and resize, against qemu-img on a copy ---
for o in data_file=R.raw,data_file_raw=on data_file=R.raw; do
	rm -rf q v
	mkdir q v
	(cd q && qemu_img create -q -f qcow2 -o "$o" a.qcow2 1000k && qemu_img resize -q a.qcow2 3000k &&
		qemu_img amend -o data_file=S.raw,data_file_raw=off a.qcow2)
	(cd v && vstor_img create -q -f qcow2 -o "$o" a.qcow2 1000k && vstor_img resize -q a.qcow2 3000k &&
		vstor_img amend -o data_file=S.raw,data_file_raw=off a.qcow2) || fail "resize/amend ($o)"
	n=$(stat -c %s q/a.qcow2)
	cmp -n "$n" q/a.qcow2 v/a.qcow2 || fail "resize/amend ($o): qcow2 file differs from qemu-img's"
	cmp q/R.raw v/R.raw || fail "resize ($o): data file differs from qemu-img's"
done
mv v/R.raw v/S.raw
(cd v && assert_fails vstor_img amend -o data_file_raw=on a.qcow2)
assert_grep "data-file-raw cannot be set on existing images" err "amend data_file_raw=on"
assert_fails vstor_img amend -o data_file=x.raw plain.qcow2
assert_grep "data-file can only be set for images that use an external data file" err "amend data_file"
(cd v && assert_fails vstor_img amend -o compat=0.10 a.qcow2)
assert_grep "Cannot downgrade an image with a data file" err "downgrade"

# --- bad input ---
log "[${SECONDS}s] bad input"
mkdir -p sub/deep
# qemu 7.2 takes a relative data file name relative to the current
# directory (not the image's), on create and on open; so does vstor.
(cd sub/deep && qemu_img create -q -f qcow2 -o data_file=../up.raw t.qcow2 1M)
[[ -f sub/up.raw ]] || fail "qemu-img did not create ../up.raw from sub/deep"
(cd sub/deep && qemu-io -c 'write -P 0x61 0 64k' t.qcow2 >/dev/null)
(cd sub/deep && vstor_img convert -O raw t.qcow2 ../t.raw) || fail "'..' in the data file name"
python3 -c 'import sys; b=open(sys.argv[1],"rb").read(); assert b[:65536]==b"a"*65536' sub/t.raw ||
	fail "vstor read other bytes through '../up.raw'"
assert_fails qemu_img compare sub/deep/t.qcow2 sub/t.raw
assert_fails vstor_img compare sub/deep/t.qcow2 sub/t.raw
assert_grep "Could not open '../up.raw': No such file or directory" err "relative name from elsewhere"
(cd sub/deep && vstor_img create -q -f qcow2 -o data_file=../up2.raw t2.qcow2 1M)
[[ -f sub/up2.raw ]] || fail "vstor-img create did not make ../up2.raw from sub/deep"
python3 - e.qcow2 long.qcow2 <<'EOF'
import struct, sys
# Rewrite the data file name extension with a 5000-byte name (too long).
b = bytearray(open(sys.argv[1], "rb").read())
hl = struct.unpack(">I", b[100:104])[0]
off = hl
while True:
    t, l = struct.unpack(">II", b[off:off + 8])
    if t == 0x44415441:
        name = b"../" * 1666 + b"xx"
        ext = struct.pack(">II", t, len(name)) + name + b"\0" * ((8 - len(name) % 8) % 8)
        rest = b[off + 8 + ((l + 7) & ~7):65536]
        new = b[:off] + ext + rest
        b[:65536] = new[:65536]
        break
    off += 8 + ((l + 7) & ~7)
open(sys.argv[2], "wb").write(b)
EOF
assert_fails vstor_img info long.qcow2
assert_fails vstor_img compare long.qcow2 src.raw
mv e.raw e.raw.gone
assert_fails qemu_img compare e.qcow2 src.raw
assert_fails vstor_img compare e.qcow2 src.raw
assert_grep "Could not open" err "missing data file"
# info shows an image whose data file is gone, as qemu-img (BDRV_O_NO_IO).
for o in human json; do
	qemu_img info --output=$o e.qcow2 >q-info.$o || fail "qemu-img info: missing data file"
	vstor_img info --output=$o e.qcow2 >v-info.$o || fail "info fails on a missing data file"
	same "info --output=$o of an image without its data file" q-info.$o v-info.$o
done
# ... and the data file can be named instead: --image-opts and json:.
opts=driver=qcow2,file.filename=e.qcow2,data-file.filename=e.raw.gone
json='json:{"driver":"qcow2","file":{"driver":"file","filename":"e.qcow2"},'
json+='"data-file":{"driver":"file","filename":"e.raw.gone"}}'
for o in human json; do
	qemu_img info --output=$o --image-opts "$opts" >q-info.$o || fail "qemu-img info --image-opts"
	vstor_img info --output=$o --image-opts "$opts" >v-info.$o || fail "info --image-opts data-file"
	same "info --image-opts with data-file.filename" q-info.$o v-info.$o
	qemu_img map --output=$o --image-opts "$opts" >q-map.$o || fail "qemu-img map --image-opts"
	vstor_img map --output=$o --image-opts "$opts" >v-map.$o || fail "map --image-opts data-file"
	same "map --image-opts with data-file.filename" q-map.$o v-map.$o
done
vstor_img compare --image-opts "$opts" "driver=raw,file.filename=src.raw" ||
	fail "compare --image-opts with data-file.filename"
vstor_img convert -O raw "$json" j.raw || fail "convert from json: with data-file"
cmp j.raw src.raw || fail "json: with data-file reads other bytes"
assert_fails vstor_img info --image-opts "$opts,data-file.driver=nbd"
mv e.raw.gone e.raw

# --- vstor-nbd serves it, and writes through ---
log "[${SECONDS}s] vstor-nbd serves it, and writes through"
cp c.qcow2 n.qcow2
cp c.raw n.raw
python3 - n.qcow2 <<'EOF'
import struct, sys
# Point the copy at n.raw (same length name as c.raw).
b = bytearray(open(sys.argv[1], "rb").read())
i = b.find(b"c.raw", 0, 65536)
b[i:i + 5] = b"n.raw"
open(sys.argv[1], "wb").write(b)
EOF
start_daemon nbd.pid 60 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" \
	-f qcow2 n.qcow2
uri="nbd+unix:///?socket=$WORKDIR/nbd.sock"
qemu_img compare -f raw "$uri" src.raw || fail "vstor-nbd serves other bytes"
qemu-io -f raw -c 'write -P 0x7e 1M 128k' -c 'write -z 2M 64k' "$uri" >/dev/null ||
	fail "write through vstor-nbd"
stop_pid "$DAEMON_PID"
qemu-io -c 'read -P 0x7e 1M 128k' -c 'read -P 0 2M 64k' n.qcow2 | grep -q "read 131072" ||
	fail "qemu-io does not read what went through vstor-nbd"
python3 - n.raw <<'EOF' || fail "the raw data file does not hold the NBD writes"
import sys
b = open(sys.argv[1], "rb").read()
assert b[1 << 20:(1 << 20) + 131072] == b"\x7e" * 131072
assert b[2 << 20:(2 << 20) + 65536] == b"\0" * 65536
EOF
qemu_img check -q n.qcow2 || fail "check after vstor-nbd wrote"
log "ok"
