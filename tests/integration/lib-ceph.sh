# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# A private single-node Ceph cluster for tests: one ceph-mon, one ceph-mgr
# and one ceph-osd on memstore (data in RAM), cephx on, msgr2 only, on
# 127.0.0.1 at a free port, every path under $WORKDIR/ceph. Source after
# lib.sh:
#
#   . "$VS_LIB_DIR/lib-ceph.sh"
#   ceph_start_cluster        # sets CEPH_DIR, CEPH_CONF, CEPH_ARGS, CEPH_MON_PORT,
#                             # CEPH_ADMIN_KEYRING, CEPH_ADMIN_KEY (base64)
#   ceph_create_pool NAME     # a replicated pool of 8 PGs, initialised for rbd
#   ceph_add_client NAME      # client.NAME with rbd caps; prints its key
#
# It comes up in about 8 s. The cleanup stops the OSD first, then the mgr
# and the mon, by their pid files.

CEPH_DAEMONS=()

# ceph_ CMD ARGS...: a ceph tool against the test cluster, bounded in time.
ceph_() { timeout 60 "$@"; }

ceph_stop_cluster()
{
	local who pid i
	# The OSD first (it reports to the mon on the way down), then mgr and mon.
	for who in osd.0 mgr.x mon.a; do
		[[ -s $CEPH_DIR/run/$who.pid ]] || continue
		pid=$(<"$CEPH_DIR/run/$who.pid")
		kill -TERM "$pid" 2>/dev/null || continue
		for ((i = 0; i < 500; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.02
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
}

ceph_write_conf()
{
	cat >"$CEPH_CONF" <<EOF
[global]
fsid = $CEPH_FSID
mon host = [v2:127.0.0.1:$CEPH_MON_PORT]
mon initial members = a
ms bind msgr1 = false
ms bind ipv6 = false
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
pid file = $CEPH_DIR/run/\$name.pid
log file = $CEPH_DIR/log/\$name.log
crash dir = $CEPH_DIR/crash
keyring = $CEPH_DIR/keyring.\$name
log to stderr = false
err to stderr = false
log to syslog = false
mon cluster log file = $CEPH_DIR/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = $CEPH_DIR/mon.\$id
[mgr]
mgr data = $CEPH_DIR/mgr.\$id
mgr disabled modules = dashboard prometheus restful
[osd]
osd data = $CEPH_DIR/osd.\$id
osd objectstore = memstore
memstore device bytes = $((2 << 30))
osd max object name len = 256
osd max object namespace len = 64
EOF
}

ceph_daemon_start()
{
	local who=$1
	shift
	# CEPH_ARGS names the admin client: not for the daemons.
	env -u CEPH_ARGS timeout --kill-after=5 "$VS_DAEMON_TIMEOUT" "$@" -f --conf "$CEPH_CONF" \
		>"$CEPH_DIR/log/$who.out" 2>&1 &
	CEPH_DAEMONS+=("$!")
}

# rados (C++) rather than the ceph tool (Python, seconds to start on a loaded machine).
ceph_mon_up() { timeout 10 rados --client_mount_timeout=3 lspools >/dev/null 2>&1; }

# ceph_start_cluster: mon, mgr and one memstore OSD; retried on a taken port.
ceph_start_cluster()
{
	require_tool ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd uuidgen
	CEPH_DIR=$WORKDIR/ceph
	CEPH_CONF=$CEPH_DIR/ceph.conf
	CEPH_ADMIN_KEYRING=$CEPH_DIR/keyring.client.admin
	export CEPH_CONF
	export CEPH_ARGS="--id admin --keyring $CEPH_ADMIN_KEYRING"
	local try=0 ok=0
	at_exit ceph_stop_cluster
	while ((try++ < 3)); do
		ceph_stop_cluster 2>/dev/null || true
		rm -rf "$CEPH_DIR"
		mkdir -p "$CEPH_DIR"/{run,log,crash,mon.a,mgr.x,osd.0}
		CEPH_FSID=$(uuidgen)
		CEPH_MON_PORT=$(free_port)
		ceph_write_conf
		local k=$CEPH_DIR
		ceph-authtool --create-keyring "$k/keyring.mon.a" --gen-key -n mon. --cap mon 'allow *' \
			>/dev/null
		ceph-authtool --create-keyring "$CEPH_ADMIN_KEYRING" --gen-key -n client.admin \
			--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' \
			>/dev/null
		ceph-authtool --create-keyring "$k/keyring.mgr.x" --gen-key -n mgr.x \
			--cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
		ceph-authtool --create-keyring "$k/keyring.osd.0" --gen-key -n osd.0 \
			--cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' \
			>/dev/null
		local f
		for f in "$CEPH_ADMIN_KEYRING" "$k/keyring.mgr.x" "$k/keyring.osd.0"; do
			ceph-authtool "$k/keyring.mon.a" --import-keyring "$f" >/dev/null
		done
		monmaptool --create --fsid "$CEPH_FSID" --addv a "[v2:127.0.0.1:$CEPH_MON_PORT]" \
			"$k/monmap" >/dev/null
		env -u CEPH_ARGS ceph-mon --conf "$CEPH_CONF" --mkfs -i a --monmap "$k/monmap" \
			--keyring "$k/keyring.mon.a" >"$k/log/mkfs.out" 2>&1 || fail "ceph-mon --mkfs"
		ceph_daemon_start mon.a ceph-mon -i a
		local deadline=$((SECONDS + 20))
		until ceph_mon_up; do
			kill -0 "${CEPH_DAEMONS[-1]}" 2>/dev/null || break
			((SECONDS < deadline)) || break
			sleep 0.05
		done
		if ceph_mon_up; then
			ok=1
			break
		fi
	done
	((ok)) || {
		cat "$CEPH_DIR"/log/mon.a.* >&2 2>/dev/null
		fail "ceph-mon did not start"
	}
	ceph_daemon_start mgr.x ceph-mgr -i x
	local uuid
	uuid=$(uuidgen)
	ceph_ ceph osd new "$uuid" 0 >/dev/null || fail "ceph osd new"
	ceph_ env -u CEPH_ARGS ceph-osd --conf "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$uuid" \
		>"$CEPH_DIR/log/osd-mkfs.out" 2>&1 || fail "ceph-osd --mkfs"
	ceph_daemon_start osd.0 ceph-osd -i 0
	# No wait for the OSD: rbd pool init (ceph_create_pool) waits for active PGs.
	CEPH_ADMIN_KEY=$(ceph-authtool -p -n client.admin "$CEPH_ADMIN_KEYRING")
}

# ceph_create_pool NAME: an rbd pool; returns once its PGs are active.
ceph_create_pool()
{
	ceph_ ceph osd pool create "$1" 8 8 replicated >/dev/null 2>&1 ||
		fail "ceph osd pool create $1"
	ceph_ rbd pool init "$1" || fail "rbd pool init $1"
}

# ceph_add_client NAME [POOL]: client.NAME with the rbd profile (on POOL, or
# every pool); prints its base64 key.
ceph_add_client()
{
	local caps=('profile rbd')
	[[ -n ${2:-} ]] && caps=("profile rbd pool=$2")
	ceph_ ceph auth get-or-create "client.$1" mon 'profile rbd' osd "${caps[0]}" \
		mgr 'profile rbd' >"$CEPH_DIR/keyring.client.$1" || fail "ceph auth get-or-create client.$1"
	sed -n 's/^[[:space:]]*key = //p' "$CEPH_DIR/keyring.client.$1"
}
