# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# Shared helpers for the integration tests (tests/integration/test-*.sh).
# Source it first thing:
#
#   . "$(dirname "$0")/lib.sh"
#
# It sets `set -euo pipefail`, makes a private temp dir $WORKDIR (removed on
# exit, kept with VSTOR_KEEP_TMP=1) and cd's into it. Exit codes follow
# automake/meson: 0 pass, 1 fail, 77 skip.
#
# Binaries: VSTOR_IMG and VSTOR_IO come from the environment (meson sets them
# to the built programs); otherwise they are looked up in $VSTOR_BUILD_DIR
# (default: ../../build relative to this file).
#
# With CI=true a missing peer is a failure, not a skip: CI installs every
# peer the tests use, so a skip there would hide a missing install step.

set -euo pipefail

VS_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VS_SOURCE_DIR=${VSTOR_SOURCE_DIR:-$(cd "$VS_LIB_DIR/../.." && pwd)}
VS_BUILD_DIR=${VSTOR_BUILD_DIR:-$VS_SOURCE_DIR/build}
VS_TEST_NAME=$(basename "$0" .sh)
# Upper bound in seconds for any one server we start (they are also killed on exit).
VS_DAEMON_TIMEOUT=${VS_DAEMON_TIMEOUT:-600}
export LC_ALL=C

# Pids of background processes to stop on exit, and extra cleanup commands.
VS_PIDS=()
VS_CLEANUPS=()

log() { printf '%s: %s\n' "$VS_TEST_NAME" "$*" >&2; }

fail()
{
	printf 'FAIL: %s: %s\n' "$VS_TEST_NAME" "$*" >&2
	exit 1
}

skip()
{
	printf 'SKIP: %s: %s\n' "$VS_TEST_NAME" "$*" >&2
	exit 77
}

# A precondition is missing: skip, or fail under CI=true.
skip_or_fail()
{
	if [[ ${CI:-} == true ]]; then
		fail "$* (CI=true: a missing peer is a failure)"
	fi
	skip "$*"
}

# require_tool NAME...: every NAME must be on PATH.
require_tool()
{
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || skip_or_fail "required tool '$t' not found"
	done
}

# find_built VAR RELPATH: VAR from the environment, else $VS_BUILD_DIR/RELPATH.
find_built()
{
	local var=$1 rel=$2 path
	path=${!var:-$VS_BUILD_DIR/$rel}
	[[ -x $path ]] || skip_or_fail "$var: '$path' is not built"
	printf -v "$var" '%s' "$path"
	export "${var?}"
}

require_vstor_img() { find_built VSTOR_IMG cli/vstor-img; }
require_vstor_io() { find_built VSTOR_IO tests/tools/vstor-io; }

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq()
{
	[[ $1 == "$2" ]] || fail "${3:-value}: got '$1', expected '$2'"
}

# assert_rc EXPECTED CMD...: run CMD (output to $WORKDIR/out and err) and check its exit code.
assert_rc()
{
	local want=$1 rc=0
	shift
	"$@" >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
	if [[ $rc != "$want" ]]; then
		cat "$WORKDIR/out" "$WORKDIR/err" >&2
		fail "'$*' exited $rc, expected $want"
	fi
}

# assert_fails CMD...: CMD must exit non-zero (output kept in $WORKDIR/out and err).
assert_fails()
{
	local rc=0
	"$@" >"$WORKDIR/out" 2>"$WORKDIR/err" || rc=$?
	if [[ $rc == 0 ]]; then
		cat "$WORKDIR/out" "$WORKDIR/err" >&2
		fail "'$*' succeeded, expected a failure"
	fi
}

# assert_grep PATTERN FILE [WHAT]: extended regex, case-insensitive.
assert_grep()
{
	grep -qiE -- "$1" "$2" || {
		cat "$2" >&2
		fail "${3:-output} does not match /$1/"
	}
}

# wait_for TIMEOUT_S CMD...: poll CMD until it succeeds; fail after TIMEOUT_S.
# For conditions that have no event to wait on (a socket appearing): the
# wait is bounded and ends as soon as the condition holds.
wait_for()
{
	local deadline=$((SECONDS + $1))
	shift
	until "$@" 2>/dev/null; do
		((SECONDS < deadline)) || fail "timed out waiting for: $*"
		sleep 0.02
	done
}

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s. A
# vstor server started by start_daemon must not have crashed: a death by
# SIGSEGV, SIGABRT, SIGBUS or SIGFPE, or a sanitizer report on its stderr,
# fails the test (at exit too, where the other cleanups still run).
stop_pid()
{
	local pid=$1 i
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 500; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.02
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	vs_check_daemon "$pid"
}

# Our servers, as "PID LAUNCHER STDERR-FILE", checked when they are stopped.
VS_WATCH=()
VS_CRASHED=0

vs_check_daemon()
{
	local pid=$1 w wpid launcher errf st=0 i
	for i in "${!VS_WATCH[@]}"; do
		read -r wpid launcher errf <<<"${VS_WATCH[i]}"
		[[ $wpid == "$pid" ]] || continue
		unset 'VS_WATCH[i]'
		wait "$launcher" 2>/dev/null || st=$?
		if [[ $st == 134 || $st == 135 || $st == 136 || $st == 139 ]] ||
			grep -qE 'ERROR: AddressSanitizer|runtime error:' "$errf" 2>/dev/null; then
			tail -n 30 "$errf" >&2 2>/dev/null || true
			if [[ ${VS_IN_CLEANUP:-0} == 1 ]]; then
				printf 'FAIL: %s: server %s crashed (exit status %s)\n' "$VS_TEST_NAME" "$pid" "$st" >&2
				VS_CRASHED=1
			else
				fail "server $pid crashed (exit status $st)"
			fi
		fi
		return 0
	done
	return 0
}

# start_daemon PIDFILE READY_TIMEOUT CMD...: start a server in the background
# under `timeout`, wait (bounded) until PIDFILE exists and is non-empty, and
# register it to be stopped on exit. CMD must write PIDFILE when it is ready
# (qemu-nbd --pid-file, ganesha -p ...). Sets DAEMON_PID to the server's pid.
start_daemon()
{
	local pidfile=$1 ready=$2 launcher
	shift 2
	VS_NDAEMONS=$((${VS_NDAEMONS:-0} + 1))
	timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" "$@" \
		>"$WORKDIR/daemon.$VS_NDAEMONS.out" 2>"$WORKDIR/daemon.$VS_NDAEMONS.err" &
	launcher=$!
	VS_PIDS+=("$launcher")
	local deadline=$((SECONDS + ready))
	until [[ -s $pidfile ]]; do
		if ! kill -0 "$launcher" 2>/dev/null; then
			cat "$WORKDIR/daemon.$VS_NDAEMONS.err" >&2 || true
			fail "server exited before it was ready: $*"
		fi
		((SECONDS < deadline)) || fail "server not ready after ${ready}s: $*"
		sleep 0.02
	done
	DAEMON_PID=$(<"$pidfile")
	VS_PIDS+=("$DAEMON_PID")
	case "$1" in
	"${VSTOR_NBD:-/nonexistent}" | "${VSTOR_VHOST:-/nonexistent}" | "${VSTORD:-/nonexistent}" | */vstor-nbd | */vstor-vhost | */vstord | */vstor)
		VS_WATCH+=("$DAEMON_PID $launcher $WORKDIR/daemon.$VS_NDAEMONS.err")
		;;
	esac
}

# start_qsd_and_vstord [VSTORD-ARGS...]: the oracle and vstord side by side,
# each with its monitor only: qemu-storage-daemon on $WORKDIR/qsd.sock
# (QSD_PID), vstord on $WORKDIR/vd.sock (VD_PID), pidfiles beside them.
start_qsd_and_vstord()
{
	start_daemon "$WORKDIR/qsd.pid" 30 qemu-storage-daemon --pidfile "$WORKDIR/qsd.pid" \
		--chardev socket,id=m0,path="$WORKDIR/qsd.sock",server=on,wait=off --monitor chardev=m0
	QSD_PID=$DAEMON_PID
	start_daemon "$WORKDIR/vd.pid" 30 "$VSTORD" --pidfile "$WORKDIR/vd.pid" \
		--monitor "$WORKDIR/vd.sock" "$@"
	VD_PID=$DAEMON_PID
}

# register_pid PID: stop PID on exit (a server that daemonized itself).
register_pid() { VS_PIDS+=("$1"); }

# at_exit CMD: run CMD (a string, eval'd) on exit, before the temp dir goes.
at_exit() { VS_CLEANUPS+=("$1"); }

# free_port: a TCP port on 127.0.0.1 that was free a moment ago. Prefer unix
# sockets; use this only where a peer needs TCP (the port could be taken
# between this call and the bind, so servers should be retried on EADDRINUSE).
free_port()
{
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# tls_ca: a test CA in pki/ca-cert.pem (key pki/ca-key.pem), valid 2 days.
tls_ca()
{
	mkdir -p pki
	certtool --generate-privkey --outfile pki/ca-key.pem 2>/dev/null
	printf 'cn = vstor test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >ca.info
	certtool --generate-self-signed --load-privkey pki/ca-key.pem --template ca.info \
		--outfile pki/ca-cert.pem 2>/dev/null
}

# tls_sign WHO DIR USAGE: DIR/WHO-key.pem and DIR/WHO-cert.pem for localhost
# (and 127.0.0.1) signed by tls_ca's CA, with the certtool USAGE lines
# (tls_www_server, ...), and the CA's certificate in DIR/ca-cert.pem.
tls_sign()
{
	local who=$1 dir=$2 usage=$3
	mkdir -p "$dir"
	certtool --generate-privkey --outfile "$dir/$who-key.pem" 2>/dev/null
	printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n%s\nexpiration_days = 2\n' \
		"$usage" >"$who.info"
	certtool --generate-certificate --load-privkey "$dir/$who-key.pem" \
		--load-ca-certificate pki/ca-cert.pem --load-ca-privkey pki/ca-key.pem \
		--template "$who.info" --outfile "$dir/$who-cert.pem" 2>/dev/null
	cp pki/ca-cert.pem "$dir/ca-cert.pem"
}

# tls_pki: tls_ca's CA, then QEMU-style credential directories signed by it:
# pki/server (server-cert.pem, server-key.pem), pki/client, and pki/other, a
# client directory that trusts another CA only (for "wrong CA" cases).
tls_pki()
{
	tls_ca
	tls_sign server pki/server $'tls_www_server\nencryption_key\nsigning_key'
	tls_sign client pki/client $'tls_www_client\nencryption_key\nsigning_key'
	mkdir -p pki/other
	certtool --generate-privkey --outfile other-key.pem 2>/dev/null
	certtool --generate-self-signed --load-privkey other-key.pem --template ca.info \
		--outfile pki/other/ca-cert.pem 2>/dev/null
}

# inode_locks FILE: the OFD/POSIX lock ranges held on FILE, one "START END TYPE" per line.
inode_locks()
{
	local ino
	ino=$(stat -c %i "$1")
	awk -v ino="$ino" '{ n = split($6, a, ":"); if (a[n] == ino) print $7, $8, $4 }' /proc/locks |
		sort -n
}

# qemu_img ARGS...: qemu-img bounded in time.
# qemu-img's PBKDF2 calibration (LUKS create, amend, measure) fails now and
# then on a loaded machine ("Unable to get accurate CPU usage"): such a run
# is repeated, up to 5 times; only the last run's output is shown.
qemu_img()
{
	local out err rc _
	out=$(mktemp) err=$(mktemp)
	for _ in 1 2 3 4 5; do
		# "|| rc=$?": under set -e a bare failure would end the script here,
		# silently (its message is in $err), before any retry.
		rc=0
		timeout 300 qemu-img "$@" >"$out" 2>"$err" || rc=$?
		((rc != 0)) && grep -q 'Unable to get accurate CPU usage' "$err" || break
	done
	cat "$out"
	cat "$err" >&2
	rm -f "$out" "$err"
	return "$rc"
}
vstor_img() { timeout 300 "$VSTOR_IMG" "$@"; }
vstor_io() { timeout 300 "$VSTOR_IO" "$@"; }

vs_cleanup()
{
	local rc=$? i
	set +e
	VS_IN_CLEANUP=1
	for ((i = ${#VS_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${VS_CLEANUPS[i]}"
	done
	for ((i = ${#VS_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${VS_PIDS[i]}"
	done
	if ((VS_CRASHED)) && [[ $rc == 0 || $rc == 77 ]]; then
		rc=1
	fi
	if [[ -n ${WORKDIR:-} ]]; then
		if [[ ${VSTOR_KEEP_TMP:-0} == 1 || ($rc != 0 && $rc != 77 && ${VSTOR_KEEP_TMP_ON_FAIL:-0} == 1) ]]; then
			printf '%s: kept %s\n' "$VS_TEST_NAME" "$WORKDIR" >&2
		else
			cd /
			rm -rf "$WORKDIR"
		fi
	fi
	exit "$rc"
}

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/vstor-$VS_TEST_NAME.XXXXXX")
trap vs_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORKDIR"
