#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Table-driven comparison with qemu-img (the oracle): each row is one
# command line, run by qemu-img and by vstor-img on the same inputs. Their
# exit codes, stdout and stderr must be equal (after the program name and
# the output file names are normalised), and so must the images they write
# (qemu-img compare, and qemu-img info --output=json without the fields
# that name or measure the file).
#
# In a row, @N names an output file (o@N for qemu-img, v@N for vstor-img);
# the inputs are made below. VSTOR_FIDELITY_ONLY=SUBSTRING runs the rows
# that contain it.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-fidelity.sh"

require_tool qemu-img qemu-io python3
require_vstor_img

# Inputs, shared by both tools (read-only for them).
qemu_img create -q -f qcow2 src.qcow2 4M
qemu-io -c 'write -P 7 0 1M' -c 'write -P 9 2M 512k' -c 'write -z 3M 64k' src.qcow2 >/dev/null
qemu_img convert -O raw src.qcow2 src.raw
truncate -s 1000 odd.raw
printf 'odd' | dd of=odd.raw conv=notrunc status=none
# Rows that must fail without touching it resize this one.
cp odd.raw scratch.raw
# Rows that change an image get a copy each (oN for qemu-img, vN for vstor-img).
for n in 72 73 74 75; do
	cp odd.raw o$n
	cp odd.raw v$n
done
# Zero runs shorter than a cluster (convert -S), and a rebase onto a base
# whose content differs from the old one in data, zero and unallocated
# clusters: which clusters the result allocates, and as data or zero.
qemu_img create -q -f raw sparse.raw 1M
qemu-io -f raw -c 'write -P 1 0 4k' -c 'write -P 2 132k 4k' -c 'write -P 3 200k 8k' \
	-c 'write -P 4 256k 64k' -c 'write -z 264k 8k' sparse.raw >/dev/null
qemu_img create -q -f qcow2 base1.qcow2 1M
qemu-io -c 'write -P 1 0 256k' -c 'write -P 5 512k 64k' base1.qcow2 >/dev/null
qemu_img create -q -f qcow2 base2.qcow2 1M
qemu-io -c 'write -P 1 0 64k' -c 'write -P 6 64k 64k' -c 'write -P 0 128k 64k' base2.qcow2 >/dev/null
qemu_img create -q -f qcow2 -b base1.qcow2 -F qcow2 overlay.qcow2
qemu-io -c 'write -P 7 192k 64k' overlay.qcow2 >/dev/null
for n in 84 85 86 87; do
	qemu_img create -q -f qcow2 o$n 1M
	cp o$n v$n
done
for n in 88 89; do
	cp overlay.qcow2 o$n
	cp overlay.qcow2 v$n
done
# rebase -p: qemu-img's progress lines (its walk in steps of 2 MiB, cut at
# allocation changes and at the ends of the old and new backing files) on
# an overlay of a larger base, onto a smaller and a larger new base.
qemu_img create -q -f qcow2 base7.qcow2 7M
qemu-io -c 'write -P 1 0 3M' base7.qcow2 >/dev/null
qemu_img create -q -f qcow2 base9.qcow2 9M
qemu_img create -q -f qcow2 -b base7.qcow2 -F qcow2 mixed.qcow2
qemu-io -c 'write -P 2 1M 64k' -c 'write -P 3 5M 1M' mixed.qcow2 >/dev/null
for n in 110 111 112 113; do
	cp overlay.qcow2 o$n
	cp overlay.qcow2 v$n
done
for n in 114 115 116; do
	cp mixed.qcow2 o$n
	cp mixed.qcow2 v$n
done
# An overlay whose backing file is named by a json: name (as libvirt and
# qemu-img record it), made by qemu-img.
qemu_img create -q -f qcow2 -F qcow2 \
	-b 'json:{"driver":"qcow2","file":{"driver":"file","filename":"base1.qcow2"}}' json-ov.qcow2
qemu-io -c 'write -P 8 64k 64k' json-ov.qcow2 >/dev/null
# vmdk (read for import): info lists the extents as qemu-img does.
qemu_img create -q -f vmdk mono.vmdk 4M
qemu_img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 4M
qemu_img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 3G
qemu_img create -q -f vmdk -o subformat=streamOptimized stream.vmdk 4M

ROWS=$(
	cat <<'EOF'
dd if=src.qcow2 of=@1
dd -O qcow2 if=src.qcow2 of=@2 bs=64k count=20 skip=4
dd if=src.qcow2
dd of=@3
dd if=src.qcow2 of=@3 bs=0
dd if=src.qcow2 of=@3 bs=3G
dd if=src.qcow2 of=@3 foo=1
dd if=src.qcow2 of=@3 conv=notrunc
dd if=src.qcow2 of=@3 bs
dd if=src.qcow2 of=@3 bs=1k count=abc
dd bs=1k if=src.qcow2 of=@3 skip=-1
dd if=src.qcow2 of=@3 count=99999999999999999999
dd if=nonexistent of=@4
dd -f raw if=src.qcow2 of=@5 count=1
dd if=src.qcow2 of=@6 skip=100000
dd if=odd.raw of=@7 bs=3
dd if=src.qcow2 of=@8 bs=1M count=2
dd if=src.qcow2 of=@9 bs=512 count=1 count=2
dd if=src.qcow2 of=@10 bs=1.5k
dd -O qcow2 -o cluster_size=4k if=src.qcow2 of=@11
dd if=src.qcow2 of=@12 count=0
dd if=src.qcow2 of=@13 skip=1 bs=1M
dd -O foo if=src.qcow2 of=@14
dd if=src.qcow2 of=/nonexistent/@15
dd -f qcow2 -O qcow2 if=src.qcow2 of=@16 skip=2 bs=1M
dd -U if=src.raw of=@17 bs=4k skip=256 count=768
dd if=odd.raw of=@18 bs=300
dd --image-opts if=driver=qcow2,file.filename=src.qcow2 of=@19 bs=1M count=3 skip=1
convert -r abc src.qcow2 @20
convert -r -1 src.qcow2 @20
convert -r 0 -O qcow2 src.qcow2 @21
convert -r 64M src.qcow2 @22
convert -r 1k -r 64M -O qcow2 src.raw @23
convert --salvage src.qcow2 @24
convert --salvage -O qcow2 src.raw @25
convert -T none src.qcow2 @26
convert -T writeback -t none -O qcow2 src.qcow2 @27
convert -T bogus src.qcow2 @28
create -f raw -o help
create -f raw -o help @30
create -f luks -o help
create -f luks -o help @31
convert -O raw -o help
amend -f raw -o help
info json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"}}
info --output=json json:{"driver":"raw","file":{"filename":"src.raw"}}
check json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"}}
map --output=json json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"}}
compare src.raw json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"}}
convert -O qcow2 json:{"driver":"qcow2","file.filename":"src.qcow2"} @40
dd if=json:{"driver":"qcow2","file":{"filename":"src.qcow2"}} of=@41 bs=1M
measure -O qcow2 json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"}}
resize
resize src.raw
resize --shrink src.raw
resize -f raw src.raw 1M 2M
resize src.raw 1M
measure -O raw json:{"driver":"qcow2","file":{"driver":"file","filename":"nosuch.qcow2"}}
convert -O raw json:{"driver":"qcow2","file":{"driver":"file","filename":"nosuch.qcow2"}} @42
convert -n -O raw src.qcow2 nbd+unix:///?socket=none.sock
convert -n src.qcow2 nbd+unix:///?socket=none.sock
amend -f qcow2 -o help
amend -f luks -o help
amend -f foo -o help
amend -o help
amend -o help src.qcow2
amend -f luks -o help src.qcow2
amend -f vmdk -o help
create -f qcow2 -o help
create -f qcow2 -o help @32
info mono.vmdk
info --output=json mono.vmdk
info flat.vmdk
info --output=json flat.vmdk
info split.vmdk
info --output=json split.vmdk
info stream.vmdk
info --output=json stream.vmdk
info json:{"driver":"qcow2",
info json:{"driver":"qcow2","file":{"driver":"file","filename":"src.qcow2"},"bogus":1}
create -f qcow2 @50 1G
create -f qcow2 @51 0
create -f qcow2 -o compat=0.10 @52 1
create -q -f qcow2 -o cluster_size=512 @53 16G
create -q -f qcow2 -o cluster_size=512,refcount_bits=64 @54 1G
create -q -f qcow2 -o cluster_size=4k @55 100G
create -q -f qcow2 -o cluster_size=2M,extended_l2=on @56 1G
create -q -f qcow2 -o cluster_size=512 @57 140G
create -q -f qcow2 -o preallocation=metadata @58 64M
create -q -f qcow2 -o preallocation=falloc @59 10M
create -q -f qcow2 -o preallocation=full @60 10M
create -q -f qcow2 -b src.qcow2 -F qcow2 @61
convert -O qcow2 src.raw @62
convert -O qcow2 -o cluster_size=512 src.qcow2 @63
info odd.raw
info --output=json odd.raw
map odd.raw
map --output=json odd.raw
measure -O raw odd.raw
measure -O qcow2 odd.raw
compare odd.raw src.raw
compare -f raw -F raw odd.raw odd.raw
convert -O raw odd.raw @70
convert -O qcow2 odd.raw @71
resize -f raw @72 +1
resize -f raw @73 1001
resize -f raw @74 --shrink 900
resize --shrink -f raw @75 -- -1
resize -f raw scratch.raw abc
resize -f raw scratch.raw -- -1e3
resize -f raw scratch.raw 99999999999999999999
resize -f raw scratch.raw 20E
resize -f raw scratch.raw 9E
resize -f raw scratch.raw +9E
resize -f raw scratch.raw 16383P
create -f raw @76 1000
convert -S 4k -O qcow2 sparse.raw @80
convert -S 4k -O raw sparse.raw @81
convert -S 0 -O qcow2 sparse.raw @82
convert -S 4k -O qcow2 -o cluster_size=4k sparse.raw @83
convert -n -O qcow2 sparse.raw @84
convert -n -S 4k -O qcow2 sparse.raw @85
convert -n -O qcow2 overlay.qcow2 @86
convert -n -S 64k -O qcow2 src.qcow2 @87
rebase -b base2.qcow2 -F qcow2 @88
rebase -u -b base2.qcow2 -F qcow2 @89
create -f qcow2 -b json:{"driver":"qcow2","file":{"driver":"file","filename":"base1.qcow2"}} -F qcow2 @90
create -f qcow2 -b json:{"driver":"qcow2","file":{"driver":"file","filename":"base1.qcow2"}} @91
create -f qcow2 -b json:{"file.filename":"base1.qcow2"} -F qcow2 @92
create -f qcow2 -b json:{"driver":"raw","file":{"filename":"base1.qcow2"}} -F raw @93
create -f qcow2 -b json:{"driver":"qcow2","file":{"driver":"file","filename":"nosuch.qcow2"}} -F qcow2 @94
create -f qcow2 -b json:{"driver":"qcow2","file":{"filename":"base1.qcow2"},"x":1} -F qcow2 @95
create -f qcow2 -u -b json:{"driver":"qcow2","file":{"filename":"nosuch.qcow2"}} -F qcow2 @96 1M
create -f qcow2 -b base1.qcow2 @97
info json-ov.qcow2
info --backing-chain json-ov.qcow2
map --output=json json-ov.qcow2
compare json-ov.qcow2 base1.qcow2
convert -O raw json-ov.qcow2 @98
rebase -p -b base2.qcow2 -F qcow2 @110
rebase -p -u -b base2.qcow2 -F qcow2 @111
rebase -p -u -F qcow2 @112
rebase -p -b nosuch.qcow2 -F qcow2 @113
rebase -p -b base2.qcow2 -F qcow2 @114
rebase -p -b base9.qcow2 -F qcow2 @115
rebase -p -b base7.qcow2 -F qcow2 -u @116
create -f vmdk -o help
create -f vpc -o help
create -f vdi -o help
create -f vhdx -o help
create -f qcow -o help
create -f vmdk -o help @100
convert -O vhdx -o help
EOF
)

NROWS=0
NFAIL=0
fidelity_rows "$ROWS"
cmp -s scratch.raw odd.raw || fail "a refused resize changed scratch.raw"

# convert -n into an NBD export (qemu-nbd, one per tool), over a unix
# socket with and without -O (the target is raw unless said otherwise: no
# probing, no warning), and over TCP (nbd://HOST:PORT/).
if command -v qemu-nbd >/dev/null; then
	for mode in "unix -O raw" "unix" "tcp"; do
		read -r via o <<<"$mode"
		declare -A uri=()
		for t in o v; do
			qemu_img create -q -f raw $t-nbd.raw 4M
			if [[ $via == tcp ]]; then
				port=$(free_port)
				qemu-nbd -f raw -t -b 127.0.0.1 -p "$port" $t-nbd.raw &
				uri[$t]="nbd://127.0.0.1:$port/"
			else
				qemu-nbd -f raw -t -k "$WORKDIR/$t.sock" $t-nbd.raw &
				uri[$t]="nbd+unix:///?socket=$WORKDIR/$t.sock"
			fi
			echo $! >$t.nbdpid
		done
		for t in o v; do
			for _ in $(seq 100); do
				qemu-img info -f raw "${uri[$t]}" >/dev/null 2>&1 && break
				sleep 0.1
			done
		done
		NROWS=$((NROWS + 1))
		qrc=0 vrc=0
		# shellcheck disable=SC2086
		qemu-img convert -n $o src.qcow2 "${uri[o]}" >q.out 2>q.err || qrc=$?
		# shellcheck disable=SC2086
		"$VSTOR_IMG" convert -n $o src.qcow2 "${uri[v]}" >v.out 2>v.err || vrc=$?
		for t in o v; do
			kill "$(cat $t.nbdpid)"
			wait "$(cat $t.nbdpid)" 2>/dev/null || true
			rm -f $t.sock
		done
		sed -i 's/^qemu-img: /PROG: /; s/o\.sock/X.sock/g' q.out q.err
		sed -i 's/^vstor-img: /PROG: /; s/v\.sock/X.sock/g' v.out v.err
		if [[ $qrc != "$vrc" ]] || ! cmp -s q.err v.err || ! cmp -s q.out v.out ||
			! cmp -s o-nbd.raw v-nbd.raw || ! cmp -s v-nbd.raw src.raw; then
			NFAIL=$((NFAIL + 1))
			log "DIFF: convert -n $o into NBD over $via: exit $qrc/$vrc"
			diff -u q.err v.err | sed 's/^/  stderr: /' | head -10 >&2
		fi
	done
fi

# map and info of NBD exports (qemu-nbd serving a raw and a qcow2 file as
# they are, over unix sockets and TCP): the same extents with their offsets,
# and the export named as QEMU's NBD client names it.
if command -v qemu-nbd >/dev/null; then
	cp src.raw nbd-src.raw
	cp src.qcow2 nbd-src.qcow2
	port=$(free_port)
	qemu-nbd -f raw -t -r -k "$WORKDIR/r.sock" nbd-src.raw &
	echo $! >r.nbdpid
	qemu-nbd -f raw -t -r -k "$WORKDIR/q.sock" nbd-src.qcow2 &
	echo $! >q.nbdpid
	qemu-nbd -f raw -t -r -x exp -b 127.0.0.1 -p "$port" nbd-src.qcow2 &
	echo $! >t.nbdpid
	nbd_uris=("nbd+unix:///?socket=$WORKDIR/r.sock" "nbd+unix:///?socket=$WORKDIR/q.sock"
		"nbd://127.0.0.1:$port/exp")
	for u in "${nbd_uris[@]}"; do
		for _ in $(seq 100); do
			qemu-img info "$u" >/dev/null 2>&1 && break
			sleep 0.1
		done
	done
	# Every command on the raw export; the ones that differ by what is
	# served or how it is named on the others.
	nbd_rows=
	for c in "map" "map --output=json" "info" "info --output=json" "info -f raw" \
		"info --output=json -f raw" "map -f raw"; do
		nbd_rows+="$c ${nbd_uris[0]}"$'\n'
	done
	for c in "map" "map --output=json" "info" "info --output=json"; do
		nbd_rows+="$c ${nbd_uris[1]}"$'\n'
	done
	for u in "${nbd_uris[2]}" "nbd:unix:$WORKDIR/r.sock"; do
		nbd_rows+="map $u"$'\n'"info --output=json $u"$'\n'
	done
	nbd_rows+="check nbd://127.0.0.1:$port/exp"$'\n'
	nbd_rows+="compare src.raw nbd+unix:///?socket=$WORKDIR/q.sock"$'\n'
	fidelity_rows "$nbd_rows"
	for t in r q t; do
		kill "$(cat $t.nbdpid)"
		wait "$(cat $t.nbdpid)" 2>/dev/null || true
	done
fi

# -r limits the rate of the data read (1.5 MiB of src.raw at 1 MiB/s: about
# one second after the first chunk, as qemu-img), not more than that.
t0=$(date +%s%N)
"$VSTOR_IMG" convert -r 1M src.raw rate.raw || fail "convert -r 1M"
ms=$((($(date +%s%N) - t0) / 1000000))
((ms >= 900)) || fail "convert -r 1M of 1.5 MiB of data took $ms ms: no rate limit"
((ms < 20000)) || fail "convert -r 1M of 1.5 MiB of data took $ms ms"
cmp rate.raw src.raw || fail "convert -r 1M: data differs"

# The import-only formats list qemu-img's creation options, yet vstor does
# not write them: create refuses with a message that says so.
for f in vmdk vpc vdi vhdx qcow; do
	rc=0
	"$VSTOR_IMG" create -q -f $f ro.$f 1M 2>ro.err || rc=$?
	((rc == 1)) || fail "create -f $f: exit $rc, not 1"
	assert_grep "Format '$f' is read-only in vstor; convert to qcow2 or raw" ro.err "create -f $f"
done

log "$NROWS command lines compared with qemu-img, $NFAIL differ"
((NROWS > 0)) || fail "no row ran"
((NFAIL == 0)) || fail "$NFAIL of $NROWS command lines differ from qemu-img"
