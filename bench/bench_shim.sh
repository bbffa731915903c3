#!/bin/sh
# The fault shim's cost with no fault armed (issue 10's targets), reftrain on
# 4 ranks, with and without LD_PRELOAD=libckpt-fault-shim.so in the ranks, in
# alternating pairs; medians over rounds:
#   shim_step_ratio  tiny, no checkpoints: time with / time without (target <= 1.02)
#   shim_save_ratio  small, a save every step: the seconds libckpt's journal
#                    reports for its saves, with / without (target <= 1.05)
# The shim is loaded with the checkpoint root set and a plan whose one fault
# never matches: every call under the root takes the slow path (descriptor
# table, context, matcher, counters) and nothing fires.
# usage: bench/bench_shim.sh [ROUNDS] [STEPS]
set -eu
ROUNDS=${1:-5}
STEPS=${2:-300}
BUILD=${CKPT_BUILD_DIR:-build}
BIN=$BUILD/bin
SHIM=$(cd "$BUILD/lib" && pwd)/libckpt-fault-shim.so
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
echo "fault attempt=1 rank=-1 step=-1 phase=* op=write nth=1 times=1 path=no-such-file action=kill arg=0 errno=0" \
	>"$W/plan"
launch() {   # launch with|without ARGS...
	mode=$1; shift
	if [ "$mode" = with ]; then
		set -- -x LD_PRELOAD="$SHIM" -x CKPT_HARNESS_CKPT_DIR="$W/ck" -x CKPT_FAULT_PLAN_SHIM="$W/plan" \
			-x CKPT_FAULT_LOG="$W/faults" "$@"
	fi
	mpirun -np 4 --oversubscribe --bind-to none --quiet --stdin none --mca btl self,vader \
		--mca btl_vader_single_copy_mechanism none --mca mpi_yield_when_idle 1 \
		--mca odls_base_sigkill_timeout 0 "$@" >/dev/null
}
step_run() {  # nanoseconds of a tiny run without checkpoints
	rm -rf "$W/ck" "$W/t.jsonl"
	t0=$(date +%s%N)
	launch "$1" "$BIN/reftrain" --preset tiny --steps "$STEPS" --trajectory "$W/t.jsonl"
	echo $(( $(date +%s%N) - t0 ))
}
save_run() {  # seconds of all saves of a small run saving every step, from libckpt's journal
	rm -rf "$W/ck" "$W/t.jsonl"
	mkdir -m 700 "$W/ck"
	launch "$1" "$BIN/reftrain" --preset small --steps 12 --trajectory "$W/t.jsonl" --ckpt-dir "$W/ck" \
		--ckpt-every 1 --keep 2 --resume auto
	grep -h '"event":"save"' "$W/ck/journal/rank-00000.jsonl" | sed 's/.*"seconds":\([0-9.]*\).*/\1/' |
		awk '{s += $1} END {printf "%.6f", s}'
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
step_run without >/dev/null   # warm up
steps="" saves=""
for i in $(seq "$ROUNDS"); do
	a=$(step_run without); b=$(step_run with)
	steps="$steps $(echo "$b $a" | awk '{printf "%.4f", $1 / $2}')"
	a=$(save_run without); b=$(save_run with)
	saves="$saves $(echo "$b $a" | awk '{printf "%.4f", $1 / $2}')"
done
ls "$W"/faults.rank-0.attempt-1.shm >/dev/null 2>&1 || { echo "the shim was not armed" >&2; exit 1; }
[ ! -s "$W/faults.rank-0.jsonl" ] || { echo "a fault fired" >&2; exit 1; }
echo "shim_rounds=$ROUNDS"
echo "shim_step_ratio=$(echo $steps | median)"
echo "shim_save_ratio=$(echo $saves | median)"
