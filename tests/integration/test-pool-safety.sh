#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# What the pool layer must refuse or never show (issue 11), on dir pools,
# with qemu-img, qemu-io, qemu-nbd and vstor-nbd as the peers:
#
#   modes    volumes are created 0600; <permissions> (mode, owner, group) of
#            a volume XML and of a pool XML are applied and shown by
#            vol-dumpxml, vol-dump and pool-dumpxml
#   kill     20 SIGKILLs each of vol-clone and of vol-create-as
#            --prealloc-metadata at varied points: vol-list never shows a
#            half-made volume, every listed volume is whole (qemu-img check,
#            compare), the temporary files are gone after a refresh, and the
#            same name can be created again
#   upload   vol-upload larger than the volume is refused (file and pipe)
#            and the volume is unchanged (format, size, bytes, check)
#   destroy  pool-destroy and pool-delete are refused while vstor-nbd
#            (--pool and vol:), qemu-nbd or qemu-io has a volume open;
#            --force overrides
#   delete   vol-delete of a volume that another volume (same pool, another
#            pool, relative backing name) is backed by is refused; --force
#            overrides; overlay first, then base, works
#
# VSTOR_SAFETY_PARTS="modes kill ..." runs only those parts (to check that
# each fails on code without its fix).
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd python3 cmp sha256sum
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
no_locks() { [[ -z $(inode_locks "$1") ]]; }
has_locks() { [[ -n $(inode_locks "$1") ]]; }
part() { [[ " ${VSTOR_SAFETY_PARTS:-modes kill upload destroy delete} " == *" $1 "* ]]; }
umask 022

pooldir=$WORKDIR/images
assert_rc 0 vstor pool-define-as p1 dir --target "$pooldir"
assert_rc 0 vstor pool-build p1
assert_rc 0 vstor pool-start p1

# Owner and group to give: others than ours when we may chown (root).
if [[ $(id -u) == 0 ]]; then
	uid=1234 gid=4321
else
	uid=$(id -u) gid=$(id -g)
fi

# vol-list's names into $WORKDIR/names, one a line (from JSON, so odd names stay whole).
vol_names()
{
	vstor vol-list p1 --output=json >"$WORKDIR/list.json" || fail "vol-list failed"
	python3 -c 'import json,sys; [print(v["name"]) for v in json.load(open(sys.argv[1]))]' \
		"$WORKDIR/list.json" >"$WORKDIR/names"
}

if part modes; then
	log "modes"
	# libvirt's default: a new volume is 0600 whatever the umask.
	assert_rc 0 vstor vol-create-as p1 def.qcow2 16M --format qcow2
	assert_eq "$(stat -c %a "$pooldir/def.qcow2")" 600 "mode of a new qcow2 volume"
	assert_rc 0 vstor vol-create-as p1 def.img 16M
	assert_eq "$(stat -c %a "$pooldir/def.img")" 600 "mode of a new raw volume"
	assert_rc 0 vstor vol-dumpxml def.img --pool p1
	assert_grep '<mode>0600</mode>' out
	assert_grep "<owner>$(id -u)</owner>" out
	assert_grep "<group>$(id -g)</group>" out
	# <permissions> of a volume XML.
	cat >perm.xml <<EOF
<volume>
  <name>perm.img</name>
  <capacity unit='M'>8</capacity>
  <target>
    <format type='raw'/>
    <permissions><mode>0640</mode><owner>$uid</owner><group>$gid</group><label>x</label></permissions>
  </target>
</volume>
EOF
	assert_rc 0 vstor vol-create p1 perm.xml
	assert_eq "$(stat -c '%a %u %g' "$pooldir/perm.img")" "640 $uid $gid" "mode, owner, group from the volume XML"
	assert_rc 0 vstor vol-dumpxml perm.img --pool p1
	python3 - out "$uid" "$gid" <<'PY' || fail "vol-dumpxml <permissions>"
import sys, xml.etree.ElementTree as ET
p = ET.parse(sys.argv[1]).getroot().find("target/permissions")
got = (p.findtext("mode"), p.findtext("owner"), p.findtext("group"))
assert got == ("0640", sys.argv[2], sys.argv[3]), got
PY
	# What vol-dumpxml writes, vol-create reads back (permissions included).
	sed 's|<name>perm.img</name>|<name>perm2.img</name>|' out >perm2.xml
	assert_rc 0 vstor vol-create p1 perm2.xml
	assert_eq "$(stat -c '%a %u %g' "$pooldir/perm2.img")" "640 $uid $gid" "vol-create of vol-dumpxml"
	assert_rc 0 vstor vol-dump perm.img --pool p1
	python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert (d["mode"], d["owner"], d["group"]) == ("0640", int(sys.argv[2]), int(sys.argv[3])), d' \
		out "$uid" "$gid" || fail "vol-dump permissions"
	# JSON definitions take the same members.
	printf '{"name": "perm.json.img", "capacity": 1048576, "mode": "0604"}' >perm.json
	assert_rc 0 vstor vol-create p1 perm.json
	assert_eq "$(stat -c %a "$pooldir/perm.json.img")" 604 "mode from a JSON volume definition"
	# A clone keeps the original's permissions (libvirt clones from its XML).
	assert_rc 0 vstor vol-clone perm.img perm-clone.img --pool p1
	assert_eq "$(stat -c '%a %u %g' "$pooldir/perm-clone.img")" "640 $uid $gid" "permissions of a clone"
	printf '<volume><name>bad.img</name><capacity>1</capacity><target><permissions><mode>9999</mode></permissions></target></volume>' >bad.xml
	assert_fails vstor vol-create p1 bad.xml
	assert_grep 'not an octal mode' err
	[[ ! -e $pooldir/bad.img ]] || fail "a volume with a bad mode was created"

	# A pool directory: libvirt's default 0711 when pool-build creates it ...
	[[ $(stat -c %a "$pooldir") == 711 ]] || fail "pool-build made $pooldir $(stat -c %a "$pooldir"), expected 711"
	# ... and the <permissions> of a pool XML.
	cat >pp.xml <<EOF
<pool type='dir'>
  <name>pp</name>
  <target>
    <path>$WORKDIR/pp/dir</path>
    <permissions><mode>0750</mode><owner>$uid</owner><group>$gid</group></permissions>
  </target>
</pool>
EOF
	assert_rc 0 vstor pool-define pp.xml
	assert_rc 0 vstor pool-dump pp
	python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert d["permissions"] == {"mode": "0750", "owner": sys.argv[2], "group": sys.argv[3]}, d' \
		out "$uid" "$gid" || fail "pool permissions in the definition"
	assert_rc 0 vstor pool-build pp
	assert_eq "$(stat -c '%a %u %g' "$WORKDIR/pp/dir")" "750 $uid $gid" "pool directory from the pool XML"
	assert_rc 0 vstor pool-start pp
	assert_rc 0 vstor pool-dumpxml pp
	python3 - out "$uid" "$gid" <<'PY' || fail "pool-dumpxml <permissions>"
import sys, xml.etree.ElementTree as ET
p = ET.parse(sys.argv[1]).getroot().find("target/permissions")
got = (p.findtext("mode"), p.findtext("owner"), p.findtext("group"))
assert got == ("0750", sys.argv[2], sys.argv[3]), got
PY
	# An existing directory gets the mode asked for, too.
	chmod 0777 "$WORKDIR/pp/dir"
	assert_rc 0 vstor pool-destroy pp
	assert_rc 0 vstor pool-build pp
	assert_eq "$(stat -c %a "$WORKDIR/pp/dir")" 750 "pool-build of an existing directory"
	assert_rc 0 vstor pool-undefine pp
	cat >pbad.xml <<EOF
<pool type='dir'><name>pbad</name><target><path>/x</path><permissions><mode>rwx</mode></permissions></target></pool>
EOF
	assert_fails vstor pool-define pbad.xml
	assert_grep 'not an octal mode' err
	for v in def.qcow2 def.img perm.img perm2.img perm.json.img perm-clone.img; do
		assert_rc 0 vstor vol-delete "$v" --pool p1
	done
fi

if part kill; then
	log "kill"
	# A large-ish source: 128 MiB of data in a 256 MiB qcow2.
	assert_rc 0 vstor vol-create-as p1 src.qcow2 256M --format qcow2
	assert_rc 0 timeout 120 qemu-io -f qcow2 -c 'write -P 0x5a 0 96M' -c 'write -P 0x33 200M 32M' \
		"$pooldir/src.qcow2"
	good=(src.qcow2)

	# Check what vol-list shows after a kill: only whole volumes, no temporaries.
	check_listing()
	{
		local name v
		vol_names
		mapfile -t names <"$WORKDIR/names"
		for name in "${names[@]}"; do
			[[ $name != .* ]] || fail "a temporary volume is listed: $name"
			case " ${good[*]} $1 " in
			*" $name "*) ;;
			*) fail "vol-list shows '$name', which nobody made" ;;
			esac
			v=$pooldir/$name
			if [[ $(qemu-img info --output=json "$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])') == qcow2 ]]; then
				qemu_img check -q "$v" >/dev/null 2>&1 || fail "listed volume $name does not pass qemu-img check"
			elif [[ $name == "$1" ]]; then
				fail "listed volume $name is not a qcow2 image (half-made)"
			fi
		done
		# The refresh of vol-list deleted what the killed build left.
		if compgen -G "$pooldir/.*vstor-tmp-*" >/dev/null; then
			ls -la "$pooldir" >&2
			fail "temporary files left after a refresh"
		fi
		if [[ -n $(ls -A "$VSTOR_STATE_DIR/building/p1" 2>/dev/null) ]]; then
			ls -la "$VSTOR_STATE_DIR/building/p1" >&2
			fail "records of dead builds left after a refresh"
		fi
	}

	# Kill $! at a varied point: when its temporary file appears (every
	# third round), else after a random delay of up to $1 ms.
	kill_build()
	{
		local pid=$1 max_ms=$2 round=$3 deadline=$((SECONDS + 30))
		if ((round % 3 == 0)); then
			until compgen -G "$pooldir/.*vstor-tmp-*" >/dev/null; do
				kill -0 "$pid" 2>/dev/null || break
				((SECONDS < deadline)) || fail "no temporary file appeared"
				sleep 0.005
			done
		else
			sleep "$(python3 -c "import random; print(random.randint(0, $max_ms) / 1000)")"
		fi
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	}

	midway=0
	for round in $(seq 1 20); do
		"$VSTOR" vol-clone src.qcow2 clone.qcow2 --pool p1 >/dev/null 2>&1 &
		kill_build $! 400 "$round"
		check_listing clone.qcow2
		if grep -qx clone.qcow2 "$WORKDIR/names"; then
			# It finished before the kill: then it must be whole.
			qemu_img compare -q "$pooldir/src.qcow2" "$pooldir/clone.qcow2" ||
				fail "round $round: a listed clone differs from its source"
			assert_rc 0 vstor vol-delete clone.qcow2 --pool p1
		else
			midway=$((midway + 1))
		fi
		# The same name can be made again.
		assert_rc 0 vstor vol-clone src.qcow2 clone.qcow2 --pool p1
		assert_rc 0 qemu_img compare "$pooldir/src.qcow2" "$pooldir/clone.qcow2"
		assert_rc 0 vstor vol-delete clone.qcow2 --pool p1
	done

	log "vol-clone: $midway of 20 kills before the end"
	((midway >= 3)) || fail "only $midway of 20 kills of vol-clone came before it ended"
	midway=0
	for round in $(seq 1 20); do
		"$VSTOR" vol-create-as p1 pre.qcow2 32G --format qcow2 --prealloc-metadata >/dev/null 2>&1 &
		kill_build $! 300 "$round"
		check_listing pre.qcow2
		if grep -qx pre.qcow2 "$WORKDIR/names"; then
			assert_eq "$(qemu-img info --output=json "$pooldir/pre.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" \
				$((32 << 30)) "round $round: size of a listed preallocated volume"
			assert_rc 0 vstor vol-delete pre.qcow2 --pool p1
		else
			midway=$((midway + 1))
		fi
		assert_rc 0 vstor vol-create-as p1 pre.qcow2 32G --format qcow2 --prealloc-metadata
		assert_rc 0 qemu_img check "$pooldir/pre.qcow2"
		assert_rc 0 vstor vol-delete pre.qcow2 --pool p1
	done
	log "vol-create-as --prealloc-metadata: $midway of 20 kills before the end"
	((midway >= 3)) || fail "only $midway of 20 kills of vol-create-as came before it ended"
	assert_rc 0 vstor vol-delete src.qcow2 --pool p1
fi

if part upload; then
	log "upload"
	assert_rc 0 vstor vol-create-as p1 up.qcow2 1M --format qcow2
	assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'write -P 0x7e 0 64k' "$pooldir/up.qcow2"
	sum=$(sha256sum <"$pooldir/up.qcow2")
	head -c 2M /dev/urandom >big.raw
	assert_fails vstor vol-upload up.qcow2 big.raw --pool p1
	assert_grep 'do not fit' err
	assert_eq "$(sha256sum <"$pooldir/up.qcow2")" "$sum" "bytes of the volume after a refused upload"
	assert_eq "$(qemu-img info --output=json "$pooldir/up.qcow2" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["format"], d["virtual-size"])')" \
		"qcow2 1048576" "the volume after a refused upload"
	assert_rc 0 qemu_img check "$pooldir/up.qcow2"
	# --offset counts: 512 KiB at 768 KiB does not fit in 1 MiB of a raw volume.
	assert_rc 0 vstor vol-create-as p1 up.img 1M
	head -c 512K /dev/urandom >half.raw
	assert_fails vstor vol-upload up.img half.raw --pool p1 --offset 768K
	assert_eq "$(stat -c %s "$pooldir/up.img")" 1048576 "size of a raw volume after a refused upload"
	assert_rc 0 vstor vol-upload up.img half.raw --pool p1 --offset 512K
	assert_rc 0 cmp -i 524288:0 "$pooldir/up.img" half.raw
	# From a pipe the size is not known ahead: stopped at the end.
	assert_fails sh -c "cat big.raw | timeout 60 '$VSTOR' vol-upload up.img /dev/stdin --pool p1"
	assert_grep 'do not fit' err
	assert_eq "$(stat -c %s "$pooldir/up.img")" 1048576 "size after a refused upload from a pipe"
	# A qcow2 image file smaller than the volume's capacity still goes in.
	assert_rc 0 qemu_img create -q -f qcow2 small.qcow2 1M
	assert_rc 0 vstor vol-upload up.qcow2 small.qcow2 --pool p1
	assert_rc 0 qemu_img check "$pooldir/up.qcow2"
	assert_rc 0 vstor vol-delete up.qcow2 --pool p1
	assert_rc 0 vstor vol-delete up.img --pool p1
fi

if part destroy; then
	log "destroy"
	assert_rc 0 vstor vol-create-as p1 ex.img 8M
	assert_rc 0 vstor vol-create-as p1 ex.qcow2 8M --format qcow2

	refused()
	{
		assert_fails vstor pool-destroy p1
		assert_grep "cannot destroy storage pool 'p1'.*is open.*--force" err "$1"
		assert_rc 0 vstor pool-info p1
		assert_grep '^State: +running' out
	}

	# vstor-nbd --pool serves every volume.
	rm -f nbd.pid
	start_daemon nbd.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" --pool p1
	refused "pool-destroy under vstor-nbd --pool"
	assert_rc 0 vstor pool-destroy p1 --force
	assert_grep '^Pool p1 destroyed' out
	# An inactive pool whose volume is still open: pool-delete refuses too.
	assert_fails vstor pool-delete p1
	assert_grep "cannot delete storage pool 'p1'.*is open" err
	stop_pid "$DAEMON_PID"
	wait_for 10 no_locks "$pooldir/ex.img"
	assert_rc 0 vstor pool-start p1

	# vstor-nbd vol:POOL/VOLUME, read-only: a reader counts too.
	rm -f nbd.pid
	start_daemon nbd.pid 30 "$VSTOR_NBD" -r -t -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" vol:p1/ex.qcow2
	refused "pool-destroy under vstor-nbd vol:"
	stop_pid "$DAEMON_PID"
	wait_for 10 no_locks "$pooldir/ex.qcow2"

	# qemu-nbd on the file.
	timeout 60 qemu-nbd --fork --persistent --pid-file="$WORKDIR/qnbd.pid" -k "$WORKDIR/qnbd.sock" \
		-f raw "$pooldir/ex.img" || fail "qemu-nbd did not start"
	register_pid "$(<"$WORKDIR/qnbd.pid")"
	refused "pool-destroy under qemu-nbd"
	stop_pid "$(<"$WORKDIR/qnbd.pid")"
	wait_for 10 no_locks "$pooldir/ex.img"

	# qemu-io -r (read-only) holding the qcow2.
	coproc QIO { exec timeout 120 qemu-io -r -f qcow2 "$pooldir/ex.qcow2" 2>&1; }
	wait_for 30 has_locks "$pooldir/ex.qcow2"
	refused "pool-destroy under qemu-io -r"
	qio_pid=$QIO_PID qio_in=${QIO[1]}
	exec {qio_in}>&-
	wait "$qio_pid" || true
	wait_for 10 no_locks "$pooldir/ex.qcow2"

	# Nothing open: destroy and start again.
	assert_rc 0 vstor pool-destroy p1
	assert_rc 0 vstor pool-start p1
	assert_rc 0 vstor vol-delete ex.img --pool p1
	assert_rc 0 vstor vol-delete ex.qcow2 --pool p1
fi

if part delete; then
	log "delete"
	assert_rc 0 vstor vol-create-as p1 base.qcow2 16M --format qcow2
	assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'write -P 0x42 0 1M' "$pooldir/base.qcow2"
	assert_rc 0 vstor vol-create-as p1 top.qcow2 16M --format qcow2 --backing-vol base.qcow2 --backing-vol-format qcow2
	assert_fails vstor vol-delete base.qcow2 --pool p1
	assert_grep "'base.qcow2' is the backing file of volume 'top.qcow2'.*--force" err
	[[ -e $pooldir/base.qcow2 ]] || fail "a backing volume was deleted"
	assert_rc 0 qemu_img check "$pooldir/top.qcow2"
	# A relative backing name (as qemu-img writes it) counts too.
	assert_rc 0 qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 "$pooldir/rel.qcow2"
	assert_rc 0 vstor vol-delete top.qcow2 --pool p1
	assert_fails vstor vol-delete base.qcow2 --pool p1
	assert_grep "backing file of volume 'rel.qcow2'" err
	assert_rc 0 vstor vol-delete rel.qcow2 --pool p1
	# An overlay in another (dir) pool.
	assert_rc 0 vstor pool-define-as p2 dir --target "$WORKDIR/images2"
	assert_rc 0 vstor pool-build p2
	assert_rc 0 vstor pool-start p2
	assert_rc 0 vstor vol-create-as p2 other.qcow2 16M --format qcow2 --backing-vol "$pooldir/base.qcow2" \
		--backing-vol-format qcow2
	assert_fails vstor vol-delete base.qcow2 --pool p1
	assert_grep "backing file of volume 'other.qcow2' in pool 'p2'" err
	assert_rc 0 vstor vol-delete other.qcow2 --pool p2
	# Overlay first, then base: works.
	assert_rc 0 vstor vol-delete base.qcow2 --pool p1
	[[ ! -e $pooldir/base.qcow2 ]] || fail "vol-delete left the base"
	# --force deletes a base anyway.
	assert_rc 0 vstor vol-create-as p1 base.qcow2 16M --format qcow2
	assert_rc 0 vstor vol-create-as p1 top.qcow2 16M --format qcow2 --backing-vol base.qcow2
	assert_rc 0 vstor vol-delete base.qcow2 --pool p1 --force
	[[ ! -e $pooldir/base.qcow2 ]] || fail "vol-delete --force left the base"
	assert_rc 0 vstor vol-delete top.qcow2 --pool p1
fi

log "pool safety: modes, whole volumes, refusals"
