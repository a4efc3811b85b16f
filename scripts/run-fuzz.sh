#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Run every libFuzzer target of a -Dfuzzing=true build for SECONDS each,
# starting from the committed seed corpus, and print one line per target:
#
#   fuzz: TARGET: N executions in S s (E exec/s), corpus C inputs: OK|CRASH
#
#   [VSTOR_FUZZ_JOBS=N] scripts/run-fuzz.sh BUILD_DIR SECONDS [TARGET...]
#
# New inputs go to a scratch corpus under BUILD_DIR/fuzz-work (the committed
# corpus is only read); a crash, leak, timeout or out-of-memory leaves its
# input in BUILD_DIR/fuzz-artifacts/TARGET/ and fails the run. Turn such an
# input into a regression test by copying it into tests/fuzz/corpus/TARGET/
# (the replay tests run it in every build) once the bug is fixed. Figures go
# to BUILD_DIR/fuzz-stats.txt as well. Exit status: 0, or 1 if any target
# failed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
build=${1:?usage: run-fuzz.sh BUILD_DIR SECONDS [TARGET...]}
secs=${2:?usage: run-fuzz.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
if (($#)); then
	targets=("$@")
else
	mapfile -t targets < <(find "$build/tests/fuzz" -maxdepth 1 -type f -name 'fuzz-*' -perm -u+x \
		-printf '%f\n' | sed 's/^fuzz-//' | sort)
fi
((${#targets[@]})) || { echo "run-fuzz: no fuzz-* binaries in $build/tests/fuzz" >&2; exit 1; }
stats=$build/fuzz-stats.txt
: >"$stats"
# run_one TARGET: fuzz one target, print its line; exit status 1 on a finding.
run_one()
{
	local t=$1 bin seeds work art log rc=0 execs elapsed ncorpus status line
	bin=$build/tests/fuzz/fuzz-$t
	seeds=tests/fuzz/corpus/$t
	work=$build/fuzz-work/$t
	art=$build/fuzz-artifacts/$t
	mkdir -p "$work" "$art"
	log=$build/fuzz-$t.log
	# -timeout: one input may take 25 s at most (a hang is a finding);
	# -rss_limit_mb: a client or a file must not make us allocate without bound.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
		timeout --kill-after=10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=25 \
		-rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
		-artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
	ncorpus=$(find "$work" -type f | wc -l)
	status=OK
	if ((rc != 0)); then
		status="CRASH (exit $rc; see $log and $art/)"
		grep -E 'ERROR: |SUMMARY: |runtime error' "$log" | head -n 5 >&2
	fi
	line="fuzz: $t: ${execs:-0} executions in ${elapsed:-$secs} s ($(((${execs:-0}) / (${elapsed:-$secs} > 0 ? ${elapsed:-$secs} : 1))) exec/s), corpus $ncorpus inputs: $status"
	# One short write each: lines of targets running at once do not mix.
	echo "$line"
	echo "$line" >>"$stats"
	((rc == 0))
}

# VSTOR_FUZZ_JOBS targets run at once (default 1); each is one process.
njobs=${VSTOR_FUZZ_JOBS:-1}
((njobs >= 1)) || njobs=1
failed=0
running=0
for t in "${targets[@]}"; do
	if ((running >= njobs)); then
		wait -n || failed=1
		running=$((running - 1))
	fi
	run_one "$t" &
	running=$((running + 1))
done
while ((running > 0)); do
	wait -n || failed=1
	running=$((running - 1))
done
exit $failed
