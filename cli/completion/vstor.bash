# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bash completion for vstor, vstor-img, vstor-nbd, vstor-vhost and vstord.
# Installed once per program name (bash-completion loads a completion by
# the command's name). Commands, options and formats come from the
# programs' own help, so this file never lists them itself.

# _vstor_opts: the long and short options of a help text on stdin.
_vstor_opts()
{
	grep -oE -- '^ +-[A-Za-z],|(^|[ [])--[A-Za-z][-A-Za-z0-9]*=?' | tr -d ' [,' | sort -u
}

# _vstor_img_usage PROG SUBCOMMAND: that subcommand's usage line.
_vstor_img_usage()
{
	"$1" --help 2>/dev/null | sed -nE "s/^  $2 (.*)/\\1/p"
}

_vstor_img()
{
	local cur prev words cword sub i
	_init_completion -n = || return
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		-*) ;;
		*) sub=${words[i]}; break ;;
		esac
	done
	if [[ -z ${sub:-} ]]; then
		COMPREPLY=($(compgen -W "$("$1" --help 2>/dev/null |
			sed -nE 's/^  ([a-z]+) [[(-].*/\1/p') --help --version" -- "$cur"))
		return
	fi
	case $prev in
	-f | -F | -O)
		COMPREPLY=($(compgen -W "$("$1" --help 2>/dev/null |
			sed -nE 's/^Supported formats: //p')" -- "$cur"))
		return ;;
	-t | -T)
		COMPREPLY=($(compgen -W 'none writeback writethrough directsync unsafe' -- "$cur"))
		return ;;
	-r)
		[[ $sub == check ]] && COMPREPLY=($(compgen -W 'leaks all' -- "$cur"))
		return ;;
	-o | -l | -a | -c | -d | -g | -s | -S | -m | --object | --size) return ;;
	esac
	case $cur in
	--output=*)
		COMPREPLY=($(compgen -W 'human json' -- "${cur#--output=}"))
		return ;;
	-*)
		COMPREPLY=($(compgen -W "$(_vstor_img_usage "$1" "$sub" | grep -oE -- '--?[A-Za-z][-A-Za-z0-9_]*=?' | sort -u)" -- "$cur"))
		[[ ${COMPREPLY[*]} == *= ]] && compopt -o nospace
		return ;;
	esac
	_filedir
}

# _vstor_pools PROG: the defined pools' names.
_vstor_pools() { "$1" pool-list --all --name 2>/dev/null; }

_vstor()
{
	local cur prev words cword verb i
	_init_completion -n = || return
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		-c | --connect | --state-dir) ((i++)) ;;
		-*) ;;
		*) verb=${words[i]}; break ;;
		esac
	done
	if [[ -z ${verb:-} ]]; then
		case $prev in
		-c | --connect | --state-dir) _filedir; return ;;
		esac
		COMPREPLY=($(compgen -W "$("$1" help 2>/dev/null |
			sed -nE 's/^    ([a-z][-a-z]+) {2,}.*/\1/p') help --connect --quiet --help --version --state-dir" -- "$cur"))
		return
	fi
	case $prev in
	--pool)
		COMPREPLY=($(compgen -W "$(_vstor_pools "$1")" -- "$cur"))
		return ;;
	--format | --backing-vol-format)
		COMPREPLY=($(compgen -W 'raw qcow2' -- "$cur"))
		return ;;
	--file | --dest | --target | --source-path | --auth-secret-file) _filedir; return ;;
	--xpath) return ;; # an XPath expression: nothing to offer
	esac
	if [[ $verb == help ]]; then
		COMPREPLY=($(compgen -W "$("$1" help 2>/dev/null |
			sed -nE 's/^    ([a-z][-a-z]+) {2,}.*/\1/p')" -- "$cur"))
		return
	fi
	case $cur in
	-*)
		COMPREPLY=($(compgen -W "$("$1" help "$verb" 2>/dev/null |
			sed -nE 's/^    (--[-a-z]+=?).*/\1/p')" -- "$cur"))
		[[ ${COMPREPLY[*]} == *= ]] && compopt -o nospace
		return ;;
	esac
	# The first argument of a pool-* verb is a pool; vol-* verbs take --pool.
	case $verb in
	pool-define | vol-create | vol-upload | vol-download) _filedir ;;
	pool-*) COMPREPLY=($(compgen -W "$(_vstor_pools "$1")" -- "$cur")) ;;
	*) _filedir ;;
	esac
}

# vstor-nbd, vstor-vhost, vstord: options from --help, files otherwise.
_vstor_server()
{
	local cur prev words cword
	_init_completion -n = || return
	case $prev in
	-f | --format)
		COMPREPLY=($(compgen -W 'raw qcow2 luks' -- "$cur"))
		return ;;
	--cache)
		COMPREPLY=($(compgen -W 'none writeback writethrough directsync unsafe' -- "$cur"))
		return ;;
	--discard) COMPREPLY=($(compgen -W 'ignore unmap' -- "$cur")); return ;;
	--detect-zeroes) COMPREPLY=($(compgen -W 'off on unmap' -- "$cur")); return ;;
	-k | --socket | --pid-file | --pidfile | --tls-psk | --state-dir | --tls-certificates)
		_filedir
		return ;;
	esac
	case $cur in
	--cache=* | --discard=* | --detect-zeroes=*)
		local key=${cur%%=*} vals
		case $key in
		--cache) vals='none writeback writethrough directsync unsafe' ;;
		--discard) vals='ignore unmap' ;;
		*) vals='off on unmap' ;;
		esac
		COMPREPLY=($(compgen -W "$vals" -- "${cur#*=}"))
		return ;;
	-*)
		COMPREPLY=($(compgen -W "$("$1" --help 2>/dev/null | _vstor_opts)" -- "$cur"))
		[[ ${COMPREPLY[*]} == *= ]] && compopt -o nospace
		return ;;
	esac
	_filedir
}

complete -F _vstor vstor
complete -F _vstor_img vstor-img
complete -F _vstor_server vstor-nbd vstor-vhost vstord
