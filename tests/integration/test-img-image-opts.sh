#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# --object and --image-opts on every vstor-img command that qemu-img takes
# them on, compared with qemu-img (lib-fidelity.sh's rows): an encrypted
# qcow2 opened through a secret by the readers (check, map, compare,
# measure, info, snapshot -l, convert) and the writers (resize, snapshot -c,
# rebase, commit, bitmap), and the errors of bad option strings.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-fidelity.sh"

require_tool qemu-img qemu-io
require_vstor_img

qemu_img create -q -f qcow2 src.qcow2 4M
qemu-io -c 'write -P 7 0 1M' src.qcow2 >/dev/null
qemu_img convert -O raw src.qcow2 src.raw
# An encrypted qcow2 (secret s0) and a copy, for --object/--image-opts rows.
SEC="--object secret,id=s0,data=abc"
# shellcheck disable=SC2086 # $SEC is two words on purpose
qemu_img create -q -f qcow2 $SEC -o encrypt.format=luks,encrypt.key-secret=s0 \
	-o encrypt.iter-time=10 enc.qcow2 4M
# shellcheck disable=SC2086
qemu-io $SEC --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0 \
	-c 'write -P 7 0 64k' >/dev/null
cp enc.qcow2 enc2.qcow2

E="$SEC --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0"
ROWS=$(
	cat <<EOF2
check $E
check --output=json $E
map --output=json $E
map $E
compare $E driver=qcow2,file.filename=enc2.qcow2,encrypt.key-secret=s0
compare -s $E driver=raw,file.filename=src.raw
compare $E enc2.qcow2
compare -F qcow2 $E driver=qcow2,file.filename=enc2.qcow2,encrypt.key-secret=s0
measure -O qcow2 $E
info $E
snapshot -l $E
convert $E @50
convert -O qcow2 $E @51
check -f qcow2 $E
map --image-opts driver=raw,file.filename=src.raw,bogus=1
map --image-opts src.raw
check --object secret,id=s0,data=abc --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s1
check --object foo,id=x --image-opts driver=raw,file.filename=src.raw
compare --image-opts driver=raw,file.filename=src.raw driver=qcow2,file.filename=src.qcow2
resize --image-opts driver=raw,file.filename=nonexistent.raw 1M
dd $SEC --image-opts if=driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0 of=@52 bs=64k count=2
EOF2
)

NROWS=0
NFAIL=0
fidelity_rows "$ROWS"

# --image-opts on the commands that write: resize, snapshot -c, amend,
# rebase, commit, each on its own copy of the encrypted image per tool.
for cmd in "resize %s 8M" "snapshot -c s1 %s" "rebase -u -b '' %s" "commit %s" \
	"bitmap --add %s b0" "amend -o lazy_refcounts=on %s"; do
	NROWS=$((NROWS + 1))
	qrc=0 vrc=0
	cp enc.qcow2 o-w.qcow2
	cp enc.qcow2 v-w.qcow2
	# shellcheck disable=SC2046,SC2059 # the row is split into words on purpose
	eval qemu-img $(printf "$cmd" "$SEC --image-opts driver=qcow2,file.filename=o-w.qcow2,encrypt.key-secret=s0") \
		>q.out 2>q.err || qrc=$?
	# shellcheck disable=SC2046,SC2059
	eval "$VSTOR_IMG" $(printf "$cmd" "$SEC --image-opts driver=qcow2,file.filename=v-w.qcow2,encrypt.key-secret=s0") \
		>v.out 2>v.err || vrc=$?
	norm o "" q.out q.err
	norm v "" v.out v.err
	if [[ $qrc != "$vrc" ]] || ! cmp -s q.err v.err || ! cmp -s q.out v.out ||
		[[ "$(info_of o-w.qcow2 | grep -v '"date-')" != "$(info_of v-w.qcow2 | grep -v '"date-')" ]]; then
		NFAIL=$((NFAIL + 1))
		log "DIFF: $cmd with --image-opts: exit $qrc/$vrc"
		diff -u q.err v.err | sed 's/^/  stderr: /' | head -10 >&2
	fi
done
# bench opens an encrypted image through --object/--image-opts (qemu-img 7.2's
# bench has no --object: vstor-img takes it there too).
# shellcheck disable=SC2086
"$VSTOR_IMG" bench -c 16 $SEC --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0 \
	>bench.out || fail "bench on an encrypted image with --image-opts"
grep -q '^Run completed' bench.out || fail "bench: no run"

log "$NROWS command lines compared with qemu-img, $NFAIL differ"
((NROWS > 0)) || fail "no row ran"
((NFAIL == 0)) || fail "$NFAIL of $NROWS command lines differ from qemu-img"
