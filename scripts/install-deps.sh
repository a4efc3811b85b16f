#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Install what vstor's build and test suite need on Debian 12 (bookworm).
# Idempotent: when everything is present it only checks and returns.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail

PACKAGES=(
	# build
	build-essential meson ninja-build pkg-config
	liburing-dev libzstd-dev zlib1g-dev libdeflate-dev
	# pool UUIDs (libuuid)
	uuid-dev
	# tests
	libcmocka-dev valgrind python3 coreutils
	# test-install: the bash completion runs inside bash-completion's framework
	bash-completion
	# tools the test scripts run: ip (network namespaces), pgrep/ps, git
	iproute2 procps git
	# /etc/services and /etc/protocols: rpcbind and rpcinfo resolve "sunrpc" through them
	netbase
	clang clang-format libclang-rt-14-dev
	# NBD server: TLS
	libgnutls28-dev gnutls-bin
	# the daemons: socket activation and readiness (sd_listen_fds, sd_notify)
	libsystemd-dev
	# vstord: QMP's JSON (json-c, as libvirt)
	libjson-c-dev
	# peers: qemu-img, qemu-io, qemu-nbd (the qcow2 oracle and lock peer)
	qemu-utils
	# LUKS peer: cryptsetup luksDump and open --test-passphrase (test-luks)
	cryptsetup-bin
	# NBD peers: nbdinfo, nbdcopy, nbdsh, fio's nbd engine, nbdkit
	libnbd-bin python3-libnbd fio nbdkit
	# vstor backup: the NBD client library (libnbd)
	libnbd-dev
	# nbdinfo --json runs file(1) to describe the content; without it the JSON breaks
	file
	# guest tests (tests/vm): QEMU with TCG, zstd to unpack kernel modules
	qemu-system-x86 zstd
	# pool backends: NFS (libnfs client, nfs-ganesha peer in a private netns),
	# iSCSI (libiscsi client, tgtd peer), LVM (liblvm2cmd, lvm2 tools)
	libnfs-dev libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind
	# qemu-img/qemu-io open nfs:// backing files (test-nfs) through this module
	qemu-block-extra
	libiscsi-dev libiscsi-bin tgt
	lvm2 liblvm2-dev
	# Ceph RBD: librbd/librados for the rbd driver, a private single-node
	# cluster as the peer (tests/integration/lib-ceph.sh); uuidgen makes its ids
	librbd-dev librados-dev ceph-mon ceph-mgr ceph-osd ceph-common uuid-runtime
	# libvirt-managed guests on vstor disks (test-libvirt-guest: a private libvirtd)
	libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
	# cross-host volume leases of shared pools: libsanlock_client, and the
	# sanlock daemons of the lease tests (two hosts, one per run dir)
	sanlock libsanlock-dev
	# pool and volume XML (libxml2, as libvirt); xmllint is the --xpath test's oracle
	libxml2-dev libxml2-utils
	# --validate: libvirt's RelaxNG schemas (/usr/share/libvirt/schemas, in libvirt0)
	libvirt0
)

# ganesha's VFS FSAL reads the mount table from /etc/mtab, which every
# installed Debian system has but a debootstrap root lacks.
if [[ ! -e /etc/mtab ]] && ((EUID == 0)); then
	ln -s ../proc/self/mounts /etc/mtab
fi

missing=()
for p in "${PACKAGES[@]}"; do
	if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "install-deps: all ${#PACKAGES[@]} packages present"
	exit 0
fi

if ((EUID == 0)); then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	echo "install-deps: missing packages (${missing[*]}); run as root or install sudo" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
# tgt, rpcbind and nfs-ganesha would start host services on install: the tests
# start their own servers (on loopback or in a private netns). A policy-rc.d
# that denies every start keeps apt from starting them; ours is removed after.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
	"${as_root[@]}" chmod 755 "$policy"
	trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 \
	--no-install-recommends "${missing[@]}"
