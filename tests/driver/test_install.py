"""Installed like a real tool (issue 16): `cmake --install` into a prefix, the
build directory moved out of the way, and the installed harness, trainer,
fault shim, backends, scenarios and libckpt (through pkg-config) still work;
`--version` everywhere and in the JSON report; the golden cache in the user's
cache directory; `cpack -G DEB` with the archive's packages as dependencies.

Guards against: a tool that works only from its build directory (parts found
through build-tree paths, a cache inside build/), an install that misses a
part, a package whose dependencies do not say what it needs.
"""
import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mpi import BIN, BUILD, REPO

CI_SCENARIOS = len(list((REPO / "scenarios" / "ci").glob("*.yaml")))

TOOLS = ("ckpt-harness", "reftrain", "ckpt-tool")
PRIVATE = ("libckpt-fault-shim.so", "ckpt_beacon.py", "ckpt_trajectory.py", "reftrain-backend-libckpt.so",
           "reftrain-backend-naive.so")
MAN = ("man1/ckpt-harness.1", "man1/reftrain.1", "man1/ckpt-tool.1", "man5/ckpt-harness-scenario.5")
HEADERS = ("ckpt/alert.h", "ckpt/async.h", "ckpt/ckpt.h", "ckpt/comm.h", "ckpt/error.h", "ckpt/fault.h", "ckpt/inspect.h", "reftrain/backend.h",
           "ckpt-harness/beacon.h")
# what the package must depend on: the archive's packages the installed tools use at run time
DEB_DEPENDS = ("openmpi-bin", "libopenmpi3", "libfiu0", "libyaml-0-2", "libjansson4", "libxxhash0")
VERSION_RE = re.compile(r"^(?P<tool>[a-z-]+) (?P<version>\d+\.\d+\.\d+) \(git (?P<commit>[A-Za-z0-9._+-]+)\)$")

SAVE_RESTORE_C = r"""
/* A program outside the tree: one rank, one tensor, save a generation, restore it. */
#include <ckpt/ckpt.h>
#include <stdio.h>
#include <string.h>

static int barrier(void *ctx) { (void)ctx; return 0; }
static int gather(void *ctx, const void *send, size_t bytes, void *recv, int root)
{
	(void)ctx; (void)root;
	memcpy(recv, send, bytes);
	return 0;
}
static int bcast(void *ctx, void *buf, size_t bytes, int root) { (void)ctx; (void)buf; (void)bytes; (void)root; return 0; }

int main(int argc, char **argv)
{
	float w[4] = { 1.5f, -2.25f, 3.0f, 0.125f };
	const float want[4] = { 1.5f, -2.25f, 3.0f, 0.125f };
	ckpt_comm comm = { NULL, 0, 1, barrier, gather, bcast };
	ckpt_config cfg;
	ckpt_state *st;
	ckpt *c;
	ckpt_error err;
	ckpt_restore_info info;
	int rc;

	if (argc != 2 || ckpt_state_new(&st) ||
	    ckpt_state_add_tensor(st, "w", "model", CKPT_STAGE_MODEL, CKPT_F32, w, 4, 4, 0))
		return 2;
	memset(&cfg, 0, sizeof cfg);
	cfg.root = argv[1];
	cfg.keep_last = 3;
	cfg.config_hash = 42;
	if ((rc = ckpt_open(&c, &cfg, &comm, st, &err)) < 0) {
		fprintf(stderr, "open: %s: %s\n", ckpt_strerror(rc), err.msg);
		return 1;
	}
	if ((rc = ckpt_save(c, 7, 0)) < 0) {
		fprintf(stderr, "save: %s: %s\n", ckpt_strerror(rc), ckpt_last_error(c)->msg);
		return 1;
	}
	memset(w, 0, sizeof w);
	if ((rc = ckpt_restore(c, &info)) < 0) {
		fprintf(stderr, "restore: %s: %s\n", ckpt_strerror(rc), ckpt_last_error(c)->msg);
		return 1;
	}
	ckpt_close(c);
	ckpt_state_free(st);
	if (info.step != 7 || memcmp(w, want, sizeof w) != 0) {
		fprintf(stderr, "restored step %llu, w[0] %g: not what was saved\n", (unsigned long long)info.step, w[0]);
		return 1;
	}
	printf("restored %s\n", info.name);
	return 0;
}
"""


def clean_env(home, **extra):
    """The environment of a new user: HOME given, no XDG_CACHE_HOME, nothing pointing into the build."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "CKPT_BUILD_DIR", "PYTHONPATH")}
    env.update(HOME=str(home), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def build_dir_moved_away():
    """Rename the build directory for the duration; always put it back."""
    aside = BUILD.with_name(BUILD.name + ".moved-by-test_install.%d" % os.getpid())
    BUILD.rename(aside)
    try:
        yield
    finally:
        if not BUILD.exists():
            aside.rename(BUILD)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    if not (BUILD / "cmake_install.cmake").exists():
        pytest.fail("no configured build in %s: build first (scripts/test does)" % BUILD)
    p = tmp_path_factory.mktemp("prefix")
    res = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(p)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return p


def version_line(exe):
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60,
                         env=clean_env(Path("/nonexistent")))
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    m = VERSION_RE.match(line)
    assert m, "%s --version printed %r" % (exe, line)
    return m


def built_version():
    """What the build says it is: its generated header."""
    text = (BUILD / "generated" / "ckpt_version.h").read_text()
    return (re.search(r'CKPT_VERSION "([^"]*)"', text).group(1), re.search(r'CKPT_COMMIT "([^"]*)"', text).group(1))


def test_install__puts_every_part_under_the_prefix(prefix):
    for tool in TOOLS:
        assert os.access(prefix / "bin" / tool, os.X_OK), tool
    for part in PRIVATE:
        assert (prefix / "lib" / "ckpt-harness" / part).is_file(), part
    libs = sorted((prefix / "lib").glob("libckpt.so*"))
    assert [p.name for p in libs][:2] == ["libckpt.so", "libckpt.so.0"], libs
    assert (prefix / "lib" / "pkgconfig" / "ckpt.pc").is_file()
    for h in HEADERS:
        assert (prefix / "include" / h).is_file(), h
    share = prefix / "share" / "ckpt-harness" / "scenarios"
    for d in ("ci", "smoke", "shim", "backends", "torch", "field", "nodes"):
        shipped = sorted(p.name for p in (REPO / "scenarios" / d).glob("*.yaml"))
        assert shipped and sorted(p.name for p in (share / d).glob("*.yaml")) == shipped, d
    # the gate itself, whatever it holds today (each folder's files compared above)
    assert len(list((share / "ci").glob("*.yaml"))) == CI_SCENARIOS >= 48
    assert (share / "README.md").read_text() == (REPO / "scenarios" / "README.md").read_text()
    assert (prefix / "share" / "ckpt-harness" / "examples" / "torch" / "train.py").is_file()


def test_install__executables_carry_a_runpath_into_the_prefix_and_no_build_path(prefix):
    def search_paths(f):
        dyn = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True).stdout
        return re.findall(r"\((?:RPATH|RUNPATH)\).*\[(.*)\]", dyn)

    for tool in TOOLS:
        assert search_paths(prefix / "bin" / tool) == ["$ORIGIN/../lib"], tool
    for f in (prefix / "lib").rglob("*.so*"):
        if not f.is_symlink():
            assert not any(str(BUILD) in p or str(REPO) in p for p in search_paths(f)), f


@pytest.mark.parametrize("page", MAN)
def test_install__man_pages_render_without_warnings(prefix, page):
    path = prefix / "share" / "man" / page
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    text = path.read_text()
    assert "@PROJECT_VERSION@" not in text and '"ckpt-harness %s"' % built_version()[0] in text


def test_version__every_tool_says_the_same_version_and_commit(prefix):
    version, commit = built_version()
    for exe in [*(BIN / t for t in TOOLS), *(prefix / "bin" / t for t in TOOLS)]:
        m = version_line(exe)
        assert m["tool"] == exe.name and m["version"] == version and m["commit"] == commit, m.group(0)
    if commit != "unknown":
        # a real commit of this repository (git describe: HASH or TAG-N-gHASH, maybe -dirty)
        sha = re.sub(r"-dirty$", "", commit).rsplit("-g", 1)[-1]
        assert subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", sha + "^{commit}"]).returncode == 0, commit


def test_installed_harness__runs_the_installed_smoke_suite_without_the_build_tree(prefix, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)
    harness = prefix / "bin" / "ckpt-harness"
    share = prefix / "share" / "ckpt-harness" / "scenarios"
    with build_dir_moved_away():
        suite = subprocess.run([str(harness), "suite", str(share / "smoke"), "-j", "2", "--json",
                                str(tmp_path / "smoke.json")], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=900)
        # the fault shim, from lib/ckpt-harness: libckpt's phases named by call and file
        shim = subprocess.run([str(harness), "run", str(share / "shim" / "eio-rename-commit-by-path.yaml"),
                               "--inject", "shim", "--json", str(tmp_path / "shim.json")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        # a backend by name, from lib/ckpt-harness: the naive control loses an acknowledged checkpoint
        naive = subprocess.run([str(harness), "run", str(share / "backends" / "any-kill-at-first-write.yaml"),
                                "--ckpt-backend", "naive", "--json", str(tmp_path / "naive.json"),
                                "--work", str(tmp_path / "naive-work")], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=600)
        # a program of the user's from the installed tree: the PyTorch example finds the harness's
        # Python helpers where the harness says they are ($CKPT_HARNESS_LIBDIR), not in a source tree
        torch_run = subprocess.run([str(harness), "run", str(share / "torch" / "torch-kill-train-step.yaml"),
                                    "--json", str(tmp_path / "torch.json"), "--work", str(tmp_path / "torch-work")],
                                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        version = version_line(harness)
    assert torch_run.returncode == 0, torch_run.stdout + torch_run.stderr
    assert json.loads((tmp_path / "torch.json").read_text())["scenarios"][0]["verdict"] == "PASS"
    assert suite.returncode == 0, suite.stdout + suite.stderr
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["summary"]["passed"] == len(list((share / "smoke").glob("*.yaml"))) == report["summary"]["total"]
    assert report["harness"] == {"name": "ckpt-harness", "version": version["version"], "commit": version["commit"]}
    cache = home / ".cache" / "ckpt-harness"
    assert list(cache.glob("*.jsonl")), "no uninterrupted run cached under HOME/.cache/ckpt-harness"

    assert shim.returncode == 0, shim.stdout + shim.stderr
    s = json.loads((tmp_path / "shim.json").read_text())["scenarios"][0]
    assert s["verdict"] == "PASS" and s["faults_fired"] == s["faults_planned"] > 0, s

    assert naive.returncode == 1, naive.stdout + naive.stderr
    n = json.loads((tmp_path / "naive.json").read_text())["scenarios"][0]
    assert n["verdict"] == "FAIL" and "durable checkpoint was lost" in n["sentence"], n


def test_default_cache__is_xdg_cache_home_then_home_dot_cache(tmp_path):
    """From the build tree too: never build/golden-cache."""
    scenario = REPO / "scenarios" / "smoke" / "kill-between-checkpoints-rank2.yaml"
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    before = set((BUILD / "golden-cache").glob("*")) if (BUILD / "golden-cache").exists() else set()
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(scenario)], cwd=tmp_path,
                         env=clean_env(home, XDG_CACHE_HOME=xdg), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert list((xdg / "ckpt-harness").glob("*.jsonl")), "nothing cached under $XDG_CACHE_HOME/ckpt-harness"
    assert not (home / ".cache").exists()
    # a relative XDG_CACHE_HOME is not a cache directory (XDG): HOME/.cache then
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(scenario)], cwd=tmp_path,
                         env=clean_env(home, XDG_CACHE_HOME="relative/cache"), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert list((home / ".cache" / "ckpt-harness").glob("*.jsonl"))
    assert not (tmp_path / "relative").exists()
    after = set((BUILD / "golden-cache").glob("*")) if (BUILD / "golden-cache").exists() else set()
    assert after == before, "the harness still caches in the build tree"


def test_pkg_config__a_program_outside_the_tree_saves_and_restores_with_installed_libckpt(prefix, tmp_path):
    src = tmp_path / "saverestore.c"
    src.write_text(SAVE_RESTORE_C)
    env = clean_env(tmp_path, PKG_CONFIG_PATH=prefix / "lib" / "pkgconfig")
    with build_dir_moved_away():
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "ckpt"], env=env, capture_output=True,
                               text=True)
        assert flags.returncode == 0, flags.stderr
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "ckpt"], env=env, capture_output=True,
                                text=True).stdout.strip()
        assert Path(libdir).resolve() == (prefix / "lib").resolve()
        cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", str(src), "-o",
                             str(tmp_path / "saverestore"), *flags.stdout.split(), "-Wl,-rpath," + libdir],
                            env=env, capture_output=True, text=True)
        assert cc.returncode == 0, cc.stderr
        run = subprocess.run([str(tmp_path / "saverestore"), str(tmp_path / "root")], env=env,
                             capture_output=True, text=True, timeout=60)
        verify = subprocess.run([str(prefix / "bin" / "ckpt-tool"), "verify", str(tmp_path / "root" /
                                 "step-00000007")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "restored step-00000007\n", run.stdout + run.stderr
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_deb__depends_on_the_archive_packages_and_holds_the_install(tmp_path):
    for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps"):
        if not shutil.which(tool):
            pytest.skip("%s is not installed (Debian: cmake, dpkg, dpkg-dev)" % tool)
    res = subprocess.run(["cpack", "-G", "DEB", "--config", str(BUILD / "CPackConfig.cmake"), "-B", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    debs = list(tmp_path.glob("ckpt-harness_*.deb"))
    assert len(debs) == 1, res.stdout
    info = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Package", "Version", "Depends"], capture_output=True,
                          text=True).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines())
    assert fields["Package"] == "ckpt-harness" and fields["Version"] == built_version()[0]
    depends = {d.strip().split(" ")[0] for d in fields["Depends"].split(",")}
    assert set(DEB_DEPENDS) <= depends, fields["Depends"]
    listing = subprocess.run(["dpkg-deb", "-c", str(debs[0])], capture_output=True, text=True).stdout
    files = {line.split()[5] for line in listing.splitlines()}
    want = {"./usr/bin/" + t for t in TOOLS} | {"./usr/lib/ckpt-harness/" + p for p in PRIVATE} | {
        "./usr/lib/libckpt.so.0", "./usr/lib/pkgconfig/ckpt.pc", "./usr/share/ckpt-harness/scenarios/README.md"} | {
        "./usr/share/man/" + m for m in MAN} | {"./usr/include/" + h for h in HEADERS}
    assert want <= files, sorted(want - files)
    assert len([f for f in files if f.startswith("./usr/share/ckpt-harness/scenarios/ci/") and f.endswith(".yaml")]) == CI_SCENARIOS
