#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A catalogue of corrupt qcow2 images, made by script: qemu-img creates an
# image, a few bytes of metadata are overwritten, and vstor's check must
# count what `qemu-img check --output=json` counts (corruptions, leaks,
# check errors, cluster statistics, exit code). Then both repair a copy
# with -r all: vstor's repaired image must be as clean for qemu-img as
# qemu's own repair, and read the same data.
#
# The checker is `vstor-img check` when the CLI is built, else the test
# helper tests/unit/qcow2-check/qcow2-check-tool (same function, same output).
#
# VSTOR_CORRUPT_ONLY=name restricts the run to one case.

. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3

CHECKER=()
if [[ -n ${VSTOR_IMG:-} && -x $VSTOR_IMG ]] || [[ -x $VS_BUILD_DIR/cli/vstor-img ]]; then
	require_vstor_img
	CHECKER=("$VSTOR_IMG" check --output=json)
	CHECKER_FIX=("$VSTOR_IMG" check --output=json -r)
else
	tool=${VSTOR_QCOW2_CHECK_TOOL:-$VS_BUILD_DIR/tests/unit/qcow2-check/qcow2-check-tool}
	[[ -x $tool ]] || skip_or_fail "neither vstor-img nor qcow2-check-tool is built"
	CHECKER=("$tool")
	CHECKER_FIX=("$tool" -r)
fi

# q2 CMD FILE ARGS...: read and patch qcow2 metadata (big-endian fields).
cat >q2.py <<'EOF'
import struct, sys

cmd, path = sys.argv[1], sys.argv[2]
args = [int(a, 0) for a in sys.argv[3:]] if cmd != "hdr" else []

def rd(f, off, n):
    f.seek(off)
    b = f.read(n)
    return b + bytes(n - len(b))

with open(path, "r+b") as f:
    h = rd(f, 0, 112)
    cluster_bits = struct.unpack(">I", h[20:24])[0]
    cs = 1 << cluster_bits
    fields = {
        "cluster_size": cs,
        "size": struct.unpack(">Q", h[24:32])[0],
        "l1_size": struct.unpack(">I", h[36:40])[0],
        "l1_offset": struct.unpack(">Q", h[40:48])[0],
        "reftable_offset": struct.unpack(">Q", h[48:56])[0],
        "nb_snapshots": struct.unpack(">I", h[60:64])[0],
        "snapshots_offset": struct.unpack(">Q", h[64:72])[0],
        "refcount_order": struct.unpack(">I", h[96:100])[0]
        if struct.unpack(">I", h[4:8])[0] >= 3 else 4,
        "incompat": struct.unpack(">Q", h[72:80])[0],
    }
    extl2 = fields["incompat"] & 16
    l2es = 16 if extl2 else 8
    def be64(off):
        return struct.unpack(">Q", rd(f, off, 8))[0]
    def l1e(i):
        return be64(fields["l1_offset"] + 8 * i)
    def l2_off(i):
        return l1e(i) & 0x00fffffffffffe00
    def refblock(i):
        return be64(fields["reftable_offset"] + 8 * i) & ~0x1ff & (2**64 - 1)
    def rc_entry_off(cluster):
        # byte offset of a 16-bit refcount entry (refcount_order 4 only)
        assert fields["refcount_order"] == 4
        per_block = cs // 2
        return refblock(cluster // per_block) + 2 * (cluster % per_block)
    if cmd == "hdr":
        print(fields[sys.argv[3]])
    elif cmd == "l1e":
        print(l1e(args[0]))
    elif cmd == "l2off":
        print(l2_off(args[0]))
    elif cmd == "l2e":
        print(be64(l2_off(args[0]) + l2es * args[1]))
    elif cmd == "l2e_off":  # byte offset of L2 entry (l1 index, l2 index)
        print(l2_off(args[0]) + l2es * args[1])
    elif cmd == "refblock":
        print(refblock(args[0]))
    elif cmd == "rc_off":
        print(rc_entry_off(args[0]))
    elif cmd == "sn_l1_offset_off":  # byte offset of snapshot 0's l1_table_offset
        print(fields["snapshots_offset"])
    elif cmd in ("put64", "put32", "put16", "put8"):
        fmt = {"put64": ">Q", "put32": ">I", "put16": ">H", "put8": ">B"}[cmd]
        f.seek(args[0])
        f.write(struct.pack(fmt, args[1] & (2**(8 * struct.calcsize(fmt)) - 1)))
    else:
        sys.exit("unknown command " + cmd)
EOF
q2() { python3 q2.py "$@"; }

# Summary of a check's JSON output and exit code, one line, comparable.
cat >summary.py <<'EOF'
import json, sys
rc = sys.argv[2]
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("rc=%s nojson" % rc)
    sys.exit(0)
keys = ["check-errors", "corruptions", "leaks", "corruptions-fixed", "leaks-fixed",
        "image-end-offset", "total-clusters", "allocated-clusters",
        "fragmented-clusters", "compressed-clusters"]
print("rc=%s " % rc + " ".join("%s=%s" % (k, d.get(k, 0)) for k in keys))
EOF

# run_summary OUT CMD...: run a check, print its summary line.
run_summary()
{
	local out=$1 rc=0
	shift
	timeout 300 "$@" >"$out.json" 2>"$out.err" || rc=$?
	python3 summary.py "$out.json" "$rc"
}

# The human output (stdout, stderr, exit code) of check is compared line by
# line when the checker is vstor-img (the check tool prints no human report).
LINES_TOOL=
# Known differences in those lines:
# - refblock-past-eof: for a refblock far past the end of the file, qemu-img
#   -r all grows the file to it (sparse) before rebuilding; vstor refuses to
#   grow a file by more than twice its size + 64 MiB on a hostile offset and
#   rebuilds straight away ("ERROR could not resize image: File too large").
# - huge-size: vstor's open error says why the size is too big.
KNOWN_LINE_DIFF="refblock-past-eof huge-size"
[[ ${CHECKER[0]} == "${VSTOR_IMG:-}" ]] && LINES_TOOL=$VSTOR_IMG

# same_lines NAME REPAIR QIMG [VIMG]: qemu-img check [-r REPAIR] and
# vstor-img's print the same lines and exit alike (on copies when repairing).
same_lines()
{
	local name=$1 fix=$2 qimg=$3 vimg=${4:-$3} qrc=0 vrc=0 tag=${2:-check}
	timeout 300 qemu-img check ${fix:+-r "$fix"} "$qimg" >"$name.$tag.qout" \
		2>"$name.$tag.qerr" || qrc=$?
	timeout 300 "$LINES_TOOL" check ${fix:+-r "$fix"} "$vimg" >"$name.$tag.vout" \
		2>"$name.$tag.verr" || vrc=$?
	sed -i "s|$qimg|IMG|g; s|^qemu-img: |PROG: |" "$name.$tag.qout" "$name.$tag.qerr"
	sed -i "s|$vimg|IMG|g; s|^vstor-img: |PROG: |" "$name.$tag.vout" "$name.$tag.verr"
	# A rebuild lays the new refcount structures out its own way: the image
	# end offset, the allocation statistics and the leaks of the old
	# structures may differ after "Rebuilding refcount structure".
	if [[ $fix == all ]] && grep -q '^Rebuilding refcount structure' "$name.$tag.qerr"; then
		for f in "$name.$tag".{q,v}{out,err}; do
			sed -i '/^Image end offset\|allocated, .*fragmented/d' "$f"
			sed -i '/^Rebuilding refcount structure/,$ { /^Repairing cluster\|^Leaked cluster/d }' "$f"
		done
	fi
	if [[ $qrc != "$vrc" ]] || ! cmp -s "$name.$tag.qout" "$name.$tag.vout" ||
		! cmp -s "$name.$tag.qerr" "$name.$tag.verr"; then
		log "$name: check ${fix:+-r $fix }output differs (exit qemu-img $qrc, vstor $vrc)"
		diff -u "$name.$tag.qerr" "$name.$tag.verr" | sed 's/^/  stderr: /' | head -30 >&2
		diff -u "$name.$tag.qout" "$name.$tag.vout" | sed 's/^/  stdout: /' | head -30 >&2
		return 1
	fi
	return 0
}

NFAIL=0
NCASES=0

# verify NAME FILE: compare vstor's and qemu-img's check, then their repairs.
verify()
{
	local name=$1 img=$2 q v qr vr qpost vpost
	NCASES=$((NCASES + 1))

	q=$(run_summary "$name.q" qemu-img check --output=json "$img")
	v=$(run_summary "$name.v" "${CHECKER[@]}" "$img")
	if [[ $q != "$v" ]]; then
		log "$name: check differs"
		log "  qemu-img: $q"
		log "  vstor:    $v"
		sed 's/^/  vstor stderr: /' "$name.v.err" | head -20 >&2
		NFAIL=$((NFAIL + 1))
		return 0
	fi

	# The per-cluster lines qemu-img prints on stderr, and the human report.
	if [[ -n $LINES_TOOL && " $KNOWN_LINE_DIFF " == *" $name "* ]]; then
		log "$name: note: check lines not compared (known difference)"
	elif [[ -n $LINES_TOOL ]] && ! same_lines "$name" "" "$img"; then
		NFAIL=$((NFAIL + 1))
		return 0
	fi

	# Repair copies with both tools; qemu's repair is the reference.
	cp "$img" "$name.qfix.qcow2"
	cp "$img" "$name.vfix.qcow2"
	if [[ -n $LINES_TOOL && " $KNOWN_LINE_DIFF " != *" $name "* ]]; then
		# The repair in human form: its lines and report must be qemu-img's.
		if ! same_lines "$name" all "$name.qfix.qcow2" "$name.vfix.qcow2"; then
			NFAIL=$((NFAIL + 1))
			return 0
		fi
		qr=same vr=same
	else
		qr=$(run_summary "$name.qfix" qemu-img check --output=json -r all "$name.qfix.qcow2")
		vr=$(run_summary "$name.vfix" "${CHECKER_FIX[@]}" all "$name.vfix.qcow2")
	fi
	qpost=$(run_summary "$name.qpost" qemu-img check --output=json "$name.qfix.qcow2")
	vpost=$(run_summary "$name.vpost" qemu-img check --output=json "$name.vfix.qcow2")
	# What remains after the repair is what the repair could not fix: the
	# same for both (the image end may differ: the layouts of rebuilt
	# refcount structures are not compared).
	if [[ ${qpost%% image-end-offset*} != "${vpost%% image-end-offset*}" ]]; then
		log "$name: after -r all, qemu-img check differs"
		log "  repaired by qemu-img: $qpost"
		log "  repaired by vstor:    $vpost"
		log "  (vstor -r all said: $vr; qemu-img -r all said: $qr)"
		NFAIL=$((NFAIL + 1))
		return 0
	fi
	if [[ $qpost == rc=0* ]] &&
		! timeout 300 qemu-img compare -q "$name.qfix.qcow2" "$name.vfix.qcow2"; then
		log "$name: repaired images read differently"
		NFAIL=$((NFAIL + 1))
		return 0
	fi
	if [[ ${qr%% image-end-offset*} != "${vr%% image-end-offset*}" ]]; then
		# Fixed counts may legitimately differ in a rebuild; note it.
		log "$name: note: -r all reports differ: qemu-img: $qr / vstor: $vr"
	fi
	log "$name: ok ($v)"
}

# want NAME: whether to run case NAME. VSTOR_CORRUPT_HALF=odd|even runs
# every other case of the catalogue (the default tier: the plain build runs
# one half and the sanitizer build the other, so a CI run covers all of it
# once; qcow2-corrupt-full in the long tier runs all of it).
CASE_NO=0
want()
{
	CASE_NO=$((CASE_NO + 1))
	[[ -z ${VSTOR_CORRUPT_ONLY:-} || $VSTOR_CORRUPT_ONLY == "$1" ]] || return 1
	case ${VSTOR_CORRUPT_HALF:-all} in
	odd) ((CASE_NO % 2 == 1)) ;;
	even) ((CASE_NO % 2 == 0)) ;;
	*) true ;;
	esac
}

# mk NAME [create options] SIZE: a fresh image with some data in it.
mk()
{
	local name=$1 opts=$2 size=$3
	qemu_img create -q -f qcow2 ${opts:+-o "$opts"} "$name.qcow2" "$size"
	qemu-io -f qcow2 -c 'write -P 0x11 0 192k' -c 'write -P 0x22 1M 64k' \
		-c 'write -P 0x33 5M 8k' "$name.qcow2" >/dev/null
}

cs_of() { q2 hdr "$1" cluster_size; }

# ---- clean images of every flavour ----------------------------------------

for flavour in \
	"plain|" \
	"v2|compat=0.10" \
	"c512|cluster_size=512" \
	"c2M|cluster_size=2M" \
	"c4k|cluster_size=4096" \
	"rc1|refcount_bits=1" \
	"rc2|refcount_bits=2" \
	"rc4|refcount_bits=4" \
	"rc8|refcount_bits=8" \
	"rc32|refcount_bits=32" \
	"rc64|refcount_bits=64" \
	"extl2|extended_l2=on,cluster_size=64k" \
	"extl2-c16k|extended_l2=on,cluster_size=16k" \
	"prealloc|preallocation=metadata" \
	"zstd|compression_type=zstd"; do
	name=clean-${flavour%%|*}
	want "$name" || continue
	mk "$name" "${flavour#*|}" 64M
	verify "$name" "$name.qcow2"
done

if want clean-compressed; then
	qemu_img create -q -f qcow2 clean-compressed-src.qcow2 16M
	qemu-io -c 'write -P 0x5a 0 4M' -c 'write -P 0 6M 1M' clean-compressed-src.qcow2 >/dev/null
	qemu_img convert -c -O qcow2 clean-compressed-src.qcow2 clean-compressed.qcow2
	verify clean-compressed clean-compressed.qcow2
fi

if want clean-snapshots; then
	mk clean-snapshots "" 64M
	qemu_img snapshot -c s1 clean-snapshots.qcow2
	qemu-io -c 'write -P 0x44 0 64k' -c 'write -P 0x55 20M 64k' clean-snapshots.qcow2 >/dev/null
	qemu_img snapshot -c s2 clean-snapshots.qcow2
	qemu-io -c 'write -P 0x66 64k 64k' clean-snapshots.qcow2 >/dev/null
	verify clean-snapshots clean-snapshots.qcow2
fi

if want clean-bitmaps; then
	mk clean-bitmaps "" 64M
	qemu_img bitmap --add clean-bitmaps.qcow2 b0
	qemu_img bitmap --add -g 128k clean-bitmaps.qcow2 b1
	# Put set bits in the bitmap so it gets data clusters.
	qemu_img create -q -f qcow2 bm-src.qcow2 64M
	qemu-io -c 'write 0 32M' bm-src.qcow2 >/dev/null
	qemu_img bitmap --merge b0 -b bm-src.qcow2 -F qcow2 clean-bitmaps.qcow2 b1 2>/dev/null ||
		true
	verify clean-bitmaps clean-bitmaps.qcow2
fi

if want clean-zero; then
	mk clean-zero "" 64M
	qemu-io -c 'write -z 0 64k' -c 'write -z 2M 128k' clean-zero.qcow2 >/dev/null
	verify clean-zero clean-zero.qcow2
fi

# ---- leaks -----------------------------------------------------------------

if want leak-free-cluster; then
	mk leak-free-cluster "" 64M
	f=leak-free-cluster.qcow2
	# A cluster past the last used one gets refcount 1: leaked.
	end=$(( $(stat -c %s $f) / $(cs_of $f) ))
	truncate -s $(( (end + 3) * $(cs_of $f) )) $f
	q2 put16 $f "$(q2 rc_off $f $((end + 1)))" 1
	q2 put16 $f "$(q2 rc_off $f $((end + 2)))" 5
	verify leak-free-cluster $f
fi

if want leak-refcount-2; then
	mk leak-refcount-2 "" 64M
	f=leak-refcount-2.qcow2
	# A used data cluster gets refcount 2: leak, and its COPIED flag is wrong.
	data=$(( ($(q2 l2e $f 0 0) & 0x00fffffffffffe00) / $(cs_of $f) ))
	q2 put16 $f "$(q2 rc_off $f $data)" 2
	verify leak-refcount-2 $f
fi

# ---- corruptions -------------------------------------------------------------

if want zero-refcount-data; then
	mk zero-refcount-data "" 64M
	f=zero-refcount-data.qcow2
	data=$(( ($(q2 l2e $f 0 1) & 0x00fffffffffffe00) / $(cs_of $f) ))
	q2 put16 $f "$(q2 rc_off $f $data)" 0
	verify zero-refcount-data $f
fi

if want zero-refcount-l2; then
	mk zero-refcount-l2 "" 64M
	f=zero-refcount-l2.qcow2
	q2 put16 $f "$(q2 rc_off $f $(( $(q2 l2off $f 0) / $(cs_of $f) )))" 0
	verify zero-refcount-l2 $f
fi

if want low-refcount-snapshot; then
	mk low-refcount-snapshot "" 64M
	f=low-refcount-snapshot.qcow2
	qemu_img snapshot -c s1 $f
	# A cluster shared with a snapshot (refcount 2) drops to 1.
	data=$(( ($(q2 l2e $f 0 0) & 0x00fffffffffffe00) / $(cs_of $f) ))
	q2 put16 $f "$(q2 rc_off $f $data)" 1
	verify low-refcount-snapshot $f
fi

if want l2-past-eof; then
	mk l2-past-eof "" 64M
	f=l2-past-eof.qcow2
	q2 put64 $f "$(q2 l2e_off $f 0 2)" $(( (1 << 63) | (1 << 40) ))
	verify l2-past-eof $f
fi

if want l2-into-header; then
	mk l2-into-header "" 64M
	f=l2-into-header.qcow2
	q2 put64 $f "$(q2 l2e_off $f 0 2)" $(( (1 << 63) | 0x200 ))
	verify l2-into-header $f
fi

if want l2-onto-l1; then
	mk l2-onto-l1 "" 64M
	f=l2-onto-l1.qcow2
	q2 put64 $f "$(q2 l2e_off $f 0 2)" $(( (1 << 63) | $(q2 hdr $f l1_offset) ))
	verify l2-onto-l1 $f
fi

if want l2-unaligned; then
	mk l2-unaligned "" 64M
	f=l2-unaligned.qcow2
	e=$(q2 l2e $f 0 1)
	q2 put64 $f "$(q2 l2e_off $f 0 1)" $(( e + 0x200 ))
	verify l2-unaligned $f
fi

if want l2-zero-unaligned; then
	mk l2-zero-unaligned "" 64M
	f=l2-zero-unaligned.qcow2
	e=$(q2 l2e $f 0 1)
	# A preallocated zero cluster with an unaligned offset: -r all makes it a plain zero.
	q2 put64 $f "$(q2 l2e_off $f 0 1)" $(( (e + 0x200) | 1 ))
	verify l2-zero-unaligned $f
fi

if want l2-reserved-bits; then
	mk l2-reserved-bits "" 64M
	f=l2-reserved-bits.qcow2
	e=$(q2 l2e $f 0 0)
	q2 put64 $f "$(q2 l2e_off $f 0 0)" $(( e | (1 << 57) | 2 ))
	verify l2-reserved-bits $f
fi

if want l1-reserved-bits; then
	mk l1-reserved-bits "" 64M
	f=l1-reserved-bits.qcow2
	e=$(q2 l1e $f 0)
	q2 put64 $f "$(q2 hdr $f l1_offset)" $(( e | (1 << 60) ))
	verify l1-reserved-bits $f
fi

if want l1-unaligned; then
	mk l1-unaligned "" 64M
	f=l1-unaligned.qcow2
	e=$(q2 l1e $f 0)
	q2 put64 $f "$(q2 hdr $f l1_offset)" $(( e + 0x400 ))
	verify l1-unaligned $f
fi

if want l1-past-eof; then
	mk l1-past-eof "" 64M
	f=l1-past-eof.qcow2
	q2 put64 $f "$(q2 hdr $f l1_offset)" $(( (1 << 63) | (1 << 44) ))
	verify l1-past-eof $f
fi

if want l2-shared; then
	mk l2-shared "" 2G
	f=l2-shared.qcow2
	# Two L1 entries point at the same L2 table.
	q2 put64 $f "$(( $(q2 hdr $f l1_offset) + 8 ))" "$(q2 l1e $f 0)"
	verify l2-shared $f
fi

if want copied-cleared; then
	mk copied-cleared "" 64M
	f=copied-cleared.qcow2
	for i in 0 1 2; do
		e=$(q2 l2e $f 0 $i)
		q2 put64 $f "$(q2 l2e_off $f 0 $i)" $(( e & ~(1 << 63) ))
	done
	e=$(q2 l1e $f 0)
	q2 put64 $f "$(q2 hdr $f l1_offset)" $(( e & ~(1 << 63) ))
	verify copied-cleared $f
fi

if want compressed-copied; then
	qemu_img create -q -f qcow2 cc-src.qcow2 16M
	qemu-io -c 'write -P 0x5a 0 1M' cc-src.qcow2 >/dev/null
	qemu_img convert -c -O qcow2 cc-src.qcow2 compressed-copied.qcow2
	f=compressed-copied.qcow2
	e=$(q2 l2e $f 0 3)
	q2 put64 $f "$(q2 l2e_off $f 0 3)" $(( e | (1 << 63) ))
	verify compressed-copied $f
fi

if want reftable-entry-zeroed; then
	mk reftable-entry-zeroed "" 64M
	f=reftable-entry-zeroed.qcow2
	q2 put64 $f "$(q2 hdr $f reftable_offset)" 0
	verify reftable-entry-zeroed $f
fi

if want refblock-past-eof; then
	mk refblock-past-eof "" 64M
	f=refblock-past-eof.qcow2
	# A second refblock entry far past the end of the file.
	q2 put64 $f "$(( $(q2 hdr $f reftable_offset) + 8 ))" $(( 1 << 30 ))
	verify refblock-past-eof $f
fi

if want refblock-unaligned; then
	mk refblock-unaligned "" 64M
	f=refblock-unaligned.qcow2
	q2 put64 $f "$(( $(q2 hdr $f reftable_offset) + 8 ))" $(( (1 << 20) + 0x1000 ))
	verify refblock-unaligned $f
fi

if want refblock-onto-l2; then
	mk refblock-onto-l2 "" 64M
	f=refblock-onto-l2.qcow2
	q2 put64 $f "$(( $(q2 hdr $f reftable_offset) + 8 ))" "$(q2 l2off $f 0)"
	verify refblock-onto-l2 $f
fi

if want l2-onto-refblock; then
	mk l2-onto-refblock "" 64M
	f=l2-onto-refblock.qcow2
	q2 put64 $f "$(q2 l2e_off $f 0 2)" $(( (1 << 63) | $(q2 refblock $f 0) ))
	verify l2-onto-refblock $f
fi

if want reftable-zeroed-many-refblocks; then
	# 512-byte clusters: one refblock covers 128 KiB, so the rebuild writes
	# many refblocks and a reftable of several clusters.
	qemu_img create -q -f qcow2 -o cluster_size=512 reftable-zeroed-many-refblocks.qcow2 64M
	f=reftable-zeroed-many-refblocks.qcow2
	qemu-io -c 'write -P 0x77 0 8M' -c 'write -P 0x78 32M 4M' $f >/dev/null
	rt=$(q2 hdr $f reftable_offset)
	for i in $(seq 0 63); do q2 put64 $f $((rt + 8 * i)) 0; done
	verify reftable-zeroed-many-refblocks $f
fi

if want reftable-missing; then
	# No refcount table at all (0 clusters): only a check may open it, and
	# -r all rebuilds the refcount structure.
	mk reftable-missing "" 64M
	f=reftable-missing.qcow2
	q2 put32 $f 56 0
	verify reftable-missing $f
fi

if want reftable-past-eof; then
	# The refcount table lies past the end of the file: it reads as zeroes.
	mk reftable-past-eof "" 64M
	f=reftable-past-eof.qcow2
	q2 put64 $f 48 $(( 1 << 40 ))
	verify reftable-past-eof $f
fi

if want truncated; then
	mk truncated "" 64M
	f=truncated.qcow2
	truncate -s $(( $(stat -c %s $f) - 2 * $(cs_of $f) )) $f
	verify truncated $f
fi

if want truncated-mid-cluster; then
	mk truncated-mid-cluster "" 64M
	f=truncated-mid-cluster.qcow2
	truncate -s $(( $(stat -c %s $f) - 4096 )) $f
	verify truncated-mid-cluster $f
fi

if want huge-size; then
	mk huge-size "" 64M
	f=huge-size.qcow2
	q2 put64 $f 24 $(( 1 << 60 ))
	verify huge-size $f
fi

if want dirty-lazy; then
	mk dirty-lazy "lazy_refcounts=on" 64M
	f=dirty-lazy.qcow2
	# What a crash with lazy refcounts leaves: dirty bit, refcounts missing.
	data=$(( ($(q2 l2e $f 0 2) & 0x00fffffffffffe00) / $(cs_of $f) ))
	q2 put16 $f "$(q2 rc_off $f $data)" 0
	q2 put64 $f 72 $(( $(q2 hdr $f incompat) | 1 ))
	verify dirty-lazy $f
fi

if want corrupt-bit; then
	mk corrupt-bit "" 64M
	f=corrupt-bit.qcow2
	q2 put64 $f 72 $(( $(q2 hdr $f incompat) | 2 ))
	verify corrupt-bit $f
	# -r all on an image without corruption clears the corrupt bit, as qemu-img does.
	if [[ $(q2 hdr corrupt-bit.vfix.qcow2 incompat) != "$(q2 hdr corrupt-bit.qfix.qcow2 incompat)" ]]
	then
		log "corrupt-bit: -r all left incompatible features" \
			"$(q2 hdr corrupt-bit.vfix.qcow2 incompat), qemu-img left" \
			"$(q2 hdr corrupt-bit.qfix.qcow2 incompat)"
		NFAIL=$((NFAIL + 1))
	fi
fi

if want snapshot-l1-unaligned; then
	mk snapshot-l1-unaligned "" 64M
	f=snapshot-l1-unaligned.qcow2
	qemu_img snapshot -c s1 $f
	off=$(q2 sn_l1_offset_off $f)
	q2 put64 $f "$off" $(( $(q2 l1e $f 0) * 0 + $(python3 -c "
import struct;f=open('$f','rb');f.seek($off);print(struct.unpack('>Q',f.read(8))[0])") + 0x200 ))
	verify snapshot-l1-unaligned $f
fi

if want snapshot-l1-too-big; then
	mk snapshot-l1-too-big "" 64M
	f=snapshot-l1-too-big.qcow2
	qemu_img snapshot -c s1 $f
	q2 put32 $f $(( $(q2 sn_l1_offset_off $f) + 8 )) $(( 1 << 30 ))
	verify snapshot-l1-too-big $f
fi

if want extl2-bitmap-bad; then
	mk extl2-bitmap-bad "extended_l2=on" 64M
	f=extl2-bitmap-bad.qcow2
	# An allocated entry whose bitmap says a subcluster is both data and zero.
	off=$(q2 l2e_off $f 0 0)
	q2 put64 $f $((off + 8)) $(( (1 << 32) | 1 ))
	# An unallocated entry with allocation bits.
	off=$(q2 l2e_off $f 0 9)
	q2 put64 $f $((off + 8)) 3
	verify extl2-bitmap-bad $f
fi

log "$NCASES of $CASE_NO cases (${VSTOR_CORRUPT_HALF:-all}), $NFAIL differ from qemu-img"
[[ $NFAIL == 0 ]] || fail "$NFAIL of $NCASES cases differ from qemu-img"
