#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Encrypted images (issue 17) in one run:
#   convert raw -> qcow2 with encrypt.format=luks, and that qcow2 -> raw,
#   vstor-img against qemu-img (ratio qemu-img/vstor-img: > 1.0 vstor faster);
#   in-process bench on a qcow2+luks image that qemu-img made (every cluster
#   allocated), opened as a pool volume with its secret (vol:POOL/VOLUME):
#   4 KiB requests at QD32 with a 68 KiB stride and 1 MiB sequential, reads
#   and writes. qemu-img 7.2's bench takes no --object, so it cannot open an
#   encrypted image: these rows compare vstor-img on the encrypted image with
#   vstor-img on the same data in a clear qcow2 (ratio clear/encrypted time:
#   the share of the speed the cipher leaves).
# Each cell is the best wall time of BENCH_REPEAT runs. The cpu column is
# (user+sys)/wall of the right-hand tool's best run: above 1.0 the second
# core (the crypto workers) was used. Not a test: it asserts nothing. See
# bench/README.md.
#
# Environment:
#   VSTOR_IMG, VSTOR vstor-img and vstor to use (default: build/cli/...)
#   BENCH_DIR       where the images go (default: var/bench-luks; not tmpfs)
#   BENCH_SIZE      image size (default 256M)
#   BENCH_COUNT     requests of the 4 KiB rows (default 20000)
#   BENCH_SEQ_COUNT requests of the 1 MiB rows (default 256)
#   BENCH_REPEAT    runs per cell, the best one counts (default 3)
#   BENCH_CACHE     cache mode of the bench rows (default none)
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
VSTOR=${VSTOR:-build/cli/vstor}
BENCH_DIR=${BENCH_DIR:-var/bench-luks}
BENCH_SIZE=${BENCH_SIZE:-256M}
BENCH_COUNT=${BENCH_COUNT:-20000}
BENCH_SEQ_COUNT=${BENCH_SEQ_COUNT:-256}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_CACHE=${BENCH_CACHE:-none}

command -v qemu-img >/dev/null || { echo "bench: qemu-img not found (apt-get install qemu-utils)" >&2; exit 1; }
command -v bc >/dev/null || { echo "bench: bc not found" >&2; exit 1; }
[[ -x $VSTOR_IMG && -x $VSTOR ]] || { echo "bench: $VSTOR_IMG or $VSTOR not built" >&2; exit 1; }

mkdir -p "$BENCH_DIR/pool"
BENCH_DIR=$(realpath "$BENCH_DIR")
raw=$BENCH_DIR/bench.raw
enc=$BENCH_DIR/pool/bench-luks.qcow2
plain=$BENCH_DIR/pool/bench-plain.qcow2
key=$BENCH_DIR/key
bytes=$(numfmt --from=iec "${BENCH_SIZE%B}")
umask 077
printf 'bench-luks-passphrase' >"$key"
OBJ=(--object "secret,id=s0,file=$key")
ENC=encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10
OPTS="driver=qcow2,encrypt.key-secret=s0,file.filename=$enc"

if [[ ! -f $raw || $(stat -c %s "$raw") != "$bytes" ]]; then
	echo "bench: writing $raw ($BENCH_SIZE of random data)"
	head -c "$bytes" /dev/urandom >"$raw.tmp"
	mv "$raw.tmp" "$raw"
	rm -f "$enc" "$plain"
fi
if [[ ! -f $enc ]]; then
	echo "bench: converting to $enc (qcow2+luks, every cluster allocated)"
	qemu-img convert "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$enc"
fi
[[ -f $plain ]] || qemu-img convert -f raw -O qcow2 "$raw" "$plain"

# The pool that serves the encrypted image with its secret (libvirt's usage).
export VSTOR_STATE_DIR=$BENCH_DIR/state
if ! "$VSTOR" pool-info benchp >/dev/null 2>&1; then
	"$VSTOR" pool-define-as benchp dir --target "$BENCH_DIR/pool" >/dev/null
	"$VSTOR" pool-start benchp >/dev/null
	printf "<secret><usage type='volume'><volume>%s</volume></usage></secret>\n" "$enc" \
		>"$BENCH_DIR/sec.xml"
	uuid=$("$VSTOR" secret-define "$BENCH_DIR/sec.xml" | sed -n 's/^Secret \(.*\) created$/\1/p')
	"$VSTOR" secret-set-value "$uuid" --file "$key" --plain >/dev/null
fi

# run CMD...: "wall cpu" of the best of BENCH_REPEAT runs (cpu = user+sys).
run()
{
	local b="" bc="" i wall u s
	for ((i = 0; i < BENCH_REPEAT; i++)); do
		rm -f "$BENCH_DIR/out.qcow2" "$BENCH_DIR/out.raw"
		sync
		if ! /usr/bin/time -o "$BENCH_DIR/time" -f '%e %U %S' "$@" >/dev/null \
			2>"$BENCH_DIR/err"; then
			echo "bench: $* failed:" >&2
			cat "$BENCH_DIR/err" >&2
			echo "nan nan"
			return
		fi
		read -r wall u s <<<"$(tail -1 "$BENCH_DIR/time")"
		if [[ -z $b ]] || (($(echo "$wall < $b" | bc -l))); then
			b=$wall
			bc=$(echo "$u + $s" | bc -l)
		fi
	done
	echo "$b $bc"
}

# row NAME: LEFT (qemu-img, or the clear image) against RIGHT (vstor-img).
row()
{
	local lw rw rc
	read -r lw _ <<<"$(run "${LEFT[@]}")"
	read -r rw rc <<<"$(run "${RIGHT[@]}")"
	printf '%-34s %9s %9s %7s %6s\n' "$1" "$lw" "$rw" \
		"$(echo "scale=2; $lw / $rw" | bc -l 2>/dev/null || echo nan)" \
		"$(echo "scale=2; $rc / $rw" | bc -l 2>/dev/null || echo nan)"
}

printf '%-34s %9s %9s %7s %6s\n' "convert ($BENCH_SIZE)" "qemu-img" "vstor" "ratio" "cpu"
LEFT=(qemu-img convert "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$BENCH_DIR/out.qcow2")
RIGHT=("$VSTOR_IMG" convert "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$BENCH_DIR/out.qcow2")
row "raw -> qcow2+luks"
LEFT=(qemu-img convert "${OBJ[@]}" --image-opts "$OPTS" -O raw "$BENCH_DIR/out.raw")
RIGHT=("$VSTOR_IMG" convert "${OBJ[@]}" --image-opts "$OPTS" -O raw "$BENCH_DIR/out.raw")
row "qcow2+luks -> raw"

printf '%-34s %9s %9s %7s %6s\n' "vstor-img bench (cache $BENCH_CACHE)" "clear" "luks" "ratio" \
	"cpu"
for w in "" -w; do
	what=$([[ -n $w ]] && echo write || echo read)
	B=(bench -t "$BENCH_CACHE" -c "$BENCH_COUNT" -d 32 -s 4096 -S 69632 $w)
	LEFT=("$VSTOR_IMG" "${B[@]}" vol:benchp/bench-plain.qcow2)
	RIGHT=("$VSTOR_IMG" "${B[@]}" vol:benchp/bench-luks.qcow2)
	row "4k QD32 stride $what"
	B=(bench -t "$BENCH_CACHE" -c "$BENCH_SEQ_COUNT" -d 4 -s 1M -S 1M $w)
	LEFT=("$VSTOR_IMG" "${B[@]}" vol:benchp/bench-plain.qcow2)
	RIGHT=("$VSTOR_IMG" "${B[@]}" vol:benchp/bench-luks.qcow2)
	row "1M sequential $what"
done
rm -f "$BENCH_DIR/out.qcow2" "$BENCH_DIR/out.raw" "$BENCH_DIR/err" "$BENCH_DIR/time"
