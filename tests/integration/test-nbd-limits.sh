#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor-nbd under hostile crowds (tests/integration/nbd_flood.py):
#  - 2,000 connections that never send a byte (more than the reactor's ring
#    budget of about 500) while another client's reads keep completing, and
#    a client connecting after the crowd is accepted and served;
#  - the default connection limit (100) closes the rest of such a crowd at
#    once, and the (shortened) handshake limit drops those that never
#    negotiate, while a negotiated idle client stays;
#  - clients that stop in the middle of a write payload or a request header
#    are dropped after the (shortened) request timeout;
#  - 16 clients that pipeline 32 MiB reads and never read the replies keep
#    the server's memory under the buffer bound, and a well-behaved client is
#    still served.
# Latencies and memory figures are logged.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool python3
find_built VSTOR_NBD nbd-server/vstor-nbd
flood() { timeout 120 python3 "$VS_LIB_DIR/nbd_flood.py" "$@"; }

# 2,000 sockets on the client side, up to 2,100 on the server's.
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2200)) || skip_or_fail "cannot raise the descriptor limit to 2200"

# 64 MiB of data (reads must touch their buffers for the memory figures).
head -c $((64 << 20)) /dev/urandom >data.raw

nbd_server() # NAME ARGS...: a persistent server on $WORKDIR/NAME.sock
{
	local name=$1
	shift
	start_daemon "$WORKDIR/$name.pid" 20 "$VSTOR_NBD" -t -e 0 -f raw -k "$WORKDIR/$name.sock" \
		--pid-file "$WORKDIR/$name.pid" "$@" data.raw
}

# --- idle connections must not take the ring from request I/O ---
nbd_server idle --max-connections=2100 --handshake-limit=0
flood idle "$WORKDIR/idle.sock" 2000 | tee idle.out || fail "idle connections stalled the server"
kill -0 "$DAEMON_PID" || fail "vstor-nbd died under idle connections"
stop_pid "$DAEMON_PID"

# --- the connection limit (default) and the handshake limit ---
nbd_server limits --handshake-limit=2
flood limits "$WORKDIR/limits.sock" 2000 2 | tee limits.out ||
	fail "connection or handshake limit"
stop_pid "$DAEMON_PID"

# --- requests whose payload (or header) stops arriving ---
nbd_server stall --request-timeout=2
flood stall "$WORKDIR/stall.sock" 2 16 | tee stall.out || fail "stalled requests"
stop_pid "$DAEMON_PID"

# --- the memory bound under clients that never read their replies ---
nbd_server hogs
flood hogs "$WORKDIR/hogs.sock" "$DAEMON_PID" 16 | tee hogs.out || fail "pipelining hogs"
growth=$(sed -n 's/^HWM_GROWTH_MIB=//p' hogs.out)
# The bound: 256 MiB server-wide, 1 MiB more per connection, 64 MiB of slack
# for the allocator and the rest of the server.
((growth < 256 + 17 + 64)) || fail "16 hogs grew the server by $growth MiB (bound 337 MiB)"
log "16 hogs: the server grew by $growth MiB (bound 337 MiB)"
stop_pid "$DAEMON_PID"
log "ok"
