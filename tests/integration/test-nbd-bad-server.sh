#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor's NBD client against servers that break the protocol
# (nbd_bad_server.py): a structured read reply that leaves part of the range
# out must fail the read (not hand back what the buffer held), and export
# sizes beyond 2^63 - 1, not a multiple of the minimum block size, or never
# given must fail the open with a clear error. A correct server, the
# control, works.
. "$(dirname "$0")/lib.sh"

require_tool python3
require_vstor_io
require_vstor_img

serve()
{
	start_daemon "$WORKDIR/$1.pid" 20 python3 "$VS_LIB_DIR/nbd_bad_server.py" \
		"$WORKDIR/$1.sock" "$WORKDIR/$1.pid" "$1"
	URI="nbd+unix:///?socket=$WORKDIR/$1.sock"
}

serve good
vstor_io -f raw -c size -c 'readb 0 64K 0x5a' -c 'readb 1000 3000 0x5a' "$URI" >good.out ||
	fail "reads from a correct server"
assert_eq "$(head -1 good.out)" 1048576 "size from a correct server"

serve short-read
assert_fails vstor_io -f raw -c 'readb 0 64K 0x5a' "$URI"
assert_grep "Input/output error|error" "$WORKDIR/err" "a read the server left partly out"
grep -q mismatch "$WORKDIR/err" && fail "a partly covered read returned data"

serve huge-size
assert_fails vstor_img info -f raw "$URI"
assert_grep "beyond 2\^63" "$WORKDIR/err" "an export size beyond 2^63 - 1"

serve unaligned-size
assert_fails vstor_img info -f raw "$URI"
assert_grep "not a multiple of its minimum block size 4096" "$WORKDIR/err" \
	"an export size that is not a multiple of the block size"

serve no-export-info
assert_fails vstor_img info -f raw "$URI"
assert_grep "did not describe the export" "$WORKDIR/err" "NBD_OPT_GO without NBD_INFO_EXPORT"
log "ok"
