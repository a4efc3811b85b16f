#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Backing chains whose levels have different passphrases (issue 17), as
# QEMU opens them: encrypt.key-secret for the image, backing.encrypt.key-
# secret and backing.backing.encrypt.key-secret for the levels below, in
# --image-opts and in json: names. A three-level chain, each level with its
# own secret (a raw luks base, two qcow2+luks overlays; vstor-img creates
# them: qemu-img's create calibrates PBKDF2 for seconds on a loaded
# machine), is written level by level by qemu-io through the chain; then
# qemu-img convert and vstor-img convert read it equal, and the data is
# where each level put it. A wrong secret for a backing level fails with
# QEMU's message, no crash.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io
require_vstor_img
for i in 0 1 2; do
	printf 'chain-pass-%d-%s' "$i" "$RANDOM" >"k$i"
	chmod 600 "k$i"
done
OBJ=(--object secret,id=s0,file=k0 --object secret,id=s1,file=k1 --object secret,id=s2,file=k2)
ENC() { echo "encrypt.format=luks,encrypt.key-secret=$1,encrypt.iter-time=10"; }

assert_rc 0 vstor_img create -f luks "${OBJ[@]}" -o key-secret=s0,iter-time=10 base.luks 4M
assert_rc 0 timeout 60 qemu-io "${OBJ[@]}" --image-opts \
	driver=luks,key-secret=s0,file.filename=base.luks -c 'write -P 0x11 0 3M'
assert_rc 0 vstor_img create -f qcow2 "${OBJ[@]}" -o "$(ENC s1)" -b base.luks -F luks mid.qcow2
assert_rc 0 timeout 60 qemu-io "${OBJ[@]}" --image-opts \
	driver=qcow2,encrypt.key-secret=s1,backing.key-secret=s0,file.filename=mid.qcow2 \
	-c 'write -P 0x22 1M 1M'
assert_rc 0 vstor_img create -f qcow2 "${OBJ[@]}" -o "$(ENC s2)" -b mid.qcow2 -F qcow2 top.qcow2
TOP=driver=qcow2,encrypt.key-secret=s2,backing.encrypt.key-secret=s1,backing.backing.key-secret=s0,file.filename=top.qcow2
assert_rc 0 timeout 60 qemu-io "${OBJ[@]}" --image-opts "$TOP" -c 'write -P 0x33 2M 512k'

assert_rc 0 qemu_img convert "${OBJ[@]}" --image-opts "$TOP" -O raw q.raw
assert_rc 0 vstor_img convert "${OBJ[@]}" --image-opts "$TOP" -O raw v.raw
cmp q.raw v.raw || fail "vstor-img reads the three-secret chain differently from qemu-img"
assert_rc 0 timeout 60 qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' \
	-c 'read -P 0x33 2M 512k' -c 'read -P 0x11 2560k 512k' v.raw
JSON='json:{"driver":"qcow2","encrypt":{"key-secret":"s2"},"backing":{"encrypt":{"key-secret":"s1"},"backing":{"key-secret":"s0"}},"file":{"filename":"top.qcow2"}}'
assert_rc 0 vstor_img convert "${OBJ[@]}" "$JSON" -O raw j.raw
cmp q.raw j.raw || fail "vstor-img reads the chain given as json: differently"

# info --backing-chain opens every level with its own secret (qemu-img 7.2's
# info refuses backing. options).
assert_rc 0 vstor_img info --backing-chain "${OBJ[@]}" --image-opts "$TOP"
assert_eq "$(grep -c '^encrypted: yes' out)" 3 "info --backing-chain of the three-secret chain"

# A wrong passphrase for a backing level: QEMU's message, exit 1.
assert_rc 1 vstor_img convert "${OBJ[@]}" --image-opts \
	driver=qcow2,encrypt.key-secret=s2,backing.encrypt.key-secret=s0,file.filename=top.qcow2 \
	-O raw x.raw
assert_grep "Invalid password, cannot unlock any keyslot" err "a wrong backing secret"
# The image's own secret for every level (the default) fails the same way.
assert_rc 1 vstor_img convert "${OBJ[@]}" --image-opts \
	driver=qcow2,encrypt.key-secret=s2,file.filename=top.qcow2 -O raw x.raw
assert_grep "Could not open backing file" err "the image's secret for its backing"
log "ok"
