"""Launching MPI jobs the way PLATFORM-NOTES.md says works here.

Each job runs in its own session (setsid) with its own directory for Open MPI's
session files and shared memory, under a watchdog; whatever happens, the whole
session is killed and the directory removed before we return.
"""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CKPT_BUILD_DIR", REPO / "build"))
BIN = BUILD / "bin"


def mpirun_argv(np, jobdir, timeout, mca=()):
    argv = [
        "mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none", "--quiet",
        "--stdin", "none",
        "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none",
        # as harness/launch.c: no UCX or libfabric probing at MPI_Init
        "--mca", "pml", "ob1", "--mca", "osc", "^ucx", "--mca", "mtl", "^ofi,psm,psm2",
        "--mca", "mpi_yield_when_idle", "1", "--mca", "odls_base_sigkill_timeout", "0",
        "--mca", "btl_vader_backing_directory", str(jobdir),
        "--mca", "orte_tmpdir_base", str(jobdir), "--timeout", str(timeout),
    ]
    for key, value in mca:
        argv += ["--mca", key, str(value)]
    return argv


def run_mpi(np, program_args, timeout=120, mca=(), mpirun_args=(), env=None):
    """Run `program_args` on np ranks; returns CompletedProcess (text).

    mpirun_args go to mpirun before the program (e.g. -x NAME=value); env is
    mpirun's own environment (default: ours)."""
    env = dict(os.environ if env is None else env, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    jobdir = Path(tempfile.mkdtemp(prefix="ckpt-job-"))
    argv = mpirun_argv(np, jobdir, timeout, mca) + [str(a) for a in mpirun_args] + [str(a) for a in program_args]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        out, err = "", "watchdog: job exceeded %d s" % (timeout + 30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(jobdir, ignore_errors=True)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def reftrain(np, trajectory, *args, mca=(), timeout=120):
    return run_mpi(np, [BIN / "reftrain", "--trajectory", trajectory, *args], timeout=timeout, mca=mca)
