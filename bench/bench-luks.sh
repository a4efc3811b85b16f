#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Encrypted images (issue 17) in one run, every cell the median of
# BENCH_REPEAT runs that alternate between the tools of its row (so a load
# change on the machine hits every tool alike):
#
# 1. convert raw -> qcow2 with encrypt.format=luks, and that qcow2 -> raw:
#    qemu-img with its defaults and with -m 8 -W (as bench-convert.sh),
#    vstor-img, and vstor-img on one CPU (taskset -c 0: the worker pool
#    sizes itself from the affinity mask, so this is vstor without its
#    second core). Ratios qemu-img/vstor (> 1: vstor faster) and the
#    second-core speed-up (1 CPU / all CPUs).
# 2. reads and writes against QEMU with the secret: qemu-img 7.2's bench
#    takes no --object, so it cannot open an encrypted image in process.
#    The fairest anchor QEMU allows is its qcow2+luks stack in
#    qemu-storage-daemon (--object secret, aio=io_uring, the same cache
#    mode) against vstor-nbd with the same secret, both served over NBD on a
#    unix socket to the same client (qemu-img bench -f raw nbd+unix://...):
#    only the server's block layer and cipher differ. qemu-io's aio_* cannot
#    keep a queue depth, so it would measure its own loop.
# 3. vstor-img bench in process on the qcow2+luks image (a pool volume,
#    vol:benchp/..., the passphrase from the secret store): all CPUs against
#    one CPU (the second-core speed-up) and against the same data in a clear
#    qcow2 (clear/luks: the share of the speed the cipher leaves).
# Rows 2 and 3: 4 KiB requests at QD32 with a 68 KiB stride and 1 MiB
# sequential at QD4, reads and writes. The cpu column is (user+sys)/wall of
# vstor's median run: above 1.0 the second core was used. Not a test: it
# asserts nothing. See bench/README.md.
#
# Environment:
#   VSTOR_IMG, VSTOR, VSTOR_NBD  the programs (default: build/...)
#   BENCH_DIR       where the images go (default: var/bench-luks; not tmpfs)
#   BENCH_SIZE      image size (default 256M)
#   BENCH_COUNT     requests of the 4 KiB rows (default 20000)
#   BENCH_SEQ_COUNT requests of the 1 MiB rows (default 256)
#   BENCH_REPEAT    alternating runs per cell, the median counts (default 5)
#   BENCH_CACHE     cache mode of the bench rows: none or writeback (default none)
#   BENCH_PARTS     which parts to run (default "convert nbd inproc")
set -euo pipefail
cd "$(dirname "$0")/.."

VSTOR_IMG=${VSTOR_IMG:-build/cli/vstor-img}
VSTOR=${VSTOR:-build/cli/vstor}
VSTOR_NBD=${VSTOR_NBD:-build/nbd-server/vstor-nbd}
BENCH_DIR=${BENCH_DIR:-var/bench-luks}
BENCH_SIZE=${BENCH_SIZE:-256M}
BENCH_COUNT=${BENCH_COUNT:-20000}
BENCH_SEQ_COUNT=${BENCH_SEQ_COUNT:-256}
BENCH_REPEAT=${BENCH_REPEAT:-5}
BENCH_CACHE=${BENCH_CACHE:-none}
BENCH_PARTS=${BENCH_PARTS:-convert nbd inproc}

for t in qemu-img qemu-storage-daemon bc taskset; do
	command -v "$t" >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $VSTOR_IMG && -x $VSTOR && -x $VSTOR_NBD ]] ||
	{ echo "bench: $VSTOR_IMG, $VSTOR or $VSTOR_NBD not built" >&2; exit 1; }
case $BENCH_CACHE in
none) direct=on ;;
writeback) direct=off ;;
*) echo "bench: BENCH_CACHE is none or writeback" >&2; exit 1 ;;
esac

mkdir -p "$BENCH_DIR/pool"
BENCH_DIR=$(realpath "$BENCH_DIR")
raw=$BENCH_DIR/bench.raw
enc=$BENCH_DIR/pool/bench-luks.qcow2
plain=$BENCH_DIR/pool/bench-plain.qcow2
encq=$BENCH_DIR/bench-luks-qsd.qcow2
encv=$BENCH_DIR/bench-luks-nbd.qcow2
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
	rm -f "$enc" "$plain" "$encq" "$encv"
fi
if [[ ! -f $enc ]]; then
	echo "bench: converting to $enc (qcow2+luks, every cluster allocated)"
	qemu-img convert "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$enc"
fi
[[ -f $plain ]] || qemu-img convert -f raw -O qcow2 "$raw" "$plain"
# One copy per NBD server: each holds its image's write lock.
[[ -f $encq ]] || cp "$enc" "$encq"
[[ -f $encv ]] || cp "$enc" "$encv"

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

SERVERS=()
cleanup()
{
	local p
	for p in "${SERVERS[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -f "$BENCH_DIR/out.qcow2" "$BENCH_DIR/out.raw" "$BENCH_DIR/err" "$BENCH_DIR/time"
}
trap cleanup EXIT

# once CMD...: "wall cpu" of one run (cpu = user+sys), "nan nan" if it failed.
# qemu-img's PBKDF2 calibration fails now and then ("Unable to get accurate
# CPU usage", not a measurement): such a run is run again, up to 5 times.
once()
{
	local _ ok=0
	for _ in 1 2 3 4 5; do
		rm -f "$BENCH_DIR/out.qcow2" "$BENCH_DIR/out.raw"
		sync
		if /usr/bin/time -o "$BENCH_DIR/time" -f '%e %U %S' "$@" >/dev/null 2>"$BENCH_DIR/err"; then
			ok=1
			break
		fi
		grep -q 'Unable to get accurate CPU usage' "$BENCH_DIR/err" || break
	done
	if ((!ok)); then
		echo "bench: $* failed:" >&2
		cat "$BENCH_DIR/err" >&2
		echo "nan nan"
		return
	fi
	local wall u s
	read -r wall u s <<<"$(tail -1 "$BENCH_DIR/time")"
	echo "$wall $(echo "$u + $s" | bc -l)"
}

# median V...: the middle value (the mean of the two middle ones if even).
median()
{
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# measure FN...: BENCH_REPEAT rounds, each running every FN once in turn;
# MED[i] and CPU[i] are the medians of the i-th FN's wall and cpu times.
measure()
{
	local -a walls cpus
	local r i w c
	for ((i = 0; i < $#; i++)); do walls[i]="" cpus[i]=""; done
	for ((r = 0; r < BENCH_REPEAT; r++)); do
		i=0
		for fn in "$@"; do
			read -r w c <<<"$("$fn")"
			walls[i]+=" $w"
			cpus[i]+=" $c"
			i=$((i + 1))
		done
	done
	MED=() CPU=()
	for ((i = 0; i < $#; i++)); do
		# shellcheck disable=SC2086
		MED[i]=$(median ${walls[i]})
		# shellcheck disable=SC2086
		CPU[i]=$(median ${cpus[i]})
	done
}

div() { echo "scale=2; $1 / $2" | bc -l 2>/dev/null || echo nan; }

part() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }

echo "bench-luks: $BENCH_SIZE, median of $BENCH_REPEAT alternating runs, cache $BENCH_CACHE"

# ---- 1. convert
if part convert; then
	printf '\n%-20s %8s %8s %8s %8s %7s %7s %7s %5s\n' "convert ($BENCH_SIZE)" qemu-img \
		"-m8 -W" vstor "vs 1cpu" "q/vs" "qW/vs" "2ndcore" cpu
	for dir in to-luks to-raw; do
		if [[ $dir == to-luks ]]; then
			A=(convert "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$BENCH_DIR/out.qcow2")
			AW=(convert -m 8 -W "${OBJ[@]}" -f raw -O qcow2 -o "$ENC" "$raw" "$BENCH_DIR/out.qcow2")
			title="raw -> qcow2+luks"
		else
			A=(convert "${OBJ[@]}" --image-opts "$OPTS" -O raw "$BENCH_DIR/out.raw")
			AW=(convert -m 8 -W "${OBJ[@]}" --image-opts "$OPTS" -O raw "$BENCH_DIR/out.raw")
			title="qcow2+luks -> raw"
		fi
		t_q() { once qemu-img "${A[@]}"; }
		t_qw() { once qemu-img "${AW[@]}"; }
		t_v() { once "$VSTOR_IMG" "${A[@]}"; }
		t_v1() { once taskset -c 0 "$VSTOR_IMG" "${A[@]}"; }
		measure t_q t_qw t_v t_v1
		printf '%-20s %8s %8s %8s %8s %7s %7s %7s %5s\n' "$title" "${MED[0]}" "${MED[1]}" \
			"${MED[2]}" "${MED[3]}" "$(div "${MED[0]}" "${MED[2]}")" \
			"$(div "${MED[1]}" "${MED[2]}")" "$(div "${MED[3]}" "${MED[2]}")" \
			"$(div "${CPU[2]}" "${MED[2]}")"
	done
fi

# The bench rows: name and qemu-img/vstor-img bench arguments.
ROWS=("4k QD32 stride read|-c $BENCH_COUNT -d 32 -s 4096 -S 69632"
	"1M sequential read|-c $BENCH_SEQ_COUNT -d 4 -s 1M -S 1M"
	"4k QD32 stride write|-c $BENCH_COUNT -d 32 -s 4096 -S 69632 -w"
	"1M sequential write|-c $BENCH_SEQ_COUNT -d 4 -s 1M -S 1M -w")

# ---- 2. QEMU's stack (qemu-storage-daemon) against vstor-nbd, one client
if part nbd; then
	qsock=$BENCH_DIR/qsd.sock
	vsock=$BENCH_DIR/vnbd.sock
	rm -f "$qsock" "$vsock"
	qemu-storage-daemon "${OBJ[@]}" \
		--blockdev "driver=file,node-name=f,filename=$encq,cache.direct=$direct,aio=io_uring" \
		--blockdev driver=qcow2,node-name=q,file=f,encrypt.format=luks,encrypt.key-secret=s0 \
		--nbd-server "addr.type=unix,addr.path=$qsock" \
		--export type=nbd,id=e,node-name=q,name=d,writable=on >"$BENCH_DIR/qsd.log" 2>&1 &
	SERVERS+=("$!")
	"$VSTOR_NBD" -t -e 0 -k "$vsock" -x d --cache="$BENCH_CACHE" "${OBJ[@]}" --image-opts \
		"driver=qcow2,encrypt.key-secret=s0,file.filename=$encv" >"$BENCH_DIR/vnbd.log" 2>&1 &
	SERVERS+=("$!")
	for ((i = 0; i < 200; i++)); do
		[[ -S $qsock && -S $vsock ]] && break
		sleep 0.05
	done
	[[ -S $qsock && -S $vsock ]] ||
		{ cat "$BENCH_DIR/qsd.log" "$BENCH_DIR/vnbd.log" >&2; echo "bench: servers not up" >&2; exit 1; }
	printf '\n%-20s %8s %8s %7s %5s\n' "NBD, qemu-img bench" qsd vstor "q/vs" cpu
	for r in "${ROWS[@]}"; do
		read -r -a B <<<"${r#*|}"
		t_q() { once qemu-img bench -f raw -t none "${B[@]}" "nbd+unix:///d?socket=$qsock"; }
		t_v() { once qemu-img bench -f raw -t none "${B[@]}" "nbd+unix:///d?socket=$vsock"; }
		measure t_q t_v
		printf '%-20s %8s %8s %7s %5s\n' "${r%%|*}" "${MED[0]}" "${MED[1]}" \
			"$(div "${MED[0]}" "${MED[1]}")" "-"
	done
	for p in "${SERVERS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	SERVERS=()
fi

# ---- 3. vstor-img bench in process: all CPUs, one CPU, a clear image
if part inproc; then
	printf '\n%-20s %8s %8s %8s %7s %7s %5s\n' "in process (vstor)" luks "luks 1cpu" clear \
		"2ndcore" "cl/luks" cpu
	for r in "${ROWS[@]}"; do
		read -r -a B <<<"${r#*|}"
		t_v() { once "$VSTOR_IMG" bench -t "$BENCH_CACHE" "${B[@]}" vol:benchp/bench-luks.qcow2; }
		t_v1() {
			once taskset -c 0 "$VSTOR_IMG" bench -t "$BENCH_CACHE" "${B[@]}" \
				vol:benchp/bench-luks.qcow2
		}
		t_c() { once "$VSTOR_IMG" bench -t "$BENCH_CACHE" "${B[@]}" vol:benchp/bench-plain.qcow2; }
		measure t_v t_v1 t_c
		printf '%-20s %8s %8s %8s %7s %7s %5s\n' "${r%%|*}" "${MED[0]}" "${MED[1]}" "${MED[2]}" \
			"$(div "${MED[1]}" "${MED[0]}")" "$(div "${MED[2]}" "${MED[0]}")" \
			"$(div "${CPU[0]}" "${MED[0]}")"
	done
fi
