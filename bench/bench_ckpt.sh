#!/usr/bin/env bash
# libckpt save/restore throughput against plain write+fsync / read of the same
# bytes (see bench_ckpt.c), at 256 MiB and 1 GiB of state on 2 and 4 ranks.
#   bench/bench_ckpt.sh [ROUNDS] [SIZES...]     (run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-7}; shift || true
sizes=("${@:-256 1024}")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-ckpt.XXXXXX")
trap 'rm -rf "$work"' EXIT
for mib in ${sizes[@]}; do
	for np in 2 4; do
		rm -rf "$work/run"
		setsid mpirun -np "$np" --oversubscribe --bind-to none --quiet --stdin none \
			--mca btl self,vader --mca btl_vader_single_copy_mechanism none \
			--mca mpi_yield_when_idle 1 --mca orte_tmpdir_base "$work" --timeout 1200 \
			"$repo/build/bin/bench_ckpt" "$work/run" "$mib" "$rounds" |
			sed "s/^/mib${mib}_np${np}_/"
	done
done
