# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# Two "hosts" for the cross-host lease tests: one sanlock daemon per host id,
# each with its own run dir (its client socket: SANLOCK_RUN_DIR) and its own
# /var/log (a bind mount in its own mount namespace: sanlock always writes
# /var/log/sanlock.log). No watchdog (-w 0), no privileges it cannot have
# here (SANLOCK_PRIVILEGED=0). Source after lib.sh:
#
#   . "$VS_LIB_DIR/lib-sanlock.sh"
#   sanlock_require               # the tools, and vstor built with sanlock
#   sanlock_start_host 1          # daemon of host 1 (pid in host1/run/sanlock.pid)
#   on_host 1 CMD...              # CMD as host 1 (VSTOR_HOST_ID, run dir, state dir)

sanlock_require()
{
	require_tool sanlock unshare mount
	((EUID == 0)) || skip_or_fail "sanlock daemons need root here (mount namespaces)"
	grep -q '^#define HAVE_SANLOCK' "$VS_BUILD_DIR/config.h" 2>/dev/null ||
		skip_or_fail "vstor was built without sanlock (-Dsanlock=enabled)"
}

sanlock_daemon_up()
{
	# `sanlock client status` exits 0 even when it cannot reach the daemon.
	SANLOCK_RUN_DIR=$1 sanlock client status 2>/dev/null | grep -q '^daemon '
}

# sanlock_start_host ID: start host ID's sanlock daemon.
sanlock_start_host()
{
	local id=$1 run=$WORKDIR/host$1/run log=$WORKDIR/host$1/log
	mkdir -p "$run" "$log" "$WORKDIR/host$1/state"
	SANLOCK_PRIVILEGED=0 SANLOCK_RUN_DIR=$run timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" \
		unshare --mount -- sh -c 'mount --bind "$0" /var/log && exec sanlock daemon -D \
			-w 0 -h 0 -l 0 -U root -G root' "$log" \
		>"$WORKDIR/host$id/sanlock.out" 2>&1 &
	register_pid "$!"
	wait_for 10 sanlock_daemon_up "$run"
	# It does not stop on SIGTERM while it holds a lockspace: kill it.
	at_exit "kill -KILL \$(cat '$run/sanlock.pid' 2>/dev/null) 2>/dev/null"
}

# on_host ID CMD...: run CMD as host ID.
on_host()
{
	local id=$1
	shift
	VSTOR_HOST_ID=$id SANLOCK_RUN_DIR=$WORKDIR/host$id/run \
		VSTOR_STATE_DIR=$WORKDIR/host$id/state "$@"
}

# start_on_host ID PIDFILE READY_TIMEOUT CMD...: start_daemon as host ID.
start_on_host()
{
	local VSTOR_HOST_ID=$1 SANLOCK_RUN_DIR=$WORKDIR/host$1/run
	local VSTOR_STATE_DIR=$WORKDIR/host$1/state
	export VSTOR_HOST_ID SANLOCK_RUN_DIR VSTOR_STATE_DIR
	shift
	start_daemon "$@"
}

# sanlock_write_fails SOCK OFFSET: a 4 KiB write and flush through the NBD
# export at SOCK fail with EIO (a fenced writer); false if they succeed.
sanlock_write_fails()
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
