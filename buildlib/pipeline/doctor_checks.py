"""doctor's checks by kind: the CUDA toolkit and the feature libraries in
it, memory for the parallel nvcc jobs, the host compiler nvcc accepts,
CUTLASS (cached, or reachable to clone) and the compile cache (sccache's
version, its backend reachable or writable).  :mod:`buildlib.pipeline.doctor`
runs them in order with the tool checks and prints the table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..layout import Layout
from ..run import HostNotReady, Unreachable, output, run
from . import compile_cache


@dataclass(frozen=True)
class Check:
    what: str
    found: str
    problem: str = ""


NVCC_JOB_GIB = 5.0
"""Peak memory of one parallel nvcc job (build.nvcc_threads, passed on as
CUDAFORGE_THREADS): upstream's flash-attn kernels peak near 5 GB each."""

CUTLASS_URL = "https://github.com/NVIDIA/cutlass.git"
"""Where the CUDA kernels' build scripts (cudaforge) clone CUTLASS from
when $CUDAFORGE_HOME holds no checkout."""
CUTLASS_FEATURES = ("cuda", "flash-attn", "flash-attn-v3")
"""Features whose kernels are compiled with CUTLASS."""
NETWORK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Native:
    """A feature's build-time headers and library, and the packages that
    bring them ({cuda}: the CUDA major version)."""

    name: str
    header: str
    library: str
    """The link name (lib*.so); the runtime's lib*.so.N alone does not link."""
    fedora: str
    debian: str


NATIVE = {
    "cudnn": Native("cuDNN", "cudnn.h", "libcudnn.so", "libcudnn9-devel-cuda-{cuda}", "libcudnn9-dev-cuda-{cuda}"),
    "nccl": Native("NCCL", "nccl.h", "libnccl.so", "libnccl-devel", "libnccl-dev"),
}


@dataclass(frozen=True)
class Probe:
    """Where doctor looks on this machine; tests point it at stand-ins.
    The CUDA toolkit's own directories come from $CUDA_HOME (or
    $CUDA_PATH, $CUDA_TOOLKIT_ROOT_DIR) and from the nvcc on PATH."""

    meminfo: Path = Path("/proc/meminfo")
    include_dirs: tuple[Path, ...] = (Path("/usr/include"), Path("/usr/include/x86_64-linux-gnu"))
    lib_dirs: tuple[Path, ...] = (Path("/usr/lib64"), Path("/usr/lib/x86_64-linux-gnu"))
    cutlass_url: str = CUTLASS_URL


def version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def tool_version(name: str, argv: list[str]) -> tuple[str | None, str]:
    path = shutil.which(name)
    if path is None:
        return None, ""
    return path, output(argv, quiet=True, check=False)


def install_hint(fedora: str, debian: str) -> str:
    return f"install Fedora `{fedora}` (Debian `{debian}`)"


# --- the CUDA toolkit ----------------------------------------------------------

@dataclass(frozen=True)
class Nvcc:
    top: Path | None
    """The toolkit nvcc belongs to; None where nothing can tell."""
    complaint: str = ""
    """nvcc's own error when it cannot use its host compiler."""
    how: str = "nvcc's dry run"
    """How top was found (doctor says which directory it searched, and why)."""


def _dry_run(nvcc: str, env: dict[str, str] | None) -> tuple[Path | None, str]:
    """(TOP from nvcc's dry run, its last complaint)."""
    proc = run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull], capture=True, check=False, quiet=True,
               env=env, inherit_env=env is None)
    text = proc.stderr.decode(errors="replace")
    m = re.search(r"^#\$ TOP=(.+)$", text, re.M)
    last = [" ".join(line.split()).rstrip(".") for line in text.splitlines() if line.strip() and not line.startswith("#$")][-1:]
    complaint = "" if proc.returncode == 0 else (last[0] if last else f"exit code {proc.returncode}")
    return (Path(m.group(1).strip()).resolve() if m else None), complaint


def probe_nvcc(nvcc: str) -> Nvcc:
    """nvcc's toolkit (its TOP) as nvcc itself finds it, also when PATH holds
    a wrapper script: nvcc says so in a dry run, after asking its host
    compiler what it targets.  Where that host compiler is broken (an
    NVCC_CCBIN naming nothing), the dry run is asked again without
    NVCC_CCBIN: the toolkit does not depend on the compiler.  Only a real
    nvcc binary's own directory is taken as a last resort; a wrapper
    script's directory says nothing, and then the toolkit is unknown rather
    than guessed (a guess sent maintainers to install packages they had)."""
    top, complaint = _dry_run(nvcc, None)
    if top is not None and not complaint:
        return Nvcc(top)
    if os.environ.get("NVCC_CCBIN"):
        env = {k: v for k, v in os.environ.items() if k != "NVCC_CCBIN"}
        again, _ = _dry_run(nvcc, env)
        if again is not None:
            return Nvcc(again, complaint, "nvcc's dry run without NVCC_CCBIN")
    if top is not None:
        return Nvcc(top, complaint)
    binary = Path(nvcc).resolve()
    try:
        with open(binary, "rb") as f:
            script = f.read(2) == b"#!"
    except OSError:
        script = True
    if script:
        return Nvcc(None, complaint, f"{nvcc} is a script and its dry run failed")
    return Nvcc(binary.parent.parent, complaint, f"the directory of {binary}")


def toolkit_roots(top: Path | None) -> list[Path]:
    """The CUDA toolkit as the build sees it: the variables upstream's link
    step reads, then the toolkit of the nvcc on PATH."""
    roots = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH", "CUDA_TOOLKIT_ROOT_DIR") if os.environ.get(v)]
    if top is not None:
        roots.append(top)
    return list(dict.fromkeys(roots))


def native_check(feature: str, native: Native, roots: list[Path], probe: Probe, cuda_version: str) -> Check:
    """A feature's header and link library, looked for where the build's
    compiler and linker look: the toolkit, then the system directories."""
    target = Path("targets") / "x86_64-linux"
    include = [r / sub for r in roots for sub in (Path("include"), target / "include")] + list(probe.include_dirs)
    lib = [r / sub for r in roots for sub in (Path("lib64"), Path("lib"), target / "lib")] + list(probe.lib_dirs)
    header = next((d for d in include if (d / native.header).is_file()), None)
    library = next((d for d in lib if (d / native.library).exists()), None)
    if header and library:
        return Check(native.name, f"{header / native.header}, {library / native.library}")
    missing = [name for name, where in ((native.header, header), (native.library, library)) if where is None]
    runtime = sorted(p.name for d in lib if d.is_dir() for p in d.glob(native.library + ".*"))
    hint = f" (only the runtime's {runtime[0]}; linking needs {native.library})" if runtime and library is None else ""
    cuda = cuda_version.split(".")[0]
    places = ", ".join(str(r) for r in roots) or "no CUDA toolkit"
    system = ", ".join(str(d) for d in probe.include_dirs + probe.lib_dirs)
    return Check(native.name, "missing " + ", ".join(missing) + hint,
                 f"{native.name} (feature {feature}): no {' and no '.join(missing)}{hint} in {places} or {system}: "
                 f"{install_hint(native.fedora.format(cuda=cuda), native.debian.format(cuda=cuda))} from NVIDIA's CUDA repository")


# --- memory ----------------------------------------------------------------------

def meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo's fields, in bytes."""
    fields = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(\w+):\s+(\d+)\s*kB", line)
        if m:
            fields[m.group(1)] = int(m.group(2)) * 1024
    return fields


def memory_check(nvcc_threads: int, path: Path) -> Check:
    """Memory available now against build.nvcc_threads parallel nvcc jobs of
    NVCC_JOB_GIB each, with the number of jobs that fit."""
    try:
        fields = meminfo(path)
    except OSError as e:
        return Check("memory", f"unknown ({path}: {e.strerror})")
    available = fields.get("MemAvailable", fields.get("MemFree"))
    if available is None:
        return Check("memory", f"unknown (no MemAvailable in {path})")
    gib = available / 2**30
    fits = int(gib // NVCC_JOB_GIB)
    need = nvcc_threads * NVCC_JOB_GIB
    found = (f"{gib:.1f} GiB available of {fields.get('MemTotal', available) / 2**30:.1f} GiB: room for {fits}"
             f" nvcc jobs of ~{NVCC_JOB_GIB:.0f} GiB; build.nvcc_threads = {nvcc_threads}")
    if gib >= need:
        return Check("memory", found)
    if fits < 1:
        fix = f"even one nvcc job wants ~{NVCC_JOB_GIB:.0f} GiB: add memory or swap, and set build.nvcc_threads = 1"
    else:
        fix = f"set build.nvcc_threads = {fits}"
    return Check("memory", found, f"only {gib:.1f} GiB of memory available for build.nvcc_threads = {nvcc_threads} "
                                  f"parallel nvcc jobs (~{NVCC_JOB_GIB:.0f} GiB each): {fix}")


# --- the host compiler -----------------------------------------------------------

def supported_compilers(host_config: str) -> dict[str, tuple[int | None, int | None]]:
    """{"gcc"|"clang": (lowest, highest) major version} from the #if guarding
    nvcc's "unsupported GNU/clang version" errors in crt/host_config.h."""
    lines = host_config.splitlines()
    ranges = {}
    for name, marker, macro in (("gcc", "unsupported GNU version", "__GNUC__"),
                                ("clang", "unsupported clang version", "__clang_major__")):
        at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("#error") and marker in line), None)
        if at is None:
            continue
        cond = next((lines[j] for j in range(at - 1, -1, -1) if lines[j].lstrip().startswith("#if")), "")
        high = re.search(rf"{macro}\s*>\s*(\d+)", cond)
        high_eq = re.search(rf"{macro}\s*>=\s*(\d+)", cond)
        low = re.search(rf"{macro}\s*<\s*(\d+)", cond)
        ranges[name] = (int(low.group(1)) if low else None,
                        int(high.group(1)) if high else int(high_eq.group(1)) - 1 if high_eq else None)
    return ranges


def host_compiler() -> tuple[str, str | None]:
    """(what nvcc would use, its path): $NVCC_CCBIN (a compiler, or a
    directory holding gcc), else gcc on PATH, as nvcc itself chooses."""
    ccbin = os.environ.get("NVCC_CCBIN")
    if not ccbin:
        return "gcc", shutil.which("gcc")
    if Path(ccbin).is_dir():
        candidate = Path(ccbin) / "gcc"
        return f"NVCC_CCBIN={ccbin}", str(candidate) if os.access(candidate, os.X_OK) else None
    return f"NVCC_CCBIN={ccbin}", shutil.which(ccbin)


def compiler_check(nvcc: Nvcc | None, cuda_version: str) -> Check:
    if nvcc is None:
        return Check("host compiler", "not checked (no nvcc)")
    label, path = host_compiler()
    if path is None:
        fix = ("point NVCC_CCBIN at a g++ or at a directory holding gcc" if label != "gcc"
               else install_hint("gcc-c++", "g++"))
        return Check("host compiler", f"{label}: absent", f"no host compiler for nvcc ({label} not found): {fix}")
    if nvcc.complaint:
        return Check("host compiler", f"{path}: refused by nvcc",
                     f"nvcc {cuda_version} cannot use its host compiler {path} ({label}): {nvcc.complaint}: "
                     "point NVCC_CCBIN at a g++ for x86_64 Linux")
    top = nvcc.top
    if top is None:
        return Check("host compiler", f"{path}: not checked (the CUDA toolkit is unknown)",
                     f"cannot tell which CUDA toolkit nvcc belongs to ({nvcc.how}): set CUDA_HOME")
    header = next((p for p in (top / "include" / "crt" / "host_config.h",
                               top / "targets" / "x86_64-linux" / "include" / "crt" / "host_config.h") if p.is_file()), None)
    if header is None:
        return Check("host compiler", f"no crt/host_config.h in {top}",
                     f"nvcc's toolkit {top} has no include/crt/host_config.h: reinstall CUDA {cuda_version}")
    ranges = supported_compilers(header.read_text(errors="replace"))
    text = run([path, "-dM", "-E", "-x", "c++", os.devnull], capture=True, check=False, quiet=True).stdout.decode(errors="replace")
    macros = dict(re.findall(r"^#define (__GNUC__|__clang_major__) (\d+)$", text, re.M))
    if "__GNUC__" not in macros:
        return Check("host compiler", f"{path}: not gcc or clang",
                     f"host compiler {path} is neither gcc nor clang (no __GNUC__): nvcc {cuda_version} accepts only those; "
                     "point NVCC_CCBIN at a g++")
    kind, major = ("clang", int(macros["__clang_major__"])) if "__clang_major__" in macros else ("gcc", int(macros["__GNUC__"]))
    low, high = ranges.get(kind, (None, None))
    accepted = (f"{low} to {high}" if low is not None and high is not None else f"up to {high}" if high is not None
                else f"from {low}" if low is not None else "any version")
    found = f"{kind} {major} ({path}); nvcc {cuda_version} accepts {kind} {accepted}"
    if (low is None or major >= low) and (high is None or major <= high):
        return Check("host compiler", found)
    gcc_low, gcc_high = ranges.get("gcc", (None, None))
    wanted = gcc_low if kind == "gcc" and low is not None and major < low else gcc_high
    fix = (f"{install_hint(f'gcc{wanted}-c++', f'g++-{wanted}')} and set NVCC_CCBIN=/usr/bin/g++-{wanted}" if wanted is not None
           else "point NVCC_CCBIN at a g++ it accepts")
    return Check("host compiler", found,
                 f"host compiler {kind} {major} ({label}) is outside what nvcc {cuda_version} accepts ({kind} {accepted},"
                 f" {header.relative_to(top)}): {fix}")


# --- CUTLASS -----------------------------------------------------------------------

CUTLASS_HEADER = Path("include") / "cutlass" / "cutlass.h"


def _checkout_head(checkout: Path) -> str:
    """The commit a git checkout has out ('' if it is not one)."""
    proc = run(["git", "-C", checkout, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
               capture=True, check=False, quiet=True, env={"GIT_CEILING_DIRECTORIES": str(checkout.parent)})
    head = proc.stdout.decode(errors="replace").strip()
    return head if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", head) else ""


def cached_cutlass(checkouts: Path, commit: str) -> tuple[Path | None, str]:
    """(the usable checkout, or None; what is wrong with the one there).  With
    a commit configured (the [[bundled]] entry "cutlass"), the checkout named
    after it must have that commit out and CUTLASS's main header; without
    one (upstream's build scripts pin theirs), any such checkout counts.  An
    empty directory with the right name is no checkout."""
    if shutil.which("git") is None:
        return None, ""
    candidates = [checkouts / f"cutlass-{commit[:16]}"] if commit else sorted(checkouts.glob("cutlass-*"))
    wrong = ""
    for checkout in candidates:
        if not checkout.is_dir():
            continue
        head = _checkout_head(checkout)
        if commit and head != commit:
            wrong = (f"{checkout} has {('commit ' + head[:12]) if head else 'no git checkout'} out, not"
                     f" {commit[:12]} (the [[bundled]] cutlass commit)")
        elif not (checkout / CUTLASS_HEADER).is_file():
            wrong = f"{checkout} lacks {CUTLASS_HEADER}"
        elif head:
            return checkout, ""
    return None, wrong


def cutlass_check(layout: Layout, url: str, commit: str = "") -> Check:
    """A cached CUTLASS checkout in the build's CUDAFORGE_HOME at the
    configured commit, else the network to clone one: without either the
    build fails after its long compile."""
    checkouts = layout.cudaforge_home / "git" / "checkouts"
    cached, wrong = cached_cutlass(checkouts, commit)
    if cached is not None:
        return Check("CUTLASS", f"cached checkout {cached}" + (f" at {commit[:12]}" if commit else ""))
    if wrong:
        return Check("CUTLASS", f"unusable checkout in {checkouts}",
                     f"CUTLASS: {wrong}; remove it, and the build clones the right one")
    if shutil.which("git") is None:
        return Check("CUTLASS", "not checked (no git)")
    try:
        proc = run(["git", "ls-remote", "--exit-code", url, "HEAD"], capture=True, check=False, quiet=True,
                   timeout=NETWORK_TIMEOUT, env={"GIT_TERMINAL_PROMPT": "0"})
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        ok, reason = False, [f"no answer in {NETWORK_TIMEOUT:.0f} s"]
    if ok:
        return Check("CUTLASS", f"no checkout yet; {url} reachable (the build clones it)")
    return Check("CUTLASS", f"no checkout in {checkouts}; {url} unreachable",
                 f"CUTLASS: no checkout in {checkouts} and {url} is unreachable ({reason[0]}): "
                 "the build would fail where it clones it; give the host access to github.com or copy a "
                 "CUTLASS checkout there as cutlass-<the first 16 hex digits of its commit>")


# --- the compile cache -------------------------------------------------------------

SCCACHE_MINIMUM = (0, 14)
"""SCCACHE_BASEDIRS, which lets runners at other paths share nvcc's steps,
came with 0.14; the nvcc wrapper was tried with requirements.txt's pin."""


def cache_checks(cfg: Config, layout: Layout) -> list[Check]:
    """sccache's version and [build.cache]'s backend: a build with neither
    fails before cargo, and one with a dead shared backend would otherwise
    be found only then."""
    cache = cfg.build.cache
    if not cache.enabled:
        return [Check("sccache", 'not needed ([build.cache] backend = "off")')]
    try:
        sccache = compile_cache.sccache_path()
    except HostNotReady as e:
        return [Check("sccache", "absent", str(e))]
    found = compile_cache.sccache_version(sccache)
    pin = compile_cache.SCCACHE_VERSION
    note = "" if found == pin else f" (requirements.txt pins {pin})"
    old = version_tuple(found) < SCCACHE_MINIMUM
    result = [Check("sccache", f"{found} ({sccache}){note}",
                    f"sccache {found} is older than {'.'.join(map(str, SCCACHE_MINIMUM))} (no SCCACHE_BASEDIRS): "
                    f"install requirements.txt's sccache=={pin} (scripts/bootstrap)" if old else "")]
    what = f"compile cache ({compile_cache.describe(cache)})"
    if cache.backend == "local":
        store = layout.compile_cache
        try:
            store.mkdir(parents=True, exist_ok=True)
            writable = os.access(store, os.W_OK | os.X_OK)
        except OSError:
            writable = False
        result.append(Check("compile cache", f"{store}" + ("" if writable else " not writable"),
                            "" if writable else f"{what}: {store} is not writable: fix its owner or paths.cache"))
    else:
        try:
            compile_cache.check_reachable(cache)
            result.append(Check("compile cache", f"{compile_cache.describe(cache)} answers"))
        except Unreachable as e:
            result.append(Check("compile cache", f"{compile_cache.describe(cache)} does not answer", str(e)))
    return result
