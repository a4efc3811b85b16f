#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor's two NBD clients side by side (issue 15): the one on libnbd (the
# default, libstore/driver-nbd-libnbd.c) and the hand-written one
# (VSTOR_NBD_CLIENT=builtin, libstore/driver-nbd.c), against one server
# (qemu-nbd, the anchor, over a unix socket), rounds alternating between
# the two so that machine noise hits both alike:
#   convert    vstor-img convert -f raw -O raw from the export (mixed data:
#              a third random, a third zeroes, a third text), to a file
#   read4k     vstor-img bench -d 32 -s 4K, random reads
#   write4k    vstor-img bench -d 32 -s 4K -w, random writes
#   read1m     vstor-img bench -d 8 -s 1M, sequential reads
# qemu-img convert runs once per round as a reference. Prints the median
# wall seconds of each client per row and libnbd/builtin (< 1: libnbd is
# faster). Not a test: it asserts nothing. See bench/README.md.
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
	local row=$1
	case $row in
	convert) rm -f "$work/out.raw"
		secs "$VSTOR_IMG" convert -f raw -O raw "$uri" "$work/out.raw" ;;
	read4k) secs "$VSTOR_IMG" bench -f raw -d 32 -s 4K -c "$BENCH_COUNT" --random "$uri" ;;
	write4k) secs "$VSTOR_IMG" bench -f raw -d 32 -s 4K -c "$BENCH_COUNT" --random -w "$uri" ;;
	read1m) secs "$VSTOR_IMG" bench -f raw -d 8 -s 1M -c $((BENCH_SIZE * 4)) "$uri" ;;
	esac
}

cells=$work/cells
: >"$cells"
for ((r = 0; r < BENCH_REPEAT; r++)); do
	# Alternate which client goes first.
	if ((r % 2)); then order="builtin libnbd"; else order="libnbd builtin"; fi
	for row in "${rows[@]}"; do
		for client in $order; do
			if [[ $client == builtin ]]; then
				t=$(VSTOR_NBD_CLIENT=builtin run_row "$row")
			else
				t=$(VSTOR_NBD_CLIENT=libnbd run_row "$row")
			fi
			printf '%s\t%s\t%s\n' "$row" "$client" "$t" >>"$cells"
		done
		if [[ $row == convert ]]; then
			rm -f "$work/q.raw"
			t=$(secs qemu-img convert -f raw -O raw "$uri" "$work/q.raw")
			printf '%s\t%s\t%s\n' "$row" qemu-img "$t" >>"$cells"
		fi
	done
done
python3 - "$cells" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    row, client, t = line.split()
    runs.setdefault(row, {}).setdefault(client, []).append(float(t))
print("%-9s %10s %10s %10s %16s" % ("row", "libnbd s", "builtin s", "qemu-img s", "libnbd/builtin"))
for row, v in runs.items():
    m = {c: statistics.median(x) for c, x in v.items()}
    q = "%10.3f" % m["qemu-img"] if "qemu-img" in m else "%10s" % "-"
    print("%-9s %10.3f %10.3f %s %16.3f" % (row, m["libnbd"], m["builtin"], q,
                                              m["libnbd"] / m["builtin"]))
PY
