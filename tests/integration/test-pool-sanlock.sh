#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Cross-host volume leases (sanlock) on a netfs pool: nfs-ganesha serves the
# export, two sanlock daemons (host ids 1 and 2) share its lease directory
# (the export's directory itself stands in for each host's mount of it).
# Host 1 serves a volume over NBD; host 2's writers (vstor-nbd, vstor-img)
# are refused with the holder's id, and so are its delete, wipe and shrink;
# once host 1 stops, host 2 takes the volume and sees host 1's data. The
# same for an iscsi pool on tgtd, whose lease directory is on the NFS export
# (a LUN is no file or block device that sanlock could open here). A lost
# lease (its writes then fail with EIO) and the failover after a host dies
# (>= 68 s) are in test-pool-sanlock-failover (long tier).
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-sanlock.sh"
. "$VS_LIB_DIR/lib-iscsi.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool nbdsh
require_vstor_img
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
sanlock_require
nfs_enter_netns "$@"
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir exp
nfs_start_server "$WORKDIR/exp"
sanlock_start_host 1
sanlock_start_host 2
leases=$WORKDIR/exp/.leases
# The iscsi pool's target, and its leases in a directory of the same export.
IQN=iqn.2026-12.org.vstor.test:leases
truncate -s 16M lun1
iscsi_start_target
iscsi_add_target 1 "$IQN"
iscsi_add_lun 1 1 "$WORKDIR/lun1"
iscsi_bind 1
ileases=$WORKDIR/exp/.leases-ip

for h in 1 2; do
	assert_rc 0 on_host $h vstor pool-define-as np netfs --source-host 127.0.0.1 \
		--source-path /export --extra sanlock_leases="$leases" --extra sanlock_io_timeout=1
	# Host 2's build finds the lockspace and keeps it.
	assert_rc 0 on_host $h vstor pool-build np
	assert_rc 0 on_host $h vstor pool-start np
	assert_rc 0 on_host $h vstor pool-define-as ip iscsi --source-host "127.0.0.1:$ISCSI_PORT" \
		--source-dev "$IQN" --extra sanlock_leases="$ileases" --extra sanlock_io_timeout=1
	assert_rc 0 on_host $h vstor pool-build ip
	assert_rc 0 on_host $h vstor pool-start ip
done
[[ -s $ileases/__lockspace__ ]] || fail "pool-build of the iscsi pool wrote no lockspace"
[[ -s $leases/__lockspace__ ]] || fail "pool-build wrote no lockspace"
assert_rc 0 on_host 1 vstor vol-create-as np v1 16M --format raw

# --- host 1 serves v1: it holds the lease ---
start_on_host 1 nbd1.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd1.sock" -f raw \
	--pid-file "$WORKDIR/nbd1.pid" vol:np/v1
nbd1=$DAEMON_PID
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd1.sock" \
	-c 'h.pwrite(b"\x5a" * 65536, 1048576); h.flush()' || fail "write through host 1"
assert_rc 0 on_host 2 vstor vol-lease v1 --pool np
assert_grep '^Lease holder: +host 1$' "$WORKDIR/out" "vol-lease on host 2"

# --- host 2 cannot write it, nor delete, wipe or shrink it (even forced) ---
assert_fails on_host 2 timeout --kill-after=5 60 "$VSTOR_NBD" -k "$WORKDIR/nbd2.sock" -f raw vol:np/v1
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vstor-nbd"
assert_fails on_host 2 vstor_img resize -f raw vol:np/v1 32M
assert_grep "'v1' of pool 'np' is in use by host 1" "$WORKDIR/err" "host 2's vstor-img"
assert_fails on_host 2 vstor vol-delete v1 --pool np --force
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vol-delete --force"
assert_fails on_host 2 vstor vol-wipe v1 --pool np
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vol-wipe"
assert_fails on_host 2 vstor vol-resize v1 8M --pool np --shrink
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vol-resize --shrink"
# Readers need no lease.
assert_rc 0 on_host 2 vstor_img info vol:np/v1
[[ -e exp/v1 ]] || fail "host 2's refused delete removed the volume"

# --- host 1 stops: host 2 takes the volume and reads host 1's data ---
stop_pid "$nbd1"
assert_rc 0 on_host 2 vstor vol-lease v1 --pool np
assert_grep '^Lease holder: +none$' "$WORKDIR/out" "vol-lease after host 1 stopped"
start_on_host 2 nbd2.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd2.sock" -f raw \
	--pid-file "$WORKDIR/nbd2.pid" vol:np/v1
nbd2=$DAEMON_PID
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd2.sock" -c '
assert h.pread(65536, 1048576) == b"\x5a" * 65536
h.pwrite(b"\x21" * 4096, 0)
h.flush()' || fail "host 2 reads host 1's data and writes"
assert_rc 0 on_host 1 vstor vol-lease v1 --pool np --output json
assert_grep '"holder": *2' "$WORKDIR/out" "vol-lease --output json on host 1"

stop_pid "$nbd2"

# --- the iscsi pool: host 1 writes a LUN, host 2 is refused, then takes it ---
lun=unit:0:0:1
start_on_host 1 nbdi1.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbdi1.sock" -f raw \
	--pid-file "$WORKDIR/nbdi1.pid" "vol:ip/$lun"
nbdi1=$DAEMON_PID
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbdi1.sock" \
	-c 'h.pwrite(b"\x3c" * 65536, 65536); h.flush()' || fail "write through host 1 (iscsi)"
assert_rc 0 on_host 2 vstor vol-lease "$lun" --pool ip
assert_grep '^Lease holder: +host 1$' "$WORKDIR/out" "vol-lease of the LUN on host 2"
assert_fails on_host 2 vstor_img resize -f raw "vol:ip/$lun" 32M
assert_grep "'$lun' of pool 'ip' is in use by host 1" "$WORKDIR/err" "host 2's write open of the LUN"
assert_fails on_host 2 vstor vol-wipe "$lun" --pool ip
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vol-wipe of the LUN"
cmp -n 65536 -i 65536:0 lun1 <(head -c 65536 /dev/zero | tr '\0' '\074') ||
	fail "the LUN lost host 1's data"
stop_pid "$nbdi1"
start_on_host 2 nbdi2.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbdi2.sock" -f raw \
	--pid-file "$WORKDIR/nbdi2.pid" "vol:ip/$lun"
nbdi2=$DAEMON_PID
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbdi2.sock" -c '
assert h.pread(65536, 65536) == b"\x3c" * 65536
h.pwrite(b"\x21" * 4096, 0)
h.flush()' || fail "host 2 reads host 1's data on the LUN and writes"
assert_rc 0 on_host 1 vstor vol-lease "$lun" --pool ip --output json
assert_grep '"holder": *2' "$WORKDIR/out" "vol-lease of the LUN on host 1"
stop_pid "$nbdi2"
log "ok"
