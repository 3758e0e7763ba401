"""No-op benchmark: the pipeline up to date with four 1 GiB artifacts.

Times a no-op `doit` against `python3 -c 'import doit'` in the same run,
right after a build and after the artifacts were `touch`ed with their
content unchanged (doit's default checker would re-hash them on every run).
Target: ratio <= 3 in both cases.

    python bench/bench_noop.py [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

from common import PROJECT, doit_env, median_time, scratch, timed

from buildlib import config as configmod
from buildlib.demo.upstream import create_demo_repo
from buildlib.layout import Layout
from pipeline import demo_config, write_config

FLAVOURS = ("ampere", "ada", "blackwell", "hopper")


def grow(binary, size: int) -> None:
    """Pad a built binary to size bytes with copies of itself (machine code,
    not zeros) and rewrite its build record as the build stage would."""
    record_path = binary.with_name(binary.name + ".json")
    record = json.loads(record_path.read_text())
    seed = binary.read_bytes()
    digest = hashlib.sha256()
    tmp = binary.with_name(binary.name + ".grow")
    with tmp.open("wb") as out:
        written = 0
        while written < size:
            chunk = seed[: size - written]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    record.update(sha256=digest.hexdigest(), size=size)
    record_path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = scratch("noop")
    shutil.rmtree(work)
    work.mkdir(parents=True)
    upstream = create_demo_repo(work / "upstream")
    data = demo_config(work, upstream.path, work / "cache", flavours=FLAVOURS)
    data["package"]["payload"] = "w1T0.zstdio"
    config = write_config(work, data)
    layout = Layout.of(configmod.load(config))
    env = doit_env(config)
    doit = [sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py")]

    print(f"building the demo for {len(FLAVOURS)} flavours ...", flush=True)
    timed(doit, env)
    for flavour in FLAVOURS:
        grow(layout.artifact(flavour), args.size_mib << 20)
    print(f"artifacts grown to {args.size_mib} MiB each; bringing the pipeline up to date ...", flush=True)
    timed(doit, env)

    baseline = median_time([sys.executable, "-c", "import doit"], args.runs)
    after_build = median_time(doit, args.runs, env)
    for flavour in FLAVOURS:
        os.utime(layout.artifact(flavour))
    time.sleep(0.01)
    first_after_touch = timed(doit, env)
    after_touch = median_time(doit, args.runs, env)

    print()
    print(f"{'case':<36} {'seconds':>8} {'ratio':>6}")
    print(f"{'python3 -c import doit (baseline)':<36} {baseline:8.3f} {1.0:6.2f}")
    for name, value in (("no-op doit after a build", after_build),
                        ("first no-op doit after touch", first_after_touch),
                        ("no-op doit after touch (median)", after_touch)):
        print(f"{name:<36} {value:8.3f} {value / baseline:6.2f}")
    worst = max(after_build, first_after_touch, after_touch) / baseline
    print(f"\nworst ratio {worst:.2f} (target <= 3): {'met' if worst <= 3 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
