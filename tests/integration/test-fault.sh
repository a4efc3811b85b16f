#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Fault injection with the fault: test driver (docs/reliability.md) under
# vstor-io, vstor-img and vstor-nbd: the error reaches the caller (exit code,
# NBD error reply), no failed write is acknowledged, qemu-img check finds no
# corruption once the fault is gone (leaks are allowed), the engine recovers
# when the fault goes away, and a full disk (ENOSPC) during cluster
# allocation leaves the image usable. Prints how many faults were injected.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:$PATH
require_tool qemu-img qemu-io nbdsh
require_vstor_img
require_vstor_io
find_built VSTOR_NBD nbd-server/vstor-nbd

injected=0
# count_faults FILE: add the faults FILE reports to the total.
count_faults()
{
	local n
	n=$(grep -c 'fault: injected' "$1" || true)
	injected=$((injected + n))
}

# check_clean IMG: qemu-img check finds no corruption (exit 0, or 3 for leaks only).
check_clean()
{
	local rc=0
	qemu_img check "$1" >check.out 2>&1 || rc=$?
	[[ $rc == 0 || $rc == 3 ]] || {
		cat check.out >&2
		fail "qemu-img check $1: exit $rc (${2:-})"
	}
	# vstor's own check agrees.
	rc=0
	vstor_img check "$1" >vcheck.out 2>&1 || rc=$?
	[[ $rc == 0 || $rc == 3 ]] || {
		cat vcheck.out >&2
		fail "vstor-img check $1: exit $rc (${2:-})"
	}
}

# io_fails IMG-URI ERRNO-TEXT CMD...: vstor-io exits 1 with that error.
io_fails()
{
	local uri=$1 text=$2 rc=0
	shift 2
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	vstor_io -f qcow2 "${args[@]}" "$uri" >out 2>err || rc=$?
	count_faults err
	[[ $rc == 1 ]] || {
		cat out err >&2
		fail "vstor-io on $uri exited $rc, expected 1"
	}
	assert_grep "$text" err "vstor-io error"
}

io_ok()
{
	local uri=$1 rc=0
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	vstor_io -f qcow2 "${args[@]}" "$uri" >out 2>err || rc=$?
	count_faults err
	[[ $rc == 0 ]] || {
		cat out err >&2
		fail "vstor-io on $uri exited $rc, expected 0"
	}
}

for opts in "cluster_size=65536" "cluster_size=4096,lazy_refcounts=on" "cluster_size=65536,refcount_bits=1"; do
	log "image options: $opts"
	rm -f img.qcow2
	qemu_img create -f qcow2 -o "$opts" img.qcow2 64M >/dev/null
	io_ok img.qcow2 "write 0 64k 1" "write 1M 64k 2" flush

	# --- 1. EIO on the nth write: the request fails, nothing before it is lost ---
	for nth in 1 2 3 4 5; do
		rc=0
		o=$((12 + 4 * nth))
		vstor_io -f qcow2 -c "write ${o}M 64k 3" -c "write $((o + 1))M 128k 4" -c flush \
			"fault:write,nth=$nth,once:img.qcow2" >out 2>err || rc=$?
		count_faults err
		# An early fault fails the write; a late one may hit the flush or the close.
		((nth > 2)) || grep -q "fault: injected" err || fail "nth=$nth: no fault was injected"
		if grep -q 'fault: injected EIO on write offset=[0-9]* len=65536 ' err; then
			[[ $rc == 1 ]] || fail "nth=$nth: a failed data write was acknowledged"
		fi
		[[ $rc == 0 || $rc == 1 ]] || fail "vstor-io exited $rc"
		check_clean img.qcow2 "EIO on write $nth"
		io_ok img.qcow2 "read 0 64k 1" "read 1M 64k 2"
	done
	# Recovery: with the fault gone, the same writes succeed and read back.
	io_ok img.qcow2 "write 2M 64k 3" "write 3M 128k 4" flush
	io_ok img.qcow2 "read 2M 64k 3" "read 3M 128k 4"
	check_clean img.qcow2 "after recovery"

	# --- 2. a failing flush is reported; the data is there once it is gone ---
	io_ok img.qcow2 "write 4M 64k 5" "write 5M 4k 6" flush
	io_fails "fault:flush,once:img.qcow2" "Input/output error" "write 4M 64k 5" flush
	grep -q 'fault: injected EIO on flush' err || fail "flush fault not injected"
	io_ok img.qcow2 "read 4M 64k 5" "read 5M 4k 6" flush
	check_clean img.qcow2 "flush fault"

	# --- 3. ENOSPC: no host write past the current end of the file ---
	end=$(stat -c %s img.qcow2)
	full="fault:write|zero,off=$end,err=ENOSPC:img.qcow2"
	io_fails "$full" "No space left on device" "write 40M 64k 7"
	# The allocated clusters stay usable: overwrite and read them.
	io_ok "$full" "write 0 64k 8" "write 1M 4k 9" flush "read 0 64k 8" "read 1M 4k 9" \
		"read 2M 64k 3"
	check_clean img.qcow2 "ENOSPC"
	# Space again: allocation works.
	io_ok img.qcow2 "write 40M 64k 7" flush "read 40M 64k 7" "read 0 64k 8"
	check_clean img.qcow2 "after ENOSPC"

	# --- 4. a short (torn) write of newly allocated data ---
	end=$(stat -c %s img.qcow2)
	io_fails "fault:write,off=$end,err=short:img.qcow2" "Input/output error" "write 48M 128k 10"
	check_clean img.qcow2 "short write"
	io_ok img.qcow2 "write 48M 128k 10" flush "read 48M 128k 10" "read 40M 64k 7"

	# --- 5. random faults on every operation, seeded ---
	for seed in 1 2 3 4 5 6; do
		rc=0
		vstor_io -f qcow2 -c "write 8M 256k $seed" -c "zero 9M 64k" -c "discard 10M 64k" \
			-c "write 11M 64k $seed" -c flush -c "read 8M 256k $seed" \
			"fault:any,prob=0.3,seed=$seed,err=EIO:img.qcow2" >out 2>err || rc=$?
		count_faults err
		[[ $rc == 0 || $rc == 1 ]] || fail "seed $seed: vstor-io exited $rc"
		check_clean img.qcow2 "random faults, seed $seed"
		# Data flushed before is never hurt by a failed request elsewhere.
		io_ok img.qcow2 "read 0 64k 8" "read 40M 64k 7" "read 48M 128k 10"
	done
	# A repair (vstor-img check -r leaks) leaves a clean image.
	vstor_img check -r leaks img.qcow2 >/dev/null 2>&1 || true
	rc=0
	qemu_img check img.qcow2 >check.out 2>&1 || rc=$?
	[[ $rc == 0 ]] || { cat check.out >&2; fail "leaks remain after check -r leaks"; }
done

# --- bad fault URIs: a clear error, never a crash ---
for bad in "fault:img.qcow2" "fault:bogus:img.qcow2" "fault:write,nth=0:img.qcow2" \
	"fault:write,prob=2:img.qcow2" "fault:write,err=EWHAT:img.qcow2" "fault:write:"; do
	rc=0
	vstor_img info "$bad" >out 2>err || rc=$?
	[[ $rc == 1 ]] || { cat out err >&2; fail "info '$bad' exited $rc, expected 1"; }
	assert_grep "fault" err "error for '$bad'"
done

# --- 6. vstor-img: errors become exit codes and messages ---
qemu_img create -f qcow2 src.qcow2 8M >/dev/null
qemu-io -f qcow2 -c "write -P 0x5a 0 4M" src.qcow2 >/dev/null
rc=0
vstor_img convert -O raw "fault:read,off=1M,len=3M:src.qcow2" out.raw 2>err || rc=$?
count_faults err
[[ $rc == 1 ]] || fail "convert with a read fault exited $rc, expected 1"
assert_grep "Input/output error" err "convert error"
qemu_img create -f qcow2 dst.qcow2 8M >/dev/null
rc=0
vstor_img convert -n -O qcow2 src.qcow2 "fault:write,nth=3:dst.qcow2" 2>err || rc=$?
count_faults err
[[ $rc == 1 ]] || fail "convert with a write fault exited $rc, expected 1"
check_clean dst.qcow2 "convert write fault"
vstor_img convert -n -O qcow2 src.qcow2 dst.qcow2
qemu_img compare src.qcow2 dst.qcow2 >/dev/null || fail "convert after the fault"

# --- 7. vstor-nbd: error replies, then recovery when the fault goes away ---
qemu_img create -f qcow2 nbd.qcow2 32M >/dev/null
SOCK=$WORKDIR/nbd.sock
SWITCH=$WORKDIR/fail-now
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -k "$SOCK" -f qcow2 --pid-file "$WORKDIR/nbd.pid" \
	"fault:write|flush|read,if=$SWITCH,err=EIO+write|zero,if=$SWITCH.nospc,err=ENOSPC:nbd.qcow2"
SERVER=$DAEMON_PID
timeout 120 nbdsh -c "h.connect_uri('nbd+unix:///?socket=$SOCK')" -c "
import errno, os
sw = '$SWITCH'
h.pwrite(b'a' * 65536, 0)
h.flush()
open(sw, 'w').close()
for name, call in (('write', lambda: h.pwrite(b'b' * 65536, 1 << 20)),
                   ('fua write', lambda: h.pwrite(b'b' * 4096, 0, nbd.CMD_FLAG_FUA)),
                   ('flush', lambda: h.flush()),
                   ('read', lambda: h.pread(4096, 0))):
    try:
        call()
        raise SystemExit(name + ' succeeded under a fault')
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (name, e)
os.unlink(sw)
open(sw + '.nospc', 'w').close()
try:
    h.pwrite(b'd' * 65536, 3 << 20)
    raise SystemExit('allocating write succeeded under ENOSPC')
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
os.unlink(sw + '.nospc')
# The fault is gone: the connection and the image work again.
h.pwrite(b'c' * 65536, 1 << 20)
h.zero(65536, 2 << 20)
h.flush()
d = h.pread(4096, 0)
assert d in (b'a' * 4096, b'b' * 4096), d[:8]
assert h.pread(65536, 1 << 20) == b'c' * 65536
assert h.pread(65536, 2 << 20) == bytes(65536)
h.pwrite(b'd' * 65536, 3 << 20)
h.flush()
assert h.pread(65536, 3 << 20) == b'd' * 65536
" || fail "nbdsh fault checks"
stop_pid "$SERVER"
wait_for 10 bash -c "! kill -0 $SERVER"
count_faults "$WORKDIR/daemon.$VS_NDAEMONS.err"
check_clean nbd.qcow2 "nbd faults"
# qemu-io prints "read" even when the pattern differs; its exit code says.
timeout 60 qemu-io -f qcow2 -c "read -P 0x63 1M 64k" nbd.qcow2 >/dev/null ||
	fail "NBD data after recovery"

log "faults injected: $injected"
((injected >= 30)) || fail "only $injected faults injected"
echo "faults injected: $injected"
