#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Persistent dirty bitmaps in qcow2 against QEMU 7.2: bitmaps made, merged
# and disabled by qemu-img read the same in vstor-img info (JSON equal);
# bitmaps made by vstor-img bitmap read the same in qemu-img info and pass
# qemu-img check; qemu-img bitmap's messages and exit codes; writes through
# vstor-io set exactly the written granules of an enabled bitmap (read back
# with qemu-nbd -B and nbdinfo --map) and leave a disabled one alone; a
# compact and resize keep them valid; measure counts them and convert
# --bitmaps copies them as qemu-img does; a writer killed with SIGKILL leaves
# the bitmaps in_use and the image clean.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd nbdinfo python3
require_vstor_img
require_vstor_io

clean() { qemu_img check -q "$1" || fail "${2:-}: qemu-img check $1"; }
# The JSON info without the fields that depend on the file's layout.
info_json()
{
	"$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("actual-size"); d.pop("filename"); print(json.dumps(d, indent=1, sort_keys=True))'
}
same_info()
{
	info_json qemu_img info --output=json "$1" >q.json
	info_json vstor_img info --output=json "$1" >v.json
	diff -u q.json v.json >&2 || fail "$2: qemu-img and vstor-img info differ"
}
# dirty_map IMAGE BITMAP: "offset length" of the dirty extents, as qemu-nbd serves them.
dirty_map()
{
	local sock=$WORKDIR/nbd.sock
	rm -f "$sock" nbd.pid
	start_daemon nbd.pid 30 qemu-nbd -r -t -k "$sock" --pid-file=nbd.pid -B "$2" -f qcow2 "$1"
	nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$sock" |
		awk '$3 == 1 { print $1, $2 }'
	stop_pid "$DAEMON_PID"
}

# 1. qemu-img makes, merges and disables; vstor reads the same.
qemu_img create -q -f qcow2 q.qcow2 64M
qemu_img bitmap --add q.qcow2 b1
qemu_img bitmap --add -g 512 --disable q.qcow2 b2
qemu_img bitmap --add -g 1M q.qcow2 b3 --clear
qemu-io -c 'write 4M 64k' q.qcow2 >/dev/null
qemu_img bitmap --merge b1 --disable q.qcow2 b3
same_info q.qcow2 "bitmaps made by qemu-img"
vstor_img info q.qcow2 | grep -q 'granularity: 512' || fail "human info lacks the bitmaps"

# A reserved bit in a bitmap table entry: both refuse to open it, check reports it.
qemu_img create -q -f qcow2 bad.qcow2 64M
qemu_img bitmap --add bad.qcow2 b1
python3 "$VS_LIB_DIR/qcow2_bitmap_damage.py" bad.qcow2 bad-table
qemu-img info bad.qcow2 >/dev/null 2>q.err && fail "qemu-img opened a broken bitmap table"
assert_rc 1 vstor_img info bad.qcow2
assert_eq "$(sed 's/^vstor-img:/qemu-img:/' err)" "$(cat q.err)" "broken bitmap table"
assert_rc 2 vstor_img check bad.qcow2

# 2. vstor makes the same; qemu-img reads it the same and check is clean.
qemu_img create -q -f qcow2 v.qcow2 64M
vstor_img bitmap --add v.qcow2 b1
vstor_img bitmap --add -g 512 --disable v.qcow2 b2
vstor_img bitmap --add -g 1M v.qcow2 b3 --clear
vstor_io -f qcow2 -c 'writeb 4M 64k 1' v.qcow2
vstor_img bitmap --merge b1 --disable v.qcow2 b3
clean v.qcow2 "bitmaps made by vstor-img"
info_json qemu_img info --output=json v.qcow2 >v-by-qemu.json
info_json qemu_img info --output=json q.qcow2 >q-by-qemu.json
diff -u q-by-qemu.json v-by-qemu.json >&2 || fail "qemu-img reads vstor's bitmaps differently"
assert_eq "$(dirty_map v.qcow2 b3)" "$(dirty_map q.qcow2 b3)" "merged bitmap"
vstor_img bitmap --remove v.qcow2 b2
vstor_img bitmap --remove v.qcow2 b1
assert_rc 1 vstor_img bitmap --remove v.qcow2 b1
assert_grep "^vstor-img: Operation remove on bitmap b1 failed: Dirty bitmap 'b1' not found$" err
clean v.qcow2 "after removing bitmaps"
vstor_img bitmap --remove v.qcow2 b3
clean v.qcow2 "after removing the last bitmap"
assert_eq "$(qemu_img info --output=json v.qcow2 | grep -c bitmaps || true)" 0 "no bitmaps left"

# 3. qemu-img bitmap's messages and exit codes.
qemu_img create -q -f qcow2 m.qcow2 1M
vstor_img bitmap --add m.qcow2 b
for args in "--add m.qcow2 b" "--enable m.qcow2 nope" "--add -g 1000 m.qcow2 c" \
	"m.qcow2 b" "--clear -g 512 m.qcow2 b" "--merge b -F qcow2 m.qcow2 b" \
	"--enable -b x m.qcow2 b" "--add m.qcow2 b extra" "--add -g 4G m.qcow2 c"; do
	# shellcheck disable=SC2086
	qemu-img bitmap $args >/dev/null 2>q.err && fail "qemu-img bitmap $args succeeded"
	# shellcheck disable=SC2086
	assert_rc 1 vstor_img bitmap $args
	assert_eq "$(sed 's/^vstor-img:/qemu-img:/' err)" "$(cat q.err)" "bitmap $args"
done

# The default granularity follows the cluster size within 4k..64k; 2 GiB is the largest.
for cs in 512 4k 2M; do
	qemu_img create -q -f qcow2 -o cluster_size=$cs g.qcow2 64M
	vstor_img bitmap --add g.qcow2 b
	qemu_img bitmap --add g.qcow2 q
	vstor_img bitmap --add -g 2G g.qcow2 big
	clean g.qcow2 "cluster size $cs"
	assert_eq "$(qemu_img info --output=json g.qcow2 | grep -c '"granularity": '"$(qemu_img info --output=json g.qcow2 | grep -m1 '"granularity"' | tr -dc 0-9)")" 2 \
		"default granularity, cluster size $cs"
done

# 4. Dirty tracking: exactly the written granules of the enabled bitmap.
qemu_img create -q -f qcow2 t.qcow2 64M
qemu_img bitmap --add t.qcow2 on
qemu_img bitmap --add -g 4096 t.qcow2 small
qemu_img bitmap --add --disable t.qcow2 off
vstor_io -f qcow2 -c 'writeb 1M 64k 0xab' -c 'write 10M 4k 3' -c 'zero 20M 128k' \
	-c 'discard 30M 100k' -c 'writeb 40M 1 1' t.qcow2
clean t.qcow2 "after tracked writes"
assert_eq "$(dirty_map t.qcow2 on | tr '\n' ' ')" \
	"1048576 65536 10485760 65536 20971520 131072 31457280 131072 41943040 65536 " "enabled bitmap"
assert_eq "$(dirty_map t.qcow2 small | tr '\n' ' ')" \
	"1048576 65536 10485760 4096 20971520 131072 31457280 102400 41943040 4096 " "4k bitmap"
assert_eq "$(dirty_map t.qcow2 off)" "" "disabled bitmap"
same_info t.qcow2 "after tracked writes"
# qemu-io sees the bitmaps consistent and keeps tracking on top.
qemu-io -c 'write 50M 64k' t.qcow2 >/dev/null
assert_eq "$(dirty_map t.qcow2 on | tail -n1)" "52428800 65536" "qemu tracks after vstor"

# 5. Operations that rewrite the image keep the bitmaps valid (resize, as
# qemu-img 7.2 allows, and compact, which moves clusters).
qemu_img create -q -f qcow2 c.qcow2 64M
qemu_img bitmap --add c.qcow2 b1
qemu_img bitmap --add c.qcow2 b2 --disable
qemu-io -c 'write 1M 64k' -c 'write 5M 64k' -c 'discard 1M 64k' c.qcow2 >/dev/null
vstor_img compact c.qcow2 >/dev/null
clean c.qcow2 "after compact"
assert_eq "$(dirty_map c.qcow2 b1 | tr '\n' ' ')" "1048576 65536 5242880 65536 " "after compact"
vstor_img resize c.qcow2 +64M >/dev/null
clean c.qcow2 "after resize"
vstor_io -f qcow2 -c 'writeb 100M 4k 1' c.qcow2
assert_eq "$(dirty_map c.qcow2 b1 | tr '\n' ' ')" "1048576 65536 5242880 65536 104857600 65536 " \
	"after resize"
same_info c.qcow2 "after compact and resize"

# 6. measure counts the bitmaps as qemu-img does.
for o in "" "-o cluster_size=4k" "-o compat=0.10"; do
	# shellcheck disable=SC2086
	assert_eq "$(vstor_img measure -O qcow2 $o q.qcow2)" "$(qemu_img measure -O qcow2 $o q.qcow2)" \
		"measure $o"
done

# 7. convert --bitmaps copies them (disabled ones stay disabled); broken
# ones stop it, or are skipped with --skip-broken-bitmaps.
vstor_img convert --bitmaps -O qcow2 q.qcow2 conv.qcow2
clean conv.qcow2 "convert --bitmaps"
info_json qemu_img info --output=json conv.qcow2 >conv.json
diff -u q-by-qemu.json conv.json >&2 || fail "convert --bitmaps: bitmaps differ"
assert_eq "$(dirty_map conv.qcow2 b3)" "$(dirty_map q.qcow2 b3)" "converted bitmap"
cp q.qcow2 broken.qcow2
python3 "$VS_LIB_DIR/qcow2_bitmap_damage.py" broken.qcow2 in-use
assert_rc 1 vstor_img convert --bitmaps -O qcow2 broken.qcow2 conv2.qcow2
assert_grep "^vstor-img: Cannot copy inconsistent bitmap 'b1'$" err
vstor_img convert --bitmaps --skip-broken-bitmaps -O qcow2 broken.qcow2 conv3.qcow2 2>err
assert_grep "^vstor-img: warning: Skipping inconsistent bitmap 'b1'$" err
assert_eq "$(qemu_img info --output=json conv3.qcow2 | grep -c '"name"')" 2 "skipped bitmap"
assert_rc 1 vstor_img convert --bitmaps -O raw q.qcow2 conv.raw
assert_grep "^vstor-img: Format driver 'raw' does not support bitmaps$" err

# 8. A writer killed while it holds the image: bitmaps in_use, image clean.
mkfifo ctl
"$VSTOR_IO" -f qcow2 t.qcow2 <ctl >io.out 2>io.err &
io_pid=$!
register_pid "$io_pid"
exec 3>ctl
printf 'writeb 60M 64k 7\nflush\necho ready\nwait\n' >&3
wait_for 30 grep -q ready io.out
qemu_img info -U --output=json t.qcow2 >running.json
assert_eq "$(grep -c in-use running.json)" 3 "bitmaps in_use while open"
kill -KILL "$io_pid"
wait "$io_pid" 2>/dev/null || true
exec 3>&-
clean t.qcow2 "after SIGKILL"
qemu_img info --output=json t.qcow2 >killed.json
assert_eq "$(grep -c in-use killed.json)" 3 "bitmaps in_use after SIGKILL"
same_info t.qcow2 "after SIGKILL"
# Opened again for writing: they stay in_use (never used as valid), the image clean.
vstor_io -f qcow2 -c 'writeb 0 4k 1' t.qcow2
clean t.qcow2 "reopened after SIGKILL"
assert_eq "$(qemu_img info --output=json t.qcow2 | grep -c in-use)" 3 "still in_use"
assert_rc 1 vstor_img bitmap --clear t.qcow2 on
assert_grep "inconsistent" err
vstor_img bitmap --remove t.qcow2 on
clean t.qcow2 "inconsistent bitmap removed"
echo "bitmaps: ok"
