"""Shared by the benchmarks: timing and a demo pipeline in a scratch folder."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))


def timed(argv: list[str], env: dict | None = None, cwd: Path = PROJECT) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_time(argv: list[str], runs: int, env: dict | None = None) -> float:
    return statistics.median(timed(argv, env) for _ in range(runs))


def scratch(name: str) -> Path:
    path = PROJECT / "build" / "bench" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def doit_env(config: Path) -> dict:
    env = dict(os.environ, MRPM_CONFIG=str(config))
    env.pop("MRPM_REF", None)
    return env
