#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The cost of a cross-host lease (issue 18's "Lease cost" row): the wall time
# of one write open and close of a volume of a netfs pool (nfs-ganesha in a
# private network namespace, as the tests start it), without and with
# sanlock leases (one sanlock daemon, host id 1, lockspace joined
# beforehand). The write open is `vstor-img resize -f raw vol:POOL/VOL SIZE`
# to the size the volume has (it opens for writing, changes nothing, and
# closes): with leases it also registers with the daemon, acquires the
# volume's resource lease and releases it at close.
#
# Prints one line per pool: the median of BENCH_REPS runs (alternating
# plain and leased), and the difference. Not a test: it asserts nothing.
# Needs root.
#
# Environment: BENCH_DIR (default var/bench), BENCH_REPS (default 7),
# BENCH_IO_TIMEOUT (the lockspace's sanlock io_timeout, default 10).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export VSTOR_BUILD_DIR=${VSTOR_BUILD_DIR:-$SRC/build}
BENCH_DIR=${BENCH_DIR:-$SRC/var/bench}
mkdir -p "$BENCH_DIR"
export TMPDIR=$BENCH_DIR VS_DAEMON_TIMEOUT=3600 VS_NFS_TIMEOUT=3600
. "$SRC/tests/integration/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-sanlock.sh"
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
require_vstor_img
find_built VSTOR cli/vstor
sanlock_require
nfs_enter_netns "$@"

REPS=${BENCH_REPS:-7}
IOT=${BENCH_IO_TIMEOUT:-10}
mkdir exp
nfs_start_server "$WORKDIR/exp" >/dev/null
sanlock_start_host 1
vstor() { on_host 1 timeout 300 "$VSTOR" "$@" >/dev/null; }
vstor pool-define-as plain netfs --source-host 127.0.0.1 --source-path /export
vstor pool-define-as leased netfs --source-host 127.0.0.1 --source-path /export \
	--extra sanlock_leases="$WORKDIR/exp/.leases" --extra sanlock_io_timeout="$IOT"
for p in plain leased; do
	vstor pool-build $p
	vstor pool-start $p
done
vstor vol-create-as plain v1 16M --format raw
vstor vol-create-as plain v2 16M --format raw

# open_close POOL VOL: milliseconds of one write open and close.
open_close()
{
	local t0 t1
	t0=$(date +%s%N)
	on_host 1 timeout 300 "$VSTOR_IMG" resize -f raw "vol:$1/$2" 16M >/dev/null ||
		fail "write open of vol:$1/$2"
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000))
}
# The first leased open joins the lockspace (2-3 io_timeouts): not measured.
open_close leased v2 >/dev/null
open_close plain v1 >/dev/null
plain=() leased=()
for ((i = 0; i < REPS; i++)); do
	plain+=("$(open_close plain v1)")
	leased+=("$(open_close leased v2)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
mp=$(median "${plain[@]}")
ml=$(median "${leased[@]}")
awk -v p="$mp" -v l="$ml" -v n="$REPS" 'BEGIN {
	printf "open+close, write (vstor-img resize, raw 16M on netfs), median of %d:\n", n
	printf "  without sanlock  %8.1f ms\n  with sanlock     %8.1f ms\n  lease cost       %8.1f ms\n",
		p / 1000, l / 1000, (l - p) / 1000 }'
echo "  runs (us): plain ${plain[*]}; leased ${leased[*]}"
