# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# The guest harness, sourced by integration tests after lib.sh:
#
#   vm_prepare                 build (or reuse) the guest: $VM_KERNEL, $VM_INITRD
#   vm_run NAME TIMEOUT TEST [ARGS] -- QEMU-DISK-ARGS...
#                              boot the guest with the given disk arguments, run
#                              guest/TEST.sh with ARGS (comma-separated), and fail
#                              unless it prints "VSTOR-RESULT: PASS"; the console
#                              goes to $WORKDIR/NAME.console
#
# The guest is built from Debian packages (tests/vm/build-guest.py) into
# $VSTOR_VM_CACHE (default: var/vm-cache in the source tree, shared by every
# build), once. QEMU runs under
# TCG: these machines' /dev/kvm is PVM, which boots only PVM kernels (see
# docs/testing.md); a CPU with vmx/svm and no kvm_pvm gets KVM.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

vm_accel()
{
	if [[ -e /dev/kvm && ! -d /sys/module/kvm_pvm ]] && grep -qE 'vmx|svm' /proc/cpuinfo; then
		echo "kvm"
	else
		echo "tcg,thread=multi"
	fi
}

vm_prepare()
{
	require_tool qemu-system-x86_64 apt-get dpkg-deb
	[[ -e /usr/share/qemu/qboot.rom ]] || skip_or_fail "qboot.rom (qemu-system-data) missing"
	local cache=${VSTOR_VM_CACHE:-$VS_SOURCE_DIR/var/vm-cache}
	mkdir -p "$cache"
	# Serialise builds of the shared cache between parallel tests.
	(
		flock 9
		timeout 600 python3 "$VM_DIR/build-guest.py" "$cache"
	) 9>"$cache/.lock" || fail "could not build the test guest"
	VM_KERNEL=$cache/vmlinux
	VM_INITRD=$cache/initrd.cpio
}

vm_run()
{
	local name=$1 tmo=$2 test=$3 args=${4:-}
	shift 4
	[[ ${1:-} == -- ]] && shift
	local console=$WORKDIR/$name.console rc=0
	local accel
	accel=$(vm_accel)
	timeout --kill-after=5 "$tmo" qemu-system-x86_64 -accel "$accel" -cpu max -machine q35 \
		-bios /usr/share/qemu/qboot.rom -smp 2 -m 512 -nodefaults -display none \
		-no-reboot -serial "file:$console" \
		-kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
		-append "console=ttyS0 quiet panic=-1 vstor.test=$test vstor.args=$args" \
		"$@" >"$WORKDIR/$name.qemu.out" 2>&1 || rc=$?
	if ! grep -q "VSTOR-RESULT: PASS" "$console"; then
		cat "$WORKDIR/$name.qemu.out" >&2
		tail -n 40 "$console" >&2
		fail "guest test '$test' did not pass (qemu exit $rc)"
	fi
}
