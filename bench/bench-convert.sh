#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img convert against qemu-img convert, side by side in one run, on the
# same input of mixed data (a third random, a third zeroes, a third
# compressible text, in 1 MiB pieces): raw->qcow2, qcow2->raw, raw->qcow2 -c
# with zlib and zstd, and compressed->raw. qemu-img runs with its defaults and
# with -m 8 -W; vstor-img with its defaults, and on one CPU (taskset) for the
# compression and decompression rows, which gives the speed-up from the second core. Prints wall seconds (best of
# BENCH_REPEAT), MB/s of input, the output size, and the ratios of vstor's
# speed to each qemu-img setting (> 1: vstor is faster) and of the output
# sizes. Not a test: it asserts nothing. See bench/README.md.
#
# Environment:
#   VSTOR_IMG     vstor-img to measure (default: build/cli/vstor-img)
#   BENCH_DIR     where the images go (default: var/bench)
#   BENCH_SIZE    input size in MiB (default 1536)
#   BENCH_REPEAT  runs per cell, the best one counts (default 2)
#   BENCH_ROWS    rows to run (default: all; e.g. "c-zlib d-zlib")
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-1536}
BENCH_REPEAT=${BENCH_REPEAT:-2}
read -r -a rows <<<"${BENCH_ROWS:-to-qcow2 to-raw c-zlib c-zstd d-zlib d-zstd}"

command -v qemu-img >/dev/null || { echo "bench: qemu-img not found (apt-get install qemu-utils)" >&2; exit 1; }
[[ -x $VSTOR_IMG ]] || { echo "bench: $VSTOR_IMG not built (meson setup build && ninja -C build)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
in=$BENCH_DIR/mixed-$BENCH_SIZE.raw
out=$BENCH_DIR/conv-out

if [[ ! -f $in ]]; then
	echo "bench: writing $in ($BENCH_SIZE MiB of mixed data)"
	python3 - "$in.tmp" "$BENCH_SIZE" <<'PY'
import os, random, sys
random.seed(42)
words = [w.encode() for w in (
    "the quick brown fox jumps over lazy dog storage virtual machine kernel "
    "cluster refcount table snapshot backing image compression zlib zstd "
    "allocation sector block device driver request queue flush").split()]
text = b" ".join(random.choice(words) for _ in range(400000))
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        k = i % 3
        if k == 0:
            f.write(os.urandom(1 << 20))
        elif k == 1:
            f.write(b"\0" * (1 << 20))
        else:
            o = random.randrange(0, len(text) - (1 << 20))
            f.write(text[o:o + (1 << 20)])
PY
	mv "$in.tmp" "$in"
fi
# Sources for the decompression and qcow2->raw rows (made by qemu-img).
for ct in zlib zstd; do
	[[ -f $BENCH_DIR/mixed-$BENCH_SIZE.$ct.qcow2 ]] ||
		qemu-img convert -c -O qcow2 -o compression_type=$ct "$in" "$BENCH_DIR/mixed-$BENCH_SIZE.$ct.qcow2"
done
[[ -f $BENCH_DIR/mixed-$BENCH_SIZE.qcow2 ]] ||
	qemu-img convert -O qcow2 "$in" "$BENCH_DIR/mixed-$BENCH_SIZE.qcow2"

# run TOOL ARGS...: best wall time over BENCH_REPEAT; leaves $out from the last run.
run()
{
	local b="" t0 t1 t i
	for ((i = 0; i < BENCH_REPEAT; i++)); do
		rm -f "$out"
		sync
		t0=$(date +%s.%N)
		"$@" >/dev/null 2>"$BENCH_DIR/err" || {
			echo "bench: $* failed:" >&2
			cat "$BENCH_DIR/err" >&2
			exit 1
		}
		t1=$(date +%s.%N)
		t=$(echo "$t1 - $t0" | bc -l)
		if [[ -z $b ]] || (($(echo "$t < $b" | bc -l))); then b=$t; fi
	done
	echo "$b"
}

mb=$(echo "$BENCH_SIZE * 1048576 / 1000000" | bc -l)
printf '%-9s %-20s %9s %9s %12s\n' row tool seconds MB/s out-bytes
for row in "${rows[@]}"; do
	case $row in
	to-qcow2) src=$in args=(-f raw -O qcow2) ;;
	to-raw) src=$BENCH_DIR/mixed-$BENCH_SIZE.qcow2 args=(-f qcow2 -O raw) ;;
	c-zlib) src=$in args=(-f raw -O qcow2 -c -o compression_type=zlib) ;;
	c-zstd) src=$in args=(-f raw -O qcow2 -c -o compression_type=zstd) ;;
	d-zlib) src=$BENCH_DIR/mixed-$BENCH_SIZE.zlib.qcow2 args=(-f qcow2 -O raw) ;;
	d-zstd) src=$BENCH_DIR/mixed-$BENCH_SIZE.zstd.qcow2 args=(-f qcow2 -O raw) ;;
	*) echo "bench: unknown row $row" >&2; exit 1 ;;
	esac
	declare -A secs=() size=()
	tools=(qemu-img "qemu-img -m 8 -W" vstor-img)
	# The speed-up from the second core: vstor-img on one CPU as well.
	[[ $row == c-* || $row == d-* ]] && tools+=("vstor-img 1 CPU")
	# Out-of-order writes beside qemu-img's -W (a raw target has them anyway).
	[[ $row == to-qcow2 ]] && tools+=("vstor-img -W")
	for tool in "${tools[@]}"; do
		case $tool in
		qemu-img) cmd=(qemu-img convert "${args[@]}") ;;
		"qemu-img -m 8 -W") cmd=(qemu-img convert -m 8 -W "${args[@]}") ;;
		vstor-img) cmd=("$VSTOR_IMG" convert "${args[@]}") ;;
		"vstor-img 1 CPU") cmd=(taskset -c 0 "$VSTOR_IMG" convert "${args[@]}") ;;
		"vstor-img -W") cmd=("$VSTOR_IMG" convert -W "${args[@]}") ;;
		esac
		secs[$tool]=$(run "${cmd[@]}" "$src" "$out")
		size[$tool]=$(stat -c %s "$out")
		printf '%-9s %-20s %9.2f %9.1f %12d\n' "$row" "$tool" "${secs[$tool]}" \
			"$(echo "$mb / ${secs[$tool]}" | bc -l)" "${size[$tool]}"
	done
	printf '%-9s %-20s vs qemu-img %.2fx, vs -m 8 -W %.2fx, size vs qemu-img %.3f\n' "$row" \
		"vstor speed" "$(echo "${secs[qemu-img]} / ${secs[vstor-img]}" | bc -l)" \
		"$(echo "${secs["qemu-img -m 8 -W"]} / ${secs[vstor-img]}" | bc -l)" \
		"$(echo "${size[vstor-img]} / ${size[qemu-img]}" | bc -l)"
	[[ -n ${secs["vstor-img -W"]:-} ]] &&
		printf '%-9s %-20s vs qemu-img -m 8 -W %.2fx\n' "$row" "vstor -W speed" \
			"$(echo "${secs["qemu-img -m 8 -W"]} / ${secs["vstor-img -W"]}" | bc -l)"
	[[ -n ${secs["vstor-img 1 CPU"]:-} ]] &&
		printf '%-9s %-20s %.2fx from the second core\n' "$row" "vstor speed-up" \
			"$(echo "${secs["vstor-img 1 CPU"]} / ${secs[vstor-img]}" | bc -l)"
	rm -f "$out"
done
