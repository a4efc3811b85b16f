#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The vstor CLI on a dir pool, end to end, with qemu-img/qemu-io/qemu-nbd
# and nbdinfo as the oracles: pool lifecycle, pool-define from JSON and from
# libvirt XML, volumes of both formats, clone with a backing volume,
# upload/download (sparse, offset, length), wipe, resize, refusal of bad
# names and of delete/wipe/shrink while the volume is in use (vstor-nbd,
# qemu-nbd, qemu-io), --output=json, state surviving a new process, and
# concurrent vstor invocations.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io qemu-nbd nbdinfo python3 cmp
require_vstor_img
find_built VSTOR cli/vstor
find_built VSTOR_NBD nbd-server/vstor-nbd
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 120 "$VSTOR" "$@"; }
has_locks() { [[ -n $(inode_locks "$1") ]]; }
no_locks() { [[ -z $(inode_locks "$1") ]]; }
json_ok() { python3 -c 'import json,sys; json.load(sys.stdin)'; }

pooldir=$WORKDIR/images

# --- help, as virsh's: a command, a group keyword, neither ---
assert_rc 0 vstor help vol-create-as
assert_grep 'vol-create-as - create a volume' out
for kw in pool volume block; do
	assert_rc 0 vstor help "$kw"
	assert_grep "\(help keyword '$kw'\):" out
	[[ $(grep -c "help keyword" out) == 1 ]] || fail "help $kw lists other groups"
done
assert_rc 0 vstor help volume
assert_grep '^    vol-wipe ' out
assert_fails vstor help nosuch
assert_grep "command or command group 'nosuch' doesn't exist" err

# --- pool-capabilities: libvirt's XML; what it offers is what works ---
assert_rc 0 vstor pool-capabilities
mv out caps.xml
assert_fails vstor pool-define-as t0 nosuchtype --target /x
known=$(sed -nE 's/.*\(known: (.*)\).*/\1/p' err | tr -d ,)
[[ -n $known ]] || fail "no list of known pool types"
python3 - caps.xml $known <<'PY' >dirfmts || fail "pool-capabilities"
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
assert r.tag == "storagepoolCapabilities", r.tag
pools = {p.get("type"): p for p in r.findall("pool")}
supported = sorted(t for t, p in pools.items() if p.get("supported") == "yes")
assert supported == sorted(sys.argv[2:]), (supported, sys.argv[2:])
for t in ("fs", "disk", "scsi", "mpath"):
    assert pools[t].get("supported") == "no", t
d = pools["dir"].find("volOptions")
assert d.find("defaultFormat").get("type") == "raw", ET.tostring(d)
print(" ".join(v.text for v in d.findall("enum[@name='targetFormatType']/value")))
PY
mkdir -p "$WORKDIR/capspool"
assert_rc 0 vstor pool-define-as caps dir --target "$WORKDIR/capspool"
assert_rc 0 vstor pool-start caps --build
for f in $(cat dirfmts); do
	assert_rc 0 vstor vol-create-as caps "v.$f" 1M --format "$f"
	assert_rc 0 vstor vol-dump "v.$f" --pool caps
	python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["format"] == sys.argv[2]' out "$f" ||
		fail "pool-capabilities offers format $f, but the volume is not $f"
	assert_rc 0 vstor vol-delete "v.$f" --pool caps
done
assert_rc 0 vstor pool-destroy caps
assert_rc 0 vstor pool-undefine caps

# --- pool lifecycle ---
assert_rc 0 vstor pool-define-as p1 dir --target "$pooldir"
assert_grep '^Pool p1 defined' out
assert_fails vstor pool-define-as p1 dir --target "$pooldir"
assert_grep 'already exists' err
assert_fails vstor pool-define-as p2 nosuchtype --target "$pooldir"
assert_grep "unknown storage pool type" err
assert_fails vstor pool-define-as p2 dir
assert_grep 'target' err
assert_rc 0 vstor pool-list
assert_eq "$(grep -c p1 out || true)" 0 "an inactive pool in pool-list without --all"
assert_rc 0 vstor pool-list --all
assert_grep 'p1 +inactive +no' out
assert_fails vstor pool-start p1
assert_grep "cannot open directory" err
assert_rc 0 vstor pool-build p1
[[ -d $pooldir ]] || fail "pool-build did not create the directory"
assert_rc 0 vstor pool-start p1
assert_grep '^Pool p1 started' out
assert_fails vstor pool-start p1
assert_grep 'already active' err
assert_rc 0 vstor pool-autostart p1
assert_grep 'marked as autostarted' out
assert_rc 0 vstor pool-info p1
assert_grep '^State: +running' out
assert_grep '^Autostart: +yes' out
assert_grep '^Capacity: +[0-9.]+ [KMGT]iB' out
assert_rc 0 vstor pool-info p1 --output=json
json_ok <out || fail "pool-info --output=json is not JSON"
python3 - out <<'PY' || fail "pool-info JSON fields"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["name"] == "p1" and d["state"] == "active" and d["autostart"] is True, d
assert d["capacity"] > 0 and d["available"] <= d["capacity"], d
PY
assert_rc 0 vstor pool-list --all --details
assert_grep 'p1 +running +yes +yes' out
assert_rc 0 vstor pool-list --output=json
python3 -c 'import json,sys; l = json.load(open(sys.argv[1])); assert [p["name"] for p in l] == ["p1"], l' out ||
	fail "pool-list JSON"
assert_rc 0 vstor pool-dump p1
python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert d["version"] == 1 and d["target"] == sys.argv[2], d' \
	out "$pooldir" || fail "pool-dump JSON"
assert_rc 0 vstor pool-refresh p1
assert_grep '^Pool p1 refreshed' out

# --- pool-define from JSON and from libvirt XML ---
cat >p2.json <<EOF
{ "version": 1, "name": "p2", "type": "dir", "target": "$WORKDIR/images2", "autostart": true }
EOF
assert_rc 0 vstor pool-define p2.json
assert_grep '^Pool p2 defined from p2.json' out
cat >p3.xml <<EOF
<?xml version="1.0"?>
<!-- as virsh pool-dumpxml writes it -->
<pool type='dir'>
  <name>p3</name>
  <uuid>0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0</uuid>
  <capacity unit='bytes'>0</capacity>
  <source>
  </source>
  <target>
    <path>$WORKDIR/images&amp;3</path>
    <permissions><mode>0711</mode></permissions>
  </target>
</pool>
EOF
assert_rc 0 vstor pool-define p3.xml
assert_rc 0 vstor pool-dump p3
python3 - out "$WORKDIR/images&3" <<'PY' || fail "pool-define from libvirt XML"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["name"] == "p3" and d["type"] == "dir" and d["target"] == sys.argv[2], d
assert d["uuid"] == "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", d
PY
# pool-dumpxml writes what pool-define reads (as with virsh).
assert_rc 0 vstor pool-define-as x1 dir --source-host "h'<1>" --source-dev /dev/a --source-dev /dev/b \
	--auth-type chap --auth-username u --auth-secret-file /etc/s --target "$WORKDIR/x&1"
assert_rc 0 vstor pool-dump x1
mv out x1.json
assert_rc 0 vstor pool-dumpxml x1
mv out x1.xml
assert_grep "<device path='/dev/b'/>" x1.xml
assert_rc 0 vstor pool-undefine x1
assert_rc 0 vstor pool-define x1.xml
assert_rc 0 vstor pool-dump x1
mv out x1-again.json
assert_rc 0 cmp x1-again.json x1.json
assert_rc 0 vstor pool-undefine x1
# Redefinition, as libvirt's: pool-define over a pool of the same name
# and uuid replaces an inactive pool's definition at once and an active
# one's at its stop (pool-dumpxml shows the running one, --inactive the
# next); another uuid, or none (libvirt makes one up), is refused with
# libvirt's message. pool-edit runs $VISUAL/$EDITOR on the XML: unchanged,
# edited, or a failing editor, with virsh's words (test:///default is the
# oracle for them).
mkdir -p "$WORKDIR/r1" "$WORKDIR/r2" "$WORKDIR/r3"
assert_rc 0 vstor pool-define-as r dir --target "$WORKDIR/r1"
assert_rc 0 vstor pool-autostart r
assert_rc 0 vstor pool-uuid r
ruuid=$(cat out)
assert_rc 0 vstor pool-dumpxml r
sed "s|$WORKDIR/r1|$WORKDIR/r2|" out >r2.xml
assert_rc 0 vstor pool-define r2.xml
assert_grep "^Pool r defined from r2.xml" out
assert_rc 0 vstor pool-dumpxml r
assert_grep "<path>$WORKDIR/r2</path>" out
assert_rc 0 vstor pool-info r
assert_grep '^Autostart: +yes' out
assert_fails vstor pool-define-as r dir --target "$WORKDIR/r3"
assert_grep "^error: operation failed: pool 'r' already exists with uuid $ruuid" err
sed "s|<uuid>.*</uuid>|<uuid>11111111-2222-3333-4444-555555555555</uuid>|" r2.xml >r-other.xml
assert_fails vstor pool-define r-other.xml
assert_grep "already exists with uuid $ruuid" err
EDITOR=true assert_rc 0 vstor pool-edit r
assert_grep "^Pool r XML configuration not changed.$" out
EDITOR="sed -i s,$WORKDIR/r2,$WORKDIR/r3," VISUAL= assert_rc 0 vstor pool-edit r
assert_grep "^Pool r XML configuration edited.$" out
assert_rc 0 vstor pool-dumpxml r
assert_grep "<path>$WORKDIR/r3</path>" out
EDITOR=false assert_fails vstor pool-edit r
assert_grep "unexpected exit status 1" err
EDITOR="sed -i 1d" assert_fails vstor pool-edit r
assert_grep "Failed to define pool" err
# Active: the running definition stays until pool-destroy.
assert_rc 0 vstor pool-start r
EDITOR="sed -i s,$WORKDIR/r3,$WORKDIR/r1," assert_rc 0 vstor pool-edit r
assert_rc 0 vstor pool-dumpxml r
assert_grep "<path>$WORKDIR/r3</path>" out
assert_rc 0 vstor pool-dumpxml r --inactive
assert_grep "<path>$WORKDIR/r1</path>" out
assert_rc 0 vstor pool-destroy r
assert_rc 0 vstor pool-dumpxml r
assert_grep "<path>$WORKDIR/r1</path>" out
assert_rc 0 vstor pool-uuid r
assert_eq "$(cat out)" "$ruuid" "the uuid after a redefinition"
assert_rc 0 vstor pool-undefine r
[[ -z $(ls "$VSTOR_STATE_DIR/next" 2>/dev/null) ]] || fail "a next definition outlived its pool"
if command -v virsh >/dev/null; then
	virsh -c test:///default pool-dumpxml default-pool >vr.xml
	EDITOR=true virsh -c test:///default pool-edit default-pool >virsh.out 2>&1 ||
		fail "virsh pool-edit with an editor that changes nothing failed"
	assert_grep "^Pool default-pool XML configuration not changed.$" virsh.out
	EDITOR="sed -i s,/default-pool,/x-pool," virsh -c test:///default pool-edit default-pool \
		>virsh.out 2>&1 || fail "virsh pool-edit failed"
	assert_grep "^Pool default-pool XML configuration edited.$" virsh.out
	grep -v '<uuid>' vr.xml >vr-nouuid.xml
	virsh -c test:///default pool-define vr-nouuid.xml >virsh.out 2>&1 &&
		fail "virsh redefined a pool from XML without its uuid"
	assert_grep "^error: operation failed: pool 'default-pool' already exists with uuid" virsh.out
fi
# Transient pools (virsh pool-create FILE, pool-create-as): defined and
# started at once, gone at pool-destroy; a failed start leaves nothing.
printf '<pool type="dir"><name>t1</name><target><path>%s</path></target></pool>' \
	"$WORKDIR/t1" >t1.xml
assert_rc 0 vstor pool-create t1.xml --build
assert_grep '^Pool t1 created from t1.xml' out
assert_rc 0 vstor pool-info t1
assert_grep '^State: *running' out
assert_grep '^Persistent: *no' out
[[ -d $WORKDIR/t1 ]] || fail "pool-create --build made no directory"
assert_rc 0 vstor pool-destroy t1
assert_fails vstor pool-info t1
assert_rc 0 vstor pool-create-as t2 dir --target "$WORKDIR/t2" --build
assert_grep '^Pool t2 created' out
assert_rc 0 vstor pool-destroy t2
assert_fails vstor pool-info t2
printf '<pool type="dir"><name>t3</name><target><path>%s</path></target></pool>' \
	"$WORKDIR/no/such/dir" >t3.xml
assert_fails vstor pool-create t3.xml
assert_grep 'Failed to start pool t3' err
assert_fails vstor pool-info t3
printf '<pool type="dir"><name>t4' >t4.xml
assert_fails vstor pool-create t4.xml
assert_grep 'Failed to create pool from t4.xml' err
# UUIDs as libvirt takes them: any dashes, either case, stored canonical;
# anything else refused.
printf '<pool type="dir"><name>u1</name><uuid>0B1C2D3E4F5061728394A5B6C7D8E9F1</uuid><target><path>%s</path></target></pool>' \
	"$WORKDIR/u1" >u1.xml
assert_rc 0 vstor pool-define u1.xml
assert_rc 0 vstor pool-uuid u1
assert_eq "$(head -n1 out)" "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1" "a UUID without dashes, upper case"
assert_rc 0 vstor pool-name 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1
assert_eq "$(head -n1 out)" "u1" "pool-name of the canonical UUID"
assert_rc 0 vstor pool-undefine u1
for bad in 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9fz not-a-uuid; do
	printf '<pool type="dir"><name>u2</name><uuid>%s</uuid><target><path>/x</path></target></pool>' \
		"$bad" >u2.xml
	assert_fails vstor pool-define u2.xml
	assert_grep 'malformed uuid' err
done
# A generated UUID is a random (version 4) one.
assert_rc 0 vstor pool-uuid p1
[[ $(head -n1 out) =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
	fail "generated UUID $(head -n1 out) is not a random UUID"
printf '<pool type="dir"><name>bad</name><target><path>/x</path></target>' >bad.xml
assert_fails vstor pool-define bad.xml
assert_grep 'invalid XML' err
printf '{"version": 1, "name": "bad", "type": "dir", "target": "/x", "typo": 1}' >bad.json
assert_fails vstor pool-define bad.json
assert_grep 'unknown member "typo"' err
printf '{"version": 2, "name": "bad", "type": "dir", "target": "/x"}' >bad2.json
assert_fails vstor pool-define bad2.json
assert_grep 'version 2 is not supported' err
# Netfs, logical and iscsi definitions as virsh takes them (the types may not
# be in this build yet; the definition syntax is what is checked here).
assert_rc 0 vstor pool-define-as nfs1 dir --source-host nfs.example.com:2049 --source-path /export \
	--target "$WORKDIR/x" --print-xml
# --print-xml prints libvirt's pool XML, as virsh does.
cat >px.py <<'PY'
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r.find("source")
def attr(path, a):
    e = r.find(path)
    return e.get(a) if e is not None else None
def text(path):
    e = r.find(path)
    return e.text if e is not None else None
checks = {
    "nfs1": lambda: attr("source/host", "name") == "nfs.example.com"
        and attr("source/host", "port") == "2049" and attr("source/dir", "path") == "/export",
    "i1": lambda: attr("source/auth", "type") == "chap" and attr("source/auth", "username") == "u"
        and attr("source/auth/secret", "file") == "/etc/secret"
        and [d.get("path") for d in s.findall("device")] == ["iqn.2026-01.test:t1"],
    "lv1": lambda: attr("source/host", "name") == "h1" and attr("source/dir", "path") == "/p1"
        and [d.get("path") for d in s.findall("device")] == ["/dev/loop7"]
        and text("source/name") == "vg0" and text("target/path").endswith("/z"),
}
name = text("name")
assert r.tag == "pool" and r.get("type") == "dir" and r.find("uuid") is None, ET.tostring(r)
assert checks[name](), ET.tostring(r)
PY
python3 px.py out || fail "--print-xml: --source-host host:port"
assert_rc 0 vstor pool-define-as i1 dir --source-host 127.0.0.1 --source-dev iqn.2026-01.test:t1 \
	--auth-type chap --auth-username u --auth-secret-file /etc/secret --target "$WORKDIR/y" --print-xml
python3 px.py out || fail "--print-xml: --auth-* options"
# Positional form: name type source-host source-path source-dev source-name target.
assert_rc 0 vstor pool-define-as lv1 dir h1 /p1 /dev/loop7 vg0 "$WORKDIR/z" --print-xml
python3 px.py out || fail "--print-xml: positional pool-define-as"
# What --print-xml prints, pool-define reads: the same definition as
# pool-define-as makes directly (but for the generated uuid).
mv out lv1.xml
assert_rc 0 vstor pool-define lv1.xml
assert_rc 0 vstor pool-dump lv1
grep -v '"uuid"' out >lv1-from-xml.json
assert_rc 0 vstor pool-undefine lv1
assert_rc 0 vstor pool-define-as lv1 dir h1 /p1 /dev/loop7 vg0 "$WORKDIR/z"
assert_rc 0 vstor pool-dump lv1
grep -v '"uuid"' out >lv1-direct.json
assert_rc 0 cmp lv1-from-xml.json lv1-direct.json
assert_rc 0 vstor pool-undefine lv1
assert_fails vstor pool-define-as 'a/b' dir --target "$WORKDIR/q"
assert_grep "must not contain '/'" err

# --- volumes ---
assert_rc 0 vstor vol-create-as p1 disk.qcow2 64M --format qcow2
assert_grep '^Vol disk.qcow2 created' out
assert_rc 0 vstor vol-create-as p1 raw.img 8MiB --allocation 1M
assert_rc 0 vstor vol-create-as --pool p1 --name meta.qcow2 --capacity 32M --format qcow2 --prealloc-metadata
assert_fails vstor vol-create-as p1 disk.qcow2 1M
assert_grep 'already exists' err
for bad in '../evil' 'a/b' '..' '.' $'tab\there' '-dash'; do
	assert_fails vstor vol-create-as p1 "$bad" 1M
	assert_grep 'name' err "error for volume name '$bad'"
done
[[ ! -e $WORKDIR/evil ]] || fail "a volume escaped its pool"
assert_fails vstor vol-create-as p1 x.img 1Q
assert_grep 'Malformed size' err
assert_rc 0 qemu_img check "$pooldir/disk.qcow2"
assert_rc 0 qemu_img check "$pooldir/meta.qcow2"
assert_eq "$(qemu-img info --output=json "$pooldir/disk.qcow2" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["format"], d["virtual-size"])')" \
	"qcow2 67108864" "qcow2 volume as qemu-img sees it"
assert_eq "$(stat -c %s "$pooldir/raw.img")" 8388608 "raw volume size"
alloc=$(($(stat -c %b "$pooldir/raw.img") * 512))
((alloc >= 1048576 && alloc < 8388608)) || fail "raw volume with --allocation 1M has $alloc bytes allocated"
assert_rc 0 vstor vol-list p1 --details
assert_grep 'disk.qcow2 +[^ ]+/disk.qcow2 +file +64.00 MiB' out
assert_rc 0 vstor vol-list p1 --output=json
python3 - out "$pooldir" <<'PY' || fail "vol-list JSON"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert set(vols) == {"disk.qcow2", "raw.img", "meta.qcow2"}, vols
d = vols["disk.qcow2"]
assert d["path"] == sys.argv[2] + "/disk.qcow2" and d["format"] == "qcow2", d
assert d["capacity"] == 64 << 20 and 0 < d["allocation"] < 1 << 20, d
r = vols["raw.img"]
assert r["format"] == "raw" and r["capacity"] == 8 << 20, r
PY
assert_rc 0 vstor vol-info disk.qcow2 --pool p1
assert_grep '^Capacity: +64.00 MiB' out
assert_rc 0 vstor vol-info "$pooldir/raw.img"
assert_grep '^Name: +raw.img' out
assert_rc 0 vstor vol-path --pool p1 raw.img
assert_eq "$(cat out)" "$pooldir/raw.img" "vol-path"
assert_rc 0 vstor vol-pool "$pooldir/raw.img"
assert_eq "$(cat out)" "p1" "vol-pool"
assert_rc 0 vstor vol-key raw.img --pool p1
assert_eq "$(cat out)" "$pooldir/raw.img" "vol-key"
assert_rc 0 vstor vol-name "$pooldir/raw.img"
assert_eq "$(cat out)" "raw.img" "vol-name"
assert_rc 0 vstor pool-uuid p1
uuid=$(head -n1 out)
assert_rc 0 vstor pool-name "$uuid"
assert_eq "$(head -n1 out)" "p1" "pool-name of pool-uuid"
assert_rc 0 vstor vol-dump --pool p1 disk.qcow2
json_ok <out || fail "vol-dump is not JSON"
assert_fails vstor vol-info nosuch --pool p1
assert_grep 'Storage volume not found' err
assert_fails vstor vol-info nosuch --pool p1 --output=json
python3 -c 'import json,sys; e = json.load(open(sys.argv[1]))["error"]; assert e["errno"] == "ENOENT", e' err ||
	fail "JSON error object"

# A hostile qcow2 header in the pool directory (backing name offset near 2^64,
# an extension longer than the header) is listed, not trusted.
python3 - "$pooldir/hostile.qcow2" <<'PY'
import struct, sys
h = bytearray(512)
h[0:8] = b"QFI\xfb" + struct.pack(">I", 3)
h[8:20] = struct.pack(">QI", 0xffffffffffffff00, 0x200)
h[24:32] = struct.pack(">Q", 1 << 30)
h[100:104] = struct.pack(">I", 104)
h[104:112] = struct.pack(">II", 0xe2792aca, 0xffffffff)
open(sys.argv[1], "wb").write(h)
PY
assert_rc 0 vstor vol-list p1 --details
assert_grep 'hostile.qcow2 .* 1.00 GiB' out
assert_rc 0 vstor vol-delete hostile.qcow2 --pool p1

# --- clone with a backing volume ---
assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 30M 1M' "$pooldir/disk.qcow2"
assert_rc 0 vstor vol-create-as p1 top.qcow2 64M --format qcow2 --backing-vol disk.qcow2 --backing-vol-format qcow2
assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'write -P 0x11 512k 1M' -c 'write -z 30M 64k' "$pooldir/top.qcow2"
assert_eq "$(qemu-img info --output=json "$pooldir/top.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" \
	"$pooldir/disk.qcow2" "backing file of the new volume"
assert_rc 0 vstor vol-clone top.qcow2 clone.qcow2 --pool p1
assert_grep '^Vol clone.qcow2 cloned from top.qcow2' out
assert_rc 0 qemu_img check "$pooldir/clone.qcow2"
assert_rc 0 qemu_img compare "$pooldir/top.qcow2" "$pooldir/clone.qcow2"
assert_eq "$(qemu-img info --output=json "$pooldir/clone.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" \
	"$pooldir/disk.qcow2" "the clone keeps the backing volume"
assert_rc 0 vstor vol-clone raw.img raw-clone.img --pool p1
assert_rc 0 cmp "$pooldir/raw.img" "$pooldir/raw-clone.img"
# vol-create-from with a libvirt volume XML: a flat raw copy.
cat >vol.xml <<'EOF'
<volume><name>flat.img</name><capacity unit='M'>64</capacity><target><format type='raw'/></target></volume>
EOF
assert_rc 0 vstor vol-create-from p1 vol.xml top.qcow2 --inputpool p1
assert_grep 'created from input vol top.qcow2' out
assert_rc 0 qemu_img compare -f qcow2 -F raw "$pooldir/top.qcow2" "$pooldir/flat.img"
# vol-dumpxml writes what vol-create reads.
assert_rc 0 vstor vol-dumpxml top.qcow2 --pool p1
assert_grep "<backingStore>" out
sed 's|<name>top.qcow2</name>|<name>fromxml.qcow2</name>|' out >fromxml.xml
assert_rc 0 vstor vol-create p1 fromxml.xml
assert_rc 0 vstor vol-dump fromxml.qcow2 --pool p1
python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert d["format"] == "qcow2" and d["capacity"] == 64 << 20, d' out ||
	fail "vol-create from vol-dumpxml"
# ... with its <backingStore> (it was dropped: a volume without its base).
assert_eq "$(qemu-img info --output=json "$pooldir/fromxml.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename"))')" \
	"$pooldir/disk.qcow2" "vol-create keeps the <backingStore> of vol-dumpxml"
assert_rc 0 vstor vol-delete fromxml.qcow2 --pool p1
# vol-create-as --print-xml prints the volume XML virsh prints; vol-create
# makes the same volume from it.
assert_rc 0 vstor vol-create-as p1 px.qcow2 48M --backing-vol disk.qcow2 --allocation 0 --print-xml
python3 - out "$pooldir/disk.qcow2" <<'PY' || fail "vol-create-as --print-xml"
import sys
import xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
assert r.tag == "volume" and r.find("name").text == "px.qcow2", ET.tostring(r)
assert r.find("capacity").text == str(48 << 20) and r.find("allocation").text == "0", ET.tostring(r)
assert r.find("target/format").get("type") == "qcow2", ET.tostring(r)
assert r.find("backingStore/path").text == sys.argv[2], ET.tostring(r)
assert r.find("backingStore/format").get("type") == "qcow2", ET.tostring(r)
PY
[[ ! -e $pooldir/px.qcow2 ]] || fail "vol-create-as --print-xml created the volume"
mv out px.xml
assert_rc 0 vstor vol-create p1 px.xml
assert_rc 0 qemu_img check "$pooldir/px.qcow2"
assert_eq "$(qemu-img info --output=json "$pooldir/px.qcow2" | python3 -c 'import json,sys; d = json.load(sys.stdin); print(d["virtual-size"], d["backing-filename"])')" \
	"$((48 << 20)) $pooldir/disk.qcow2" "vol-create from vol-create-as --print-xml"
assert_rc 0 vstor vol-delete px.qcow2 --pool p1
# <compat>, <clusterSize>, <features><lazy_refcounts/> as libvirt's volume
# XML carries them: vol-create makes them, vol-dumpxml shows them (with
# <physical> and <timestamps>), and its output makes the same image again.
cat >q.xml <<'EOF'
<volume><name>q.qcow2</name><capacity unit='M'>16</capacity>
<target><format type='qcow2'/><compat>1.1</compat><clusterSize unit='KiB'>4</clusterSize>
<features><lazy_refcounts/></features></target></volume>
EOF
assert_rc 0 vstor vol-create p1 q.xml
cat >q2.xml <<'EOF'
<volume><name>q2.qcow2</name><capacity unit='M'>16</capacity>
<target><format type='qcow2'/><compat>0.10</compat></target></volume>
EOF
assert_rc 0 vstor vol-create p1 q2.xml
assert_rc 0 vstor vol-dumpxml q.qcow2 --pool p1
mv out q-dump.xml
python3 - q-dump.xml "$pooldir" <<'PY' || fail "qcow2 options in vol-create / vol-dumpxml"
import json, os, subprocess, sys
import xml.etree.ElementTree as ET
d = sys.argv[2]
def qinfo(name):
    return json.loads(subprocess.check_output(["qemu-img", "info", "-U", "--output=json", d + "/" + name]))
i = qinfo("q.qcow2")
spec = i["format-specific"]["data"]
assert i["cluster-size"] == 4096 and spec["compat"] == "1.1" and spec["lazy-refcounts"], i
i2 = qinfo("q2.qcow2")
assert i2["format-specific"]["data"]["compat"] == "0.10" and i2["cluster-size"] == 65536, i2
r = ET.parse(sys.argv[1]).getroot()
st = os.stat(d + "/q.qcow2")
assert r.find("physical").text == str(st.st_size), (r.find("physical").text, st.st_size)
t = r.find("target")
assert t.find("compat").text == "1.1" and t.find("clusterSize").text == "4096", ET.tostring(t)
assert t.find("features/lazy_refcounts") is not None, ET.tostring(t)
mtime = t.find("timestamps/mtime").text
assert mtime == "%d.%09d" % (st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9), (mtime, st.st_mtime_ns)
PY
sed 's|<name>q.qcow2</name>|<name>q3.qcow2</name>|' q-dump.xml >q3.xml
assert_rc 0 vstor vol-create p1 q3.xml
assert_eq "$(qemu-img info -U --output=json "$pooldir/q3.qcow2" | python3 -c 'import json,sys; i = json.load(sys.stdin); print(i["cluster-size"], i["format-specific"]["data"]["lazy-refcounts"])')" \
	"4096 True" "vol-create from vol-dumpxml keeps cluster size and lazy refcounts"
assert_rc 0 vstor vol-info q.qcow2 --pool p1 --bytes --physical
assert_grep "^Physical: +$(stat -c %s "$pooldir/q.qcow2") bytes" out
printf "<volume><name>bad.qcow2</name><capacity>1048576</capacity><target><format type='qcow2'/><compat>2.0</compat></target></volume>" >bc.xml
assert_fails vstor vol-create p1 bc.xml
assert_grep "unknown <compat> '2.0'" err
for v in q q2 q3; do assert_rc 0 vstor vol-delete "$v.qcow2" --pool p1; done
printf '<volume><name>nb.qcow2</name><capacity>1M</capacity><backingStore><format type="qcow2"/></backingStore></volume>' >nb.xml
assert_fails vstor vol-create p1 nb.xml
assert_grep 'backingStore> without a <path>' err
# vstor-img reads and writes vol: names.
assert_rc 0 vstor_img convert -O qcow2 vol:p1/top.qcow2 vol:p1/conv.qcow2
assert_rc 0 qemu_img compare "$pooldir/top.qcow2" "$pooldir/conv.qcow2"
assert_rc 0 vstor_img info vol:p1/conv.qcow2
assert_grep 'virtual size: 64 MiB' out
# create -o on a new vol: formats it before it is listed; a failure leaves nothing.
assert_rc 0 vstor_img create -f qcow2 -o cluster_size=4096 vol:p1/opts.qcow2 1M
assert_grep '^cluster_size: 4096' <(qemu-img info "$pooldir/opts.qcow2") "create -o into a new volume"
assert_fails vstor_img create -f qcow2 -o cluster_size=3000 vol:p1/badopts.qcow2 1M
assert_rc 0 vstor vol-list p1
if grep -q badopts out || compgen -G "$pooldir/*badopts*" >/dev/null ||
	compgen -G "$pooldir/.badopts*" >/dev/null; then
	fail "a failed create -o left a volume"
fi
assert_rc 0 vstor vol-delete opts.qcow2 --pool p1
assert_fails vstor_img info vol:p1/../raw.img
assert_fails vstor_img info vol:nosuchpool/x

# --- upload / download ---
truncate -s 6M up.bin
printf 'hello' | dd of=up.bin bs=1 seek=100000 conv=notrunc status=none
head -c 200000 /dev/urandom | dd of=up.bin bs=64k seek=40 conv=notrunc status=none
assert_rc 0 vstor vol-upload raw.img up.bin --pool p1 --offset 1M --sparse
assert_rc 0 cmp -n 6291456 -i 1048576:0 "$pooldir/raw.img" up.bin
assert_rc 0 vstor vol-upload --pool p1 raw.img up.bin --offset 7M --length 4096
assert_rc 0 cmp -n 4096 -i 7340032:0 "$pooldir/raw.img" up.bin
assert_rc 0 vstor vol-download raw.img down.bin --pool p1 --offset 1M --length 6M --sparse
assert_rc 0 cmp down.bin up.bin
((($(stat -c %b down.bin) * 512) < 1048576)) || fail "sparse download is not sparse"
assert_rc 0 vstor vol-download raw.img full.bin --pool p1
assert_rc 0 cmp full.bin "$pooldir/raw.img"
# Bytes as stored: downloading a qcow2 volume gives the qcow2 file.
assert_rc 0 vstor vol-download disk.qcow2 disk.copy --pool p1
assert_rc 0 cmp disk.copy "$pooldir/disk.qcow2"

# --- resize ---
assert_fails vstor vol-resize raw.img 4M --pool p1
assert_grep "shrink" err
assert_eq "$(stat -c %s "$pooldir/raw.img")" 8388608 "size after a refused shrink"
assert_rc 0 vstor vol-resize raw.img 16M --pool p1
assert_grep "successfully changed to 16M" out
assert_eq "$(stat -c %s "$pooldir/raw.img")" 16777216 "size after grow"
assert_rc 0 vstor vol-resize raw.img -8M --pool p1 --delta --shrink
assert_eq "$(stat -c %s "$pooldir/raw.img")" 8388608 "size after --delta --shrink"
assert_rc 0 vstor vol-resize disk.qcow2 +64M --delta --pool p1
assert_eq "$(qemu-img info --output=json "$pooldir/disk.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" \
	134217728 "qcow2 size after resize --delta"
assert_rc 0 qemu_img check "$pooldir/disk.qcow2"

# --- in use: refused unless --force ---
rm -f nbd.sock nbd.pid
start_daemon nbd.pid 30 "$VSTOR_NBD" -t -k "$WORKDIR/nbd.sock" --pid-file "$WORKDIR/nbd.pid" --pool p1
assert_rc 0 timeout 30 nbdinfo --list "nbd+unix:///?socket=$WORKDIR/nbd.sock"
for v in raw.img clone.qcow2 top.qcow2 meta.qcow2; do
	assert_grep "export=\"$v\"" out "vstor-nbd --pool exports $v"
done
assert_rc 0 timeout 30 nbdinfo --size "nbd+unix:///raw.img?socket=$WORKDIR/nbd.sock"
assert_eq "$(cat out)" 8388608 "size of the raw.img export"
# Data written through the export lands in the volume's file (checked after the server stops).
assert_rc 0 timeout 60 qemu-io -f raw -c 'write -P 0x5a 64k 64k' "nbd+unix:///raw.img?socket=$WORKDIR/nbd.sock"
assert_rc 0 timeout 60 qemu-io -r -f raw -c 'read -P 0x11 512k 512k' \
	"nbd+unix:///top.qcow2?socket=$WORKDIR/nbd.sock"
assert_fails vstor vol-delete raw.img --pool p1
assert_grep 'in use' err
assert_fails vstor vol-wipe raw.img --pool p1
assert_grep 'in use' err
assert_fails vstor vol-resize raw.img 1M --shrink --pool p1
assert_grep 'in use' err
[[ -e $pooldir/raw.img ]] || fail "a volume in use was deleted"
assert_eq "$(stat -c %s "$pooldir/raw.img")" 8388608 "size after a refused shrink of a volume in use"
stop_pid "$DAEMON_PID"
wait_for 10 no_locks "$pooldir/raw.img"
assert_rc 0 timeout 60 qemu-io -r -f raw -c 'read -P 0x5a 64k 64k' "$pooldir/raw.img"

timeout 60 qemu-nbd --fork --persistent --pid-file="$WORKDIR/qnbd.pid" -k "$WORKDIR/qnbd.sock" \
	-f raw "$pooldir/raw-clone.img" || fail "qemu-nbd did not start"
register_pid "$(<"$WORKDIR/qnbd.pid")"
assert_fails vstor vol-delete raw-clone.img --pool p1
assert_grep 'in use' err
stop_pid "$(<"$WORKDIR/qnbd.pid")"
wait_for 10 no_locks "$pooldir/raw-clone.img"

coproc QIO { exec timeout 120 qemu-io -f qcow2 "$pooldir/meta.qcow2" 2>&1; }
wait_for 30 has_locks "$pooldir/meta.qcow2"
assert_fails vstor vol-wipe meta.qcow2 --pool p1
assert_grep 'in use' err
assert_fails vstor vol-delete meta.qcow2 --pool p1
assert_grep 'in use' err
qio_pid=$QIO_PID qio_in=${QIO[1]}
exec {qio_in}>&-
wait "$qio_pid" || true
wait_for 10 no_locks "$pooldir/meta.qcow2"

# --- wipe, delete ---
assert_rc 0 vstor vol-wipe raw-clone.img --pool p1
assert_grep '^Vol raw-clone.img wiped' out
assert_rc 0 cmp -n 8388608 "$pooldir/raw-clone.img" /dev/zero
assert_rc 0 vstor vol-wipe clone.qcow2 --pool p1 --algorithm random
assert_rc 0 qemu_img check "$pooldir/clone.qcow2"
# Empty again over the same backing: what the clone itself stored (0x11) is gone.
assert_rc 0 timeout 60 qemu-io -f qcow2 -c 'read -P 0xab 512k 512k' -c 'read -P 0 1M 512k' \
	"$pooldir/clone.qcow2"
assert_fails vstor vol-wipe raw.img --pool p1 --algorithm nosuch
assert_grep 'Unsupported algorithm' err
assert_rc 0 vstor vol-delete conv.qcow2 --pool p1
assert_grep '^Vol conv.qcow2 deleted' out
[[ ! -e $pooldir/conv.qcow2 ]] || fail "vol-delete left the file"

# --- state survives a new process; concurrent invocations ---
assert_rc 0 vstor pool-list --all --name
assert_eq "$(tr '\n' ' ' <out)" "p1 p2 p3 " "pools in a new process"
pids=()
for i in $(seq 1 8); do
	vstor pool-define-as "c$i" dir --target "$WORKDIR/c$i" >/dev/null 2>"c$i.err" &
	pids+=($!)
	vstor vol-create-as p1 "conc$i.img" 1M >/dev/null 2>"v$i.err" &
	pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || fail "a concurrent vstor failed: $(cat ./*.err)"; done
assert_rc 0 vstor pool-list --all --name
assert_eq "$(grep -c '^c[0-9]' out)" 8 "pools defined concurrently"
for f in "$VSTOR_STATE_DIR"/pools/*.json; do json_ok <"$f" || fail "$f is damaged"; done
assert_rc 0 vstor vol-list p1 --output=json
assert_eq "$(python3 -c 'import json,sys; print(len([v for v in json.load(open(sys.argv[1])) if v["name"].startswith("conc")]))' out)" \
	8 "volumes created concurrently"

# --state-dir wins over VSTOR_STATE_DIR; the two are separate worlds.
assert_rc 0 vstor --state-dir "$WORKDIR/other-state" pool-define-as o1 dir --target "$WORKDIR/o1"
assert_rc 0 vstor --state-dir="$WORKDIR/other-state" pool-list --all --name
assert_eq "$(cat out)" "o1" "pools of --state-dir"
[[ -s $WORKDIR/other-state/pools/o1.json ]] || fail "--state-dir: the definition is not there"
assert_rc 0 vstor pool-list --all --name
assert_eq "$(grep -c '^o1$' out || true)" 0 "a pool of --state-dir seen in VSTOR_STATE_DIR"

# --- autostart, destroy, delete, undefine ---
assert_rc 0 vstor pool-destroy p1
assert_grep '^Pool p1 destroyed' out
assert_fails vstor vol-list p1
assert_grep 'not active' err
assert_fails vstor_img info vol:p1/raw.img
assert_grep 'not active' err
assert_fails vstor pool-undefine p2 --nosuch
assert_grep "doesn't support option --nosuch" err
assert_rc 0 vstor pool-autostart p2 --disable
assert_grep 'unmarked as autostarted' out
assert_rc 0 vstor autostart
assert_grep 'Pool p1 started' out
assert_fails vstor pool-start p2
assert_rc 0 vstor pool-info p2
assert_grep '^State: +inactive' out
assert_rc 0 vstor pool-destroy p1
assert_fails vstor pool-delete p1
assert_grep 'cannot remove directory' err
assert_rc 0 vstor pool-undefine p1
assert_grep 'has been undefined' out
assert_fails vstor pool-info p1
assert_grep 'Storage pool not found' err
[[ -e $pooldir/raw.img ]] || fail "pool-undefine removed volumes"
assert_rc 0 vstor pool-build p2
assert_rc 0 vstor pool-delete p2
[[ ! -e $WORKDIR/images2 ]] || fail "pool-delete left the directory"

log "dir pools and the vstor CLI work"
