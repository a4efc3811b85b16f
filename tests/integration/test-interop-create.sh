#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# qcow2 create interop with qemu-img, both ways, over option combinations:
#   vstor-img create  -> qemu-img check clean, qemu-img info shows the options,
#                        the preallocation asked for is there, and qemu-img map
#                        sees the same data/zero layout as in qemu-img's own image;
#   qemu-img create   -> vstor-img info and check agree with qemu-img's.
# VSTOR_COMBOS=pairwise (default: every value and every pair of values once) or
# full (every valid combination; the 'long' suite).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img python3
require_vstor_img

INTEROP="$VS_LIB_DIR/interop.py"
SIZE=$((32 << 20))
mode=${VSTOR_COMBOS:-pairwise}
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
		prealloc=${opts##*preallocation=}
		log "[$n] $opts"

		# vstor creates, qemu-img judges.
		rm -f v.qcow2 q.qcow2
		assert_rc 0 vstor_img create -f qcow2 -o "$opts" v.qcow2 "$SIZE"
		rc=0
		qemu_img check -f qcow2 v.qcow2 >check.out 2>&1 || rc=$?
		[[ $rc == 0 ]] || { cat check.out >&2; fail "[$opts] qemu-img check of vstor's image exited $rc"; }
		qemu_img info -f qcow2 --output=json v.qcow2 >v-info.json
		qemu_img map -f qcow2 --output=json v.qcow2 >v-map.json
		python3 "$INTEROP" prealloc v-map.json v-info.json "$prealloc" ||
			fail "[$opts] preallocation of vstor's image"

		# The same options through qemu-img: the images must look the same to qemu-img.
		qemu_img create -q -f qcow2 -o "$opts" q.qcow2 "$SIZE"
		qemu_img info -f qcow2 --output=json q.qcow2 >q-info.json
		qemu_img map -f qcow2 --output=json q.qcow2 >q-map.json
		python3 "$INTEROP" info-cmp v-info.json q-info.json ||
			fail "[$opts] qemu-img info: vstor's image differs from qemu-img's"
		# With preallocation=metadata qemu-img reports a preallocated cluster as
		# zero where its host bytes are a hole in the file; which fs blocks are
		# holes depends on where each tool puts its metadata (host layout is
		# not part of the format), so only data coverage is compared here.
		# vstor-img map against qemu-img map of one image stays exact (below).
		cmp_opt=()
		[[ $prealloc == metadata ]] && cmp_opt=(--data-only)
		python3 "$INTEROP" map-cmp "${cmp_opt[@]}" v-map.json q-map.json ||
			fail "[$opts] qemu-img map: vstor's image differs from qemu-img's"

		# qemu-img creates, vstor reads.
		vstor_img info -f qcow2 --output=json q.qcow2 >qv-info.json ||
			fail "[$opts] vstor-img info of qemu-img's image exited $?"
		python3 "$INTEROP" info-cmp qv-info.json q-info.json ||
			fail "[$opts] vstor-img info disagrees with qemu-img info"
		rc=0
		vstor_img check -f qcow2 --output=json q.qcow2 >qv-check.json 2>check.err || rc=$?
		[[ $rc == 0 ]] || { cat qv-check.json check.err >&2; fail "[$opts] vstor-img check exited $rc"; }
		qemu_img check -f qcow2 --output=json q.qcow2 >q-check.json
		python3 "$INTEROP" check-cmp qv-check.json q-check.json ||
			fail "[$opts] vstor-img check disagrees with qemu-img check"
		vstor_img map -f qcow2 --output=json q.qcow2 >qv-map.json ||
			fail "[$opts] vstor-img map exited $?"
		python3 "$INTEROP" map-cmp qv-map.json q-map.json ||
			fail "[$opts] vstor-img map disagrees with qemu-img map"
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
log "$n combinations ($mode) agree with qemu-img"
