#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# pool-define and vol-create --validate against virsh 9's: libvirt's RelaxNG
# schemas (libvirt0's /usr/share/libvirt/schemas) through libxml2. virsh runs
# without a daemon on libvirt's test driver (test:///default); the same files
# must pass or fail in both, with the same messages.
. "$(dirname "$0")/lib.sh"

require_tool virsh
[[ -f /usr/share/libvirt/schemas/storagepool.rng ]] ||
	skip_or_fail "libvirt's schemas missing (libvirt0)"
find_built VSTOR cli/vstor
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 60 "$VSTOR" "$@"; }
virsh_() { timeout 60 virsh -q -c test:///default "$@"; }
cd "$WORKDIR"
mkdir -p pd

# same_error FILE VSTOR-ARGS -- VIRSH-ARGS: both fail, with the same lines on stderr.
same_error() {
	local rc_v=0 rc_o=0 args=() vargs=()
	while [[ $1 != -- ]]; do args+=("$1"); shift; done
	shift
	vargs=("$@")
	vstor "${args[@]}" >o.out 2>o.err || rc_o=$?
	virsh_ "${vargs[@]}" >v.out 2>v.err || rc_v=$?
	[[ $rc_o != 0 && $rc_v != 0 ]] || fail "${args[*]}: vstor exit $rc_o, virsh exit $rc_v"
	diff <(grep -v '^$' v.err) <(grep -v '^$' o.err) >&2 ||
		fail "${args[*]}: another error than virsh's"
}

cat >bad-pool.xml <<'XML'
<pool type='dir'>
  <name>bad</name>
  <bogus/>
  <target><path>/tmp/x</path></target>
</pool>
XML
same_error pool-define bad-pool.xml --validate -- pool-define bad-pool.xml --validate
assert_grep 'Unable to validate doc against /usr/share/libvirt/schemas/storagepool.rng' o.err
# Without --validate the unknown element is ignored, as by libvirt.
assert_rc 0 vstor pool-define bad-pool.xml

cat >good-pool.xml <<XML
<pool type='dir'>
  <name>good</name>
  <target><path>$WORKDIR/pd</path></target>
</pool>
XML
assert_rc 0 virsh_ pool-define good-pool.xml --validate
assert_rc 0 vstor pool-define good-pool.xml --validate
assert_rc 0 vstor pool-start good

cat >bad-vol.xml <<'XML'
<volume>
  <name>v1</name>
  <capacity>zz</capacity>
</volume>
XML
same_error vol-create good bad-vol.xml --validate -- vol-create default-pool bad-vol.xml --validate
assert_grep 'storagevol.rng' o.err
vstor vol-list good >o.out && ! grep -q v1 o.out || fail "an invalid volume was created"

cat >good-vol.xml <<'XML'
<volume>
  <name>v2</name>
  <capacity unit='M'>1</capacity>
  <target><format type='qcow2'/></target>
</volume>
XML
assert_rc 0 vstor vol-create good good-vol.xml --validate
assert_rc 0 vstor vol-info --pool good v2

# vstor's extension is not libvirt's schema: <secret file=...> does not validate.
cat >ext-pool.xml <<'XML'
<pool type='iscsi'>
  <name>ext</name>
  <source><host name='127.0.0.1'/><device path='iqn.2026-01.x:t'/>
    <auth type='chap' username='u'><secret file='/etc/s'/></auth></source>
  <target><path>/dev/disk/by-path</path></target>
</pool>
XML
assert_fails vstor pool-define ext-pool.xml --validate
assert_grep 'failed to validate' err
# Hostile XML never reaches the validator.
printf '<!DOCTYPE pool [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<pool type="dir"><name>&x;</name></pool>\n' >xxe.xml
assert_fails vstor pool-define xxe.xml --validate
assert_grep 'DOCTYPE with an internal subset is not supported' err
grep -q 'root:' err && fail "/etc/passwd was read"
echo ok
