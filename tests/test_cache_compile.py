"""The compile cache ([build.cache], sccache in front of rustc and nvcc) on
the demo upstream with the real tools: a cached build is the same bytes as
an uncached one, a second runner at other paths gets hits from a real
redis-server, a version that changes only Rust code compiles no kernel, the
build record keeps the counts, and a dead backend stops the build before
cargo starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildlib import repro
from buildlib.config import ConfigError, load
from buildlib.demo.upstream import add_rust_only_release
from buildlib.layout import Layout
from buildlib.pipeline import nvcc_relocate
from buildlib.pipeline.records import BuildRecord, RpmRecord

import services
from pipeline import demo_config, project_config, run_doit, write_config

TOOLS = ("cargo", "nvcc", "rpmbuild")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="needs cargo, nvcc and rpmbuild (scripts/bootstrap installs them)")
FLAVOUR = "ampere"


def project(root: Path, upstream: Path, cache: dict | None = None) -> Path:
    """A demo project (ampere only) with every path, the cache too, under root."""
    data = demo_config(root, upstream, root / "cache", flavours=(FLAVOUR,))
    data["build"]["cache"] = cache if cache is not None else {"backend": "local"}
    return write_config(root, data)


def build(config: Path, target: str = f"build:{FLAVOUR}", ref: str = "v0.9.2", home: Path | None = None) -> str:
    env = {"MRPM_REF": ref, **({"CARGO_HOME": str(home)} if home else {})}
    rc, _, out = run_doit(config, target, env=env)
    assert rc == 0, out[-4000:]
    return out


def record(config: Path) -> BuildRecord:
    return BuildRecord.load(Layout.of(load(config)), FLAVOUR)


@pytest.fixture
def redis(tmp_path):
    """A real redis-server on a free local port, in its own directory; its URL."""
    if services.redis_server() is None:
        pytest.skip("needs redis-server (scripts/bootstrap installs it for the test role)")
    with services.redis(tmp_path / "redis") as url:
        yield url


# --- configuration -------------------------------------------------------------------


def parse(tmp_path: Path, cache: dict):
    data = project_config()
    data["build"]["cache"] = cache
    return load(write_config(tmp_path, data)).build.cache


def test_cache_config(tmp_path):
    assert parse(tmp_path, {}).backend == "local"
    assert not parse(tmp_path, {"backend": "off"}).enabled
    shared = parse(tmp_path, {"backend": "redis", "url": "redis://cache.example.org:6379"})
    assert (shared.backend, shared.url) == ("redis", "redis://cache.example.org:6379")
    s3 = parse(tmp_path, {"backend": "s3", "url": "https://s3.example.org", "bucket": "mrpm-cache", "prefix": "ci"})
    assert (s3.bucket, s3.prefix) == ("mrpm-cache", "ci")
    for cache, message in (
        ({"backend": "memcached"}, r'build\.cache\.backend = "memcached": expected "off" or "local"'),
        ({"backend": "redis"}, r"build\.cache\.url is missing"),
        # a password in the config is refused: secrets come from the environment
        ({"backend": "redis", "url": "redis://:hunter2@cache:6379"}, r"SCCACHE_REDIS_PASSWORD, never here"),
        ({"backend": "s3", "url": "https://s3.example.org"}, r'backend "s3" needs a bucket'),
        ({"backend": "local", "url": "redis://x:1"}, r'backend "local" takes no url'),
        ({"size": "lots"}, r'build\.cache\.size = "lots": expected a size such as "20G"'),
        ({"sise": "2G"}, r"unknown key build\.cache\.sise; did you mean 'size'"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse(tmp_path, cache)


# --- the nvcc wrapper's stable copy (pipeline/nvcc_relocate.py) ----------------------


def crate(root: Path, kernel: str = "__global__ void k(int *p) { *p = 1; }\n") -> Path:
    (root / "mistralrs-core" / "kernels").mkdir(parents=True)
    (root / "mistralrs-core" / "kernels" / "k.cu").write_text(kernel)
    return root / "mistralrs-core"


def test_the_copy_is_named_by_the_kernels_content_not_the_path(tmp_path):
    stable = tmp_path / "stable"
    plans = []
    for tree in ("runner-1/src/c1", "runner-2/src/c2"):
        cwd = crate(tmp_path / tree)
        plan = nvcc_relocate.relocated(["-c", "-o", "out/k.o", "kernels/k.cu"], cwd, [tmp_path / tree], stable)
        assert plan is not None
        where, args = plan
        # the output goes where the build script asked, never into the copy
        assert args == ["-c", "-o", str(cwd / "out/k.o"), "kernels/k.cu"]
        assert (where / "kernels" / "k.cu").read_text() == (cwd / "kernels" / "k.cu").read_text()
        plans.append(where)
    assert plans[0] == plans[1] and plans[0].parent.parent == stable
    # another kernel: another copy
    cwd = crate(tmp_path / "runner-3", kernel="__global__ void k(int *p) { *p = 2; }\n")
    assert nvcc_relocate.relocated(["-c", "kernels/k.cu"], cwd, [tmp_path], stable)[0] != plans[0]
    # outside the source roots, or no single relative .cu below cwd: as called
    assert nvcc_relocate.relocated(["-c", "kernels/k.cu"], cwd, [tmp_path / "elsewhere"], stable) is None
    assert nvcc_relocate.relocated(["-c", str(cwd / "kernels/k.cu")], cwd, [tmp_path], stable) is None
    assert nvcc_relocate.absolute_outputs(["--output-file=a.o", "-MF", "d"], cwd) == [
        f"--output-file={cwd / 'a.o'}", "-MF", str(cwd / "d")]


def test_a_stable_directory_others_may_write_is_never_used(tmp_path):
    """The stable copies live at one path in /tmp on every runner: one that
    another user could write into (or a link to one) could hold a planted
    copy named by the digest of public kernels; nvcc then runs as called."""
    cwd = crate(tmp_path / "src")
    args = ["-c", "-o", "out/k.o", "kernels/k.cu"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert nvcc_relocate.relocated(args, cwd, [tmp_path / "src"], shared) is None
    link = tmp_path / "link"
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link.symlink_to(private)
    assert nvcc_relocate.relocated(args, cwd, [tmp_path / "src"], link) is None
    made = tmp_path / "made"  # missing: made private, then used
    assert nvcc_relocate.relocated(args, cwd, [tmp_path / "src"], made) is not None
    assert made.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_an_include_above_the_copied_directory_compiles_as_called(tmp_path):
    """kernels/k.cu includes ../common.h, which the copy lacks: the wrapper
    falls back to nvcc as called, from the crate."""
    cwd = crate(tmp_path / "src", kernel='#include "../common.h"\n__global__ void k(int *p) { *p = VALUE; }\n')
    (cwd / "common.h").write_text("#define VALUE 3\n")
    (cwd / "out").mkdir()
    sccache = shutil.which("sccache", path=str(Path(sys.executable).parent)) or shutil.which("sccache")
    if sccache is None:
        pytest.skip("needs sccache")
    env = {**os.environ, "SCCACHE_DIR": str(tmp_path / "store"), "SCCACHE_SERVER_PORT": str(services.free_port())}
    try:
        done = subprocess.run([sys.executable, "-I", str(nvcc_relocate.__file__), sccache, shutil.which("nvcc"),
                               str(tmp_path / "stable"), str(tmp_path / "src"), "--",
                               "-c", "-arch=sm_80", "-o", "out/k.o", "kernels/k.cu"],
                              cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert (cwd / "out" / "k.o").is_file()
    finally:
        subprocess.run([sccache, "--stop-server"], env=env, capture_output=True)


# --- builds ----------------------------------------------------------------------------


@needs_tools
def test_cached_and_uncached_builds_give_the_same_binary_and_rpm(tmp_path, demo_upstream):
    off = project(tmp_path / "off", demo_upstream.path, {"backend": "off"})
    on = project(tmp_path / "on", demo_upstream.path)
    build(off, f"rpm:{FLAVOUR}", home=tmp_path / "home-off")
    assert record(off).compile_cache is None
    out = build(on, f"build:{FLAVOUR}", home=tmp_path / "home-on")  # cold: fills the cache
    cold = record(on).compile_cache
    assert cold["rustc_hits"] == 0 and cold["nvcc_hits"] == 0 and cold["nvcc_total"] > 0
    # from the cache: a fresh target directory, every compilation a hit
    layout = Layout.of(load(on))
    shutil.rmtree(layout.target_dir(FLAVOUR))
    layout.artifact(FLAVOUR).unlink()  # else the build task is up to date
    out = build(on, f"rpm:{FLAVOUR}", home=tmp_path / "home-on")
    warm = record(on).compile_cache
    assert warm["backend"] == "local"
    # the stage summary says what the cache did
    assert f"rustc {warm['rustc_hits']}/{warm['rustc_total']} cached, nvcc {warm['nvcc_hits']}/" in out

    binaries = [Layout.of(load(c)).artifact(FLAVOUR) for c in (off, on)]
    assert repro.first_binary_difference(*binaries) is None
    assert binaries[0].read_bytes() == binaries[1].read_bytes()
    rpms = [RpmRecord.load(Layout.of(load(c)), FLAVOUR).path for c in (off, on)]
    assert repro.first_difference(*rpms) is None
    assert rpms[0].read_bytes() == rpms[1].read_bytes()
    assert warm["rustc_hits"] == warm["rustc_total"] > 0, warm
    assert warm["nvcc_hits"] == warm["nvcc_total"] > 0, warm


@needs_tools
def test_a_second_runner_at_other_paths_gets_hits_from_redis(tmp_path, demo_upstream, redis):
    """Two runners: other checkout of this project, other cache and target
    directories, other CARGO_HOME; one redis-server between them."""
    shared = {"backend": "redis", "url": redis}
    first = project(tmp_path / "runner-1", demo_upstream.path, shared)
    second = project(tmp_path / "elsewhere" / "runner-two", demo_upstream.path, shared)
    build(first, home=tmp_path / "home-1")
    cold = record(first).compile_cache
    assert cold["nvcc_hits"] == 0 and cold["backend"] == "redis"
    build(second, home=tmp_path / "elsewhere" / "cargo-home-2")
    other = record(second).compile_cache
    # every nvcc step (cudafe++, cicc, ptxas) is shared whatever the paths:
    # SCCACHE_BASEDIRS for the preprocessed sources, the wrapper's stable
    # copy of the kernels for the source path in cicc's arguments; rustc
    # keys on absolute paths (README, "Compile cache").
    assert other["nvcc_hits"] == other["nvcc_total"] == cold["nvcc_total"] > 0, other
    assert record(first).sha256 == record(second).sha256


@needs_tools
def test_a_rust_only_release_compiles_no_kernel(tmp_path, demo_upstream):
    upstream = tmp_path / "upstream"
    subprocess.run(["git", "clone", "--quiet", str(demo_upstream.path), str(upstream)], check=True)
    add_rust_only_release(upstream, "v0.9.3", "0.9.3")
    config = project(tmp_path / "p", upstream)
    build(config, ref="v0.9.2", home=tmp_path / "home")
    first = record(config).compile_cache
    build(config, ref="v0.9.3", home=tmp_path / "home")
    nxt = record(config)
    assert nxt.version == "0.9.3"
    # the version bump reran the kernel build script (a new OUT_DIR, a new
    # source tree): every nvcc step (cudafe++, cicc, ptxas) comes from the
    # cache, as the wrapper compiles from a copy named by the kernels' content
    assert first["nvcc_calls"] > 0 and nxt.compile_cache["nvcc_calls"] == first["nvcc_calls"], (first, nxt.compile_cache)
    assert nxt.compile_cache["nvcc_hits"] == nxt.compile_cache["nvcc_total"] == first["nvcc_total"] > 0, nxt.compile_cache


@needs_tools
def test_a_dead_backend_fails_in_one_line_before_cargo(tmp_path, demo_upstream):
    url = f"redis://127.0.0.1:{services.free_port()}"  # nothing listens there
    config = project(tmp_path / "p", demo_upstream.path, {"backend": "redis", "url": url})
    rc, results, out = run_doit(config, f"build:{FLAVOUR}", env={"MRPM_REF": "v0.9.2"})
    assert rc != 0, out[-3000:]  # (the JSON reporter exits 1; the project's own exits Exit.UNREACHABLE)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    # (run_doit joins stderr and the task's report: the one line appears in both)
    assert len(set(errors)) == 1 and f"compile cache redis {url} does not answer" in errors[0], out[-3000:]
    layout = Layout.of(load(config))
    assert not layout.cargo_messages(FLAVOUR).exists()  # cargo never started
    assert not layout.build_record(FLAVOUR).exists()
