"""The demo upstream: the repository maker and the Rust workspace it packs.

The builds here are real (cargo, and nvcc for CUDA); each takes seconds.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from buildlib.demo.upstream import (COMMITS_AFTER_LAST_TAG, EXAMPLE, GIT_DEPENDENCY_CRATE, GIT_DEPENDENCY_URL, RELEASES,
                                    create_demo_repo, server_packages, vendor_checksums)
from buildlib.pipeline.verify import VerifyError, cuda_images, cuobjdump_images, embedded_images, find_cuobjdump
from buildlib.run import UserError
from pipeline import git

TAGS = [tag for tag, _ in RELEASES]
# The vendored third-party crates: name -> (license, license_file, kind of dependency).
THIRD_PARTY = {
    "demo-escape": ("Apache-2.0 OR MIT", None, "normal"),
    "demo-banner": (None, "LICENSE", "normal"),
    "demo-tensor": ("MIT OR Apache-2.0", None, "normal"),  # from git
    "demo-crc": ("BSD-3-Clause", None, "normal"),  # through demo-tensor
    "demo-buildinfo": ("Zlib", None, "build"),
    "demo-testkit": ("MPL-2.0", None, "dev"),
}
FATBIN_MAGIC = 0xBA55ED50
FATBIN_PTX, FATBIN_ELF = 1, 2

needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo not on PATH")
needs_nvcc = pytest.mark.skipif(
    shutil.which(os.environ.get("NVCC", "nvcc")) is None, reason="nvcc not on PATH"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return create_demo_repo(tmp_path_factory.mktemp("upstream") / "demo.git")


def checkout(demo, tag: str, dest: Path) -> Path:
    """Clone the demo repository at tag, as the pipeline's fetch would."""
    subprocess.run(
        ["git", "-c", "advice.detachedHead=false", "clone", "--quiet", "--branch", tag, str(demo.path), str(dest)],
        check=True,
    )
    return dest


def shim(bindir: Path, name: str, script: str) -> None:
    """A fake program on PATH (a shell script)."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def cargo_build(src: Path, target: Path, features: str, **env: str) -> subprocess.CompletedProcess:
    """`cargo build --release --locked` of the binary; env entries override,
    an entry set to "" is removed. The caller checks the result."""
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_COMPUTE_CAP", "CARGO_BUILD_RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "NVCC")
    }
    full.update(RUSTFLAGS="-C target-cpu=generic", CARGO_TARGET_DIR=str(target), CARGO_NET_OFFLINE="true")
    full.update(env)
    full = {k: v for k, v in full.items() if v != ""}
    argv = ["cargo", "build", "--release", "--locked", "-p", "mistralrs-cli"]
    if features:
        argv += ["--features", features]
    return subprocess.run(argv, cwd=src, env=full, capture_output=True, text=True, timeout=600)


def run_bin(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def fatbin_entries(data: bytes) -> list[tuple[int, int]]:
    """(kind, sm arch) of each entry of the fatbins embedded in data.

    Fatbin header: magic u32, version u16, header size u16, payload size u64.
    Entry header: kind u16, _ u16, header size u32, payload size u64, ...,
    arch u32 at offset 28. Only headers are read: payloads may be compressed.
    """
    entries = []
    start = data.find(struct.pack("<I", FATBIN_MAGIC))
    while start != -1:
        _, _, header_size, size = struct.unpack_from("<IHHQ", data, start)
        offset, end = start + header_size, start + header_size + size
        while offset < end:
            kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", data, offset)
            (arch,) = struct.unpack_from("<I", data, offset + 28)
            entries.append((kind, arch))
            offset += entry_header_size + payload_size
        start = data.find(struct.pack("<I", FATBIN_MAGIC), end)
    return entries


def libcuda_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


# --- the repository ---------------------------------------------------------


def test_tags_and_history(demo):
    assert demo.tags == tuple(TAGS)
    assert sorted(git(demo.path, "tag").split()) == sorted(TAGS)
    assert git(demo.path, "symbolic-ref", "--short", "HEAD") == "master"
    assert git(demo.path, "rev-parse", "master") == demo.head
    assert git(demo.path, "rev-list", "--count", "v0.9.2..master") == str(COMMITS_AFTER_LAST_TAG)
    # Tags in history order, each on its own commit, all on master.
    commits = [git(demo.path, "rev-parse", f"{t}^{{commit}}") for t in TAGS]
    assert len(set(commits)) == len(TAGS)
    for older, newer in zip(TAGS, TAGS[1:]):
        git(demo.path, "merge-base", "--is-ancestor", older, newer)
    git(demo.path, "merge-base", "--is-ancestor", TAGS[-1], "master")
    assert git(demo.path, "status", "--porcelain") == ""


@pytest.mark.parametrize("ref, version", [*RELEASES, ("master", RELEASES[-1][1])])
def test_versions_in_cargo_files(demo, ref, version):
    manifest = tomllib.loads(git(demo.path, "show", f"{ref}:Cargo.toml"))
    assert manifest["workspace"]["package"]["version"] == version
    lock = tomllib.loads(git(demo.path, "show", f"{ref}:Cargo.lock"))
    members = {p["name"]: p["version"] for p in lock["package"] if "source" not in p}
    assert members == {"mistralrs-core": version, **{name: version for name in server_packages(version)}}
    # No build output or absolute paths of the machine slipped in.
    files = git(demo.path, "ls-tree", "-r", "--name-only", ref).splitlines()
    assert not [f for f in files if f.startswith("target/")]
    assert "LICENSE" in files and ".cargo/config.toml" in files


def test_deterministic_and_reused(demo, tmp_path):
    again = create_demo_repo(tmp_path / "again")
    assert again.head == demo.head and again.tags == demo.tags
    # Same destination: returned as is, not remade.
    mtime = (demo.path / ".git" / "HEAD").stat().st_mtime_ns
    assert create_demo_repo(demo.path) == demo
    assert (demo.path / ".git" / "HEAD").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_refuses_foreign_or_changed_destination(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    with pytest.raises(UserError, match="not a demo upstream repository"):
        create_demo_repo(other)
    assert (other / "file").read_text() == "x"

    # An empty directory is fine.
    (tmp_path / "empty").mkdir()
    assert create_demo_repo(tmp_path / "empty").tags == tuple(TAGS)

    changed = create_demo_repo(tmp_path / "changed")
    git(changed.path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "--allow-empty", "-m", "x")
    with pytest.raises(UserError, match="master has changed"):
        create_demo_repo(changed.path)


@pytest.mark.slow
def test_module_entry_point(tmp_path):
    dest = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "buildlib.demo.upstream", str(dest)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "v0.9.2-rc1" in proc.stdout
    assert git(dest, "describe", "--tags", "--abbrev=0", "master") == "v0.9.2"


@needs_cargo
@pytest.mark.parametrize("tag", TAGS)
def test_lockfile_current_at_every_tag(demo, tmp_path, tag):
    src = checkout(demo, tag, tmp_path / "src")
    proc = subprocess.run(
        ["cargo", "metadata", "--locked", "--offline", "--format-version", "1"],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    packages = json.loads(proc.stdout)["packages"]
    members = {p["name"]: p["version"] for p in packages if p["source"] is None}
    assert members == {"mistralrs-core": tag[1:], **{name: tag[1:] for name in server_packages(tag[1:])}}
    assert {p["name"] for p in packages if p["source"]} == set(THIRD_PARTY)


# --- the builds -------------------------------------------------------------


@pytest.mark.slow
@needs_cargo
@needs_nvcc
def test_cuda_build(demo, tmp_path):
    src = checkout(demo, "v0.9.1", tmp_path / "src")
    proc = cargo_build(src, tmp_path / "target", "cuda flash-attn", CUDA_COMPUTE_CAP="89")
    assert proc.returncode == 0, proc.stderr
    binary = tmp_path / "target" / "release" / "mistralrs"

    assert run_bin(binary, "--version").stdout == "mistralrs 0.9.1\n"
    info = run_bin(binary, "info")
    assert info.returncode == 0
    assert json.loads(info.stdout) == {
        "name": "mistralrs",
        "version": "0.9.1",
        "compute_cap": "89",
        "features": ["cuda", "flash-attn"],
        "cuda": True,
    }
    assert info.stdout.count("\n") == 1

    data = binary.read_bytes()
    assert b".target sm_89\n" in data  # the PTX text
    assert re.findall(rb"\.target sm_(\d+)", data) == [b"89"]
    # The fatbin: SASS for sm_89 and PTX for compute_89, nothing else.
    assert sorted(fatbin_entries(data)) == [(FATBIN_PTX, 89), (FATBIN_ELF, 89)]

    if libcuda_present():
        pytest.skip("libcuda.so.1 is installed here: the no-driver path can't be checked")
    selftest = run_bin(binary, "selftest")
    assert selftest.returncode == 2
    assert selftest.stderr.startswith("error: NVIDIA driver library libcuda.so.1 not found: ")


@needs_cargo
@pytest.mark.parametrize("nvidia_smi", ["missing", "failing"])
def test_cuda_build_without_compute_cap_fails_clearly(demo, tmp_path, nvidia_smi):
    src = checkout(demo, "v0.9.2", tmp_path / "src")
    bindir = tmp_path / "bin"
    if nvidia_smi == "failing":
        # What nvidia-smi says on a machine without a working driver.
        said = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
        shim(bindir, "nvidia-smi", f'echo "{said}"; exit 9')
    elif shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is on PATH here")
    shim(bindir, "nvcc", "exit 99")  # never reached
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    proc = cargo_build(src, tmp_path / "target", "cuda", PATH=path)
    assert proc.returncode != 0
    why = "could not be run" if nvidia_smi == "missing" else "failed (exit status: 9: NVIDIA-SMI has failed"
    assert f"CUDA_COMPUTE_CAP is not set and nvidia-smi {why}" in proc.stderr
    assert "Set CUDA_COMPUTE_CAP to the target's compute capability" in proc.stderr


@pytest.mark.slow
@needs_cargo
@pytest.mark.parametrize("value", ["8.6", "sm_90", "90a", "x"])
def test_cuda_build_rejects_malformed_compute_cap(demo, tmp_path, value):
    src = checkout(demo, "v0.9.2", tmp_path / "src")
    proc = cargo_build(src, tmp_path / "target", "nccl", CUDA_COMPUTE_CAP=value)
    assert proc.returncode != 0
    assert f"invalid compute capability {json.dumps(value)} (from CUDA_COMPUTE_CAP)" in proc.stderr


@pytest.mark.slow
@needs_cargo
def test_cpu_build_needs_no_nvcc(demo, tmp_path):
    src = checkout(demo, "v0.9.2", tmp_path / "src")
    bindir = tmp_path / "bin"
    used = tmp_path / "nvcc-was-run"
    shim(bindir, "nvcc", f"touch '{used}'; exit 1")
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    proc = cargo_build(src, tmp_path / "target", "", PATH=path, NVCC=str(bindir / "nvcc"))
    assert proc.returncode == 0, proc.stderr
    assert not used.exists()
    binary = tmp_path / "target" / "release" / "mistralrs"

    info = json.loads(run_bin(binary, "info").stdout)
    assert info == {"name": "mistralrs", "version": "0.9.2", "compute_cap": None, "features": [], "cuda": False}
    selftest = run_bin(binary, "selftest")
    assert (selftest.returncode, selftest.stderr) == (2, "error: built without CUDA\n")
    bad = run_bin(binary, "--bogus")
    assert bad.returncode == 2 and "usage:" in bad.stderr and bad.stdout == ""
    assert b"\x50\xed\x55\xba" not in binary.read_bytes()

    # serve: prints where it listens, answers /health and /v1/models.
    server = subprocess.Popen(
        [str(binary), "serve", "-m", "demo/model", "--host", "127.0.0.1", "--port", "0", "--ignored", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
            assert (resp.status, resp.read()) == (200, b"ok")
        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as resp:
            assert [m["id"] for m in json.load(resp)["data"]] == ["demo/model"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/nope", timeout=10)
        assert err.value.code == 404
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "ignoring unsupported argument '--ignored 1'" in server.stderr.read()


# --- upstream's renames, third-party crates, both kinds of GPU code ---------


def test_server_packages_follow_upstream_history(demo):
    """Up to 0.6.x only mistralrs-server; 0.7.0-0.8.4 both; from 0.8.5 only mistralrs-cli."""
    expected = {
        "v0.6.0": {"mistralrs-server": "mistralrs-server"},
        "v0.7.0": {"mistralrs-server": "mistralrs-server", "mistralrs-cli": "mistralrs"},
        "v0.8.4": {"mistralrs-server": "mistralrs-server", "mistralrs-cli": "mistralrs"},
        "v0.8.5": {"mistralrs-cli": "mistralrs"},
        "v0.9.2": {"mistralrs-cli": "mistralrs"},
        "master": {"mistralrs-cli": "mistralrs"},
    }
    for ref, servers in expected.items():
        members = tomllib.loads(git(demo.path, "show", f"{ref}:Cargo.toml"))["workspace"]["members"]
        assert sorted(members) == sorted(["mistralrs-core", *servers]), ref
        for package, binary in servers.items():
            manifest = tomllib.loads(git(demo.path, "show", f"{ref}:{package}/Cargo.toml"))
            assert manifest["package"]["name"] == package
            assert [b["name"] for b in manifest["bin"]] == [binary]
        files = git(demo.path, "ls-tree", "-r", "--name-only", ref).splitlines()
        for gone in {"mistralrs-server", "mistralrs-cli"} - set(servers):
            assert not [f for f in files if f.startswith(f"{gone}/")], (ref, gone)


def test_vendored_checksums_are_current():
    """Cargo checks them at every build; python -m buildlib.demo_upstream --refresh-vendor rewrites them."""
    for crate in sorted((EXAMPLE / "vendor").iterdir()):
        recorded = json.loads((crate / ".cargo-checksum.json").read_text())
        assert recorded == vendor_checksums(crate), crate.name
    lock = tomllib.loads((EXAMPLE / "Cargo.lock").read_text())
    sums = {p["name"]: p.get("checksum") for p in lock["package"] if "source" in p}
    for name, checksum in sums.items():
        assert json.loads((EXAMPLE / "vendor" / name / ".cargo-checksum.json").read_text())["package"] == checksum
    assert sums[GIT_DEPENDENCY_CRATE] is None and all(v for k, v in sums.items() if k != GIT_DEPENDENCY_CRATE)


def test_git_dependency_is_a_real_commit(demo):
    """The rev Cargo.lock names is the git dependency repository's commit, whose
    tree is the vendored crate."""
    lock = tomllib.loads(git(demo.path, "show", "master:Cargo.lock"))
    (source,) = [p["source"] for p in lock["package"] if p["name"] == GIT_DEPENDENCY_CRATE]
    assert source.startswith(f"git+{GIT_DEPENDENCY_URL}?rev=")
    rev = source.rpartition("#")[2]
    assert git(demo.git_dependency, "rev-parse", "HEAD") == rev
    tracked = set(git(demo.git_dependency, "ls-files").splitlines())
    vendored = {p.relative_to(EXAMPLE / "vendor" / GIT_DEPENDENCY_CRATE).as_posix()
                for p in (EXAMPLE / "vendor" / GIT_DEPENDENCY_CRATE).rglob("*") if p.is_file()}
    assert tracked == vendored - {".cargo-checksum.json"}


@pytest.mark.slow
@needs_cargo
@pytest.mark.parametrize("tag", ["v0.6.0", "v0.9.2"])
def test_offline_build_from_vendored_crates(demo, tmp_path, tag):
    """An empty CARGO_HOME and no network: every third-party crate comes from
    vendor/; cargo metadata shows their licenses and kinds of dependency."""
    src = checkout(demo, tag, tmp_path / "src")
    env = dict(os.environ, CARGO_HOME=str(tmp_path / "cargo-home"), CARGO_NET_OFFLINE="true")
    proc = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1"],
                          cwd=src, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    packages = {p["name"]: p for p in meta["packages"]}
    for name, (license, license_file, _) in THIRD_PARTY.items():
        assert packages[name]["license"] == license, name
        assert (packages[name]["license_file"] or "").endswith(license_file or "") and \
            bool(packages[name]["license_file"]) == bool(license_file), name
    assert packages[GIT_DEPENDENCY_CRATE]["source"].startswith(f"git+{GIT_DEPENDENCY_URL}")
    kinds = {(d["name"], d["kind"] or "normal") for p in meta["packages"] if p["source"] is None for d in p["dependencies"]}
    assert ("demo-buildinfo", "build") in kinds and ("demo-testkit", "dev") in kinds

    (package, binary), *_ = server_packages(tag[1:]).items()
    proc = cargo_build(src, tmp_path / "target", "", CARGO_HOME=str(tmp_path / "cargo-home"))
    if package != "mistralrs-cli":
        proc = subprocess.run(["cargo", "build", "--release", "--locked", "--offline", "-p", package], cwd=src,
                              env=dict(env, CARGO_TARGET_DIR=str(tmp_path / "target")), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert run_bin(tmp_path / "target" / "release" / binary, "--version").stdout == f"{binary} {tag[1:]}\n"
    assert not (tmp_path / "cargo-home" / "registry").exists() and not (tmp_path / "cargo-home" / "git").exists()


@pytest.mark.slow
@needs_cargo
def test_old_server_command_line(demo, tmp_path):
    """v0.6.0's mistralrs-server: no serve subcommand; `--serve-ip H --port P plain -m MODEL`."""
    src = checkout(demo, "v0.6.0", tmp_path / "src")
    proc = subprocess.run(["cargo", "build", "--release", "--locked", "--offline", "-p", "mistralrs-server"], cwd=src,
                          env=dict(os.environ, CARGO_TARGET_DIR=str(tmp_path / "target")), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    binary = tmp_path / "target" / "release" / "mistralrs-server"
    assert run_bin(binary, "serve", "-m", "x").returncode == 2
    server = subprocess.Popen([str(binary), "--serve-ip", "127.0.0.1", "--port", "0", "plain", "-m", "demo/model"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", server.stdout.readline())
        assert match
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/v1/models", timeout=10) as resp:
            assert [m["id"] for m in json.load(resp)["data"]] == ["demo/model"]
    finally:
        server.terminate()
        server.wait(timeout=10)


FLAVOURS = {name: f["compute_cap"] for name, f in tomllib.loads(
    (Path(__file__).resolve().parent.parent / "config.toml").read_text())["flavours"].items()}


@pytest.fixture(scope="module")
def gpu_build(demo, tmp_path_factory):
    """One checkout of v0.9.2 and one target directory for the flavours'
    builds: each flavour's compute capability reruns the build script and
    recompiles the workspace's crates, the third-party crates are compiled
    once."""
    work = tmp_path_factory.mktemp("gpu-build")
    return checkout(demo, "v0.9.2", work / "src"), work / "target"


@pytest.mark.slow
@needs_cargo
@needs_nvcc
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_both_kinds_of_gpu_code_found_by_cuobjdump_and_the_reader(gpu_build, tmp_path, monkeypatch, flavour):
    """The PTX kernel as text in .rodata, the static library's fatbin in
    .nv_fatbin; cuobjdump and the project's reader list the same fatbin."""
    cc = FLAVOURS[flavour]
    src, target = gpu_build
    proc = cargo_build(src, target, "cuda flash-attn nccl", CUDA_COMPUTE_CAP=str(cc))
    assert proc.returncode == 0, proc.stderr
    # a copy: the next flavour's build writes the same path
    binary = tmp_path / "mistralrs"
    shutil.copy2(target / "release" / "mistralrs", binary)
    found = sorted((i.kind, i.arch, i.where.split(" at ")[0]) for i in embedded_images(binary))
    assert found == [("elf", cc, "fatbinary in .nv_fatbin"), ("ptx", cc, "PTX text in .rodata"),
                     ("ptx", cc, "fatbinary in .nv_fatbin")]
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        pytest.skip("cuobjdump is not installed (requirements.txt: nvidia-cuda-cuobjdump)")
    assert sorted((i.kind, i.arch) for i in cuobjdump_images(binary, cuobjdump)) == [("elf", cc), ("ptx", cc)]
    images, method = cuda_images(binary)
    assert method == "embedded images + cuobjdump" and len(images) == 3
    # Without a driver it still starts; selftest says why it can't run.
    assert run_bin(binary, "--version").stdout == "mistralrs 0.9.2\n"
    if not libcuda_present():
        selftest = run_bin(binary, "selftest")
        assert selftest.returncode == 2
        assert selftest.stderr.startswith("error: NVIDIA driver library libcuda.so.1 not found: ")

    # A cuobjdump that disagrees with the reader (here: another architecture)
    # gets the binary refused, naming both findings.
    bindir = tmp_path / "bin"
    shim(bindir, "cuobjdump", f'echo "ELF file    1: mistralrs.1.sm_{cc + 1}.cubin"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(VerifyError, match=rf"cuobjdump lists elf sm_{cc + 1} in .nv_fatbin but the "
                                          rf"embedded-image reader finds elf sm_{cc}, ptx sm_{cc}"):
        cuda_images(binary)
