#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The logical pool (liblvm2cmd) and the lvmap driver (LVs mapped onto their
# PV in user space, no device-mapper) against LVM on a loop device, with a
# private lvm.conf that accepts only that device and turns activation off.
# Build, create, resize, delete; the bytes written through vstor are found
# on the PV at the offsets lvs/pvs give (pe_start + PE x extent size),
# including an LV whose segments are split; a qcow2 volume passes qemu-img
# check; the VG lock is held while a volume is open; non-linear LVs are
# refused.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
((EUID == 0)) || skip_or_fail "needs root for a loop device"
require_tool losetup lvm qemu-img python3
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
require_vstor_img
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
"$VSTOR" pool-define-as probe logical --source-name x >/dev/null 2>&1 ||
	skip_or_fail "vstor was built without the logical backend (liblvm2-dev)"
"$VSTOR" pool-undefine probe >/dev/null 2>&1 || true

# --- a loop device (8 exist, tests run in parallel) and a private LVM config ---
truncate -s 256M pv.img
LOOP=$(losetup --find --show "$WORKDIR/pv.img" 2>losetup.err) ||
	fail "no free loop device (all in use?): $(cat losetup.err)"
at_exit "losetup -d $LOOP"
mkdir -p lvm/lock lvm/backup lvm/archive
cat >lvm/lvm.conf <<EOF
devices {
	filter = [ "a|^$LOOP\$|", "r|.*|" ]
	global_filter = [ "a|^$LOOP\$|", "r|.*|" ]
	use_devicesfile = 0
	obtain_device_list_from_udev = 0
	hints = "none"
}
global { activation = 0 locking_dir = "$WORKDIR/lvm/lock" use_lvmlockd = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
backup { backup = 0 backup_dir = "$WORKDIR/lvm/backup" archive = 0 archive_dir = "$WORKDIR/lvm/archive" }
EOF
export LVM_SYSTEM_DIR=$WORKDIR/lvm LVM_SUPPRESS_FD_WARNINGS=1
VG=vstortest$$
lvmq() { timeout 60 lvm "$@" 2>/dev/null; }
lvmq_quiet() { lvmq "$@" >/dev/null; }

# --- pool lifecycle ---
assert_rc 0 vstor pool-define-as lp logical --source-name "$VG" --source-dev "$LOOP" \
	--extra "lvm_system_dir=$WORKDIR/lvm"
assert_fails vstor pool-start lp
assert_grep "not found" err "pool-start before pool-build"
assert_rc 0 vstor pool-build lp
lvmq vgs "$VG" >/dev/null || fail "pool-build did not create the VG"
# find-storage-pool-sources: the VG pool-build made, with its PV, as libvirt lists it.
assert_rc 0 vstor find-storage-pool-sources-as logical
python3 - out "$VG" "$LOOP" <<'PY' || fail "find-storage-pool-sources-as logical"
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
found = {s.find("name").text: ([d.get("path") for d in s.findall("device")],
                                s.find("format").get("type")) for s in r.findall("source")}
assert found.get(sys.argv[2]) == ([sys.argv[3]], "lvm2"), found
PY
assert_rc 0 vstor pool-start lp
assert_rc 0 vstor pool-info lp --output=json
python3 - out <<'PY' || fail "pool-info of the logical pool"
import json, sys
d = json.load(open(sys.argv[1]))
assert 200 << 20 < d["capacity"] <= 256 << 20 and d["available"] == d["capacity"], d
PY

# --- LV a, LV b, then a extended: a's segments are split around b ---
assert_rc 0 vstor vol-create-as lp a 8M --format raw
assert_rc 0 vstor vol-create-as lp b 8M --format raw
assert_rc 0 vstor vol-resize a 16M --pool lp
assert_rc 0 vstor vol-list lp --details --output=json
python3 - out <<'PY' || fail "vol-list of the logical pool"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert vols["a"]["capacity"] == 16 << 20 and vols["b"]["capacity"] == 8 << 20, vols
assert vols["a"]["format"] == "raw", vols
PY
[[ $(lvmq lvs --noheadings -o seg_pe_ranges "$VG/a" | wc -l) == 2 ]] ||
	fail "LV a is not split into two segments"
# New LVs are built under a hidden name and renamed (lvrename) when whole.
lvmq lvs --noheadings -o lv_name "$VG" | grep -q vstor-tmp && fail "a temporary LV is left"

# Where LVM says a's bytes are: pe_start + first PE x extent size, per segment.
offsets()
{
	local pe_start ext
	pe_start=$(lvmq pvs --noheadings --units b --nosuffix -o pe_start "$LOOP" | tr -d ' ')
	ext=$(lvmq vgs --noheadings --units b --nosuffix -o vg_extent_size "$VG" | tr -d ' ')
	lvmq lvs --noheadings -o seg_start_pe,seg_size_pe,seg_pe_ranges --sort seg_start_pe "$1" |
		awk -v s="$pe_start" -v e="$ext" '{ split($3, r, ":"); split(r[2], p, "-");
			printf "%d %d %d\n", $1 * e, s + p[1] * e, $2 * e }'
}
offsets "$VG/a" >a.map
head -c 16M /dev/urandom >a.bin
assert_rc 0 vstor vol-upload a a.bin --pool lp
# Every segment's bytes at its PV offset, read from the loop device.
python3 - "$LOOP" a.map a.bin <<'PY' || fail "data of LV a is not at the PV offsets lvs gives"
import sys
dev, lvmap, src = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()
with open(dev, "rb") as f:
    for line in open(lvmap):
        lv_off, pv_off, length = map(int, line.split())
        f.seek(pv_off)
        assert f.read(length) == src[lv_off:lv_off + length], (lv_off, pv_off)
PY
# A write across the segment boundary (8 MiB), read back through vstor.
head -c 2M /dev/urandom >x.bin
assert_rc 0 vstor vol-upload a x.bin --pool lp --offset 7M
assert_rc 0 vstor vol-download a x.out --pool lp --offset 7M --length 2M
cmp x.bin x.out || fail "a write across the segment boundary"
python3 - "$LOOP" a.map x.bin <<'PY' || fail "boundary write not at the PV offsets"
import sys
dev, lvmap, src = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()
segs = [tuple(map(int, l.split())) for l in open(lvmap)]
with open(dev, "rb") as f:
    for i in range(len(src)):
        if i % 4096:
            continue
        off = (7 << 20) + i
        lv_off, pv_off, length = next(s for s in segs if s[0] <= off < s[0] + s[2])
        f.seek(pv_off + off - lv_off)
        assert f.read(4096) == src[i:i + 4096], off
PY

# --- a qcow2 volume on an LV ---
assert_rc 0 vstor vol-create-as lp c 32M --format qcow2
qemu_img create -q -f raw pat.raw 32M
qemu-io -f raw -c 'write -P 0x5c 1M 3M' pat.raw >/dev/null
vstor_img convert -n -f raw -O qcow2 pat.raw vol:lp/c || fail "convert into a qcow2 LV"
assert_rc 0 vstor vol-download c c.img --pool lp
qemu_img check -f qcow2 c.img >/dev/null || fail "qemu-img check of the qcow2 LV's bytes"
qemu_img compare -f raw -F qcow2 pat.raw c.img >/dev/null || fail "qcow2 LV content"
assert_rc 0 vstor vol-info c --pool lp
assert_grep 'Capacity: +32' out

# --- an encrypted volume: raw LUKS on the LV (libvirt: qemu-img create -f luks) ---
printf 'lvm-Luks-pass-3e1' >key
chmod 600 key
printf '<secret><description>lvm luks</description></secret>\n' >sec.xml
assert_rc 0 vstor secret-define sec.xml
U=$(sed -n 's/^Secret \([0-9a-f-]*\) created$/\1/p' out)
assert_rc 0 vstor secret-set-value "$U" --file key --plain
assert_fails vstor vol-create-as lp eq 8M --format qcow2 --encryption-secret "$U"
assert_grep "raw LUKS" err "an encrypted qcow2 LV"
assert_rc 0 vstor vol-create-as lp e 8M --format raw --encryption-secret "$U" \
	--encryption-iter-time 10
assert_rc 0 vstor vol-info e --pool lp
assert_grep "^Encryption: +luks" out "vol-info of the encrypted LV"
# The payload holds at least the capacity asked for (the LV adds the header).
cap=$(vstor vol-info e --pool lp --bytes | awk '/^Capacity:/ { print $2 }')
((cap >= 8 << 20 && cap < 12 << 20)) || fail "encrypted LV capacity $cap"
printf 'LVM-PLAINTEXT-%.0s' $(seq 256) >lmark
vstor_img convert -n -f raw -O luks lmark vol:lp/e || fail "write through vol: with the pool secret"
assert_rc 0 vstor vol-download e e.img --pool lp
grep -q LVM-PLAINTEXT e.img && fail "the LV holds plaintext"
assert_rc 0 cryptsetup luksDump e.img
assert_grep "^Version:[[:space:]]+1" out "luksDump of the LV's bytes"
assert_rc 0 cryptsetup open --test-passphrase --key-file key e.img
assert_rc 0 timeout 60 qemu-io --object secret,id=s,file=key \
	--image-opts "driver=luks,key-secret=s,file.filename=$WORKDIR/e.img" \
	-c "read -P 0x4c 0 1" -c "read -P 0x2d 13 1"
vstor_img convert -O raw vol:lp/e e.out || fail "read through vol: with the pool secret"
cmp -n "$(stat -c %s lmark)" lmark e.out || fail "the encrypted LV reads back other bytes"
assert_rc 0 vstor vol-resize e 16M --pool lp
cap=$(vstor vol-info e --pool lp --bytes | awk '/^Capacity:/ { print $2 }')
((cap >= 16 << 20)) || fail "encrypted LV capacity after resize: $cap"
assert_rc 0 vstor vol-delete e --pool lp

# --- the VG lock is held (shared) while a volume is open ---
SOCK=$WORKDIR/nbd.sock
start_daemon "$WORKDIR/nbd.pid" 20 "$VSTOR_NBD" -t -k "$SOCK" --pid-file "$WORKDIR/nbd.pid" \
	vol:lp/b
if lvmq_quiet lvextend --config 'global { wait_for_locks = 0 }' -L +4M "$VG/b"; then
	fail "lvextend ran while the volume was open (VG lock not held)"
fi
# ... and a second writer of the same LV is refused, as for an image file.
assert_fails "$VSTOR_IMG" convert -n -f raw -O raw pat.raw vol:lp/b
assert_grep "using the volume|lock" "$WORKDIR/err" "a second writer of a mapped LV"
stop_pid "$DAEMON_PID"
lvmq_quiet lvextend --config 'global { wait_for_locks = 0 }' -L +4M "$VG/b" ||
	fail "lvextend after the volume was closed"

# --- non-linear LVs are refused by the user-space mapping ---
if lvmq_quiet lvcreate --type zero -L 4M -n z "$VG"; then
	assert_fails vstor vol-download z z.out --pool lp
	assert_grep "not linear" err "a non-linear LV"
fi

# --- delete, names, pool delete ---
assert_fails vstor vol-create-as lp 'bad name' 4M
assert_rc 0 vstor vol-delete b --pool lp
lvmq lvs "$VG/b" >/dev/null && fail "vol-delete left LV b"
assert_rc 0 vstor pool-destroy lp
assert_rc 0 vstor pool-delete lp
lvmq vgs "$VG" >/dev/null && fail "pool-delete left the VG"
assert_rc 0 vstor pool-undefine lp
log "ok"
