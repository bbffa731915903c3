#!/bin/sh
# The injector's trail (CKPT_FAULT_TRAIL, see harness/inject.h) on a run with
# no fault: reftrain tiny on 4 ranks, checkpointing every 10 steps, with and
# without the trail in alternating pairs. Prints trail_cost_ratio: the median
# over rounds of (time with the trail) / (time without); 1.0 = free.
# usage: bench/bench_trail.sh [ROUNDS] [STEPS]
set -eu
ROUNDS=${1:-5}
STEPS=${2:-400}
BIN=${CKPT_BUILD_DIR:-build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
run() {   # $1: with or without
	rm -rf "$W/ck" "$W/t.jsonl" "$W/trail".*
	t0=$(date +%s%N)
	if [ "$1" = with ]; then set -- -x CKPT_FAULT_TRAIL="$W/trail"; else set --; fi
	mpirun -np 4 --oversubscribe --bind-to none --quiet --stdin none --mca btl self,vader \
		--mca btl_vader_single_copy_mechanism none --mca mpi_yield_when_idle 1 \
		--mca odls_base_sigkill_timeout 0 "$@" "$BIN/reftrain" --preset tiny --steps "$STEPS" \
		--trajectory "$W/t.jsonl" --ckpt-dir "$W/ck" --ckpt-every 10 --keep 3 --resume auto >/dev/null
	echo $(( $(date +%s%N) - t0 ))
}
run without >/dev/null        # warm the page cache
ratios=""
for i in $(seq "$ROUNDS"); do
	a=$(run without); b=$(run with)
	ratios="$ratios $(echo "$b $a" | awk '{printf "%.4f", $1 / $2}')"
	[ -s "$W/trail.rank-0" ] || { echo "the trail was not written" >&2; exit 1; }
done
echo "trail_rounds=$ROUNDS"
echo "trail_steps=$STEPS"
echo "trail_cost_ratio=$(echo $ratios | tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')"
