#!/usr/bin/env bash
# The cost of sealing (issue 14: <= 15% of save and restore time): the same
# bench_ckpt job (save with fsyncs, manifest, rename; restore with full
# verification, every read from an empty page cache) without a key and with
# one (CKPT_KEY_FILE), alternated round by round in the same run. Per round
# the ratio sealed time / plain time of save and of restore; the median,
# minimum and maximum over rounds. Target: both medians <= 1.15.
#   bench/bench_seal.sh [ROUNDS] [MiB] [RANKS]     (run after a build in build/)
source "$(dirname "$0")/../scripts/common.sh"
rounds=${1:-5} mib=${2:-256} np=${3:-2}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-seal.XXXXXX")
trap 'rm -rf "$work"' EXIT
head -c 32 /dev/urandom >"$work/key"
chmod 600 "$work/key"

# one_round [KEYFILE]: bench_ckpt's save and restore MiB/s for one round, "SAVE RESTORE"
one_round() {
	rm -rf "$work/run"
	env ${1:+CKPT_KEY_FILE=$1} setsid mpirun -np "$np" --oversubscribe --bind-to none --quiet --stdin none \
		-x CKPT_KEY_FILE --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
		--mca mpi_yield_when_idle 1 --mca orte_tmpdir_base "$work" --timeout 1200 \
		"$BUILD/bin/bench_ckpt" "$work/run" "$mib" 1 2>/dev/null |
		awk -F= '/^ckpt_save_mib_per_s=/ {s=$2} /^ckpt_restore_verified_mib_per_s=/ {r=$2} END {print s, r}'
}

ratios_save=() ratios_restore=()
for ((i = 0; i < rounds; i++)); do
	read -r ps pr < <(one_round "")
	read -r ss sr < <(one_round "$work/key")
	# time ratio = plain throughput / sealed throughput
	ratios_save+=("$(awk -v a="$ps" -v b="$ss" 'BEGIN {printf "%.3f", a / b}')")
	ratios_restore+=("$(awk -v a="$pr" -v b="$sr" 'BEGIN {printf "%.3f", a / b}')")
	echo "round${i}_plain_save_mib_per_s=$ps round${i}_sealed_save_mib_per_s=$ss round${i}_plain_restore_mib_per_s=$pr round${i}_sealed_restore_mib_per_s=$sr" >&2
done
stats() { # NAME VALUES...: median, min, max
	local name=$1; shift
	printf '%s\n' "$@" | sort -g | awk -v n="$name" '{v[NR] = $1} END {
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%s_median=%.3f\n%s_min=%.3f\n%s_max=%.3f\n", n, m, n, v[1], n, v[NR]}'
}
echo "seal_state_mib=$mib"
echo "seal_ranks=$np"
echo "seal_rounds=$rounds"
stats seal_save_time_ratio "${ratios_save[@]}"
stats seal_restore_time_ratio "${ratios_restore[@]}"
