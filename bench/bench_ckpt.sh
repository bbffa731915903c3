#!/usr/bin/env bash
# libckpt save/restore throughput against plain write+fsync / read of the same
# bytes (see bench_ckpt.c), at 256 MiB and 1 GiB of state on 2 and 4 ranks,
# every read from a cold page cache (checked with mincore), and the raw
# device bandwidth measured by fio in the same run (the physical limit:
# sequential 8 MiB writes with a final fsync; O_DIRECT reads).
#   bench/bench_ckpt.sh [ROUNDS] [SIZES...]     (run after a build in build/)
source "$(dirname "$0")/../scripts/common.sh"
rounds=${1:-7}; shift || true
sizes=("${@:-256 1024}")
ensure_packages fio
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-ckpt.XXXXXX")
trap 'rm -rf "$work"' EXIT

# fio_mib_per_s RW MiB: the device's sequential bandwidth for RW (write|read), in MiB/s
fio_mib_per_s() {
	local rw=$1 mib=$2 extra=(--end_fsync=1)
	[ "$rw" = read ] && extra=(--direct=1)
	fio --name=dev --filename="$work/fio.dat" --rw="$rw" --bs=8M --size="${mib}M" --ioengine=psync \
		"${extra[@]}" --output-format=json 2>/dev/null |
		"$(pick_python)" -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]['$rw']; print(f\"{j['bw_bytes']/1048576:.1f}\")"
}

for mib in ${sizes[@]}; do
	echo "mib${mib}_device_write_mib_per_s=$(fio_mib_per_s write "$mib")"
	echo "mib${mib}_device_read_direct_mib_per_s=$(fio_mib_per_s read "$mib")"
	rm -f "$work/fio.dat"
	for np in 2 4; do
		rm -rf "$work/run"
		setsid mpirun -np "$np" --oversubscribe --bind-to none --quiet --stdin none \
			--mca btl self,vader --mca btl_vader_single_copy_mechanism none \
			--mca mpi_yield_when_idle 1 --mca orte_tmpdir_base "$work" --timeout 1200 \
			"$BUILD/bin/bench_ckpt" "$work/run" "$mib" "$rounds" 2>/dev/null |
			sed "s/^/mib${mib}_np${np}_/"
	done
done
