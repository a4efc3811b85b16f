#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qcow2 data interop with qemu-img, both ways, over option combinations:
#   vstor writes a seeded random workload (writes, write-zeroes with and without
#   unmap, discards, flushes; random offsets and sizes, aligned and not) through
#   tests/tools/vstor-io; the same workload goes into a raw reference file
#   (interop.py apply). qemu-img check must be clean, qemu-img compare must say
#   identical, and vstor-img map must agree with qemu-img map.
#   qemu-io writes the same kind of workload; vstor-img compare must say the
#   image equals the reference, vstor-img check must agree with qemu-img check,
#   and vstor-img map with qemu-img map.
# Maps are compared on data/zero coverage after merging adjacent runs with the
# same flags: how a tool splits a run is not part of the contract.
# VSTOR_COMBOS=pairwise|full as in test-interop-create.sh; VSTOR_SEED picks the
# workload (default: fixed, so a failure reproduces).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3
require_vstor_img
require_vstor_io

INTEROP="$VS_LIB_DIR/interop.py"
SIZE=$((32 << 20))
NOPS=${VSTOR_NOPS:-120}
mode=${VSTOR_COMBOS:-pairwise}
seed0=${VSTOR_SEED:-20240601}
caches=(writeback none)
n=0

failed=()
while read -r opts; do
	n=$((n + 1))
	# Each combination runs in its own subshell and directory, so that one
	# failure does not hide the others.
	mkdir "c$n"
	set +e
	(
		set -e
		cd "c$n"
		seed=$((seed0 + n))
		cluster=${opts#*cluster_size=}
		cluster=${cluster%%,*}
		cache=${caches[n % 2]}
		log "[$n] $opts seed=$seed cache=$cache"

		# --- vstor writes, qemu-img judges ---
		rm -f v.qcow2 ref.raw
		qemu_img create -q -f qcow2 -o "$opts" v.qcow2 "$SIZE"
		python3 "$INTEROP" gen "$seed" "$SIZE" "$cluster" "$NOPS" vstor >v.script
		python3 "$INTEROP" apply v.script ref.raw "$SIZE"
		rc=0
		vstor_io -f qcow2 -t "$cache" -s v.script v.qcow2 >io.out 2>io.err || rc=$?
		[[ $rc == 0 ]] || { cat io.err >&2; fail "[$opts] vstor-io exited $rc (seed $seed)"; }
		rc=0
		qemu_img check -f qcow2 v.qcow2 >check.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat check.out >&2; fail "[$opts] qemu-img check after vstor wrote: exit $rc (seed $seed)"; }
		rc=0
		qemu_img compare -f qcow2 -F raw v.qcow2 ref.raw >cmp.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat cmp.out >&2; fail "[$opts] qemu-img compare: vstor's image differs from the reference (seed $seed)"; }
		qemu_img map -f qcow2 --output=json v.qcow2 >q-map.json
		vstor_img map -f qcow2 --output=json v.qcow2 >v-map.json || fail "[$opts] vstor-img map exited $?"
		python3 "$INTEROP" map-cmp v-map.json q-map.json || fail "[$opts] vstor-img map disagrees with qemu-img map (vstor wrote)"

		# --- qemu-io writes, vstor reads ---
		rm -f q.qcow2 ref.raw
		qemu_img create -q -f qcow2 -o "$opts" q.qcow2 "$SIZE"
		python3 "$INTEROP" gen "$((seed + 100000))" "$SIZE" "$cluster" "$NOPS" qemu-io >q.script
		python3 "$INTEROP" apply q.script ref.raw "$SIZE"
		args=()
		while read -r line; do
			args+=(-c "$line")
		done <q.script
		rc=0
		timeout 300 qemu-io -f qcow2 "${args[@]}" q.qcow2 >qio.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat qio.out >&2; fail "[$opts] qemu-io exited $rc"; }
		if grep -qiE 'error|failed' qio.out; then
			cat qio.out >&2
			fail "[$opts] qemu-io reported an error"
		fi
		rc=0
		vstor_img compare -f qcow2 -F raw q.qcow2 ref.raw >cmp.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat cmp.out >&2; fail "[$opts] vstor-img compare of qemu-io's image with the reference: exit $rc (seed $((seed + 100000)))"; }
		rc=0
		vstor_img compare -f qcow2 -F qcow2 q.qcow2 v.qcow2 >cmp.out 2>&1 || rc=$?
		[[ $rc == 1 ]] || { cat cmp.out >&2; fail "[$opts] vstor-img compare of two different images: exit $rc, expected 1"; }
		qemu_img map -f qcow2 --output=json q.qcow2 >q-map.json
		vstor_img map -f qcow2 --output=json q.qcow2 >v-map.json || fail "[$opts] vstor-img map exited $?"
		python3 "$INTEROP" map-cmp v-map.json q-map.json || fail "[$opts] vstor-img map disagrees with qemu-img map (qemu-io wrote)"
		rc=0
		vstor_img check -f qcow2 --output=json q.qcow2 >v-check.json 2>check.err || rc=$?
		[[ $rc == 0 ]] || { cat v-check.json check.err >&2; fail "[$opts] vstor-img check of qemu-io's image: exit $rc"; }
		qemu_img check -f qcow2 --output=json q.qcow2 >q-check.json
		python3 "$INTEROP" check-cmp v-check.json q-check.json || fail "[$opts] vstor-img check disagrees with qemu-img check"
	)
	rc=$?
	set -e
	if [[ $rc == 0 ]]; then
		rm -rf "c$n"
	else
		failed+=("$opts")
	fi
done < <(python3 "$INTEROP" combos "$mode")

((n > 0)) || fail "no combinations generated"
if ((${#failed[@]})); then
	printf '  %s\n' "${failed[@]}" >&2
	fail "${#failed[@]} of $n combinations ($mode) failed (listed above; details above them)"
fi
log "$n combinations ($mode) interoperate with qemu-img"
