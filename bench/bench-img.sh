#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img bench against qemu-img bench: the same arguments on the same raw
# image and the same fully allocated qcow2 image, cache none and writeback.
# Prints the wall time of each (best of BENCH_REPEAT runs) and the ratio
# qemu-img/vstor-img (> 1.0: vstor is faster), then qcow2 against raw for
# allocated reads. Not a test: it asserts nothing. See bench/README.md.
#
# Environment:
#   VSTOR_IMG       vstor-img to measure (default: build/cli/vstor-img)
#   BENCH_DIR       where the images go (default: var/bench; must support O_DIRECT,
#                   so not tmpfs)
#   BENCH_SIZE      image size (default 256M)
#   BENCH_COUNT     requests of the 4 KiB rows (default 100000)
#   BENCH_SEQ_COUNT requests of the 1 MiB rows (default 2048)
#   BENCH_REPEAT    runs per cell, the best one counts (default 3)
#   BENCH_CACHES    cache modes (default "none writeback")
#   BENCH_QEMU_AIO  qemu-img's -i (e.g. io_uring; default: its thread pool)
#   BENCH_TIME      wall (default): the whole command, start-up included;
#                   run: the "Run completed in" time both tools print, the
#                   engine alone
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-256M}
BENCH_COUNT=${BENCH_COUNT:-100000}
BENCH_SEQ_COUNT=${BENCH_SEQ_COUNT:-2048}
BENCH_REPEAT=${BENCH_REPEAT:-3}
read -r -a caches <<<"${BENCH_CACHES:-none writeback}"
BENCH_TIME=${BENCH_TIME:-wall}
qemu_aio=()
[[ -n ${BENCH_QEMU_AIO:-} ]] && qemu_aio=(-i "$BENCH_QEMU_AIO")

command -v qemu-img >/dev/null || { echo "bench: qemu-img not found (apt-get install qemu-utils)" >&2; exit 1; }
[[ -x $VSTOR_IMG ]] || { echo "bench: $VSTOR_IMG not built (meson setup build && ninja -C build)" >&2; exit 1; }

mkdir -p "$BENCH_DIR"
raw=$BENCH_DIR/bench.raw
qcow2=$BENCH_DIR/bench.qcow2
bytes=$(numfmt --from=iec "${BENCH_SIZE%B}")

# Images with data in every cluster (random bytes, so nothing is sparse or zero).
if [[ ! -f $raw || $(stat -c %s "$raw") != "$bytes" ]]; then
	echo "bench: writing $raw ($BENCH_SIZE of random data)"
	head -c "$bytes" /dev/urandom >"$raw.tmp"
	mv "$raw.tmp" "$raw"
	rm -f "$qcow2"
fi
if [[ ! -f $qcow2 ]]; then
	echo "bench: converting to $qcow2 (every cluster allocated)"
	qemu-img convert -f raw -O qcow2 "$raw" "$qcow2"
fi

# best TOOL ARGS...: best time (BENCH_TIME) in seconds over BENCH_REPEAT runs.
best()
{
	local tool=$1 b="" t0 t1 t i
	shift
	for ((i = 0; i < BENCH_REPEAT; i++)); do
		t0=$(date +%s.%N)
		if ! "$tool" bench "$@" >"$BENCH_DIR/out" 2>"$BENCH_DIR/err"; then
			echo "bench: $tool bench $* failed:" >&2
			cat "$BENCH_DIR/err" >&2
			echo "nan"
			return
		fi
		t1=$(date +%s.%N)
		if [[ $BENCH_TIME == run ]]; then
			t=$(awk '/^Run completed in/ { print $4 }' "$BENCH_DIR/out")
		else
			t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
		fi
		if [[ -z $b ]] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then
			b=$t
		fi
	done
	echo "$b"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A vtime
printf '%-10s %-6s %-10s %-42s %9s %9s %8s\n' cache format op args qemu-img vstor qemu/vs
rows=(
	"4k-read|-c $BENCH_COUNT -d 32 -s 4096 -S 69632"
	"4k-write|-c $BENCH_COUNT -d 32 -s 4096 -S 69632 -w"
	"1M-read|-c $BENCH_SEQ_COUNT -s 1M -S 1M"
	"1M-write|-c $BENCH_SEQ_COUNT -s 1M -S 1M -w"
)
slower=0
for cache in "${caches[@]}"; do
	for fmt in raw qcow2; do
		img=$raw
		[[ $fmt == qcow2 ]] && img=$qcow2
		for row in "${rows[@]}"; do
			op=${row%%|*}
			read -r -a args <<<"${row#*|}"
			q=$(best qemu-img "${args[@]}" "${qemu_aio[@]}" -f "$fmt" -t "$cache" "$img")
			v=$(best "$VSTOR_IMG" "${args[@]}" -f "$fmt" -t "$cache" "$img")
			vtime[$cache/$fmt/$op]=$v
			r=$(ratio "$q" "$v")
			mark=""
			if [[ $r != - ]] && awk -v r="$r" 'BEGIN { exit !(r < 1.0) }'; then
				mark=" <"
				slower=$((slower + 1))
			fi
			printf '%-10s %-6s %-10s %-42s %9s %9s %8s%s\n' "$cache" "$fmt" "$op" \
				"${row#*|}" "$q" "$v" "$r" "$mark"
		done
	done
done

echo
echo "qcow2 against raw, allocated reads (vstor-img; target: qcow2 within 10% of raw)"
printf '%-10s %-10s %9s %9s %10s\n' cache op raw qcow2 qcow2/raw
for cache in "${caches[@]}"; do
	for op in 4k-read 1M-read; do
		r=${vtime[$cache/raw/$op]}
		c=${vtime[$cache/qcow2/$op]}
		printf '%-10s %-10s %9s %9s %10s\n' "$cache" "$op" "$r" "$c" "$(ratio "$c" "$r")"
	done
done
echo
echo "rows where vstor-img is slower than qemu-img (marked <): $slower"
