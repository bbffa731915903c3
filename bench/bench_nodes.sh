#!/bin/sh
# What simulated nodes and srun cost: the smoke suite (8 scenarios, -j 2,
# goldens cached) through the local mpirun, through mpirun --hostfile on 2
# simulated nodes, and, when a Slurm cluster answers (SLURM_CONF, or as root
# a local one from scripts/slurm-local), through srun; alternating rounds.
# Prints the median ratios against the local mpirun of the same round:
# nodes2_over_local, srun_over_local (1.0 = same cost).
# usage: bench/bench_nodes.sh [ROUNDS]
set -eu
ROUNDS=${1:-3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPT_BUILD_DIR:-$REPO/build}/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
SLURM_DIR=
cleanup() {
	[ -n "$SLURM_DIR" ] && "$REPO/scripts/slurm-local" stop "$SLURM_DIR" >/dev/null 2>&1
	rm -rf "$W"
}
trap cleanup EXIT
if [ -z "${SLURM_CONF:-}" ] && [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null; then
	SLURM_DIR=$W/slurm
	"$REPO/scripts/slurm-local" start "$SLURM_DIR" >/dev/null && export SLURM_CONF=$SLURM_DIR/slurm.conf
fi
suite() {   # the options; prints nanoseconds, fails if a scenario does not pass
	t0=$(date +%s%N)
	"$BIN/ckpt-harness" suite "$REPO/scenarios/smoke" -j 2 --cache "$W/cache" "$@" >"$W/out" 2>&1 ||
		{ cat "$W/out" >&2; exit 1; }
	echo $(( $(date +%s%N) - t0 ))
}
suite >/dev/null              # the goldens
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
n2=""; sr=""
for i in $(seq "$ROUNDS"); do
	a=$(suite); b=$(suite --nodes 2)
	n2="$n2 $(echo "$b $a" | awk '{printf "%.3f", $1 / $2}')"
	if [ -n "${SLURM_CONF:-}" ]; then
		c=$(suite --launcher srun)
		sr="$sr $(echo "$c $a" | awk '{printf "%.3f", $1 / $2}')"
	fi
done
echo "nodes_rounds=$ROUNDS"
echo "nodes2_over_local=$(echo "$n2" | median)"
[ -n "$sr" ] && echo "srun_over_local=$(echo "$sr" | median)"
exit 0
