#!/usr/bin/env bash
# Chaos against seeded bugs: for each mutant below, build it
# (build-chaos-mutants/NAME), run `ckpt-harness chaos --first` with the stated
# budget until a run FAILs, shrink it, replay the shrunk scenario 10 times on
# the mutant (each must FAIL) and once on the correct build in build/ (it
# must PASS: the scenario catches the bug, not the harness). Prints a table
# and name=value lines; exits 1 if a mutant is not found within its budget,
# shrinks to more than 2 faults, or replays other than 10/10.
#   bench/chaos_mutants.sh [--only m1,m2] [--seed S]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seed=1 only=""
while [ $# -gt 0 ]; do
	case "$1" in
	--only) only=$2; shift 2 ;;
	--seed) seed=$2; shift 2 ;;
	*) echo "bench/chaos_mutants.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# NAME  CLASS  FAULT-KINDS  BUDGET(runs)  TRAINER (chaos options; - for the default: tiny, 2 ranks,
# 20 steps, a save every 5, keep 2). shuffle_seed_not_saved shows only after tiny's first epoch (64
# steps). cleanup_deletes_committed (start-up cleanup deletes committed generations: what is kept) is
# caught before any plan, by chaos's preflight (the trainer fails a plain stop and resume): its row
# has no fault. retention_deletes_newest is not here: reftrain also keeps the generation tagged
# "best", and on tiny every save is the best so far, so no chaos plan reaches it (600 runs of
# kill,errno,transient found nothing); the crash-state exploration catches it. The retention of
# incremental checkpoints is: base_deleted_with_gen (retention deletes a generation's chunks with
# it, shared or not) with incr-retention-long-chain's trainer as the base (a full save every 5,
# keep 2, half the model frozen).
table="skip_file_fsync durability all 200 -
ignore_short_write durability all 400 -
shuffle_seed_not_saved state all 300 --steps,80,--every,10,--ckpt-keep,2
no_fallback restore all 300 -
cleanup_deletes_committed retention all 100 -
base_deleted_with_gen retention kill,transient,power_loss 100 --scenario,$repo/scenarios/ci/incr-retention-long-chain.yaml"
out=$(mktemp -d "${TMPDIR:-/tmp}/chaos-mutants.XXXXXX")
good="$repo/build/bin/ckpt-harness"
status=0
printf '%-28s %-10s %-22s %6s %6s %7s %7s %6s %6s %8s %7s\n' mutant class kinds budget runs seconds planned shrunk ratio replays correct
while read -r name class kinds budget trainer; do
	[ -n "$only" ] && case ",$only," in *",$name,"*) ;; *) continue ;; esac
	dir="$repo/build-chaos-mutants/$name"
	cmake -S "$repo" -B "$dir" -G Ninja -DCKPT_MUTANT="$name" >/dev/null
	cmake --build "$dir" --target reftrain ckpt-harness ckpt-fault-shim >/dev/null || { echo "$name: build failed"; status=1; continue; }
	extra=()
	[ "$trainer" != - ] && IFS=, read -r -a extra <<<"$trainer"
	t0=$(date +%s.%N)
	"$dir/bin/ckpt-harness" chaos --seed "$seed" --runs "$budget" --first -j 2 --faults "$kinds" "${extra[@]}" \
		--cache "$out/cache-$name" --out "$out/found-$name" >"$out/$name.txt" 2>"$out/$name.err"
	t1=$(date +%s.%N)
	line=$(grep '^found ' "$out/$name.txt" | head -1)
	runs=$(sed -n 's/.*: \([0-9]*\) runs, .*/\1/p' "$out/$name.txt" | head -1)
	runs=${runs:-0}      # 0: found before any plan (the preflight)
	if [ -z "$line" ]; then
		printf '%-28s %-10s %-22s %6s %6s %7.0f %7s %6s %6s %8s %7s\n' "$name" "$class" "$kinds" "$budget" "${runs:-?}" \
			"$(echo "$t1 - $t0" | bc)" - - - - "NOT FOUND"
		status=1
		continue
	fi
	file=$(echo "$line" | awk '{print $2}')
	planned=$(echo "$line" | sed 's/.*planned=\([0-9]*\).*/\1/')
	shrunk=$(echo "$line" | sed 's/.*shrunk=\([0-9]*\).*/\1/')
	fails=0
	for i in $(seq 1 10); do
		"$dir/bin/ckpt-harness" run "$file" --cache "$out/cache-$name" >/dev/null 2>&1
		[ $? -eq 1 ] && fails=$((fails + 1))
	done
	"$good" run "$file" --cache "$out/cache-good" >/dev/null 2>&1
	rc=$?
	correct=$([ $rc -eq 0 ] && echo PASS || echo "rc=$rc")
	ratio=$(awk -v p="$planned" -v s="$shrunk" 'BEGIN { if (s == 0) print "-"; else printf "%.2f", p / s }')
	[ "$shrunk" -gt 2 ] || [ "$fails" -ne 10 ] || [ "$rc" -ne 0 ] && status=1
	printf '%-28s %-10s %-22s %6s %6s %7.0f %7s %6s %6s %8s %7s\n' "$name" "$class" "$kinds" "$budget" "$runs" \
		"$(echo "$t1 - $t0" | bc)" "$planned" "$shrunk" "$ratio" "$fails/10" "$correct"
	cp "$file" "$out/$name.yaml"
	echo "chaos_mutant_${name}_runs_to_find=$runs"
	echo "chaos_mutant_${name}_shrunk_faults=$shrunk"
	echo "chaos_mutant_${name}_replays_failing=$fails"
done <<<"$table"
echo "scenarios and logs: $out"
exit $status
