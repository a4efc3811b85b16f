#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Unknown autoclear feature bits of a qcow2 header, as QEMU treats them:
# every writable open clears them (a write, resize, check -r all), a
# read-only open (info, check without -r) keeps them; the bitmaps bit of an
# image with bitmaps is known and stays. vstor-img and qemu-img/qemu-io side
# by side on the same images.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3
require_vstor_img

# set_bit FILE: set autoclear bit 5 (unknown to both).
set_bit() { python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(88)
    v = struct.unpack(">Q", f.read(8))[0]
    f.seek(88)
    f.write(struct.pack(">Q", v | (1 << 5)))
PY
}
bits() { python3 -c 'import struct,sys; f=open(sys.argv[1],"rb"); f.seek(88); print(struct.unpack(">Q", f.read(8))[0])' "$1"; }

# case NAME QEMU-CMD... -- VSTOR-CMD... (FILE in each is replaced by the image)
case_()
{
	local name=$1 q=() v=()
	shift
	while [[ $1 != -- ]]; do q+=("$1"); shift; done
	shift
	v=("$@")
	for who in q v; do
		qemu_img create -q -f qcow2 "$name-$who.qcow2" 1M
		qemu-img bitmap --add "$name-$who.qcow2" b0
		set_bit "$name-$who.qcow2"
	done
	"${q[@]/FILE/$name-q.qcow2}" >/dev/null 2>&1 || true
	"${v[@]/FILE/$name-v.qcow2}" >/dev/null 2>&1 || true
	assert_eq "$(bits "$name-v.qcow2")" "$(bits "$name-q.qcow2")" "autoclear bits after $name"
}

case_ write qemu-io -c 'write 0 4k' FILE -- "$VSTOR_IO" -c 'write 0 4k' FILE
case_ resize qemu-img resize FILE 2M -- "$VSTOR_IMG" resize FILE 2M
case_ check-r qemu-img check -r all FILE -- "$VSTOR_IMG" check -r all FILE
case_ check qemu-img check FILE -- "$VSTOR_IMG" check FILE
case_ info qemu-img info FILE -- "$VSTOR_IMG" info FILE
# The known bitmaps bit stays where bitmaps are; the unknown one went.
assert_eq "$(bits check-r-v.qcow2)" 1 "check -r all keeps the bitmaps bit only"
assert_eq "$(bits info-v.qcow2)" 33 "info keeps every bit"
qemu_img check -q check-r-v.qcow2 || fail "qemu-img check after vstor's check -r all"
log "ok"
