#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# What `meson install` puts on a host (docs/packaging.md), installed into a
# scratch DESTDIR from this build:
#   - every installed program has its man page, and every page's header
#     names this version the same way;
#   - the systemd units (vstord, vstor-autostart, vstor-nbd@, vstor-vhost@)
#     pass systemd-analyze verify;
#   - the bash completion completes commands, options, formats and pool
#     names from the installed programs;
#   - the C example builds with pkg-config against the installed library
#     and reports the map qemu-img reports.
. "$(dirname "$0")/lib.sh"

require_tool qemu-img qemu-io python3 pkg-config cc meson
export PATH=/usr/bin:/bin:$PATH

ROOT=$WORKDIR/root
timeout 300 meson install -C "$VS_BUILD_DIR" --destdir "$ROOT" --no-rebuild --quiet \
	>install.log 2>&1 || { cat install.log >&2; fail "meson install"; }
read -r PREFIX VERSION SANITIZE < <(python3 - "$VS_BUILD_DIR" <<'PY'
import json, subprocess, sys
b = sys.argv[1]
opts = {o["name"]: o["value"] for o in json.loads(subprocess.check_output(
    ["meson", "introspect", "--buildoptions", b]))}
info = json.loads(subprocess.check_output(["meson", "introspect", "--projectinfo", b]))
print(opts["prefix"], info["version"], opts["b_sanitize"])
PY
)
P=$ROOT$PREFIX
LIBDIR=$(dirname "$(find "$P" -name 'libvstor.so*' -print -quit)")
[[ -d $LIBDIR ]] || fail "libvstor.so not installed"
export LD_LIBRARY_PATH=$LIBDIR
export PATH=$P/bin:$P/sbin:$PATH

# --- man pages: one per program, headers alike ---
for prog in "$P"/bin/* "$P"/sbin/*; do
	name=$(basename "$prog")
	page=$(find "$P/share/man" -name "$name.[18]" -print -quit)
	[[ -n $page ]] || fail "$name has no man page"
	sec=${page##*.}
	want=".TH ${name^^} $sec \"[0-9]{4}-[0-9]{2}\" \"vstor $VERSION\" \"vstor manual\""
	grep -qE "^$want\$" "$page" || fail "$name.$sec: header is not '$want': $(grep '^\.TH' "$page")"
done
log "man pages: $(find "$P/share/man" -type f | wc -l), headers name vstor $VERSION"

# --- systemd units ---
units=(vstord.service vstord.socket vstor-autostart.service vstor-nbd@.service vstor-vhost@.service)
mkdir units
for u in "${units[@]}"; do
	f=$P/lib/systemd/system/$u
	[[ -f $f ]] || fail "unit $u not installed"
	# Paths into the DESTDIR; a template is verified as an instance.
	sed "s|$PREFIX/|$P/|g" "$f" >"units/${u/@./@t1.}"
done
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify --man=no units/* >verify.out 2>&1 ||
		{ cat verify.out >&2; fail "systemd-analyze verify"; }
	[[ ! -s verify.out ]] || { cat verify.out >&2; fail "systemd-analyze verify warns"; }
else
	skip_or_fail "systemd-analyze missing"
fi
grep -q '^Type=notify' units/vstor-nbd@t1.service || fail "vstor-nbd@ is not Type=notify"
grep -q -- '--persistent' units/vstor-nbd@t1.service || fail "vstor-nbd@ without --persistent"

# --- bash completion ---
BC=/usr/share/bash-completion/bash_completion
[[ -f $BC ]] || skip_or_fail "bash-completion missing"
for prog in vstor vstor-img vstor-nbd vstor-vhost vstord; do
	[[ -f $P/share/bash-completion/completions/$prog ]] || fail "no completion for $prog"
done
export VSTOR_STATE_DIR=$WORKDIR/state
mkdir -p "$WORKDIR/pooldir"
timeout 60 vstor pool-define-as tank dir --target "$WORKDIR/pooldir" >/dev/null ||
	fail "pool-define-as"
# complete WORD...: what the completion offers for the command line WORD...
# (the last word is the one being completed), one per line, sorted.
complete_words()
{
	timeout 60 bash -c '
		. "$1"; . "$2/share/bash-completion/completions/$3"
		compopt() { :; } # only valid inside a real completion
		shift 2
		COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		fn=$(complete -p "$1" | sed -nE "s/.*-F ([^ ]+) .*/\1/p")
		"$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$BC" "$P" "$@"
}
# expect WANT WORD...: WANT (a space-separated list) is among the completions.
expect()
{
	local want=$1 got w
	shift
	got=$(complete_words "$@")
	for w in $want; do
		grep -qxF -- "$w" <<<"$got" ||
			fail "completing '$*': '$w' not offered (got: $(tr '\n' ' ' <<<"$got"))"
	done
}
expect "convert" vstor-img con
expect "check commit compare compact" vstor-img c
expect "qcow2 raw" vstor-img convert -O ""
expect "leaks all" vstor-img check -r ""
expect "--output= --backing-chain" vstor-img info --
expect "pool-start pool-list" vstor pool-
expect "tank" vstor pool-start ""
expect "tank" vstor vol-create-as --pool ""
expect "--capacity --format" vstor vol-create-as --
expect "--cache= --persistent --bitmap=" vstor-nbd --
expect "--num-queues=" vstor-vhost --num
expect "--monitor --blockdev" vstord --
expect "none writeback" vstor-nbd --cache ""
# A word nothing matches: nothing offered.
[[ -z $(complete_words vstor-img zzz) ]] || fail "completion offers something for 'zzz'"
log "bash completion: commands, options, formats and pool names"

# --- the C example against the installed library ---
pc=$(find "$P" -name libvstor.pc -print -quit)
[[ -n $pc ]] || fail "libvstor.pc not installed"
ex=$(find "$P/share/doc" -name image-map.c -print -quit)
[[ -n $ex ]] || fail "the example is not installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
pcflags=(--define-variable=prefix="$P")
san=()
[[ $SANITIZE == none ]] || san=(-fsanitize="$SANITIZE")
# shellcheck disable=SC2046
cc -std=gnu11 -Wall -Wextra -Werror "${san[@]}" -o image-map "$ex" \
	$(pkg-config "${pcflags[@]}" --cflags --libs libvstor) >cc.log 2>&1 ||
	{ cat cc.log >&2; fail "the example does not build against the installed library"; }
qemu_img create -q -f qcow2 base.qcow2 4M
qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 1M 192k' base.qcow2 >/dev/null
qemu_img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -z 1M 64k' -c 'write -P 0xef 3M 4k' top.qcow2 >/dev/null
timeout 60 ./image-map top.qcow2 >ex.out 2>ex.err || { cat ex.err >&2; fail "image-map failed"; }
qemu_img map --output=json top.qcow2 >map.json
python3 - <<'PY' || fail "image-map differs from qemu-img map"
import json
lines = open("ex.out").read().split("\n")
assert lines[0] == "format qcow2 size 4194304", lines[0]
runs = []
for e in json.load(open("map.json")):
    kind = "data" if e["data"] else "zero"
    if runs and runs[-1][2] == kind and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], kind])
got = []
for l in lines[1:]:
    if l.startswith("head") or not l:
        continue
    s, n, k = l.split()
    if got and got[-1][2] == k and got[-1][0] + got[-1][1] == int(s):
        got[-1][1] += int(n)
    else:
        got.append([int(s), int(n), k])
assert got == runs, (got, runs)
assert "head " + " ".join(["ab"] * 16) in lines, lines
PY
log "example: builds with pkg-config, reads the chain as qemu-img maps it"
log "ok"
