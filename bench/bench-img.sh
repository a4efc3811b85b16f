#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-img bench against qemu-img bench: the same arguments on the same raw
# image and the same fully allocated qcow2 image, cache none and writeback,
# against qemu-img's thread pool and its io_uring path (-i io_uring). Each
# repetition runs the three tools in a rotating order; a row prints the
# median and the best time of each and the median over the repetitions of
# the per-repetition ratio qemu-img/vstor-img (> 1.0: vstor is faster), then
# qcow2 against raw for allocated reads. Not a test: it asserts nothing.
# See bench/README.md.
#
# Environment:
#   VSTOR_IMG       vstor-img to measure (default: build/cli/vstor-img)
#   BENCH_DIR       where the images go (default: var/bench; must support O_DIRECT,
#                   so not tmpfs)
#   BENCH_SIZE      image size (default 1G)
#   BENCH_COUNT     requests of the 4 KiB rows (default 100000)
#   BENCH_SEQ_COUNT requests of the 1 MiB rows (default 2048)
#   BENCH_REPEAT    repetitions per row (default 5)
#   BENCH_CACHES    cache modes (default "none writeback")
#   BENCH_QEMU_AIO  qemu-img's -i settings to compare against (default
#                   "threads io_uring")
#   BENCH_ROWS      rows to run (default "4k-read 4k-write 1M-read 1M-write")
#   BENCH_FORMATS   formats (default "raw qcow2")
#   BENCH_TIME      wall (default): the whole command, start-up included;
#                   run: the "Run completed in" time both tools print, the
#                   engine alone
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
BENCH_DIR=${BENCH_DIR:-var/bench}
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_COUNT=${BENCH_COUNT:-100000}
BENCH_SEQ_COUNT=${BENCH_SEQ_COUNT:-2048}
BENCH_REPEAT=${BENCH_REPEAT:-5}
read -r -a caches <<<"${BENCH_CACHES:-none writeback}"
read -r -a aios <<<"${BENCH_QEMU_AIO:-threads io_uring}"
read -r -a want_rows <<<"${BENCH_ROWS:-4k-read 4k-write 1M-read 1M-write}"
read -r -a formats <<<"${BENCH_FORMATS:-raw qcow2}"
BENCH_TIME=${BENCH_TIME:-wall}

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

# run1 TOOL ARGS...: the time (BENCH_TIME) of one run in seconds, or nan.
run1()
{
	local tool=$1 t0 t1
	shift
	t0=$(date +%s.%N)
	if ! "$tool" bench "$@" >"$BENCH_DIR/out" 2>"$BENCH_DIR/err"; then
		echo "bench: $tool bench $* failed:" >&2
		cat "$BENCH_DIR/err" >&2
		echo nan
		return
	fi
	t1=$(date +%s.%N)
	if [[ $BENCH_TIME == run ]]; then
		awk '/^Run completed in/ { print $4 }' "$BENCH_DIR/out"
	else
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
	fi
}

# stats V...: "median best" of the numbers (nan when any is nan).
stats() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } /nan/ { bad = 1 }
	END { if (bad || !NR) { print "nan nan"; exit }
	      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
	      printf "%.3f %.3f\n", m, v[1] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.3f", a / b }'; }

declare -A vmed
declare -A rowargs=(
	[4k-read]="-c $BENCH_COUNT -d 32 -s 4096 -S 69632"
	[4k-write]="-c $BENCH_COUNT -d 32 -s 4096 -S 69632 -w"
	[1M-read]="-c $BENCH_SEQ_COUNT -s 1M -S 1M"
	[1M-write]="-c $BENCH_SEQ_COUNT -s 1M -S 1M -w"
)
tools=(vstor "${aios[@]}")
hdr=$(printf '%-10s %-6s %-9s' cache format op)
for a in "${aios[@]}"; do hdr+=$(printf ' %15s' "qemu-$a"); done
hdr+=$(printf ' %15s' vstor-img)
for a in "${aios[@]}"; do hdr+=$(printf ' %9s' "vs/$a"); done
echo "times: median/best seconds over $BENCH_REPEAT rotating repetitions; ratios: median of per-repetition qemu/vstor (> 1: vstor faster)"
echo "$hdr"
slower=0
for cache in "${caches[@]}"; do
	for fmt in "${formats[@]}"; do
		img=$raw
		[[ $fmt == qcow2 ]] && img=$qcow2
		for op in "${want_rows[@]}"; do
			read -r -a args <<<"${rowargs[$op]}"
			declare -A times=()
			declare -a ratios=()
			for ((i = 0; i < BENCH_REPEAT; i++)); do
				declare -A t=()
				for ((k = 0; k < ${#tools[@]}; k++)); do
					tool=${tools[$(((k + i) % ${#tools[@]}))]}
					if [[ $tool == vstor ]]; then
						t[$tool]=$(run1 "$VSTOR_IMG" "${args[@]}" -f "$fmt" -t "$cache" "$img")
					else
						t[$tool]=$(run1 qemu-img "${args[@]}" -i "$tool" -f "$fmt" -t "$cache" "$img")
					fi
					times[$tool]+=" ${t[$tool]}"
				done
				for a in "${aios[@]}"; do
					ratios+=("$a $(ratio "${t[$a]}" "${t[vstor]}")")
				done
				unset t
			done
			line=$(printf '%-10s %-6s %-9s' "$cache" "$fmt" "$op")
			for tool in "${aios[@]}" vstor; do
				# shellcheck disable=SC2086
				read -r m b <<<"$(stats ${times[$tool]})"
				line+=$(printf ' %7s/%-7s' "$m" "$b")
				[[ $tool == vstor ]] && vmed[$cache/$fmt/$op]=$m
			done
			mark=""
			for a in "${aios[@]}"; do
				# shellcheck disable=SC2046
				read -r r _ <<<"$(stats $(printf '%s\n' "${ratios[@]}" | awk -v a="$a" '$1 == a { print $2 }'))"
				line+=$(printf ' %9s' "$r")
				if [[ $r != nan ]] && awk -v r="$r" 'BEGIN { exit !(r < 1.0) }'; then
					mark=" <"
				fi
			done
			[[ -n $mark ]] && slower=$((slower + 1))
			echo "$line$mark"
			unset times ratios
		done
	done
done

echo
echo "qcow2 against raw, allocated reads (vstor-img medians; target: qcow2 within 10% of raw)"
printf '%-10s %-10s %9s %9s %10s\n' cache op raw qcow2 qcow2/raw
for cache in "${caches[@]}"; do
	for op in 4k-read 1M-read; do
		r=${vmed[$cache/raw/$op]:-nan}
		c=${vmed[$cache/qcow2/$op]:-nan}
		printf '%-10s %-10s %9s %9s %10s\n' "$cache" "$op" "$r" "$c" "$(ratio "$c" "$r")"
	done
done
echo
echo "rows where vstor-img is slower than a qemu-img setting (marked <): $slower"
