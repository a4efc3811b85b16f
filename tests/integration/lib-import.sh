# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# Shared checks of the import tests (test-import-*.sh): vstor reads an image
# that qemu-img made exactly as qemu-img reads it. Source after lib.sh.
#
#   import_pattern SIZE        src.raw: data, written zeroes and holes
#   import_same NAME FMT IMG [check]
#       info --output=json (the fields qemu-img shows; "extents" of vmdk
#       are not listed by vstor), map human and JSON, compare with
#       src.raw, convert -O $IMPORT_CONVERT_TO (qemu-img compare), and with
#       "check" the output and exit code of check.

require_tool qemu-img qemu-io python3
require_vstor_img

# The formats import_same converts to (a test may narrow it to save time).
IMPORT_CONVERT_TO=${IMPORT_CONVERT_TO:-raw qcow2}

# A pattern whose runs straddle every block size the formats use (4 KiB to 8 MiB).
import_pattern()
{
	truncate -s "$1" src.raw
	qemu-io -f raw -c 'write -P 0x11 0 68k' -c 'write -P 0x22 1020k 8k' \
		-c 'write -z 2M 64k' -c 'write -P 0x33 3M 1M' -c 'write -P 0x44 9M 4k' \
		-c 'write -P 0x55 12200k 300k' src.raw >/dev/null
}

# Same JSON, but for keys vstor does not list (nested format-specific lists).
import_same_json()
{
	python3 - "$1" "$2" <<'PY'
import json, sys
q, v = (json.load(open(f)) for f in sys.argv[1:3])
def strip(d):
    if isinstance(d, dict):
        return {k: strip(x) for k, x in d.items() if k != "extents"}
    return d
if strip(q) != strip(v):
    print("qemu-img:", json.dumps(strip(q), sort_keys=True), file=sys.stderr)
    print("vstor-img:", json.dumps(strip(v), sort_keys=True), file=sys.stderr)
    sys.exit(1)
PY
}

import_same()
{
	local name=$1 fmt=$2 img=$3 what=${4:-} qrc vrc o
	qemu_img info -f "$fmt" --output=json "$img" >"q-$name.info"
	vstor_img info -f "$fmt" --output=json "$img" >"v-$name.info" ||
		fail "$name: vstor-img info failed"
	import_same_json "q-$name.info" "v-$name.info" || fail "$name: info differs"
	for o in human json; do
		# Human map refuses compressed images (streamOptimized): same exit, same words.
		qrc=0 vrc=0
		qemu_img map -f "$fmt" --output=$o "$img" >"q-$name.map.$o" 2>"q-$name.map.err" ||
			qrc=$?
		vstor_img map -f "$fmt" --output=$o "$img" >"v-$name.map.$o" 2>"v-$name.map.err" ||
			vrc=$?
		assert_eq "$vrc" "$qrc" "$name: exit code of map --output=$o"
		diff -u "q-$name.map.$o" "v-$name.map.$o" >&2 || fail "$name: map --output=$o differs"
		sed 's/^qemu-img: /vstor-img: /' "q-$name.map.err" | diff -u - "v-$name.map.err" >&2 ||
			fail "$name: map --output=$o: the messages differ"
	done
	vstor_img compare -q -f "$fmt" -F raw "$img" src.raw 2>/dev/null ||
		fail "$name: vstor-img compare with the source failed"
	for o in $IMPORT_CONVERT_TO; do
		vstor_img convert -f "$fmt" -O $o "$img" "$name.$o" || fail "$name: convert -O $o failed"
		qemu_img compare -q -f "$fmt" -F $o "$img" "$name.$o" ||
			fail "$name: convert -O $o is not what qemu-img reads"
		rm -f "$name.$o"
	done
	if [[ $what == check ]]; then
		qrc=0 vrc=0
		qemu_img check -f "$fmt" "$img" >"q-$name.check" 2>&1 || qrc=$?
		vstor_img check -f "$fmt" "$img" >"v-$name.check" 2>&1 || vrc=$?
		assert_eq "$vrc" "$qrc" "$name: exit code of check"
		sed 's/^qemu-img: /vstor-img: /' "q-$name.check" | diff -u - "v-$name.check" >&2 ||
			fail "$name: check output differs"
	fi
}

# import_refuses_create FMT: vstor-img create and convert -O FMT refuse clearly.
import_refuses_create()
{
	local fmt=$1
	assert_fails vstor_img create -q -f "$fmt" "new.$fmt" 1M
	assert_grep "Format '$fmt' is read-only in vstor; convert to qcow2 or raw" "$WORKDIR/err"
	[[ ! -e "new.$fmt" ]] || fail "create -f $fmt left a file behind"
	assert_fails vstor_img convert -f raw -O "$fmt" src.raw "new.$fmt"
	assert_grep "Format '$fmt' is read-only in vstor" "$WORKDIR/err"
}
