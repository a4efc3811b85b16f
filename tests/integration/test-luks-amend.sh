#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Key slot management with amend (encrypt.state, encrypt.keyslot,
# encrypt.new-secret, encrypt.old-secret, encrypt.iter-time) as qemu-img 7.2
# does it, on qcow2+luks and raw luks (docs/encryption.md):
#   vstor-img amend adds and erases slots; qemu-io opens with each new
#   passphrase, no longer with an erased one; qemu-img info lists the slots;
#   qemu-img amend's result opens in vstor; cryptsetup luksDump shows the
#   slots of a raw luks volume and --test-passphrase opens the new one;
#   the refusals carry qemu-img's messages.
# qemu-img amend calibrates PBKDF2 for seconds of CPU: its part runs with
# VSTOR_QLUKS_FULL=1 (the long suite's luks-amend-full).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io cryptsetup python3
require_vstor_img
require_vstor_io

printf 'first passphrase' >k0
printf 'second passphrase' >k1
printf 'third passphrase' >k2
chmod 600 k0 k1 k2
SEC=(--object secret,id=s0,file=k0 --object secret,id=s1,file=k1 --object secret,id=s2,file=k2)
ITER=encrypt.iter-time=10

q_opts() { printf 'driver=qcow2,encrypt.key-secret=%s,file.filename=%s' "$2" "$1"; }
# qemu-io with secret $2 reads the image $1 (exit 0 and no error in its output).
q_opens()
{
	local out
	out=$(timeout 300 qemu-io -r "${SEC[@]}" --image-opts "$(q_opts "$1" "$2")" \
		-c "read -P 0x5a 0 64k" 2>&1) || return 1
	! grep -Eq 'failed|error|Invalid' <<<"$out"
}
slots() { qemu_img info --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)["format-specific"]["data"]
d = d.get("encrypt", d)
print("".join("1" if s["active"] else "0" for s in d["slots"]))'; }
v_amend() { vstor_img amend "${SEC[@]}" --image-opts -o "$2" "$(q_opts "$1" "${3:-s0}")"; }
# An amend that must fail with qemu-img's message $3.
v_amend_fails()
{
	local rc=0
	v_amend "$1" "$2" 2>err.out || rc=$?
	assert_eq "$rc" 1 "amend $2"
	grep -qF -- "$3" err.out || { cat err.out >&2; fail "amend $2: expected '$3'"; }
}

rm -f v.qcow2
assert_rc 0 vstor_img create -q -f qcow2 "${SEC[@]}" \
	-o "encrypt.format=luks,encrypt.key-secret=s0,$ITER" v.qcow2 4M
assert_rc 0 vstor_io -k k0 -c "writeb 0 64k 0x5a" v.qcow2

# Refusals, with nothing changed.
v_amend_fails v.qcow2 encrypt.state=inactive,encrypt.keyslot=0 \
	"Attempt to erase the only active keyslot 0 which will erase all the data in the image irreversibly - refusing operation"
v_amend_fails v.qcow2 encrypt.state=inactive,encrypt.keyslot=3 \
	"Given keyslot 3 is already erased (inactive)"
v_amend_fails v.qcow2 encrypt.state=active,encrypt.keyslot=9,encrypt.new-secret=s1 \
	"Invalid keyslot 9 specified, must be between 0 and 7"
v_amend_fails v.qcow2 encrypt.state=active \
	"'new-secret' is required to activate a keyslot"
v_amend_fails v.qcow2 encrypt.state=inactive,encrypt.keyslot=0,encrypt.new-secret=s1 \
	"'new-secret' must not be given when erasing keyslots"
v_amend_fails v.qcow2 encrypt.state=inactive \
	"To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given"
v_amend_fails v.qcow2 encrypt.new-secret=s1 "Parameter 'state' is missing"
v_amend_fails v.qcow2 "encrypt.state=active,encrypt.keyslot=0,encrypt.new-secret=s1" \
	"Refusing to overwrite active keyslot 0 - please erase it first"
assert_eq "$(slots v.qcow2)" 10000000 "slots after refused amends"

# Add: the first free slot, then slot 5; each passphrase opens the image in qemu.
assert_rc 0 v_amend v.qcow2 "encrypt.state=active,encrypt.new-secret=s1,$ITER"
assert_rc 0 v_amend v.qcow2 "encrypt.state=active,encrypt.keyslot=5,encrypt.new-secret=s2,$ITER"
assert_eq "$(slots v.qcow2)" 11000100 "slots after adding 1 and 5"
for s in s0 s1 s2; do
	q_opens v.qcow2 $s || fail "qemu does not open the image with $s"
done
# Erase by old password (opened with another one), then by index.
assert_rc 0 v_amend v.qcow2 encrypt.state=inactive,encrypt.old-secret=s0 s1
q_opens v.qcow2 s0 && fail "the erased passphrase still opens the image"
assert_rc 0 v_amend v.qcow2 encrypt.state=inactive,encrypt.keyslot=5 s1
assert_eq "$(slots v.qcow2)" 01000000 "slots after erasing 0 and 5"
qemu_img check "${SEC[@]}" --image-opts "$(q_opts v.qcow2 s1)" >/dev/null ||
	fail "qemu-img check after amend"
# Eight slots at most.
for k in 0 2 3 4 5 6 7; do
	assert_rc 0 v_amend v.qcow2 "encrypt.state=active,encrypt.new-secret=s0,$ITER" s1
done
assert_eq "$(slots v.qcow2)" 11111111 "eight slots"
v_amend_fails v.qcow2 "encrypt.state=active,encrypt.new-secret=s2" \
	"Can't add a keyslot - all keyslots are in use"

# qemu-img amend's result opens in vstor.
rm -f w.qcow2
assert_rc 0 vstor_img create -q -f qcow2 "${SEC[@]}" \
	-o "encrypt.format=luks,encrypt.key-secret=s0,$ITER" w.qcow2 4M
assert_rc 0 vstor_io -k k0 -c "writeb 0 64k 0x5a" w.qcow2
if [[ ${VSTOR_QLUKS_FULL:-0} == 1 ]]; then
	for try in 1 2 3 4 5; do
		qemu_img amend "${SEC[@]}" --image-opts \
			-o "encrypt.state=active,encrypt.keyslot=2,encrypt.new-secret=s2,$ITER" \
			"$(q_opts w.qcow2 s0)" 2>qa.err && break
		[[ $try != 5 ]] || { cat qa.err >&2; fail "qemu-img amend"; }
	done
else
	assert_rc 0 v_amend w.qcow2 "encrypt.state=active,encrypt.keyslot=2,encrypt.new-secret=s2,$ITER"
fi
assert_rc 0 vstor_io -k k2 -c "readb 0 64k 0x5a" w.qcow2
# --force erases the last slot(s), as qemu-img's.
assert_rc 0 v_amend w.qcow2 encrypt.state=inactive,encrypt.keyslot=2
v_amend_fails w.qcow2 encrypt.state=inactive,encrypt.old-secret=s0 \
	"All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation"
assert_rc 0 vstor_img amend --force "${SEC[@]}" --image-opts \
	-o encrypt.state=inactive,encrypt.keyslot=0 "$(q_opts w.qcow2 s0)"
assert_eq "$(slots w.qcow2)" 00000000 "slots after --force"

# Raw luks: cryptsetup sees the slots vstor adds and erases.
l_opts() { printf 'driver=luks,key-secret=%s,file.filename=%s' "$2" "$1"; }
rm -f r.luks
assert_rc 0 vstor_img create -q -f luks "${SEC[@]}" -o key-secret=s0,iter-time=10 r.luks 4M
assert_rc 0 vstor_img amend "${SEC[@]}" --image-opts \
	-o state=active,keyslot=3,new-secret=s1,iter-time=10 "$(l_opts r.luks s0)"
cryptsetup luksDump r.luks >dump.out 2>&1 || { cat dump.out >&2; fail "luksDump"; }
assert_grep 'Key Slot 0: ENABLED' dump.out
assert_grep 'Key Slot 3: ENABLED' dump.out
cryptsetup open --test-passphrase --key-slot 3 --key-file k1 r.luks ||
	fail "cryptsetup rejects the passphrase of slot 3"
assert_rc 0 vstor_img amend "${SEC[@]}" --image-opts -o state=inactive,keyslot=0 \
	"$(l_opts r.luks s1)"
cryptsetup luksDump r.luks >dump.out 2>&1 || fail "luksDump after erase"
assert_grep 'Key Slot 0: DISABLED' dump.out
if cryptsetup open --test-passphrase --key-file k0 r.luks 2>/dev/null; then
	fail "cryptsetup accepts the erased passphrase"
fi
cryptsetup open --test-passphrase --key-file k1 r.luks || fail "slot 3 after erasing 0"

log "ok"
