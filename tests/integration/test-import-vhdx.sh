#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vhdx images made by qemu-img (dynamic, fixed, 1 MiB blocks) read through vstor as qemu-img reads them (info, map,
# compare, convert, check); writing is refused; an image whose log needs
# replaying is refused with the way out, as qemu-img refuses it read-only;
# a damaged header is an error.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-import.sh"

import_pattern 13M
qemu_img convert -f raw -O vhdx -o subformat=dynamic src.raw dynamic.vhdx
import_same dynamic vhdx dynamic.vhdx check
IMPORT_CONVERT_TO=qcow2
qemu_img convert -f raw -O vhdx -o subformat=fixed src.raw fixed.vhdx
import_same fixed vhdx fixed.vhdx check
qemu_img convert -f raw -O vhdx -o block_size=1M,log_size=1M,block_state_zero=off \
	src.raw small.vhdx
import_same small vhdx small.vhdx check
vstor_img info --output=json dynamic.vhdx | grep -q '"format": "vhdx"' ||
	fail "a vhdx image does not probe as vhdx"

import_refuses_create vhdx
assert_fails vstor_img resize -f vhdx dynamic.vhdx 20M
assert_grep "Format 'vhdx' is read-only in vstor" "$WORKDIR/err"

# A log to replay: both headers name a log guid, and the log holds an
# entry of that guid (what a crash leaves). Headers keep valid checksums.
cp dynamic.vhdx log.vhdx
python3 - log.vhdx <<'PY'
import struct, sys
def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
guid = bytes(range(1, 17))
with open(sys.argv[1], "r+b") as f:
    for at in (64 * 1024, 128 * 1024):
        f.seek(at)
        h = bytearray(f.read(4096))
        h[48:64] = guid
        h[4:8] = b"\0\0\0\0"
        h[4:8] = struct.pack("<I", crc32c(bytes(h)))
        f.seek(at)
        f.write(h)
        log_off = struct.unpack_from("<Q", h, 72)[0]
    f.seek(0, 2)
    end = f.tell()
    entry = bytearray(4096)
    entry[0:4] = b"loge"
    struct.pack_into("<IIQI", entry, 8, 4096, 0, 1, 0)  # length, tail, sequence, descriptors
    entry[32:48] = guid
    struct.pack_into("<QQ", entry, 48, end, end)  # flushed and last file offsets
    entry[4:8] = struct.pack("<I", crc32c(bytes(entry)))
    f.seek(log_off)
    f.write(entry)
PY
assert_fails vstor_img info log.vhdx
assert_grep "has a log that needs to be replayed" "$WORKDIR/err"
assert_fails qemu_img info log.vhdx

# Both headers damaged.
cp dynamic.vhdx bad.vhdx
printf 'XXXX' | dd of=bad.vhdx bs=1 seek=$((64 * 1024)) conv=notrunc status=none
printf 'XXXX' | dd of=bad.vhdx bs=1 seek=$((128 * 1024)) conv=notrunc status=none
assert_fails vstor_img info -f vhdx bad.vhdx
assert_grep "No valid VHDX header" "$WORKDIR/err"
log "ok"
