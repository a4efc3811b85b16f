# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# An iSCSI target for tests: tgtd (user space, package tgt) on 127.0.0.1 at
# a free port, with a control socket number of its own so parallel tests
# and a host tgtd never meet. Source after lib.sh:
#
#   . "$VS_LIB_DIR/lib-iscsi.sh"
#   iscsi_start_target               # sets ISCSI_PORT, ISCSI_CTL, TGTD_PID
#   iscsi_add_target 1 IQN
#   iscsi_add_lun 1 1 FILE [--blocksize 4096 ...]
#   iscsi_bind 1                     # allow 127.0.0.1 (after accounts)
#
# ISCSI_ADDR (default 127.0.0.1) is the portal's address; with 0.0.0.0 the
# target takes initiators from every address (a test's other namespaces).
#   iscsi_add_account 1 USER SECRET [--outgoing]
#
# tgtd ignores SIGTERM: the cleanup deletes the targets and the system, then
# SIGKILLs what is left and removes its control socket.

ISCSI_TGTS=()

tgtadm_() { timeout 20 tgtadm -C "$ISCSI_CTL" --lld iscsi "$@"; }

iscsi_tgtd_ready() { tgtadm_ --op show --mode system >/dev/null; }

iscsi_stop_target()
{
	local tid
	for tid in "${ISCSI_TGTS[@]}"; do
		tgtadm_ --op delete --force --mode target --tid "$tid" >/dev/null 2>&1
	done
	tgtadm_ --op delete --mode system >/dev/null 2>&1
	local i
	for ((i = 0; i < 250; i++)); do
		kill -0 "$TGTD_PID" 2>/dev/null || break
		sleep 0.02
	done
	kill -KILL "$TGTD_PID" "$ISCSI_PID" 2>/dev/null || true
	rm -f "/var/run/tgtd/socket.$ISCSI_CTL" "/var/run/tgtd/socket.$ISCSI_CTL.lock"
}

# iscsi_start_target: tgtd on $ISCSI_ADDR:<free port>; retried on a taken port.
iscsi_start_target()
{
	((EUID == 0)) || skip_or_fail "tgtd needs root"
	require_tool tgtd tgtadm pgrep
	local try
	for try in 1 2 3 4 5; do
		ISCSI_PORT=$(free_port)
		# The control number names /var/run/tgtd/socket.N: unique per test run.
		ISCSI_CTL=$((1000 + ($$ * 7 + try) % 9000))
		timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" tgtd -f -C "$ISCSI_CTL" \
			--iscsi "portal=${ISCSI_ADDR:-127.0.0.1}:$ISCSI_PORT" >"$WORKDIR/tgtd.$try.log" 2>&1 &
		ISCSI_PID=$!
		local deadline=$((SECONDS + 10))
		until iscsi_tgtd_ready 2>/dev/null; do
			kill -0 "$ISCSI_PID" 2>/dev/null || break
			((SECONDS < deadline)) || break
			sleep 0.02
		done
		if kill -0 "$ISCSI_PID" 2>/dev/null && iscsi_tgtd_ready 2>/dev/null; then
			# The server itself (ISCSI_PID is the `timeout` around it).
			TGTD_PID=$(pgrep -P "$ISCSI_PID" -x tgtd || echo "$ISCSI_PID")
			at_exit iscsi_stop_target
			return 0
		fi
		kill -KILL "$ISCSI_PID" 2>/dev/null || true
		rm -f "/var/run/tgtd/socket.$ISCSI_CTL" "/var/run/tgtd/socket.$ISCSI_CTL.lock"
	done
	cat "$WORKDIR"/tgtd.*.log >&2
	fail "tgtd did not start"
}

iscsi_add_target()
{
	tgtadm_ --op new --mode target --tid "$1" -T "$2" || fail "tgtadm: new target $2"
	ISCSI_TGTS+=("$1")
}

iscsi_add_lun()
{
	local tid=$1 lun=$2 file=$3
	shift 3
	tgtadm_ --op new --mode logicalunit --tid "$tid" --lun "$lun" -b "$file" "$@" ||
		fail "tgtadm: new LUN $lun on target $tid"
}

iscsi_bind()
{
	local from=127.0.0.1
	[[ ${ISCSI_ADDR:-127.0.0.1} == 0.0.0.0 ]] && from=ALL
	tgtadm_ --op bind --mode target --tid "$1" -I "$from" || fail "tgtadm: bind"
}

# iscsi_add_account TID USER SECRET [--outgoing]
iscsi_add_account()
{
	tgtadm_ --mode account --op new --user "$2" --password "$3" || fail "tgtadm: account $2"
	tgtadm_ --mode account --op bind --tid "$1" --user "$2" ${4:+"$4"} ||
		fail "tgtadm: bind account $2"
}
