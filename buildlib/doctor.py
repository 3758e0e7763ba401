"""Preflight: what the build host has, and one line per problem, before an
hour-long build starts."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from .config import Config
from .layout import Layout
from .run import UserError, output


@dataclass(frozen=True)
class Check:
    what: str
    found: str
    problem: str = ""


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def _tool(name: str, argv: list[str]) -> tuple[str | None, str]:
    path = shutil.which(name)
    if path is None:
        return None, ""
    return path, output(argv, quiet=True, check=False)


def checks(cfg: Config, layout: Layout) -> list[Check]:
    result = []
    path, text = _tool("git", ["git", "--version"])
    result.append(Check("git", text or "absent", "" if path else "git is not on PATH: install git"))

    for tool in ("rustc", "cargo"):
        path, text = _tool(tool, [tool, "--version"])
        if path is None:
            result.append(Check(tool, "absent", f"{tool} is not on PATH: install Rust {cfg.build.min_rust} or newer (rustup)"))
            continue
        ok = _version(text) >= _version(cfg.build.min_rust)
        result.append(Check(tool, text, "" if ok else f"{tool} is older than build.min_rust = {cfg.build.min_rust}: run `rustup update`"))

    path, text = _tool("nvcc", ["nvcc", "--version"])
    if path is None:
        result.append(Check("nvcc", "absent", f"nvcc is not on PATH: install CUDA {cfg.build.cuda_version} and add its bin/ to PATH"))
    else:
        m = re.search(r"release (\d+\.\d+)", text)
        found = m.group(1) if m else "unknown"
        ok = found == cfg.build.cuda_version
        result.append(Check("nvcc", f"CUDA {found} ({path})", "" if ok else
                            f"nvcc is CUDA {found}, build.cuda_version expects {cfg.build.cuda_version}: put the right toolkit first on PATH"))

    cuobjdump = shutil.which("cuobjdump")
    result.append(Check("cuobjdump", cuobjdump or "absent (verify reads the embedded CUDA images itself)"))

    layout.cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(layout.cache).free / 2**30
    result.append(Check("disk", f"{free:.0f} GiB free in {layout.cache}",
                        "" if free >= cfg.build.min_free_gib else
                        f"only {free:.0f} GiB free in {layout.cache}; the builds want build.min_free_gib = {cfg.build.min_free_gib}"
                        " (`doit clean-cache` frees old versions)"))
    return result


def doctor(cfg: Config, layout: Layout) -> dict:
    found = checks(cfg, layout)
    width = max(len(c.what) for c in found)
    for c in found:
        mark = "FAIL" if c.problem else "ok"
        print(f"  {c.what:<{width}}  {mark:<4}  {c.found}")
    problems = [c.problem for c in found if c.problem]
    if problems:
        raise UserError("preflight found problems:\n" + "\n".join(f"  - {p}" for p in problems))
    print(f"==> doctor: {len(found)} checks passed")
    return {}
