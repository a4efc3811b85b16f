#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The raw luks format against its real peers (docs/encryption.md):
#   vstor-img create -> cryptsetup luksDump parses the header and
#                       cryptsetup open --test-passphrase accepts the
#                       passphrase (and rejects a wrong one);
#   vstor writes, qemu-io reads, and the reverse, for several cipher settings;
#   convert raw -> luks -> raw round-trips (qemu-img compare);
#   a wrong passphrase fails with a clear error and exit 1; the file holds none
#   of a written plaintext pattern; vstor-img info reports the luks block as
#   qemu-img info does; secret files others may read are refused.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io cryptsetup python3
require_vstor_img

PASS='correct horse battery'
SEC=(--object "secret,id=s0,data=$PASS")
SIZE=$((8 << 20))
# A small PBKDF2 time keeps the test fast; the layout does not depend on it.
ITER=iter-time=10

luks_opts() { printf 'driver=luks,key-secret=s0,file.filename=%s' "$1"; }

# Settings QEMU accepts: the default and others (cipher-alg, mode, ivgen, hashes).
SETTINGS=(
	""
	"cipher-alg=aes-128"
	"cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"
	"cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha512"
)

printf '%s' "$PASS" >key.good
printf 'not the passphrase' >key.bad
head -c "$SIZE" /dev/urandom >src.raw

n=0
for s in "${SETTINGS[@]}"; do
	n=$((n + 1))
	opts="key-secret=s0,$ITER${s:+,$s}"
	log "[$n] ${s:-default}"

	# vstor creates: cryptsetup validates the header and the key slot.
	rm -f v.luks q.luks
	assert_rc 0 vstor_img create -q -f luks "${SEC[@]}" -o "$opts" v.luks "$SIZE"
	cryptsetup luksDump v.luks >dump.out 2>&1 || { cat dump.out >&2; fail "[$n] luksDump"; }
	assert_grep 'Version:[[:space:]]+1' dump.out
	assert_grep 'Key Slot 0: ENABLED' dump.out
	cryptsetup open --test-passphrase --key-file key.good v.luks ||
		fail "[$n] cryptsetup rejects the passphrase"
	if cryptsetup open --test-passphrase --key-file key.bad v.luks 2>/dev/null; then
		fail "[$n] cryptsetup accepts a wrong passphrase"
	fi

	# vstor writes (through convert), qemu reads.
	assert_rc 0 vstor_img convert -n "${SEC[@]}" -f raw src.raw --target-image-opts \
		"$(luks_opts v.luks)"
	qemu_img compare "${SEC[@]}" --image-opts "$(luks_opts v.luks)" \
		driver=raw,file.filename=src.raw >/dev/null || fail "[$n] qemu reads vstor's data"

	# qemu writes, vstor reads.
	# qemu-img's PBKDF2 calibration fails now and then on a loaded machine
	# ("Unable to get accurate CPU usage"): try again.
	for try in 1 2 3 4 5; do
		qemu_img create -q -f luks "${SEC[@]}" -o "$opts" q.luks "$SIZE" 2>qc.err && break
		[[ $try != 5 ]] || { cat qc.err >&2; fail "[$n] qemu-img create"; }
	done
	timeout 300 qemu-io "${SEC[@]}" --image-opts "$(luks_opts q.luks)" \
		-c "write -P 0x5a 0 1M" -c "write -P 0xa5 3M 64k" >/dev/null
	assert_rc 0 vstor_img convert "${SEC[@]}" --image-opts "$(luks_opts q.luks)" -O raw q.raw
	timeout 300 qemu-io -f raw -c "read -P 0x5a 0 1M" -c "read -P 0xa5 3M 64k" \
		q.raw >io.out || fail "[$n] vstor reads qemu's data wrong"
	if grep -q 'Pattern verification failed' io.out; then
		fail "[$n] vstor reads qemu's data wrong"
	fi

	# info: the fields both tools report agree.
	vstor_img info --output=json v.luks >v-info.json
	qemu_img info --output=json v.luks >q-info.json
	python3 - v-info.json q-info.json <<'PY' || fail "[$n] info differs from qemu-img's"
import json, sys
v, q = (json.load(open(f)) for f in sys.argv[1:3])
for k in ("virtual-size", "format", "encrypted"):
    assert v.get(k) == q.get(k), (k, v.get(k), q.get(k))
vd, qd = v["format-specific"]["data"], q["format-specific"]["data"]
assert v["format-specific"]["type"] == "luks"
for k, val in vd.items():
    assert qd.get(k) == val, (k, val, qd.get(k))
for k in ("cipher-alg", "cipher-mode", "ivgen-alg", "hash-alg", "payload-offset", "uuid",
          "master-key-iters", "slots"):
    assert k in vd, k
PY
	# The human form is qemu-img's, line for line.
	vstor_img info v.luks >v-info.txt
	qemu_img info v.luks >q-info.txt
	diff q-info.txt v-info.txt >&2 || fail "[$n] human info differs from qemu-img's"
done

# convert raw -> luks -> raw, the target created by convert.
rm -f c.luks back.raw
assert_rc 0 vstor_img convert "${SEC[@]}" -O luks -o "key-secret=s0,$ITER" src.raw c.luks
qemu_img compare "${SEC[@]}" --image-opts "$(luks_opts c.luks)" \
	driver=raw,file.filename=src.raw >/dev/null || fail "convert raw -> luks"
assert_rc 0 vstor_img convert "${SEC[@]}" --image-opts "$(luks_opts c.luks)" -O raw back.raw
cmp -s back.raw src.raw || fail "convert luks -> raw"

# A sparse source: the zeroes must be written (a new luks image does not read as zeroes).
truncate -s 4M sparse.raw
printf 'data in the middle' | dd of=sparse.raw bs=1 seek=$((1 << 20)) conv=notrunc status=none
rm -f s.luks
assert_rc 0 vstor_img convert "${SEC[@]}" -O luks -o "key-secret=s0,$ITER" sparse.raw s.luks
qemu_img compare "${SEC[@]}" --image-opts "$(luks_opts s.luks)" \
	driver=raw,file.filename=sparse.raw >/dev/null || fail "convert of a sparse raw -> luks"

# The file holds ciphertext only: a written pattern is nowhere in it.
rm -f p.luks
assert_rc 0 vstor_img create -q -f luks "${SEC[@]}" -o "key-secret=s0,$ITER" p.luks 1M
python3 -c 'import sys; sys.stdout.buffer.write(b"PLAINTEXT-PATTERN-0123456789abcd" * 32768)' >pat.raw
assert_rc 0 vstor_img convert -n "${SEC[@]}" -f raw pat.raw --target-image-opts "$(luks_opts p.luks)"
if grep -q 'PLAINTEXT-PATTERN' p.luks; then
	fail "plaintext found in the encrypted file"
fi
qemu_img compare "${SEC[@]}" --image-opts "$(luks_opts p.luks)" \
	driver=raw,file.filename=pat.raw >/dev/null || fail "pattern reads back"

# A wrong passphrase: clear error, exit 1, and the secret is not printed.
rc=0
vstor_img convert --object secret,id=s0,data=wrong-pass --image-opts "$(luks_opts p.luks)" \
	-O raw x.raw 2>err.out || rc=$?
assert_eq "$rc" 1 "exit code with a wrong passphrase"
assert_grep 'Invalid password, cannot unlock any keyslot' err.out
if grep -q 'wrong-pass' err.out; then
	fail "the secret was printed"
fi

# Secrets from files: base64, and a file that others may read is refused.
printf '%s' "$PASS" | base64 >sec.b64
chmod 600 sec.b64
assert_rc 0 vstor_img info --object secret,id=s0,file=sec.b64,format=base64 \
	--image-opts "$(luks_opts p.luks)" >/dev/null
chmod 644 sec.b64
rc=0
vstor_img info --object secret,id=s0,file=sec.b64,format=base64 \
	--image-opts "$(luks_opts p.luks)" >/dev/null 2>err.out || rc=$?
assert_eq "$rc" 1 "exit code with a world-readable secret file"
assert_grep 'read by other users' err.out

# Opening for writing needs the secret; a damaged header is refused.
rc=0
vstor_img convert -n -f raw pat.raw -O luks p.luks 2>err.out || rc=$?
assert_eq "$rc" 1 "write without a secret"
assert_grep "key-secret' is required" err.out
cp p.luks bad.luks
printf 'xts-bogus\0' | dd of=bad.luks bs=1 seek=40 conv=notrunc status=none
rc=0
vstor_img info -f luks bad.luks 2>err.out >/dev/null || rc=$?
assert_eq "$rc" 1 "damaged header"
assert_grep 'not supported' err.out

log "ok"
