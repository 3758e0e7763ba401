"""Helpers shared by the tests: a demo upstream, configs made from the
project's own config.toml, and doit run as users run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import tomli_w
from pathlib import Path

from buildlib.demo.driver import DEMO_BUNDLED, DEMO_CRATE_LICENSES

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "config.toml"
CUDA_SONAMES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
                "libnvrtc.so.13", "libcudnn.so.9", "libnccl.so.2")
"""The CUDA libraries a flavour links, by soname (conftest's pkg_libs stands in for them)."""


def project_config() -> dict:
    return tomllib.loads(CONFIG.read_text())


def write_config(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def demo_config(directory: Path, upstream: Path, cache: Path, flavours: tuple[str, ...] = ("ampere", "hopper"),
                gate: str | None = None, **changes) -> dict:
    """The project's config.toml pointed at the demo upstream, with paths
    under directory and the given flavours only (gate: every flavour's
    `gate`, "off" where a test has no GPU runner and promotes untested)."""
    data = project_config()
    data["upstream"]["url"] = str(upstream)
    data["build"]["min_free_gib"] = 1
    # The demo upstream links no cuDNN or NCCL and clones no CUTLASS.
    data["doctor"] = {"skip": ["cudnn", "nccl", "cutlass"]}
    data["flavours"] = {k: v for k, v in data["flavours"].items() if k in flavours}
    if gate is not None:
        for flavour in data["flavours"].values():
            flavour["gate"] = gate
    data["package"]["payload"] = "w3T0.zstdio"
    data["publish"]["target"] = str(directory / "repo")
    data["publish"]["base_url"] = "http://127.0.0.1:1/mistralrs-rpm"
    data["paths"] = {"cache": str(cache), "build": "build", "artifacts": "artifacts", "dist": "dist"}
    data["bundled"], data["crate_license"] = DEMO_BUNDLED, DEMO_CRATE_LICENSES
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        table = data
        for p in parents:
            table = table.setdefault(p, {})
        table[last] = value
    return data


def run_doit(config: Path, *args: str, env: dict | None = None) -> tuple[int, dict[str, str], str]:
    """doit as a user runs it (a subprocess), with the JSON reporter.

    Returns the exit code, {task name: result} and everything the run
    printed (the reporter keeps each task's output apart; joined here).
    """
    full_env = dict(os.environ, MRPM_CONFIG=str(config))
    full_env.pop("MRPM_REF", None)
    full_env.pop("MRPM_CACHE", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), "--reporter", "json", *args],
                          cwd=PROJECT, env=full_env, capture_output=True, text=True)
    results: dict[str, str] = {}
    output = [proc.stderr]
    if proc.stdout.strip():
        report = json.loads(proc.stdout)
        output += [report.get("err", ""), report.get("out", "")]
        for task in report["tasks"]:
            results[task["name"]] = task["result"]
            output += [task.get("out", ""), task.get("err", ""), task.get("error") or ""]
    return proc.returncode, results, "\n".join(o for o in output if o)


def ran(results: dict[str, str]) -> set[str]:
    """Tasks (with actions) that ran in a doit run."""
    return {name for name, result in results.items() if result != "up-to-date" and ":" in name or
            name in {"fetch", "publish", "doctor"} and result != "up-to-date"}


# --- tools the tests share ---------------------------------------------------


def git(repo: Path, *args: str, date: str | None = None) -> str:
    """git in a test's repository, isolated from the user's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_AUTHOR_NAME="Test",
               GIT_AUTHOR_EMAIL="test@example.invalid", GIT_COMMITTER_NAME="Test",
               GIT_COMMITTER_EMAIL="test@example.invalid")
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def vercmp(a: str, b: str) -> int:
    """rpm's own comparison of two versions (or EVRs), via rpm's Lua, as
    rpmdev-vercmp asks it."""
    for v in (a, b):
        assert re.fullmatch(r"[A-Za-z0-9._+~^:-]+", v), v
    out = subprocess.run(["rpm", "--eval", f'%{{lua: print(rpm.vercmp("{a}", "{b}"))}}'],
                         check=True, capture_output=True, text=True).stdout.strip()
    return int(out)


def label_compare(a: tuple[str, str, str], b: tuple[str, str, str]) -> int:
    """The same question to rpm's Python bindings (the venv's rpm shim loads
    the system's), as dnf itself asks it."""
    import rpm

    return rpm.labelCompare(a, b)
