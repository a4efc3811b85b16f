#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img convert against qemu-img: raw/qcow2 round trips, sparse
# detection, -B targets, qemu-made sources (backing chain, internal snapshot
# via -l, zlib/zstd compressed clusters), -n, --target-is-zero, -m/-W,
# concatenation, -c and --progress=json.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io python3
require_vstor_img

same() { qemu_img compare -q "$1" "$2" || fail "${3:-$1 and $2} differ"; }
checked() { qemu_img check -q "$1" || fail "qemu-img check $1"; }
# zero_unallocated IMG OFFSET LEN: qemu-img map --output=json reports no data there.
zero_unallocated()
{
	qemu_img map --output=json "$1" >map.json
	python3 - "$2" "$3" <<'PY' || fail "$1: [$2, +$3) is allocated as data"
import json, sys
off, ln = int(sys.argv[1]), int(sys.argv[2])
for e in json.load(open("map.json")):
    if e["data"] and e["start"] < off + ln and off < e["start"] + e["length"]:
        sys.exit(1)
PY
}

# A raw source with data, an explicit zero run inside data and a hole.
qemu_img create -f raw s.raw 64M >/dev/null
qemu-io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 3M' -c 'write -z 6M 1M' \
	-c 'write -P 0x33 63M 1M' -c 'write -P 0x44 20M 4097' s.raw >/dev/null

# raw -> qcow2 -> raw
vstor_img convert -f raw -O qcow2 s.raw o.qcow2
checked o.qcow2
same s.raw o.qcow2
vstor_img convert -f qcow2 -O raw o.qcow2 back.raw
cmp s.raw back.raw || fail "raw -> qcow2 -> raw round trip"
# The hole and the zeroes inside data stay unallocated (-S default 4k).
zero_unallocated o.qcow2 $((1 << 20)) $((4 << 20))
zero_unallocated o.qcow2 $((6 << 20)) $((1 << 20))
zero_unallocated back.raw $((6 << 20)) $((1 << 20))
# -S 0: fully allocated, same content.
vstor_img convert -S 0 -O qcow2 s.raw full.qcow2
same s.raw full.qcow2
checked full.qcow2
qemu_img map --output=json full.qcow2 | python3 -c '
import json, sys
assert all(e["data"] for e in json.load(sys.stdin))' || fail "-S 0 left holes"
assert_fails "$VSTOR_IMG" convert -S 1000 s.raw x.raw
assert_grep "sparse" "$WORKDIR/err" "-S 1000"

# -m 1 vs -m 8 -W: identical output.
vstor_img convert -m 1 -O raw s.raw m1.raw
vstor_img convert -m 8 -W -O raw s.raw m8.raw
cmp m1.raw m8.raw || fail "-m 1 and -m 8 -W differ"
cmp m1.raw s.raw || fail "-m 1 output"
vstor_img convert -m 16 -W -O qcow2 s.raw m16.qcow2
same s.raw m16.qcow2
checked m16.qcow2
assert_fails "$VSTOR_IMG" convert -m 17 s.raw x.raw

# qemu-made backing chain: flattened, and with -B only the difference.
qemu_img create -f qcow2 base.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x44 0 8M' -c 'write -P 0x45 32M 4M' base.qcow2 >/dev/null
qemu_img create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 >/dev/null
qemu-io -f qcow2 -c 'write -P 0x55 1M 1M' -c 'write -z 3M 64k' -c 'write -P 0x66 40M 1M' \
	top.qcow2 >/dev/null
vstor_img convert -O qcow2 top.qcow2 flat.qcow2
same top.qcow2 flat.qcow2
checked flat.qcow2
qemu_img info flat.qcow2 | grep -q "backing file" && fail "flat.qcow2 has a backing file"
vstor_img convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 diff.qcow2
same top.qcow2 diff.qcow2
checked diff.qcow2
qemu_img info diff.qcow2 | grep -q "backing file: base.qcow2" || fail "-B not recorded"
flat_sz=$(stat -c %s flat.qcow2)
diff_sz=$(stat -c %s diff.qcow2)
((diff_sz * 3 < flat_sz)) || fail "-B target not small ($diff_sz vs $flat_sz)"
# The same via -o backing_file.
vstor_img convert -O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 top.qcow2 diff2.qcow2
same top.qcow2 diff2.qcow2
assert_fails "$VSTOR_IMG" convert -O qcow2 -B base.qcow2 top.qcow2 x.qcow2
assert_fails "$VSTOR_IMG" convert -O raw -B base.qcow2 -F qcow2 top.qcow2 x.raw

# Internal snapshot (-l by name, id and snapshot.name=).
qemu_img create -f qcow2 snap.qcow2 16M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' snap.qcow2 >/dev/null
qemu_img snapshot -c first snap.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 0 512K' -c 'write -P 0x33 4M 1M' snap.qcow2 >/dev/null
qemu_img convert -O raw -l first snap.qcow2 want-first.raw
for key in first 1 snapshot.name=first snapshot.id=1; do
	vstor_img convert -O raw -l "$key" snap.qcow2 "got-$key.raw"
	cmp want-first.raw "got-$key.raw" || fail "-l $key"
done
vstor_img convert -O raw snap.qcow2 active.raw
same snap.qcow2 active.raw
assert_fails "$VSTOR_IMG" convert -l nope snap.qcow2 x.raw

# qemu-made compressed images (zlib, zstd).
for ct in zlib zstd; do
	qemu_img convert -c -O qcow2 -o compression_type=$ct s.raw "q-$ct.qcow2"
	vstor_img convert -O raw "q-$ct.qcow2" "q-$ct.raw"
	cmp s.raw "q-$ct.raw" || fail "compressed ($ct) source"
	vstor_img convert -O qcow2 "q-$ct.qcow2" "q-$ct-out.qcow2"
	same s.raw "q-$ct-out.qcow2"
	checked "q-$ct-out.qcow2"
done

# -c: compression by vstor, serial and parallel; compressed clusters are
# packed into host clusters like qemu-img packs them, so the output is about
# the size of qemu-img's.
for ct in zlib zstd; do
	for par in "-m 1" "-m 8 -W"; do
		vstor_img convert -c $par -O qcow2 -o compression_type=$ct s.raw "c-$ct.qcow2"
		checked "c-$ct.qcow2"
		same s.raw "c-$ct.qcow2"
		qemu_img info "c-$ct.qcow2" | grep -q "compression type: $ct" ||
			fail "-c compression_type=$ct"
		qemu_img check "c-$ct.qcow2" | grep -q "[1-9][0-9.]*% compressed clusters" ||
			fail "-c wrote no compressed cluster ($ct)"
		v=$(stat -c %s "c-$ct.qcow2")
		# One CPU (one compression worker): the same content, a valid image.
		if [[ $par == "-m 8 -W" ]] && command -v taskset >/dev/null; then
			taskset -c 0 "$VSTOR_IMG" convert -c $par -O qcow2 -o compression_type=$ct \
				s.raw "c1-$ct.qcow2" || fail "-c on one CPU ($ct)"
			checked "c1-$ct.qcow2"
			same "c-$ct.qcow2" "c1-$ct.qcow2" "-c on one CPU and on all ($ct)"
		fi
		q=$(stat -c %s "q-$ct.qcow2")
		((v <= q + q / 33 + 65536)) ||
			fail "-c $par ($ct): $v bytes, qemu-img wrote $q (more than 3% apart)"
	done
done
assert_fails "$VSTOR_IMG" convert -c -O raw s.raw x.raw
assert_grep "compression not supported by this format" "$WORKDIR/err" "-c -O raw"

# -n into an existing image (garbage everywhere: zeroes must be written).
qemu_img create -f qcow2 n.qcow2 64M >/dev/null
qemu-io -f qcow2 -c 'write -P 0x77 0 64M' n.qcow2 >/dev/null
vstor_img convert -n -O qcow2 s.raw n.qcow2
same s.raw n.qcow2
checked n.qcow2
qemu-io -f raw -c 'write -P 0x77 0 64M' m1.raw >/dev/null
vstor_img convert -n s.raw m1.raw
cmp s.raw m1.raw || fail "-n into raw"
qemu_img create -f raw small.raw 1M >/dev/null
assert_fails "$VSTOR_IMG" convert -n -O raw s.raw small.raw

# --target-is-zero: the zero ranges are skipped, the result is right.
qemu_img create -f qcow2 tz.qcow2 64M >/dev/null
vstor_img convert -n --target-is-zero -O qcow2 s.raw tz.qcow2
same s.raw tz.qcow2
checked tz.qcow2
zero_unallocated tz.qcow2 $((1 << 20)) $((4 << 20))
assert_fails "$VSTOR_IMG" convert --target-is-zero -O qcow2 s.raw x.qcow2
assert_grep "requires use of -n" "$WORKDIR/err" "--target-is-zero without -n"

# Several sources are concatenated.
qemu_img create -f raw c1.raw 3M >/dev/null
qemu-io -f raw -c 'write -P 0x81 0 3M' c1.raw >/dev/null
qemu_img convert -O qcow2 c1.raw c1.qcow2
vstor_img convert -O qcow2 c1.raw s.raw c1.qcow2 cat.qcow2
qemu_img convert -O qcow2 c1.raw s.raw c1.qcow2 want-cat.qcow2
same want-cat.qcow2 cat.qcow2
checked cat.qcow2

# --progress=json: one JSON object a line, the last with done == total.
vstor_img convert --progress=json -O qcow2 s.raw p.qcow2 2>progress.txt
python3 - <<'PY' || fail "--progress=json output"
import json
lines = [json.loads(l) for l in open("progress.txt") if l.strip()]
assert lines, "no progress lines"
for o in lines:
    assert set(o) == {"done", "total", "rate"}, o
last = lines[-1]
assert last["done"] == last["total"] == 64 << 20, last
PY
vstor_img convert -q -p -O raw s.raw q.raw >out.txt 2>&1
[[ ! -s out.txt ]] || fail "-q printed something"
# -p prints qemu-img's progress on stdout even when it is not a terminal.
vstor_img convert -p -O raw s.raw p.raw >out.txt 2>err.txt
assert_grep '(0.00/100%)' out.txt "convert -p start"
assert_grep '(100.00/100%)' out.txt "convert -p end"
[[ ! -s err.txt ]] || fail "convert -p wrote to stderr"

# Errors.
assert_fails "$VSTOR_IMG" convert nope.raw x.raw
assert_grep "Could not open 'nope.raw'" "$WORKDIR/err" "missing source"
assert_fails "$VSTOR_IMG" convert s.raw
log "ok"
