"""Preflight: what the build host has, and one line per problem, before an
hour-long build starts.

Beyond the toolchain it predicts what would otherwise fail only after the
long compile: the headers and libraries of the enabled features, the
packaging tools, memory for the parallel nvcc jobs, a host compiler nvcc
accepts, CUTLASS (cached, or reachable to clone), and the compile cache
(sccache's version, its backend reachable or writable).
"""

from __future__ import annotations

import re
import shutil

from ..config import Config
from ..layout import Layout
from ..run import UserError
from .cargo import cutlass_commit
from .doctor_checks import (CUTLASS_FEATURES, NATIVE, Check, Probe, cache_checks, compiler_check, cutlass_check,
                            install_hint, memory_check, native_check, probe_nvcc, tool_version, toolkit_roots,
                            version_tuple)
from .doctor_checks import supported_compilers  # noqa: F401  (tests import it from here)

PACKAGING = (
    # (tool, Fedora package, Debian package)
    ("rpmbuild", "rpm-build", "rpm"),
    ("rpmsign", "rpm-sign", "rpm"),
    ("createrepo_c", "createrepo_c", "createrepo-c"),
    ("gpg", "gnupg2", "gnupg"),
)


# --- all checks --------------------------------------------------------------------

def checks(cfg: Config, layout: Layout, probe: Probe = Probe()) -> list[Check]:
    result = []
    path, text = tool_version("git", ["git", "--version"])
    result.append(Check("git", text or "absent", "" if path else "git is not on PATH: install git"))

    for tool in ("rustc", "cargo"):
        path, text = tool_version(tool, [tool, "--version"])
        if path is None:
            result.append(Check(tool, "absent", f"{tool} is not on PATH: install Rust {cfg.build.min_rust} or newer (rustup)"))
            continue
        ok = version_tuple(text) >= version_tuple(cfg.build.min_rust)
        result.append(Check(tool, text, "" if ok else f"{tool} is older than build.min_rust = {cfg.build.min_rust}: run `rustup update`"))

    nvcc, text = tool_version("nvcc", ["nvcc", "--version"])
    if nvcc is None:
        result.append(Check("nvcc", "absent", f"nvcc is not on PATH: install CUDA {cfg.build.cuda_version} and add its bin/ to PATH"))
    else:
        m = re.search(r"release (\d+\.\d+)", text)
        found = m.group(1) if m else "unknown"
        ok = found == cfg.build.cuda_version
        result.append(Check("nvcc", f"CUDA {found} ({nvcc})", "" if ok else
                            f"nvcc is CUDA {found}, build.cuda_version expects {cfg.build.cuda_version}: put the right toolkit first on PATH"))
    probed = probe_nvcc(nvcc) if nvcc else None

    from .verify import find_cuobjdump

    cuobjdump = find_cuobjdump()
    result.append(Check("cuobjdump", cuobjdump or "absent (verify reads the embedded CUDA images itself, unchecked)"))

    skip = set(cfg.doctor.skip)
    skipped = "skipped (doctor.skip)"
    features = {f for flavour in cfg.flavours for f in flavour.features(cfg.build)}
    roots = toolkit_roots(probed.top if probed else None)
    if probed is not None:
        result.append(Check("CUDA toolkit", f"{probed.top} ({probed.how})" if probed.top else f"unknown ({probed.how})"))
    for feature, native in NATIVE.items():
        if feature in skip:
            result.append(Check(native.name, skipped))
        elif feature not in features:
            result.append(Check(native.name, f"not needed (no flavour enables feature {feature})"))
        elif probed is not None and probed.top is None and not roots:
            result.append(Check(native.name, "not checked: the CUDA toolkit is unknown",
                                f"{native.name} (feature {feature}): cannot tell which CUDA toolkit {nvcc} belongs to"
                                f" ({probed.how}: {probed.complaint}); fix nvcc's host compiler or set CUDA_HOME,"
                                " then run doctor again"))
        else:
            result.append(native_check(feature, native, roots, probe, cfg.build.cuda_version))

    for tool, fedora, debian in PACKAGING:
        found_at = shutil.which(tool)
        result.append(Check(tool, found_at or "absent", "" if found_at else f"{tool} is not on PATH: {install_hint(fedora, debian)}"))

    result.append(Check("memory", skipped) if "memory" in skip else memory_check(cfg.build.nvcc_threads, probe.meminfo))
    result.append(Check("host compiler", skipped) if "compiler" in skip else compiler_check(probed, cfg.build.cuda_version))
    if "cutlass" in skip:
        result.append(Check("CUTLASS", skipped))
    elif not features & set(CUTLASS_FEATURES):
        result.append(Check("CUTLASS", "not needed (no CUDA feature enabled)"))
    else:
        result.append(cutlass_check(layout, probe.cutlass_url, cutlass_commit(cfg)))

    if "cache" in skip:
        result.append(Check("compile cache", skipped))
    else:
        result += cache_checks(cfg, layout)

    layout.cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(layout.cache).free / 2**30
    result.append(Check("disk", f"{free:.0f} GiB free in {layout.cache}",
                        "" if free >= cfg.build.min_free_gib else
                        f"only {free:.0f} GiB free in {layout.cache}; the builds want build.min_free_gib = {cfg.build.min_free_gib}"
                        " (`doit clean-cache` frees old versions)"))
    return result


def doctor(cfg: Config, layout: Layout, probe: Probe = Probe()) -> dict:
    found = checks(cfg, layout, probe)
    width = max(len(c.what) for c in found)
    for c in found:
        mark = "FAIL" if c.problem else "ok"
        print(f"  {c.what:<{width}}  {mark:<4}  {c.found}")
    problems = [c.problem for c in found if c.problem]
    if problems:
        raise UserError("preflight found problems:\n" + "\n".join(f"  - {p}" for p in problems))
    print(f"==> doctor: {len(found)} checks passed")
    return {}
