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

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "config.toml"


def project_config() -> dict:
    return tomllib.loads(CONFIG.read_text())


def write_config(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def demo_config(directory: Path, upstream: Path, cache: Path, flavours: tuple[str, ...] = ("ampere", "hopper"),
                **changes) -> dict:
    """The project's config.toml pointed at the demo upstream, with paths
    under directory and the given flavours only."""
    data = project_config()
    data["upstream"]["url"] = str(upstream)
    data["build"]["min_free_gib"] = 1
    # The demo upstream links no cuDNN or NCCL and clones no CUTLASS.
    data["doctor"] = {"skip": ["cudnn", "nccl", "cutlass"]}
    data["flavours"] = {k: v for k, v in data["flavours"].items() if k in flavours}
    data["package"]["payload"] = "w3T0.zstdio"
    data["publish"]["target"] = str(directory / "repo")
    data["publish"]["base_url"] = "http://127.0.0.1:1/mistralrs-rpm"
    data["paths"] = {"cache": str(cache), "build": "build", "artifacts": "artifacts", "dist": "dist"}
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
