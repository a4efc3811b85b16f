# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# The qemu-img comparison of the fidelity tests (source after lib.sh): each
# row of a table is one command line, run by qemu-img and by vstor-img on
# the same inputs; exit codes, stdout, stderr and the images they write must
# be equal (same bytes, or same length, info, data and map). In a row, @N names an output file (o@N for qemu-img, v@N for
# vstor-img). VSTOR_FIDELITY_ONLY=SUBSTRING runs the rows that contain it.
# The caller sets NROWS and NFAIL (counted here) and checks them at the end.

# norm TAG ROW FILE...: the program name and the output files of ROW (@N,
# written TAG N) made neutral in FILE...
norm()
{
	local tag=$1 row=$2 n
	local e=(-e 's/^qemu-img: /PROG: /; s/^vstor-img: /PROG: /'
		-e "s/'qemu-img /'PROG /; s/'vstor-img /'PROG /")
	shift 2
	for n in $(grep -o '@[0-9]*' <<<"$row"); do
		e+=(-e "s/\\b$tag${n#@}\\b/OUT${n#@}/g")
	done
	sed -i "${e[@]}" "$@"
}

# info_of FILE: qemu-img's view of an image, without what names or measures the file.
info_of()
{
	qemu_img info --output=json "$1" 2>&1 | grep -v '"filename"\|"actual-size"\|"dirty-flag"'
}

# map_of FILE: the extents qemu-img sees in an image (data, zero, present
# and depth), without the host offsets that a different layout moves.
map_of()
{
	qemu_img map --output=json "$1" 2>&1 | sed 's/, "offset": [0-9]*//'
}

# fidelity_rows TABLE: compare every row of TABLE (one command line a line).
fidelity_rows()
{
	while IFS= read -r row; do
		[[ -n $row ]] || continue
		[[ -z ${VSTOR_FIDELITY_ONLY:-} || $row == *"$VSTOR_FIDELITY_ONLY"* ]] || continue
		NROWS=$((NROWS + 1))
		qrc=0 vrc=0
		# shellcheck disable=SC2086 # the row is split into words on purpose
		timeout 60 qemu-img ${row//@/o} >q.out 2>q.err || qrc=$?
		# shellcheck disable=SC2086
		timeout 60 "$VSTOR_IMG" ${row//@/v} >v.out 2>v.err || vrc=$?
		norm o "$row" q.out q.err
		norm v "$row" v.out v.err
		bad=
		[[ $qrc == "$vrc" ]] || bad="exit code qemu-img $qrc, vstor-img $vrc"
		cmp -s q.out v.out || bad="$bad${bad:+; }stdout differs"
		cmp -s q.err v.err || bad="$bad${bad:+; }stderr differs"
		for n in $(grep -o '@[0-9]*' <<<"$row"); do
			qf=o${n#@} vf=v${n#@}
			[[ $row == *"/nonexistent/$n"* ]] && continue
			if [[ -e $qf && ! -e $vf ]] || [[ ! -e $qf && -e $vf ]]; then
				bad="$bad${bad:+; }$qf/$vf: only one tool wrote it"
				continue
			fi
			[[ -e $qf ]] || continue
			cmp -s "$qf" "$vf" && continue # the same bytes: the same image
			# The same length: the same layout (a new qcow2 ends where qemu-img's does).
			[[ $(stat -c %s "$qf") == "$(stat -c %s "$vf")" ]] ||
				bad="$bad${bad:+; }file length $(stat -c %s "$qf")/$(stat -c %s "$vf")"
			[[ "$(info_of "$qf")" == "$(info_of "$vf")" ]] || bad="$bad${bad:+; }image info differs"
			qemu_img compare -q "$qf" "$vf" 2>/dev/null || bad="$bad${bad:+; }image data differs"
			[[ "$(map_of "$qf")" == "$(map_of "$vf")" ]] || bad="$bad${bad:+; }image map differs"
		done
		if [[ -n $bad ]]; then
			NFAIL=$((NFAIL + 1))
			log "DIFF: $row: $bad"
			diff -u q.err v.err | sed 's/^/  stderr: /' | head -10 >&2
			diff -u q.out v.out | sed 's/^/  stdout: /' | head -10 >&2
		fi
	done <<<"$1"
}
