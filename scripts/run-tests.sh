#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Install what is missing, build vstor twice (plain and ASan+UBSan, both with
# warnings as errors), run the test suite in both builds, check the
# formatting, run the valgrind suite, and end with one line:
#
#   tests: N passed, N failed, N skipped
#
# summed over every build (from meson's testlog JSON). Exits non-zero if
# anything failed: a build, a test, or the clang-format check.
#
# Environment:
#   VSTOR_LONG=1           also run the whole long tier (--suite long)
#   CI=true                integration tests fail instead of skipping when a
#                          peer is missing, and a bounded sample of the long
#                          tier runs: VSTOR_LONG_TESTS tests (default 3), each
#                          with VSTOR_LONG_SAMPLE combinations (default 8)
#   VSTOR_NO_DEPS=1        do not run scripts/install-deps.sh
#   VSTOR_NO_ASAN=1        skip the sanitizer build
#   VSTOR_NO_VALGRIND=1    skip the valgrind run
#   VSTOR_TEST_JOBS=N      parallel tests (default 2)
#   VSTOR_ASAN_CC=clang    compiler for the sanitizer build (default: cc)
#   VSTOR_FUZZ_SECONDS=N   build the libFuzzer targets with clang and run each
#                          for N seconds (default: 60 with CI=true, 600 with
#                          VSTOR_LONG=1, else 0 = skip), as many at once as
#                          there are CPUs; see scripts/run-fuzz.sh
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
jobs=${VSTOR_TEST_JOBS:-2}
t0=$SECONDS
step_failures=() # what failed besides tests
logs=()          # testlog JSON files to sum up
extra_passed=0
extra_failed=0   # a build that failed counts as one failed test

# Each step's banner carries the time since the start, so the log shows
# where the CI budget goes.
banner() { printf '\n===== [%d s] %s =====\n' $((SECONDS - t0)) "$*"; }

if [[ ${VSTOR_NO_DEPS:-0} != 1 ]]; then
	banner "dependencies"
	scripts/install-deps.sh || {
		echo "run-tests: installing dependencies failed" >&2
		echo "tests: 0 passed, 1 failed, 0 skipped"
		exit 1
	}
fi

# configure DIR ARGS...: meson setup, or reconfigure an existing DIR.
configure()
{
	local dir=$1
	shift
	if [[ -f $dir/build.ninja ]]; then
		meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
	else
		rm -rf "$dir"
		meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
	fi || {
		cat "$dir.setup.log"
		return 1
	}
	rm -f "$dir.setup.log"
}

# build DIR ARGS...: configure and compile; on failure count one failed test.
build()
{
	local dir=$1
	banner "build $dir ($*)"
	if configure "$@" && ninja -C "$dir"; then
		return 0
	fi
	step_failures+=("build $dir")
	extra_failed=$((extra_failed + 1))
	return 1
}

# run_tests DIR LOGBASE [meson test args...]
run_tests()
{
	local dir=$1 base=$2
	shift 2
	banner "meson test $dir $*"
	rm -f "$dir/meson-logs/$base".json "$dir/meson-logs/$base"-*.json
	meson test -C "$dir" --num-processes "$jobs" --print-errorlogs --logbase "$base" "$@" ||
		step_failures+=("tests in $dir ($base)")
	local f
	for f in "$dir/meson-logs/$base".json "$dir/meson-logs/$base"-*.json; do
		[[ -f $f ]] && logs+=("$f")
	done
}

# The long tier: all of it with VSTOR_LONG=1, a seeded sample in CI.
run_long()
{
	local dir=$1
	if [[ ${VSTOR_LONG:-0} == 1 ]]; then
		run_tests "$dir" long --suite long
	elif [[ ${CI:-} == true ]]; then
		local seed names picked
		seed=${VSTOR_LONG_SEED:-$(git rev-parse --short=8 HEAD 2>/dev/null || echo 1)}
		# A bounded sample: VSTOR_LONG_TESTS of the long tests (default 3),
		# each with VSTOR_LONG_SAMPLE combinations where it has a matrix.
		mapfile -t names < <(meson test -C "$dir" --no-rebuild --list --suite long 2>/dev/null |
			sed -n 's|^.* / ||p' | sort)
		mapfile -t picked < <(printf '%s\n' "${names[@]}" |
			shuf --random-source=<(yes "$seed") -n "${VSTOR_LONG_TESTS:-3}")
		echo "long tier: ${#picked[@]} of ${#names[@]} tests (${picked[*]})," \
			"${VSTOR_LONG_SAMPLE:-8} combinations each, seed $seed" \
			"(VSTOR_LONG_SEED=$seed reproduces)"
		((${#picked[@]})) || return 0
		VSTOR_COMBOS_SAMPLE=${VSTOR_LONG_SAMPLE:-8} VSTOR_COMBOS_SEED=$seed \
			run_tests "$dir" long --suite long "${picked[@]}"
	fi
}

# --- plain build ---
if build build --werror; then
	run_tests build default
	run_long build
	if [[ ${VSTOR_NO_VALGRIND:-0} != 1 ]] && command -v valgrind >/dev/null &&
		meson test -C build --no-rebuild --list --suite valgrind 2>/dev/null | grep -q ' / '; then
		run_tests build valgrind --setup valgrind --suite valgrind
	fi
fi

# --- the README's main job (scripts/demo.sh) in its check mode: serve, nbdinfo, stop ---
if [[ -x build/nbd-server/vstor-nbd ]]; then
	banner "demo --check"
	if VSTOR_NO_DEPS=1 VSTOR_DEMO_IMAGE=build/demo/demo.qcow2 scripts/demo.sh --check; then
		extra_passed=$((extra_passed + 1))
	else
		step_failures+=("scripts/demo.sh --check")
		extra_failed=$((extra_failed + 1))
	fi
fi

# --- ASan + UBSan build ---
if [[ ${VSTOR_NO_ASAN:-0} != 1 ]]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:abort_on_error=0}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
	if CC=${VSTOR_ASAN_CC:-${CC:-cc}} build build-asan \
		-Db_sanitize=address,undefined -Db_lundef=false --werror; then
		run_tests build-asan default --timeout-multiplier 3
	fi
	unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# --- fuzzing: every libFuzzer target for VSTOR_FUZZ_SECONDS (docs/reliability.md) ---
fuzz_secs=${VSTOR_FUZZ_SECONDS:-}
if [[ -z $fuzz_secs ]]; then
	if [[ ${VSTOR_LONG:-0} == 1 ]]; then
		fuzz_secs=600
	elif [[ ${CI:-} == true ]]; then
		fuzz_secs=60
	else
		fuzz_secs=0
	fi
fi
if ((fuzz_secs > 0)); then
	# No --werror: clang warns where gcc does not (-Wmissing-field-initializers
	# on designated initializers); the plain and ASan builds judge warnings.
	if CC=clang build build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
		-Db_lundef=false; then
		banner "fuzz: each target for $fuzz_secs s, $(nproc) at a time"
		while IFS= read -r line; do
			echo "$line"
			case $line in
			*": OK") extra_passed=$((extra_passed + 1)) ;;
			*) extra_failed=$((extra_failed + 1)) ;;
			esac
		done < <(VSTOR_FUZZ_JOBS=${VSTOR_FUZZ_JOBS:-$(nproc)} \
			scripts/run-fuzz.sh build-fuzz "$fuzz_secs" | grep '^fuzz: ')
		grep -q . build-fuzz/fuzz-stats.txt 2>/dev/null || {
			step_failures+=("fuzz")
			extra_failed=$((extra_failed + 1))
		}
	fi
fi

# --- formatting (not a test, but it fails the run) ---
banner "clang-format"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -t srcs < <(git ls-files '*.c' '*.h')
else
	mapfile -t srcs < <(find . -path './build*' -prune -o -name '*.[ch]' -print | sort)
fi
if ((${#srcs[@]} == 0)); then
	echo "clang-format: no sources"
elif clang-format --dry-run --Werror "${srcs[@]}" >clang-format.log 2>&1; then
	echo "clang-format: OK (${#srcs[@]} files)"
	rm -f clang-format.log
else
	nbad=$(grep -c 'error: code should be clang-formatted' clang-format.log || true)
	files=$(grep -oE '^[^:]+\.[ch]:' clang-format.log | sort -u | tr -d ':' | tr '\n' ' ')
	head -n 60 clang-format.log
	echo "clang-format: FAILED ($nbad places in: $files) -- fix with: clang-format -i FILE"
	rm -f clang-format.log
	step_failures+=("clang-format")
fi

# --- summary ---
read -r passed failed skipped < <(python3 - "${logs[@]}" <<'PY'
import json, sys
p = f = s = 0
bad = []
for path in sys.argv[1:]:
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            r = t.get("result")
            if r in ("OK", "EXPECTEDFAIL"):
                p += 1
            elif r == "SKIP":
                s += 1
            else:
                f += 1
                bad.append(f"  {r}: {t.get('name')} ({path.split('/meson-logs/')[0]})")
if bad:
    print("failed tests:\n" + "\n".join(bad), file=sys.stderr)
print(p, f, s)
PY
)
failed=$((${failed:-0} + extra_failed))
passed=$((${passed:-0} + extra_passed))
banner "summary"
if ((${#step_failures[@]})); then
	printf 'failed: %s\n' "${step_failures[@]}"
fi
printf 'run-tests: %d s\n' $((SECONDS - t0))
echo "tests: ${passed:-0} passed, $failed failed, ${skipped:-0} skipped"
if ((failed > 0 || ${#step_failures[@]} > 0)); then
	exit 1
fi
exit 0
