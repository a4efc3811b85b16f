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
# Host 1 writes, host 2 is refused; host 1's link goes down: its writes fail
# once its lease renewals have failed, host 2 takes the volume after the
# lease expired, and no write of host 1 lands after host 2's, even once
# host 1's link is up again.
. "$(dirname "$0")/lib.sh"
. "$VS_LIB_DIR/lib-nfs.sh"
. "$VS_LIB_DIR/lib-sanlock.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool nbdsh nsenter qemu-storage-daemon
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR cli/vstor
sanlock_require
nfs_enter_netns "$@"
vstor() { timeout 120 "$VSTOR" "$@"; }

mkdir -p exp/.leases
nfs_start_server "$WORKDIR/exp"

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

# Each host's view of the lease files: FUSE files over NFS through its link.
lease_view_up() { [[ $(stat -c %s "$1/__lockspace__" 2>/dev/null) == 1048576 ]]; }
for h in 1 2; do
	v=$WORKDIR/host$h/leases
	mkdir -p "$v"
	touch "$v/__lockspace__" "$v/v1.lease"
	args=()
	for f in __lockspace__ v1.lease; do
		n=${f//[._]/}
		args+=(--blockdev "driver=nfs,node-name=$n,server.type=inet,server.host=10.99.$h.1,path=/export/.leases/$f"
			--export "type=fuse,id=e$n,node-name=$n,mountpoint=$v/$f,writable=on")
	done
	in_ns $h timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" qemu-storage-daemon "${args[@]}" \
		>"$WORKDIR/qsd$h.log" 2>&1 &
	register_pid $!
	at_exit "umount -l '$v/__lockspace__' '$v/v1.lease' 2>/dev/null"
	wait_for 20 lease_view_up "$v"
done
# (the daemons' mount namespaces copy the FUSE mounts: start them after)
sanlock_start_host 1
sanlock_start_host 2

for h in 1 2; do
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-define-as np netfs --source-host "10.99.$h.1" \
		--source-path /export --extra sanlock_leases="$WORKDIR/host$h/leases"
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-build np
	assert_rc 0 on_host $h in_ns $h "$VSTOR" pool-start np
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

# --- host 1's link goes down: its lease renewals fail, then its writes ---
ip link set vsl1 down
cut_at=$SECONDS
write_fails()
{
	timeout 20 nbdsh -u "nbd+unix:///?socket=$1" -c '
import errno, sys
try:
    h.pwrite(b"\x77" * 4096, '"$2"')
    h.flush()
except nbd.Error as e:
    assert e.errno in ("EIO", errno.EIO), e
    sys.exit(0)
sys.exit(1)' 2>/dev/null
}
lease_lost() { grep -q "lost the sanlock lease of volume 'v1'" "$nbd1_err"; }
# (no write before the loss is seen: it would wait on the cut link)
wait_for 30 lease_lost
log "host 1 saw its lease lost $((SECONDS - cut_at))s after its link went down"
write_fails "$WORKDIR/nbd1.sock" 8192 || fail "host 1 wrote after its lease loss"

# --- host 2 takes the volume once host 1's lease has expired ---
host2_takes()
{
	on_host 2 in_ns 2 timeout --kill-after=5 30 "$VSTOR_NBD" --fork -t -k "$WORKDIR/nbd2.sock" \
		-f raw --pid-file "$WORKDIR/nbd2.pid" vol:np/v1 2>>"$WORKDIR/host2-tries.err"
}
deadline=$((SECONDS + 180))
until host2_takes; do
	((SECONDS < deadline)) || fail "host 2 never got the volume"
	sleep 2
done
register_pid "$(<"$WORKDIR/nbd2.pid")"
took=$((SECONDS - cut_at))
log "host 2 took the volume ${took}s after host 1's link went down"
((took >= 60)) || fail "host 2 took the volume after ${took}s: before host 1's lease expired"
assert_grep "in use by host 1" "$WORKDIR/host2-tries.err" "host 2's refused tries"
nbdsh -u "nbd+unix:///?socket=$WORKDIR/nbd2.sock" -c '
assert h.pread(4096, 0) == b"\x5a" * 4096
h.pwrite(b"\x21" * 4096, 0)
h.flush()' || fail "host 2 reads host 1's data and writes"

# --- host 1's link comes back: still fenced; host 2's write stays ---
ip link set vsl1 up
write_fails "$WORKDIR/nbd1.sock" 0 || fail "host 1 wrote after host 2 took the volume"
stop_pid "$nbd1"
cmp -n 4096 exp/v1 <(head -c 4096 /dev/zero | tr '\0' '\041') ||
	fail "a write of host 1 landed after host 2's"
cmp -n 8192 -i 4096:0 exp/v1 /dev/zero || fail "a fenced write of host 1 landed"
# (host 1's sanlock daemon is still removing its failed lockspace: it cannot
# answer for it yet, so host 2 does)
assert_rc 0 on_host 2 in_ns 2 "$VSTOR" vol-lease v1 --pool np --output json
assert_grep '"holder": *2' "$WORKDIR/out" "vol-lease after host 1's link came back"
log "ok"
