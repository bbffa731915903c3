# Shared by scripts/demo and scripts/test: install what is missing, configure, build.
# Source it; it sets REPO and BUILD.

set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CKPT_BUILD_DIR:-$REPO/build}
export CKPT_BUILD_DIR=$BUILD

PACKAGES=(build-essential cmake ninja-build pkg-config git
          openmpi-bin libopenmpi-dev libfiu-dev fiu-utils libcmocka-dev libxxhash-dev libjansson-dev libyaml-dev libsodium-dev libssl-dev
          python3 python3-pytest python3-numpy python3-xxhash python3-torch python3-skorch
          chromium    # headless, renders the HTML report in tests/driver/test_html_report.py
          ccache)     # scripts/mutants (tests/driver/test_mutants.py) builds every mutant through one cache
# tests/driver/test_nodes.py: a local Slurm cluster (scripts/slurm-local) for the srun launcher
SLURM_PACKAGES=(slurm-wlm munge)
# scripts/fuzz: clang with libFuzzer and the sanitizer runtimes
FUZZ_PACKAGES=(clang libclang-rt-14-dev)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_packages [PACKAGE...]: those (default: PACKAGES)
ensure_packages() {
	local missing=() p want=("$@")
	[ ${#want[@]} -gt 0 ] || want=("${PACKAGES[@]}")
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing missing packages: ${missing[*]}"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# configure_and_build DIR [cmake args...]
configure_and_build() {
	local dir=$1; shift
	log "building in ${dir#$REPO/}"
	cmake -S "$REPO" -B "$dir" -G Ninja "$@" >/dev/null
	cmake --build "$dir" -- -j"$(nproc)" >/dev/null
}

# The driver needs Debian's pytest: python3 on PATH may be another interpreter.
pick_python() {
	local py
	for py in /usr/bin/python3 python3; do
		if command -v "$py" >/dev/null && "$py" -c 'import pytest' 2>/dev/null; then
			echo "$py"; return 0
		fi
	done
	echo "no python3 with pytest found" >&2
	return 1
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
