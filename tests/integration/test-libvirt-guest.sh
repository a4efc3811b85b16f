#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Libvirt-managed guests on vstor (issue 15): a libvirtd of the test's own
# (its sockets, state and qemu.conf in $WORKDIR, in a private mount
# namespace, so it touches nothing of a system libvirt) starts two domains
# from the XML a libvirt user writes (docs/libvirt.md):
#   - <disk type='vhostuser'> on a vstor-vhost socket (shared memfd memory),
#   - <disk type='network'><source protocol='nbd'> on a vstor-nbd unix socket.
# Each guest (TCG) writes a pattern over its disk, flushes, reads it back,
# zeroes and discards (tests/vm/guest/disk-pattern.sh). Afterwards each image
# passes qemu-img check and its zeroed and discarded MiBs read as zeroes.
. "$(dirname "$0")/lib.sh"
. "$VS_SOURCE_DIR/tests/vm/vm-lib.sh"

export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
require_tool qemu-img qemu-io unshare
command -v libvirtd >/dev/null && command -v virsh >/dev/null ||
	skip_or_fail "libvirtd/virsh missing (libvirt-daemon-system, libvirt-clients)"
((EUID == 0)) || skip_or_fail "libvirtd with its own qemu.conf needs root"
find_built VSTOR_NBD nbd-server/vstor-nbd
find_built VSTOR_VHOST vhost-user-blk/vstor-vhost
vm_prepare

# --- a private libvirtd ---
L=$WORKDIR/libvirt
mkdir -p "$L/etc" "$L/lib" "$L/run" "$L/sock" "$L/log"
# QEMU runs as root without relabelling (the test's files stay the test's);
# its output goes to files (no virtlogd here).
cat >"$L/etc/qemu.conf" <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
EOF
cat >"$L/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$L/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$L/log/libvirtd.log"
EOF
# The mount namespace puts the test's qemu.conf and state directories where
# libvirtd looks for them; it ends with libvirtd.
cat >"$L/start.sh" <<EOF
#!/bin/bash
set -e
mount --make-rprivate /
mkdir -p /var/lib/libvirt /run/libvirt
mount --bind "$L/etc/qemu.conf" /etc/libvirt/qemu.conf
mount --bind "$L/lib" /var/lib/libvirt
mount --bind "$L/run" /run/libvirt
exec libvirtd --config "$L/etc/libvirtd.conf" --pid-file "$L/libvirtd.pid"
EOF
chmod +x "$L/start.sh"
[[ -e /etc/libvirt/qemu.conf ]] || skip_or_fail "/etc/libvirt/qemu.conf missing (libvirt-daemon-driver-qemu)"
start_daemon "$L/libvirtd.pid" 60 unshare -m "$L/start.sh"
LIBVIRTD=$DAEMON_PID
wait_for 30 test -S "$L/sock/libvirt-sock"
virsh_() { timeout 120 virsh -q -c "qemu:///system?socket=$L/sock/libvirt-sock" "$@"; }
at_exit 'for d in vstor-vhost-guest vstor-nbd-guest; do virsh_ destroy $d >/dev/null 2>&1 || true; done'
virsh_ version >/dev/null || fail "virsh cannot reach the test's libvirtd"

# domain_xml NAME CONSOLE DISK-XML [EXTRA-XML]: a TCG guest that boots the test
# kernel straight into tests/vm/guest/disk-pattern.sh and powers off.
domain_xml()
{
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  ${4:-}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <loader readonly='yes' type='rom'>/usr/share/qemu/qboot.rom</loader>
    <kernel>$VM_KERNEL</kernel>
    <initrd>$VM_INITRD</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 vstor.test=disk-pattern vstor.args=</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum' migratable='off'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
$3
    <serial type='file'><source path='$2'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# run_domain NAME XML-FILE CONSOLE: start the transient domain, wait (bounded)
# until it is gone, and require the guest's PASS.
run_domain()
{
	virsh_ create "$2" >/dev/null || { tail -20 "$L/log/libvirtd.log" >&2; fail "virsh create $1"; }
	local deadline=$((SECONDS + 600))
	while virsh_ domstate "$1" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "$1 still running after 600 s"
		sleep 0.5
	done
	if ! grep -q "VSTOR-RESULT: PASS" "$3"; then
		tail -n 30 "$3" >&2
		cat "$L/log/qemu/$1.log" >&2 2>/dev/null || true
		fail "guest $1 did not pass"
	fi
	grep -q "write-zeroes ok" "$3" && grep -q "discard ok" "$3" ||
		fail "$1: write-zeroes/discard not exercised"
}

# check_image IMG FMT: consistent, and MiB 2 (zeroed) and 3 (discarded) read zero.
check_image()
{
	qemu_img check -f "$2" "$1" >check.out || { cat check.out >&2; fail "qemu-img check $1"; }
	qemu-io -f "$2" -c 'read -P 0 2M 2M' "$1" >zero.out || true
	grep -q 'Pattern verification failed' zero.out && fail "$1: zeroed/discarded MiBs do not read as zero"
	qemu-io -f "$2" -c 'read -P 0 5M 1M' "$1" >data.out || true
	grep -q 'Pattern verification failed' data.out || fail "$1: the guest's pattern is missing"
}

log "vhostuser disk on vstor-vhost"
qemu_img create -q -f qcow2 vh.qcow2 64M
# QEMU gives a vhost-user-blk disk one queue per vCPU unless told otherwise.
start_daemon "$WORKDIR/vh.pid" 30 "$VSTOR_VHOST" --socket "$WORKDIR/vh.sock" -f qcow2 --num-queues 2 \
	--discard=unmap --pid-file "$WORKDIR/vh.pid" vh.qcow2
VH=$DAEMON_PID
domain_xml vstor-vhost-guest "$WORKDIR/vh.console" "    <disk type='vhostuser' device='disk'>
      <driver name='qemu' type='raw'/>
      <source type='unix' path='$WORKDIR/vh.sock'><reconnect enabled='yes' timeout='10'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>" "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>" >vh.xml
run_domain vstor-vhost-guest vh.xml "$WORKDIR/vh.console"
stop_pid "$VH"
check_image vh.qcow2 qcow2

log "network nbd disk on vstor-nbd"
qemu_img create -q -f qcow2 nbd.qcow2 64M
start_daemon "$WORKDIR/nbd.pid" 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" -f qcow2 --cache=none \
	--discard=unmap --pid-file "$WORKDIR/nbd.pid" nbd.qcow2
NBD=$DAEMON_PID
domain_xml vstor-nbd-guest "$WORKDIR/nbd.console" "    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none' discard='unmap'/>
      <source protocol='nbd'><host transport='unix' socket='$WORKDIR/nbd.sock'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>" >nbd.xml
run_domain vstor-nbd-guest nbd.xml "$WORKDIR/nbd.console"
stop_pid "$NBD"
check_image nbd.qcow2 qcow2
stop_pid "$LIBVIRTD"
log "done after $SECONDS s"
