#!/usr/bin/env bash
# The cost of sealing (issue 14: <= 15% of save and restore time): libckpt
# without a key and with one (bench_ckpt's KEYFILE mode), two roots saved and
# restored by the same ranks in the same rounds, which of the two goes first
# alternating from round to round. Save: fsyncs, manifest, rename; restore:
# full verification, every read from an empty page cache. Per round the
# ratio sealed time / unsealed time of save and of restore; the median,
# minimum and maximum over rounds. Target: both medians <= 1.15. The same
# ratios of CPU seconds (seal_*_cpu_ratio) tell the device's swings from the
# code's cost.
#   bench/bench_seal.sh [ROUNDS] [MiB] [RANKS]     (run after a build in build/)
# CKPT_SEAL_ENGINE=libsodium measures libsodium's own secretstream instead of
# libcrypto's (ckpt/src/secretstream.h).
source "$(dirname "$0")/../scripts/common.sh"
rounds=${1:-15} mib=${2:-256} np=${3:-2}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-seal.XXXXXX")
trap 'rm -rf "$work"' EXIT
head -c 32 /dev/urandom >"$work/key"
chmod 600 "$work/key"

echo "seal_state_mib=$mib"
echo "seal_ranks=$np"
setsid mpirun -np "$np" --oversubscribe --bind-to none --quiet --stdin none \
	-x CKPT_SEAL_ENGINE --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
	--mca mpi_yield_when_idle 1 --mca orte_tmpdir_base "$work" --timeout 1200 \
	"$BUILD/bin/bench_ckpt" "$work/run" "$mib" "$rounds" "$work/key" 2>"$work/rounds" | grep '^seal_'
grep '^round' "$work/rounds" >&2 || true
