#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Write the seed corpora of the fuzz targets under tests/fuzz/corpus/ (or
# under $1): made here from qemu-img, qemu-io and the scripts, never binaries
# of unknown origin. The output is committed; run this again after changing
# it. Needs qemu-img and qemu-io (Debian: qemu-utils).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export LC_ALL=C

# --- nbd-server (handshake) and nbd-transmission ---
python3 "$here/make-nbd-corpus.py" "$out/nbd-server"
python3 "$here/make-nbd-corpus.py" --transmission "$out/nbd-transmission"
python3 "$here/make-nbd-client-corpus.py" "$out/nbd-client"

# --- vhost-user (message streams) and virtq (guest memory with rings) ---
rm -rf "$out/vhost-user" "$out/virtq"
python3 "$here/make-vhost-corpus.py" "$out"

# --- qcow2-image: small images (512-byte to 64 KiB clusters) with data,
# zeroes, discards, compressed clusters, snapshots, lazy refcounts, v2 ---
img=$out/qcow2-image
hdr=$out/qcow2-header
rm -rf "$img" "$hdr"
mkdir -p "$img" "$hdr"
n=0
# make NAME CREATE-OPTS SIZE QEMU-IO-COMMANDS...
make()
{
	local name=$1 opts=$2 size=$3 f
	shift 3
	f=$tmp/$name.qcow2
	qemu-img create -q -f qcow2 -o "$opts" "$f" "$size"
	local c
	for c in "$@"; do
		qemu-io -f qcow2 -c "$c" "$f" >/dev/null
	done
	cp "$f" "$img/$name"
	head -c 4096 "$f" >"$hdr/$name"
	n=$((n + 1))
}
make empty-512 cluster_size=512 1M
make empty-v2 cluster_size=512,compat=0.10 1M
make data-512 cluster_size=512 1M "write -P 0x11 0 4k" "write -P 0x22 64k 1k"
make zero-discard-4k cluster_size=4096 1M "write -P 0x33 0 16k" "write -z 4k 4k" "discard 8k 4k"
make compressed-4k cluster_size=4096 1M "write -c -P 0x44 0 4k" "write -c -P 0x45 8k 4k"
make compressed-zstd cluster_size=4096,compression_type=zstd 1M "write -c -P 0x46 0 4k"
make lazy-4k cluster_size=4096,lazy_refcounts=on 1M "write -P 0x55 0 8k"
make refcount1 cluster_size=512,refcount_bits=1 512k "write -P 0x66 0 1k"
make refcount64 cluster_size=512,refcount_bits=64 512k "write -P 0x67 0 1k"
make extl2 cluster_size=16384,extended_l2=on 1M "write -P 0x77 0 2k" "write -P 0x78 8k 2k"
# External data files: the clusters at their guest offsets, one raw.
# qemu takes the name relative to the current directory: made in $tmp.
cd "$tmp"
make datafile cluster_size=4096,data_file=datafile.raw 1M "write -P 0x79 0 8k" \
	"write -z 16k 4k" "discard 0 4k"
make datafile-raw cluster_size=512,data_file=datafile-raw.raw,data_file_raw=on 64k \
	"write -P 0x7a 1k 2k"
cd - >/dev/null
qemu-img create -q -f raw "$tmp/base.img" 1M
make backing-name cluster_size=512,backing_file=base.img,backing_fmt=raw 1M "write -P 0x88 0 512"
# Snapshots: a table, snapshot L1 tables, shared clusters.
f=$tmp/snap.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 "$f" 1M
qemu-io -f qcow2 -c "write -P 0x99 0 2k" "$f" >/dev/null
qemu-img snapshot -c one "$f"
qemu-io -f qcow2 -c "write -P 0x9a 1k 2k" "$f" >/dev/null
qemu-img snapshot -c two "$f"
cp "$f" "$img/snapshots"
head -c 4096 "$f" >"$hdr/snapshots"
# Persistent bitmaps: enabled with written granules, disabled, 512-byte
# granularity, one left in_use (a writer that crashed).
bitmaps()
{
	local name=$1 f=$tmp/$1.qcow2
	shift
	qemu-img create -q -f qcow2 -o cluster_size=512 "$f" 1M
	qemu-img bitmap --add -g 4k "$f" on
	qemu-img bitmap --add -g 512 --disable "$f" off
	qemu-io -f qcow2 -c "write -P 0xb1 0 2k" -c "write -P 0xb2 256k 4k" "$f" >/dev/null
	qemu-img bitmap --add --disable "$f" empty
	cp "$f" "$img/$name"
	head -c 4096 "$f" >"$hdr/$name"
}
bitmaps bitmaps
cp "$img/bitmaps" "$img/bitmaps-in-use"
python3 "$here/../integration/qcow2_bitmap_damage.py" "$img/bitmaps-in-use" in-use
# Damaged variants (the catalogue's kinds in small): a dirty bit with stale
# refcounts, a truncated file, a zeroed refcount table, a bad L1 offset.
cp "$img/lazy-4k" "$img/lazy-dirty"
printf '\x01' | dd of="$img/lazy-dirty" bs=1 seek=79 conv=notrunc status=none
head -c 1536 "$img/data-512" >"$img/truncated"
cp "$img/data-512" "$img/zero-reftable"
dd if=/dev/zero of="$img/zero-reftable" bs=512 seek=2 count=1 conv=notrunc status=none
cp "$img/data-512" "$img/bad-l1-offset"
printf '\x00\x00\x00\x00\x7f\xff\xfe\x00' | dd of="$img/bad-l1-offset" bs=1 seek=40 conv=notrunc status=none
# Header-only seeds: a bad magic and a huge header_length.
printf 'QFI\xfb\x00\x00\x00\x03' >"$hdr/magic-only"
cp "$hdr/empty-512" "$hdr/huge-header-length"
printf '\x00\x01\x00\x00' | dd of="$hdr/huge-header-length" bs=1 seek=100 conv=notrunc status=none
# Virtual sizes past what qemu opens: 2^64 - 1 (its L1 index used to wrap
# to 0) and 2^63 - 1 GiB + 512 (just past the limit), header and image.
cp "$hdr/empty-512" "$hdr/size-2e64-1"
printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of="$hdr/size-2e64-1" bs=1 seek=24 conv=notrunc status=none
cp "$img/empty-512" "$img/size-2e64-1"
printf '\xff\xff\xff\xff\xff\xff\xff\xff' | dd of="$img/size-2e64-1" bs=1 seek=24 conv=notrunc status=none
cp "$hdr/empty-512" "$hdr/size-over-max"
printf '\x7f\xff\xff\xff\xc0\x00\x02\x00' | dd of="$hdr/size-over-max" bs=1 seek=24 conv=notrunc status=none

# Encrypted (issue 17): qcow2 with LUKS whose header extension covers the
# LUKS header alone (slots inactive, so the seed stays small), the same with
# an active slot whose key material lies beyond the extension's length, a
# crypto extension on an unencrypted image, and legacy AES with data.
# Opened without a secret: header extension and LUKS header parsing, info.
printf 'fuzz passphrase' >"$tmp/fuzz.key"
chmod 600 "$tmp/fuzz.key"
f=$tmp/luks.qcow2
qemu-img create -q -f qcow2 --object "secret,id=k,file=$tmp/fuzz.key" \
	-o cluster_size=512,encrypt.format=luks,encrypt.key-secret=k,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.iter-time=10 \
	"$f" 1M
python3 - "$f" "$img" "$hdr" <<'PY'
import struct, sys
src, img, hdr = sys.argv[1:4]
d = bytearray(open(src, "rb").read())
# Find the crypto header extension (0x0537be77) after the 104-byte v3 header.
off = struct.unpack(">I", d[100:104])[0]
while True:
    t, l = struct.unpack(">II", d[off:off + 8])
    if t == 0:
        raise SystemExit("no crypto extension")
    if t == 0x0537BE77:
        break
    off += 8 + ((l + 7) & ~7)
coff = struct.unpack(">Q", d[off + 8:off + 16])[0]
def seed(name, slot0_active, length):
    s = bytearray(d[:coff + 4096])
    s[off + 16:off + 24] = struct.pack(">Q", length)
    if not slot0_active:
        s[coff + 208:coff + 212] = struct.pack(">I", 0x0000DEAD)
    open(f"{img}/{name}", "wb").write(s)
    open(f"{hdr}/{name}", "wb").write(s[:4096])
seed("luks-header-only", False, 4096)
seed("luks-material-outside", True, 4096)
# The extension on an image that says it is not encrypted.
s = bytearray(d[:coff + 4096])
s[32:36] = b"\0\0\0\0"
open(f"{img}/crypto-ext-unencrypted", "wb").write(s)
PY
f=$tmp/aes.qcow2
qemu-img create -q -f qcow2 --object "secret,id=k,file=$tmp/fuzz.key" \
	-o cluster_size=512,encrypt.format=aes,encrypt.key-secret=k "$f" 1M
qemu-io --object "secret,id=k,file=$tmp/fuzz.key" \
	--image-opts "driver=qcow2,encrypt.key-secret=k,file.filename=$f" -c "write -P 0xc1 0 2k" >/dev/null
cp "$f" "$img/aes-data"
head -c 4096 "$f" >"$hdr/aes-data"

# --- cli-options: "SIZE\nOPTIONS" ---
# --- import formats (<fmt>-image): images qemu-img makes, empty and with
# data; those whose blocks are large are cut to their first 64 KiB (the
# metadata and the start of the data), which makes hostile seeds too ---
imp=0
# import_seed TARGET NAME FMT OPTS [QEMU-IO-COMMANDS...]
import_seed()
{
	local target=$1 name=$2 fmt=$3 opts=$4 f
	shift 4
	f=$tmp/$name.$fmt
	mkdir -p "$out/$target"
	qemu-img create -q -f "$fmt" ${opts:+-o "$opts"} "$f" 4M
	local c
	for c in "$@"; do
		qemu-io -f "$fmt" -c "$c" "$f" >/dev/null
	done
	head -c 65536 "$f" >"$out/$target/$name"
	imp=$((imp + 1))
}
rm -rf "$out/vpc-image" "$out/vdi-image" "$out/vmdk-image" "$out/qcow-image" "$out/vhdx-image"
import_seed vpc-image empty vpc subformat=dynamic
import_seed vpc-image data vpc subformat=dynamic "write -P 0x11 0 8k" "write -P 0x22 3M 4k"
import_seed vpc-image forced vpc subformat=dynamic,force_size=on "write -P 0x33 4k 4k"
import_seed vdi-image empty vdi ""
import_seed vdi-image data vdi "" "write -P 0x11 0 8k" "write -P 0x22 3M 4k"
import_seed vmdk-image sparse vmdk "" "write -P 0x11 0 8k" "write -P 0x22 3M 4k" "write -z 1M 64k"
import_seed vmdk-image stream vmdk subformat=streamOptimized
import_seed vmdk-image zero-grain vmdk zeroed_grain=on "write -P 0x11 0 8k" "write -z 64k 64k"
import_seed vmdk-image flat-desc vmdk subformat=monolithicFlat
import_seed vmdk-image twogb-desc vmdk subformat=twoGbMaxExtentSparse
# streamOptimized with data: qemu-img convert writes it (qemu-io cannot).
mkdir -p "$out/vmdk-image"
truncate -s 1M "$tmp/s.raw"
qemu-io -f raw -c "write -P 0x33 0 8k" -c "write -P 0x44 512k 64k" "$tmp/s.raw" >/dev/null
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$tmp/s.raw" "$out/vmdk-image/stream-data"
imp=$((imp + 1))
import_seed qcow-image data qcow "" "write -P 0x11 0 8k" "write -P 0x22 3M 4k"
qemu-img create -q -f qcow "$tmp/base.qcow" 4M
import_seed qcow-image backing qcow backing_file=base.qcow,backing_fmt=qcow "write -P 0x11 8k 4k"
# qemu 7.2 compresses one qcow cluster a write.
import_seed qcow-image compressed qcow "" "write -c -P 0x11 0 4k" "write -c -P 0x12 8k 4k"
# vhdx: qemu-img aligns its regions to 1 MiB; make-vhdx-seed.py moves them
# up to make seeds of 400 KiB.
mkdir -p "$out/vhdx-image"
qemu-img create -q -f vhdx -o block_size=1M,log_size=1M "$tmp/v.vhdx" 4M
qemu-io -f vhdx -c "write -P 0x11 0 8k" -c "write -z 2M 1M" "$tmp/v.vhdx" >/dev/null
python3 "$here/make-vhdx-seed.py" "$tmp/v.vhdx" "$out/vhdx-image/dynamic"
qemu-img create -q -f vhdx -o subformat=fixed,block_size=1M,log_size=1M "$tmp/f.vhdx" 4M
python3 "$here/make-vhdx-seed.py" "$tmp/f.vhdx" "$out/vhdx-image/fixed"
imp=$((imp + 2))

cli=$out/cli-options
rm -rf "$cli"
mkdir -p "$cli"
i=0
while IFS= read -r line; do
	printf '%b' "$line" >"$cli/seed-$i"
	i=$((i + 1))
done <<'SEEDS'
1G\ncluster_size=65536,lazy_refcounts=on
0x10000\ncompat=0.10
1.5M\nbacking_file=a,,b.qcow2,backing_fmt=qcow2
512\nsize=1T,cluster_size=2M,refcount_bits=64
  4096k\npreallocation=metadata,extended_l2=on
9223372036854775807\nhelp
8E\n,,,=,a=b=c,
1.0000000000000000001k\ncluster_size=0.5k
-1\ncompression_type=zstd,data_file=x
writeback\nencrypt.format=luks,encrypt.key-secret=sec0
SEEDS
echo "corpus: $n qcow2 images, $imp import images, $i cli seeds, nbd sessions in $out"
