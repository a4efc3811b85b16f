#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Backing chains with vstor-img against qemu-img: create -b/-F (size from
# the backing file, -u, the refusal to guess a backing format),
# info --backing-chain, map depth, rebase (safe, -u, -b ""), commit (into
# the backing file, -b deeper base, -d). Every result passes qemu-img check
# and reads the same as the same operation done by qemu-img.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3
require_vstor_img

same() { qemu_img compare -q "$1" "$2" || fail "${3:-}: $1 and $2 differ"; }
clean() { qemu_img check -q "$1" || fail "${2:-}: qemu-img check $1"; }
qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# A chain raw <- qcow2 <- qcow2 with data at every level, overlapping.
make_chain()
{
	rm -f base.raw mid.qcow2 top.qcow2
	qemu_img create -q -f raw base.raw 8M
	qio -f raw -c 'write -P 1 0 3M' -c 'write -P 7 6M 64k' base.raw
	vstor_img create -q -f qcow2 -b base.raw -F raw mid.qcow2
	qio -c 'write -P 2 2M 2M' -c 'write -z 6M 64k' mid.qcow2
	vstor_img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
	qio -c 'write -P 3 3M 2M' -c 'write -P 4 100k 8k' -c 'discard 2M 64k' top.qcow2
}

save_chain() { for f in base.raw mid.qcow2 top.qcow2; do cp "$f" "$1.$f"; done; }
load_chain() { for f in base.raw mid.qcow2 top.qcow2; do cp "$1.$f" "$f"; done; }

# ---- create -b ----
make_chain
info=$(qemu_img info --output=json top.qcow2)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["virtual-size"]==8<<20, d; assert d["backing-filename-format"]=="qcow2", d' "$info" ||
	fail "create -b: size taken from the backing file"
clean mid.qcow2 "create -b"
clean top.qcow2 "create -b"
assert_rc 1 "$VSTOR_IMG" create -f qcow2 -b base.raw x.qcow2
assert_grep "Backing file specified without backing format" "$WORKDIR/err" "create -b without -F"
assert_grep "Detected format of raw" "$WORKDIR/err" "create -b without -F"
[[ -e x.qcow2 ]] && fail "create -b without -F left a file"
# An empty backing name is an error, as in qemu-img, not "no backing file".
for o in "-o backing_file=" "-b ''"; do
	eval assert_rc 1 qemu-img create -f qcow2 $o x.qcow2 1M
	assert_grep "Expected backing file name, got empty string" "$WORKDIR/err" "qemu-img create $o"
	eval assert_rc 1 '"$VSTOR_IMG"' create -f qcow2 $o x.qcow2 1M
	assert_grep "Expected backing file name, got empty string" "$WORKDIR/err" "create $o"
	[[ -e x.qcow2 ]] && fail "create $o left a file"
done
assert_rc 1 "$VSTOR_IMG" create -f qcow2 -u -b base.raw x.qcow2 1M
assert_grep "Backing file specified without backing format" "$WORKDIR/err" "create -u -b without -F"
# -u does not open the backing file: it may not exist yet.
vstor_img create -q -f qcow2 -u -b nonexistent.qcow2 -F qcow2 x.qcow2 1M || fail "create -u"
assert_grep "nonexistent.qcow2" <(qemu_img info -U --output=json x.qcow2 2>/dev/null || true) \
	"create -u records the backing file"
assert_rc 1 "$VSTOR_IMG" create -f qcow2 -u -b nonexistent.qcow2 -F qcow2 y.qcow2
assert_grep "Image creation needs a size parameter" "$WORKDIR/err" "create -u without size"
assert_rc 1 "$VSTOR_IMG" create -f raw -b base.raw -F raw y.raw 1M
assert_grep "Backing file not supported for file format 'raw'" "$WORKDIR/err" "raw with -b"

# ---- info --backing-chain and map depth: the same as qemu-img ----
keys='["filename","format","virtual-size","backing-filename","backing-filename-format","full-backing-filename","cluster-size"]'
pick() { python3 -c 'import json,sys; k=json.loads(sys.argv[1]); print(json.dumps([{x: i.get(x) for x in k} for i in json.load(sys.stdin)]))' "$keys"; }
a=$(vstor_img info --backing-chain --output=json top.qcow2 | pick) || fail "info --backing-chain json"
b=$(qemu_img info --backing-chain --output=json top.qcow2 | pick)
assert_eq "$a" "$b" "info --backing-chain --output=json"
vstor_img info --backing-chain top.qcow2 >chain.txt
assert_eq "$(grep -c '^image: ' chain.txt)" 3 "human info --backing-chain lists three images"
a=$(vstor_img map --output=json top.qcow2) || fail "map json"
b=$(qemu_img map --output=json top.qcow2)
assert_eq "$a" "$b" "map --output=json (depth)"
a=$(vstor_img map top.qcow2)
b=$(qemu_img map top.qcow2)
assert_eq "$a" "$b" "map (human)"
save_chain orig

# ---- commit ----
# Default: top into mid, then top is emptied; the chain reads the same.
vstor_img commit top.qcow2 >out.txt || fail "commit"
assert_grep "Image committed" out.txt "commit message"
same top.qcow2 orig.top.qcow2 "commit: guest view"
clean top.qcow2 "commit"
clean mid.qcow2 "commit"
assert_eq "$(qemu_img map --output=json top.qcow2 | grep -c '"depth": 0')" 0 "commit empties the top"
# The same commit done by qemu-img leaves the same mid image.
cp mid.qcow2 vstor.mid.qcow2
load_chain orig
qemu_img commit -q top.qcow2
same vstor.mid.qcow2 mid.qcow2 "commit: mid as qemu-img commits it"

# -d keeps the top as it was.
load_chain orig
vstor_img commit -q -d top.qcow2 || fail "commit -d"
same top.qcow2 orig.top.qcow2 "commit -d: guest view"
a=$(qemu_img map --output=json top.qcow2 | grep -c '"depth": 0')
b=$(qemu_img map --output=json orig.top.qcow2 | grep -c '"depth": 0')
assert_eq "$a" "$b" "commit -d keeps the top's clusters"

# -b base.raw: top and mid (zeroes included) go into the raw base.
load_chain orig
vstor_img commit -q -b base.raw top.qcow2 || fail "commit -b"
same top.qcow2 orig.top.qcow2 "commit -b: guest view"
same base.raw orig.top.qcow2 "commit -b: base holds the whole view"
cp base.raw vstor.base.raw
load_chain orig
qemu_img commit -q -b base.raw top.qcow2
same vstor.base.raw base.raw "commit -b: base as qemu-img commits it"

load_chain orig
assert_rc 1 "$VSTOR_IMG" commit -b nonexistent top.qcow2
assert_grep "Did not find 'nonexistent' in the backing chain of 'top.qcow2'" "$WORKDIR/err" "commit -b unknown"
assert_rc 1 "$VSTOR_IMG" commit base.raw
assert_grep "Image does not have a backing file" "$WORKDIR/err" "commit without backing"
# A chain made by qemu-img, committed by vstor, read by qemu-img.
qemu_img create -q -f qcow2 q0.qcow2 4M
qio -c 'write -P 5 0 4M' q0.qcow2
qemu_img create -q -f qcow2 -b q0.qcow2 -F qcow2 -o cluster_size=4k q1.qcow2
qio -c 'write -P 6 4k 12k' -c 'write -z 1M 1M' q1.qcow2
cp q1.qcow2 q1.orig.qcow2
vstor_img commit -q q1.qcow2 || fail "commit of a qemu-img chain"
same q0.qcow2 q1.orig.qcow2 "commit of a qemu-img chain: base"
same q1.qcow2 q1.orig.qcow2 "commit of a qemu-img chain: top"
clean q0.qcow2 "commit of a qemu-img chain"

# ---- rebase ----
# Safe rebase of top onto base.raw: mid's data is copied into top.
load_chain orig
vstor_img rebase -b base.raw -F raw top.qcow2 || fail "rebase"
same top.qcow2 orig.top.qcow2 "rebase onto the base: guest view"
clean top.qcow2 "rebase"
assert_grep '"backing-filename": "base.raw"' <(qemu_img info --output=json top.qcow2) "rebase header"
# Only what differs is copied: top grows by at most mid's allocated data.
a=$(qemu_img map --output=json top.qcow2 | python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"]==0 and e["data"]))')
(( a <= (2 << 20) + (3 << 20) )) || fail "rebase copied $a bytes, more than what differs"
# Onto an unrelated image, and back to no backing file at all.
load_chain orig
qemu_img create -q -f qcow2 other.qcow2 4M
qio -c 'write -P 9 0 4M' other.qcow2
vstor_img rebase -p -b other.qcow2 -F qcow2 top.qcow2 >out.txt || fail "rebase onto another image"
assert_grep "100.00/100%" out.txt "rebase -p progress"
same top.qcow2 orig.top.qcow2 "rebase onto another image: guest view"
clean top.qcow2 "rebase onto another image"
vstor_img rebase -b "" top.qcow2 || fail "rebase -b ''"
same top.qcow2 orig.top.qcow2 "rebase -b '': guest view"
clean top.qcow2 "rebase -b ''"
qemu_img info --output=json top.qcow2 | grep -q backing-filename && fail "rebase -b '' kept a backing file"
# -u rewrites the header only (the new file need not exist).
load_chain orig
vstor_img rebase -u -b whatever.qcow2 -F qcow2 top.qcow2 || fail "rebase -u"
assert_grep '"backing-filename": "whatever.qcow2"' <(qemu_img info -U --output=json --backing-chain top.qcow2 2>/dev/null || qemu_img info -U --output=json top.qcow2 2>/dev/null || true) "rebase -u header"
vstor_img rebase -u -b mid.qcow2 -F qcow2 top.qcow2 || fail "rebase -u back"
same top.qcow2 orig.top.qcow2 "rebase -u back: guest view"
clean top.qcow2 "rebase -u"
# qemu-img's messages.
assert_rc 1 "$VSTOR_IMG" rebase top.qcow2
assert_grep "Must specify backing file \(-b\) or use unsafe mode \(-u\)" "$WORKDIR/err" "rebase without -b"
assert_rc 1 "$VSTOR_IMG" rebase -b base.raw top.qcow2
assert_grep "backing format must be specified" "$WORKDIR/err" "rebase without -F"
assert_rc 1 "$VSTOR_IMG" rebase -b nonexistent -F qcow2 top.qcow2
assert_grep "Could not open new backing file 'nonexistent'" "$WORKDIR/err" "rebase onto a missing file"
same top.qcow2 orig.top.qcow2 "a failed rebase changes nothing"
# qemu-img rebases a chain vstor rebased, and the reverse.
cp orig.top.qcow2 q.top.qcow2
qemu_img rebase -q -b base.raw -F raw q.top.qcow2
vstor_img rebase -q -b mid.qcow2 -F qcow2 q.top.qcow2 || fail "rebase of a qemu-img rebased image"
same q.top.qcow2 orig.top.qcow2 "rebase back after qemu-img rebase"
clean q.top.qcow2 "rebase back"

# Clusters larger than rebase's 1 MiB chunk: a cluster where the old and new
# backing differ only in part is copied whole, so the part where they agree
# keeps the old backing data (a regression: it read zeroes).
qemu_img create -q -f qcow2 -o cluster_size=2M b1.qcow2 8M
qio -c 'write -P 0x11 0 8M' b1.qcow2
qemu_img create -q -f qcow2 -o cluster_size=2M b2.qcow2 8M
qio -c 'write -P 0x11 0 8M' -c 'write -P 0x22 1M 64k' b2.qcow2
qemu_img create -q -f qcow2 -o cluster_size=2M -b b1.qcow2 -F qcow2 big.qcow2
qio -c 'write -P 0x33 6M 64k' big.qcow2
cp big.qcow2 orig.big.qcow2
vstor_img rebase -b b2.qcow2 -F qcow2 big.qcow2 || fail "rebase with 2 MiB clusters"
qemu_img rebase -q -u -b b1.qcow2 -F qcow2 orig.big.qcow2
same big.qcow2 orig.big.qcow2 "rebase with 2 MiB clusters: guest view"
clean big.qcow2 "rebase with 2 MiB clusters"

# A chain through a shorter intermediate: past its end the image reads
# zeroes that the intermediate decides. map agrees with qemu-img, and
# commit -b into the base writes those zeroes there (a regression: the
# base kept its old data, so it no longer read like the image).
rm -f s0.raw s1.qcow2 s2.qcow2
qemu_img create -q -f raw s0.raw 4M
qio -f raw -c 'write -P 0x11 0 4M' s0.raw
qemu_img create -q -f qcow2 -b s0.raw -F raw s1.qcow2 2M
qemu_img create -q -f qcow2 -b s1.qcow2 -F qcow2 s2.qcow2 4M
qio -c 'write -P 0x22 0 64k' s2.qcow2
qemu_img convert -O raw s2.qcow2 s2.view.raw
a=$(vstor_img map --output=json s2.qcow2) || fail "map json (shorter intermediate)"
b=$(qemu_img map --output=json s2.qcow2)
assert_eq "$a" "$b" "map --output=json through a shorter intermediate"
vstor_img commit -q -b s0.raw s2.qcow2 || fail "commit -b through a shorter intermediate"
cmp s0.raw s2.view.raw || fail "commit -b through a shorter intermediate: base differs from the image"

# ---- a loop in the chain: refused with qemu-img's message, fixable with rebase -u ----
load_chain orig
vstor_img rebase -u -b top.qcow2 -F qcow2 mid.qcow2 || fail "rebase -u making a loop"
for cmd in "commit top.qcow2" "convert -O raw top.qcow2 x.raw" "rebase -b base.raw -F raw top.qcow2" "map top.qcow2"; do
	assert_rc 1 "$VSTOR_IMG" $cmd
	assert_grep "Backing file 'top.qcow2' creates an infinite loop" "$WORKDIR/err" "$cmd on a loop"
done
vstor_img rebase -u -b base.raw -F raw mid.qcow2 || fail "rebase -u out of the loop"
same top.qcow2 orig.top.qcow2 "after the loop is undone"

# ---- an image whose backing format is not recorded (old qemu) ----
load_chain orig
python3 - mid.qcow2 <<'EOF'
import sys
f = open(sys.argv[1], "r+b")
d = bytearray(f.read(4096))
i = d.find(bytes.fromhex("e2792aca"))
assert i > 0
d[i:i + 4] = bytes.fromhex("0badf00d")  # an unknown extension: ignored
f.seek(0)
f.write(d)
EOF
qemu_img info --output=json mid.qcow2 | grep -q backing-filename-format && fail "format ext still present"
same top.qcow2 orig.top.qcow2 "probed raw backing: reads"
assert_rc 1 "$VSTOR_IMG" commit mid.qcow2
assert_grep "probing guessed raw" "$WORKDIR/err" "commit into a probed raw image is refused"
assert_grep "rebase -u -b base.raw -F raw mid.qcow2" "$WORKDIR/err" "the refusal says how to fix it"
cmp -s base.raw orig.base.raw || fail "refused commit changed the base"
vstor_img rebase -u -b base.raw -F raw mid.qcow2 || fail "recording the format"
vstor_img commit -q mid.qcow2 || fail "commit after recording the format"
same top.qcow2 orig.top.qcow2 "commit after recording the format: guest view"

# A relative backing name with ':' after a '/' is a file next to the overlay,
# not a protocol ("./a:b.qcow2"), as qemu-img resolves it.
mkdir colon
qemu_img create -q -f qcow2 'colon/a:b.qcow2' 1M
qemu-io -c 'write -P 3 0 64k' 'colon/a:b.qcow2' >/dev/null
qemu_img create -q -f qcow2 -b './a:b.qcow2' -F qcow2 colon/ov.qcow2
for c in "info colon/ov.qcow2" "map --output=json colon/ov.qcow2"; do
	# shellcheck disable=SC2086
	qemu_img $c >q.out 2>&1 || fail "qemu-img $c"
	# shellcheck disable=SC2086
	vstor_img $c >v.out 2>&1 || fail "vstor-img $c: ./a:b.qcow2 not found next to the overlay"
	diff -u q.out v.out || fail "$c differs from qemu-img's"
done
vstor_img compare colon/ov.qcow2 'colon/a:b.qcow2' >/dev/null || fail "./a:b.qcow2 reads other data"
log "ok"
