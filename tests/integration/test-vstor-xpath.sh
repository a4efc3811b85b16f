#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# vstor pool-dumpxml/vol-dumpxml --xpath [--wrap] against virsh 9's on the
# same pool: virsh runs without a daemon on libvirt's test driver
# (test:///default), the pool defined there and in vstor from one XML file.
# Node sets, attributes, text, --wrap, the empty set and the errors of
# expressions that are not node sets must print the same bytes.
. "$(dirname "$0")/lib.sh"

require_tool virsh
find_built VSTOR cli/vstor
export PATH=/usr/bin:/bin:$PATH
export VSTOR_STATE_DIR=$WORKDIR/state
vstor() { timeout 60 "$VSTOR" "$@"; }
# virsh's test driver keeps what is defined for the one connection: define, then dump.
virsh_dump() { timeout 60 virsh -q -c test:///default "pool-define $WORKDIR/p.xml; pool-dumpxml xp1 $*"; }

mkdir -p "$WORKDIR/pd"
cat >"$WORKDIR/p.xml" <<XML
<pool type='dir'>
  <name>xp1</name>
  <target>
    <path>$WORKDIR/pd</path>
  </target>
</pool>
XML
assert_rc 0 vstor pool-define "$WORKDIR/p.xml"

n=0
compare() {
	local rc_v=0 rc_o=0
	virsh_dump "$@" >"$WORKDIR/v.out" 2>"$WORKDIR/v.err" || rc_v=$?
	vstor pool-dumpxml xp1 "$@" >"$WORKDIR/o.out" 2>"$WORKDIR/o.err" || rc_o=$?
	cmp -s "$WORKDIR/v.out" "$WORKDIR/o.out" || {
		diff -u "$WORKDIR/v.out" "$WORKDIR/o.out" >&2
		fail "pool-dumpxml $*: vstor's output differs from virsh's"
	}
	# virsh reports an error with exit 1 but virsh -q ... in batch mode exits 0 after it.
	if grep -q '^error:' "$WORKDIR/v.err"; then
		[[ $rc_o != 0 ]] || fail "pool-dumpxml $*: virsh fails, vstor does not"
		diff <(grep '^error:' "$WORKDIR/v.err") "$WORKDIR/o.err" >&2 ||
			fail "pool-dumpxml $*: another error message than virsh's"
	else
		[[ $rc_o == 0 ]] || fail "pool-dumpxml $*: vstor failed: $(cat "$WORKDIR/o.err")"
	fi
	n=$((n + 1))
}

compare --xpath /pool/@type
compare --xpath name
compare --xpath //target/path
compare --xpath '//name/text()'
compare --xpath '//target/path/text()|//name/text()'
compare --xpath '//source|//name|//@type'
compare --xpath '//source|//name' --wrap
compare --xpath //target/path --wrap
compare --xpath //@type --wrap
compare --xpath '//name/text()|//path/text()' --wrap
compare --xpath //nothing
compare --xpath //nothing --wrap
compare --xpath 'string(//name)'
compare --xpath 'count(//*)'
# --wrap without --xpath is ignored, as by virsh.
assert_rc 0 vstor pool-dumpxml xp1 --wrap
vstor pool-dumpxml xp1 | cmp -s - "$WORKDIR/out" || fail "--wrap alone changed the XML"
# What was compared is not empty: the expressions select something.
vstor pool-dumpxml xp1 --xpath //target/path --wrap | grep -q "<path>$WORKDIR/pd</path>" ||
	fail "--xpath //target/path --wrap lost the path"

# vol-dumpxml takes the same options.
assert_rc 0 vstor pool-start xp1
assert_rc 0 vstor vol-create-as xp1 v1 1M --format qcow2
assert_rc 0 vstor vol-dumpxml --pool xp1 v1 --xpath '//target/format/@type|/volume/name'
printf '<name>v1</name>\n type="qcow2"\n' | cmp -s - "$WORKDIR/out" ||
	fail "vol-dumpxml --xpath: $(cat "$WORKDIR/out")"
assert_rc 0 vstor vol-dumpxml --pool xp1 v1 --xpath '//capacity/text()' --wrap
[[ $(cat "$WORKDIR/out") == "<nodes>1048576</nodes>" ]] || fail "vol-dumpxml --wrap: $(cat "$WORKDIR/out")"
# An expression libxml2 cannot compile is an error (virsh prints nothing and exits 0).
assert_fails vstor vol-dumpxml --pool xp1 v1 --xpath '//['
assert_grep "Invalid xpath" err
echo "ok: $n --xpath cases equal to virsh's"
