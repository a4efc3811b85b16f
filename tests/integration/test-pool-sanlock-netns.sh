#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Cross-host leases with two hosts as two network namespaces (long tier:
# sanlock's failover takes 8 x io_timeout + 60 s >= 68 s by design).
# nfs-ganesha serves the export in the test's namespace; hosts 1 and 2 each
# have a network namespace of their own, joined to it by a veth pair, and
# reach the export only through it: the volume's data (vstor's libnfs) and
# the lease files, which each host sees as regular files exported by a
# qemu-storage-daemon of its own (FUSE export of an nfs node: the stand-in
# for each host's kernel NFS mount, which this machine does not have).
# The same for an iscsi pool: tgtd serves a LUN in the test's namespace,
# which the hosts reach through the same links (vstor's libiscsi), and the
# pool's lease area is a second directory of the export.
# Host 1 writes both volumes, host 2 is refused; host 1's link goes down: its
# writes fail once its lease renewals have failed, host 2 takes the volumes
# after the leases expired, and no write of host 1 lands after host 2's,
# even once host 1's link is up again.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-sanlock.sh"
. "$VS_LIB_DIR/lib-iscsi.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool nbdsh nsenter qemu-storage-daemon
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
sanlock_require
nfs_enter_netns "$@"
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir -p exp/.leases exp/.leases-ip
nfs_start_server "$WORKDIR/exp"
# The iscsi pool's LUN, on every address of this namespace.
ISCSI_ADDR=0.0.0.0
IQN=iqn.2026-12.org.vstor.test:netns
LUN=unit:0:0:1
truncate -s 16M lun1
iscsi_start_target
iscsi_add_target 1 "$IQN"
iscsi_add_lun 1 1 "$WORKDIR/lun1"
iscsi_bind 1

# The hosts' namespaces: host N is 10.99.N.2, the server 10.99.N.1 for it.
for h in 1 2; do
	ip netns add "vsh$h" || fail "ip netns add vsh$h"
	at_exit "ip netns del vsh$h 2>/dev/null"
	ip link add "vsl$h" type veth peer name eth0 netns "vsh$h" || fail "veth of host $h"
	ip addr add "10.99.$h.1/24" dev "vsl$h"
	ip link set "vsl$h" up
	ip -n "vsh$h" addr add "10.99.$h.2/24" dev eth0
	ip -n "vsh$h" link set eth0 up
	ip -n "vsh$h" link set lo up
done
in_ns() { local h=$1; shift; nsenter --net="/run/netns/vsh$h" "$@"; }

# The lease area, written once on the server (the lockspace as pool-build
# would write it, and the volume's resource). io_timeout 2, not 1: a host
# counts its lease lost after 6 io_timeouts without a renewal, and renewals
# through FUSE and NFS on a loaded machine (ASan) came 6 s apart.
lfile=$WORKDIR/exp/.leases
truncate -s 1M "$lfile/__lockspace__" "$lfile/v1.lease"
sanlock direct init -s "vstor-np:0:$lfile/__lockspace__:0" -o 2 >/dev/null ||
	fail "sanlock direct init of the lockspace"
sanlock direct init -r "vstor-np:v1:$lfile/v1.lease:0" >/dev/null ||
	fail "sanlock direct init of the resource"
ilfile=$WORKDIR/exp/.leases-ip
truncate -s 1M "$ilfile/__lockspace__" "$ilfile/$LUN.lease"
sanlock direct init -s "vstor-ip:0:$ilfile/__lockspace__:0" -o 2 >/dev/null ||
	fail "sanlock direct init of the iscsi pool's lockspace"
# (a ':' in a sanlock name or path is written '\:')
sanlock direct init -r "vstor-ip:${LUN//:/\\:}:$ilfile/${LUN//:/\\:}.lease:0" >/dev/null ||
	fail "sanlock direct init of the LUN's resource"

# Each host's view of the lease files: FUSE files over NFS through its link.
lease_view_up() { [[ $(stat -c %s "$1/__lockspace__" 2>/dev/null) == 1048576 ]]; }
for h in 1 2; do
	args=()
	for f in .leases/__lockspace__ .leases/v1.lease .leases-ip/__lockspace__ ".leases-ip/$LUN.lease"; do
		v=$WORKDIR/host$h/${f#.}
		mkdir -p "${v%/*}"
		touch "$v"
		n=n${#args[@]}
		args+=(--blockdev "driver=nfs,node-name=$n,server.type=inet,server.host=10.99.$h.1,path=/export/$f"
			--export "type=fuse,id=e$n,node-name=$n,mountpoint=$v,writable=on")
		at_exit "umount -l '$v' 2>/dev/null"
	done
	in_ns $h timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" qemu-storage-daemon "${args[@]}" \
		>"$WORKDIR/qsd$h.log" 2>&1 &
	register_pid $!
	wait_for 20 lease_view_up "$WORKDIR/host$h/leases"
	wait_for 20 lease_view_up "$WORKDIR/host$h/leases-ip"
done
# (the daemons' mount namespaces copy the FUSE mounts: start them after)
sanlock_start_host 1
sanlock_start_host 2

for h in 1 2; do
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-define-as np netfs --source-host "10.99.$h.1" \
		--source-path /export --extra sanlock_leases="$WORKDIR/host$h/leases"
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-build np
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-start np
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-define-as ip iscsi \
		--source-host "10.99.$h.1:$ISCSI_PORT" --source-dev "$IQN" \
		--extra sanlock_leases="$WORKDIR/host$h/leases-ip"
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-build ip
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-start ip
done
assert_rc 0 on_host 1 in_ns 1 "$VSTOR" vol-create-as np v1 16M --format raw

# --- host 1 writes; host 2 is refused ---
start_on_host 1 nbd1.pid 60 nsenter --net=/run/netns/vsh1 "$VSTOR_NBD" -t -k "$WORKDIR/nbd1.sock" -f raw \
	--pid-file "$WORKDIR/nbd1.pid" vol:np/v1
nbd1=$DAEMON_PID
nbd1_err=$WORKDIR/daemon.$VS_NDAEMONS.err
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd1.sock" \
	-c 'h.pwrite(b"\x5a" * 4096, 0); h.flush()' || fail "write through host 1"
assert_fails on_host 2 in_ns 2 timeout --kill-after=5 60 "$VSTOR_NBD" -k "$WORKDIR/nbd2.sock" \
	-f raw vol:np/v1
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vstor-nbd"
assert_rc 0 on_host 2 in_ns 2 "$VSTOR" vol-lease v1 --pool np
assert_grep '^Lease holder: +host 1$' "$WORKDIR/out" "vol-lease on host 2"
# The LUN: host 1 writes it through its link, host 2 is refused.
start_on_host 1 nbdi1.pid 60 nsenter --net=/run/netns/vsh1 "$VSTOR_NBD" -t -k "$WORKDIR/nbdi1.sock" \
	-f raw --pid-file "$WORKDIR/nbdi1.pid" "vol:ip/$LUN"
nbdi1=$DAEMON_PID
nbdi1_err=$WORKDIR/daemon.$VS_NDAEMONS.err
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbdi1.sock" \
	-c 'h.pwrite(b"\x3c" * 4096, 0); h.flush()' || fail "write through host 1 (iscsi)"
assert_fails on_host 2 in_ns 2 timeout --kill-after=5 60 "$VSTOR_NBD" -k "$WORKDIR/nbdi2.sock" \
	-f raw "vol:ip/$LUN"
assert_grep "in use by host 1" "$WORKDIR/err" "host 2's vstor-nbd on the LUN"

# --- host 1's link goes down: its lease renewals fail, then its writes ---
ip link set vsl1 down
cut_at=$SECONDS
lease_lost() { grep -q "lost the sanlock lease of volume '$2'" "$1"; }
# (no write before the loss is seen: it would wait on the cut link)
wait_for 30 lease_lost "$nbd1_err" v1
wait_for 30 lease_lost "$nbdi1_err" "$LUN"
log "host 1 saw its leases lost $((SECONDS - cut_at))s after its link went down"
sanlock_write_fails "$WORKDIR/nbd1.sock" 8192 || fail "host 1 wrote after its lease loss"
sanlock_write_fails "$WORKDIR/nbdi1.sock" 8192 || fail "host 1 wrote the LUN after its lease loss"

# --- host 2 takes the volume once host 1's lease has expired ---
# host2_takes SOCK VOL: host 2 serves VOL on SOCK, retried until the lease is free.
host2_takes()
{
	local sock=$1 vol=$2 deadline=$((SECONDS + 180)) took
	until on_host 2 in_ns 2 timeout --kill-after=5 30 "$VSTOR_NBD" --fork -t -k "$sock" \
		-f raw --pid-file "$sock.pid" "$vol" 2>>"$WORKDIR/host2-tries.err"; do
		((SECONDS < deadline)) || fail "host 2 never got $vol"
		sleep 2
	done
	register_pid "$(<"$sock.pid")"
	took=$((SECONDS - cut_at))
	log "host 2 took $vol ${took}s after host 1's link went down"
	((took >= 60)) || fail "host 2 took $vol after ${took}s: before host 1's lease expired"
}
host2_takes "$WORKDIR/nbd2.sock" vol:np/v1
host2_takes "$WORKDIR/nbdi2.sock" "vol:ip/$LUN"
assert_grep "in use by host 1" "$WORKDIR/host2-tries.err" "host 2's refused tries"
for s in nbd2:5a nbdi2:3c; do
	nbdsh -u "nbd+unix:///?socket=$WORKDIR/${s%:*}.sock" -c '
assert h.pread(4096, 0) == b"\x'"${s#*:}"'" * 4096
h.pwrite(b"\x21" * 4096, 0)
h.flush()' || fail "host 2 reads host 1's data and writes (${s%:*})"
done

# --- host 1's link comes back: still fenced; host 2's write stays ---
ip link set vsl1 up
sanlock_write_fails "$WORKDIR/nbd1.sock" 0 || fail "host 1 wrote after host 2 took the volume"
sanlock_write_fails "$WORKDIR/nbdi1.sock" 0 || fail "host 1 wrote the LUN after host 2 took it"
stop_pid "$nbd1"
stop_pid "$nbdi1"
for f in exp/v1 lun1; do
	cmp -n 4096 "$f" <(head -c 4096 /dev/zero | tr '\0' '\041') ||
		fail "a write of host 1 landed after host 2's ($f)"
	cmp -n 8192 -i 4096:0 "$f" /dev/zero || fail "a fenced write of host 1 landed ($f)"
done
# (host 1's sanlock daemon is still removing its failed lockspace: it cannot
# answer for it yet, so host 2 does)
assert_rc 0 on_host 2 in_ns 2 "$VSTOR" vol-lease v1 --pool np --output json
assert_grep '"holder": *2' "$WORKDIR/out" "vol-lease after host 1's link came back"
log "ok"
