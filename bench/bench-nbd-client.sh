#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor's NBD client (libnbd's, on the reactor: libstore/driver-nbd-libnbd.c)
# against qemu-img's, on one server (qemu-nbd over a unix socket), the two
# alternating each round so that machine noise hits both alike:
#   convert    convert -f raw -O raw from the export (mixed data: a third
#              random, a third zeroes, a third text), to a file
#   read4k     bench -d 32 -s 4K (vstor-img --random; qemu-img has no random
#              mode: a 68 KiB stride)
#   write4k    the same, -w
#   read1m     bench -d 8 -s 1M, sequential reads
# Prints the median wall seconds of each tool per row and vstor/qemu (< 1:
# vstor is faster). It replaced the comparison of libnbd's client with the
# hand-written one it superseded (bench/RESULTS.md). Not a test: it asserts
# nothing. See bench/README.md.
#
# Environment:
#   VSTOR_IMG     vstor-img to measure (default: build/cli/vstor-img)
#   BENCH_DIR     where the images go (default: var/bench)
#   BENCH_SIZE    export size in MiB (default 1024)
#   BENCH_COUNT   requests per bench row (default 200000)
#   BENCH_REPEAT  rounds (default 5)
#   BENCH_ROWS    rows to run (default: "convert read4k write4k read1m")
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-1024}
BENCH_COUNT=${BENCH_COUNT:-200000}
BENCH_REPEAT=${BENCH_REPEAT:-5}
read -r -a rows <<<"${BENCH_ROWS:-convert read4k write4k read1m}"

command -v qemu-nbd >/dev/null || { echo "bench: qemu-nbd not found (apt-get install qemu-utils)" >&2; exit 1; }
[[ -x $VSTOR_IMG ]] || { echo "bench: $VSTOR_IMG not built (meson setup build && ninja -C build)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(realpath "$BENCH_DIR") # qemu-nbd takes only absolute socket paths
in=$BENCH_DIR/nbdc-$BENCH_SIZE.raw
if [[ ! -f $in ]]; then
	echo "bench: writing $in ($BENCH_SIZE MiB of mixed data)"
	python3 - "$in.tmp" "$BENCH_SIZE" <<'PY'
import os, random, sys
random.seed(42)
text = b" ".join(random.choice([b"storage", b"cluster", b"block", b"image"]) for _ in range(300000))
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        k = i % 3
        if k == 0:
            f.write(os.urandom(1 << 20))
        elif k == 1:
            f.write(b"\0" * (1 << 20))
        else:
            f.write(text[:1 << 20].ljust(1 << 20, b"."))
PY
	mv "$in.tmp" "$in"
fi
work=$(mktemp -d "$BENCH_DIR/nbdc.XXXXXX")
sock=$work/nbd.sock
cp --sparse=always "$in" "$work/disk.raw"
qemu-nbd -t -k "$sock" -f raw --cache=none --aio=native -x exp \
	--pid-file="$work/qnbd.pid" "$work/disk.raw" &
QNBD=$!
trap 'kill $QNBD 2>/dev/null; wait $QNBD 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { echo "bench: qemu-nbd did not start" >&2; exit 1; }
uri="nbd+unix:///exp?socket=$sock"

# secs CMD...: wall seconds of one run
secs()
{
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	python3 -c "print('%.3f' % ($t1 - $t0))"
}

run_row()
{
	local tool=$1 row=$2 img=$VSTOR_IMG rnd=(--random)
	[[ $tool == qemu ]] && img=qemu-img rnd=(-S 69632)
	case $row in
	convert) rm -f "$work/out.raw"
		secs "$img" convert -f raw -O raw "$uri" "$work/out.raw" ;;
	read4k) secs "$img" bench -f raw -d 32 -s 4K -c "$BENCH_COUNT" "${rnd[@]}" "$uri" ;;
	write4k) secs "$img" bench -f raw -d 32 -s 4K -c "$BENCH_COUNT" "${rnd[@]}" -w "$uri" ;;
	read1m) secs "$img" bench -f raw -d 8 -s 1M -c $((BENCH_SIZE * 4)) "$uri" ;;
	esac
}

cells=$work/cells
: >"$cells"
for ((r = 0; r < BENCH_REPEAT; r++)); do
	# Alternate which tool goes first.
	if ((r % 2)); then order="qemu vstor"; else order="vstor qemu"; fi
	for row in "${rows[@]}"; do
		for tool in $order; do
			printf '%s\t%s\t%s\n' "$row" "$tool" "$(run_row "$tool" "$row")" >>"$cells"
		done
	done
done
python3 - "$cells" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    row, client, t = line.split()
    runs.setdefault(row, {}).setdefault(client, []).append(float(t))
print("%-9s %10s %10s %10s" % ("row", "vstor s", "qemu s", "vstor/qemu"))
for row, v in runs.items():
    m = {c: statistics.median(x) for c, x in v.items()}
    print("%-9s %10.3f %10.3f %10.3f" % (row, m["vstor"], m["qemu"], m["vstor"] / m["qemu"]))
PY
