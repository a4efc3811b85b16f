# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# An NFSv3 server for tests: nfs-ganesha (VFS FSAL) with rpcbind, inside a
# private network and mount namespace, so rpcbind (which binds every address)
# and ganesha's ports never meet the host's. Source after lib.sh:
#
#   . "$(dirname "$0")/lib-nfs.sh"
#   nfs_enter_netns "$@"     # re-runs the test inside the namespace
#   nfs_start_server DIR     # exports DIR as /export; sets NFS_URL
#
# The whole test then runs in the namespace (clients included).

# nfs_enter_netns ARGS...: unless already inside, check the peers, re-run
# this script in a new network + mount namespace and exit with its status.
nfs_enter_netns()
{
	[[ ${VS_NFS_NETNS:-} == 1 ]] && return 0
	((EUID == 0)) || skip_or_fail "needs root for a private network namespace"
	require_tool unshare mountpoint ip rpcbind ganesha.nfsd rpcinfo nfs-ls nfs-cat
	[[ -d /usr/lib/x86_64-linux-gnu/ganesha || -d /usr/lib/ganesha ]] ||
		skip_or_fail "nfs-ganesha-vfs (the VFS FSAL) is not installed"
	# unshare makes / private in the new mount namespace, which fails where /
	# is not a mount point (a plain chroot): say so rather than "Invalid
	# argument".
	if ! unshare --mount true 2>/dev/null; then
		mountpoint -q / ||
			skip_or_fail "/ is not a mount point (a chroot?), so no private mount namespace:" \
				"bind-mount the root onto itself before chroot (mount --bind ROOT ROOT)"
		skip_or_fail "cannot make a private mount namespace (unshare --mount failed)"
	fi
	local rc=0 self=$0
	# lib.sh has cd'ed into $WORKDIR: resolve a relative script path.
	[[ $self == /* ]] || self=$OLDPWD/$self
	VS_NFS_NETNS=1 timeout --kill-after=5 "${VS_NFS_TIMEOUT:-300}" \
		unshare --net --mount -- bash "$self" "$@" || rc=$?
	exit "$rc"
}

nfs_rpcbind_up() { rpcinfo -p 127.0.0.1 >/dev/null; }

# nfs_start_server DIR: rpcbind + ganesha exporting DIR (Pseudo /export, NFSv3,
# no root squash) on the fixed ports 20490 (nfs) and 20048 (mount) of the
# namespace's loopback. Sets NFS_URL=nfs://127.0.0.1/export and NFS_OPTS.
nfs_start_server()
{
	local dir=$1
	[[ ${VS_NFS_NETNS:-} == 1 ]] || fail "nfs_start_server outside the namespace"
	# Private /run (rpcbind's and ganesha's sockets and pid files) and NFS state.
	mount -t tmpfs tmpfs /run || fail "mount a private /run"
	mkdir -p /var/lib/nfs
	mount -t tmpfs tmpfs /var/lib/nfs || fail "mount a private /var/lib/nfs"
	ip link set lo up || fail "bring lo up in the namespace"
	mkdir -p /run/rpcbind "$WORKDIR/ganesha"
	timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" rpcbind -f -w \
		>"$WORKDIR/rpcbind.out" 2>&1 &
	register_pid $!
	wait_for 10 nfs_rpcbind_up
	cat >"$WORKDIR/ganesha/ganesha.conf" <<-EOF
		NFS_CORE_PARAM {
			NFS_Port = 20490; MNT_Port = 20048;
			Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
			mount_path_pseudo = true;
		}
		NFSV4 { Graceless = true; Only_Numeric_Owners = true; }
		EXPORT {
			Export_Id = 1; Path = $dir; Pseudo = /export;
			Access_Type = RW; Squash = No_Root_Squash; Protocols = 3, 4;
			# The tests also write the directory behind the server: no attribute cache.
			Attr_Expiration_Time = 0;
			FSAL { Name = VFS; }
		}
	EOF
	start_daemon "$WORKDIR/ganesha/ganesha.pid" 20 ganesha.nfsd -F \
		-f "$WORKDIR/ganesha/ganesha.conf" -L "$WORKDIR/ganesha/ganesha.log" \
		-p "$WORKDIR/ganesha/ganesha.pid"
	NFS_URL=nfs://127.0.0.1/export
	NFS_OPTS='?nfsport=20490&mountport=20048'
	wait_for 20 nfs-ls "$NFS_URL"
}

# nfs_restart_server [CMD...]: kill ganesha (SIGKILL: a crash), run CMD
# while it is down, and start it again on the same export and ports.
# Ganesha's NFSv3 write verifier is its start time in seconds (checked with
# ganesha 4.3: the verifier vstor reports is the start second, little-endian;
# restarted within the same second, it hands out the same verifier and a
# client cannot tell), so the new instance starts in a later second.
nfs_restart_server()
{
	local pidfile=$WORKDIR/ganesha/ganesha.pid pid started
	pid=$(<"$pidfile")
	started=$(stat -c %Y "$pidfile")
	kill -KILL "$pid"
	wait_for 10 nfs_pid_gone "$pid"
	rm -f "$pidfile"
	if (($#)); then
		"$@"
	fi
	# Bounded (at most ~1 s): a peer limit, not synchronisation.
	wait_for 5 nfs_later_than "$started"
	start_daemon "$pidfile" 20 ganesha.nfsd -F \
		-f "$WORKDIR/ganesha/ganesha.conf" -L "$WORKDIR/ganesha/ganesha.log" \
		-p "$pidfile"
	wait_for 20 nfs_ls_quiet
}

nfs_ls_quiet() { nfs-ls "$NFS_URL" >/dev/null; }

nfs_pid_gone() { ! kill -0 "$1" 2>/dev/null; }
nfs_later_than() { (($(date +%s) > $1)); }
