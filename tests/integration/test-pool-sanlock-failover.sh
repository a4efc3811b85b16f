#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Cross-host leases, the slow half (long tier: sanlock's failover takes
# 8 x io_timeout + 60 s >= 68 s by design). Host 1 serves a volume of a
# netfs pool; its sanlock daemon dies (the host's lease can no longer be
# renewed), so host 1's writes fail with EIO from then on while its
# vstor-nbd keeps running. Host 2 is refused until host 1's lease has
# expired, then takes the volume; host 1's later writes never land. Then
# the lease storage fails under host 2: its writes fail, its server lives.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-sanlock.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool nbdsh
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
sanlock_require
nfs_enter_netns "$@"
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir exp
nfs_start_server "$WORKDIR/exp"
sanlock_start_host 1
sanlock_start_host 2
for h in 1 2; do
	assert_rc 0 on_host $h vstor pool-define-as np netfs --source-host 127.0.0.1 \
		--source-path /export --extra sanlock_leases="$WORKDIR/exp/.leases" \
		--extra sanlock_io_timeout=1
	assert_rc 0 on_host $h vstor pool-build np
	assert_rc 0 on_host $h vstor pool-start np
done
assert_rc 0 on_host 1 vstor vol-create-as np v1 16M --format raw
start_on_host 1 nbd1.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd1.sock" -f raw \
	--pid-file "$WORKDIR/nbd1.pid" vol:np/v1
nbd1=$DAEMON_PID
nbd1_err=$WORKDIR/daemon.$VS_NDAEMONS.err
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd1.sock" \
	-c 'h.pwrite(b"\x5a" * 4096, 0); h.flush()' || fail "write through host 1"

# --- host 1 loses its lease: its writes fail, its reads go on ---
kill -KILL "$(<"$WORKDIR/host1/run/sanlock.pid")"
# (writes before the monitor saw the loss may land: they are still covered)
wait_for 10 sanlock_write_fails "$WORKDIR/nbd1.sock" 8192
assert_grep "lost the sanlock lease of volume 'v1'" "$nbd1_err" "host 1's vstor-nbd"
sanlock_write_fails "$WORKDIR/nbd1.sock" 12288 || fail "host 1 wrote after its lease loss"
cmp -n 4096 -i 0:12288 /dev/zero exp/v1 || fail "a write after the lease loss landed"
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd1.sock" \
	-c 'assert h.pread(4096, 0) == b"\x5a" * 4096' || fail "host 1 reads after the loss"

# --- host 2: refused while host 1's lease may still be alive, then takes it ---
lost_at=$SECONDS
host2_takes()
{
	on_host 2 timeout --kill-after=5 30 "$VSTOR_NBD" --fork -t -k "$WORKDIR/nbd2.sock" -f raw \
		--pid-file "$WORKDIR/nbd2.pid" vol:np/v1 2>>"$WORKDIR/host2-tries.err"
}
deadline=$((SECONDS + 150))
until host2_takes; do
	((SECONDS < deadline)) || fail "host 2 never got the volume"
	sleep 2
done
register_pid "$(<"$WORKDIR/nbd2.pid")"
took=$((SECONDS - lost_at))
log "host 2 took the volume ${took}s after host 1's lease was lost"
((took >= 60)) || fail "host 2 took the volume after ${took}s: before host 1's lease expired"
assert_grep "in use by host 1" "$WORKDIR/host2-tries.err" "host 2's refused tries"
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd2.sock" -c '
assert h.pread(4096, 0) == b"\x5a" * 4096
h.pwrite(b"\x21" * 4096, 0)
h.flush()' || fail "host 2 reads and writes"
# Host 1, still running, writes once more: refused; host 2's data stays.
sanlock_write_fails "$WORKDIR/nbd1.sock" 0 || fail "host 1 wrote after host 2 took the volume"
cmp -n 4096 exp/v1 <(head -c 4096 /dev/zero | tr '\0' '\041') ||
	fail "host 2's write is not what the volume holds"
stop_pid "$nbd1"

# --- the lease storage fails under host 2 (its lockspace reads come back
#     short): within 6 io_timeouts its writes fail, its vstor-nbd lives on ---
nbd2_err=$WORKDIR/host2-tries.err # --fork keeps stderr
truncate -s 0 exp/.leases/__lockspace__
wait_for 30 sanlock_write_fails "$WORKDIR/nbd2.sock" 16384
assert_grep "lost the sanlock lease of volume 'v1' .*not renewed in time" "$nbd2_err" \
	"host 2's vstor-nbd"
sanlock_write_fails "$WORKDIR/nbd2.sock" 20480 || fail "host 2 wrote after its lease loss"
cmp -n 4096 -i 0:20480 /dev/zero exp/v1 || fail "host 2's write after its lease loss landed"
kill -0 "$(<"$WORKDIR/nbd2.pid")" || fail "host 2's vstor-nbd did not survive its lease loss"
log "ok"
