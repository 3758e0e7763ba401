"""Compile-cache benchmark: what [build.cache] saves on the demo upstream.

(a) a cold build of one flavour (empty cache, empty target directory);
(b) the same tag on a second "runner": another project directory, cache,
    target directory and CARGO_HOME, at other paths;
(c) the next version (a tag that changes only Rust code) on the first
    runner, whose kernels are unchanged.
Both runners share one redis-server that this script starts on a free
local port ([build.cache] backend = "redis"; the local backend lives under
each runner's own cache, so it is not shared).  Each case is a `doit
build:<flavour>` with the real tools; the counts come from its build record.
"Kernels compiled" counts nvcc's device steps (cudafe++, cicc, ptxas) that
ran instead of coming from the cache.  Targets: Y/X <= 0.3, Z/X <= 0.5,
N = 0.

    python bench/bench_cache.py [--flavour ampere]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from common import PROJECT, doit_env, scratch, timed

from buildlib import config as configmod
from buildlib.demo.upstream import add_rust_only_release, create_demo_repo
from buildlib.layout import Layout
from buildlib.pipeline.records import BuildRecord
import services
from pipeline import demo_config, write_config

TAG, NEXT_TAG, NEXT_VERSION = "v0.9.2", "v0.9.3", "0.9.3"


def build(config, flavour: str, ref: str, cargo_home) -> tuple[float, dict]:
    """Seconds for `doit build:<flavour>` at ref, and the record's cache counts."""
    env = doit_env(config) | {"MRPM_REF": ref, "CARGO_HOME": str(cargo_home)}
    env.pop("MRPM_CACHE", None)
    seconds = timed([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), f"build:{flavour}"], env)
    record = BuildRecord.load(Layout.of(configmod.load(config)), flavour)
    return seconds, record.compile_cache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", default="ampere")
    args = parser.parse_args()

    work = scratch("cache")
    shutil.rmtree(work)
    work.mkdir(parents=True)
    demo = create_demo_repo(work / "demo")
    upstream = work / "upstream"
    subprocess.run(["git", "clone", "--quiet", str(demo.path), str(upstream)], check=True)
    add_rust_only_release(upstream, NEXT_TAG, NEXT_VERSION)
    if services.redis_server() is None:
        raise SystemExit("error: redis-server is not installed (scripts/bootstrap installs it for the test role)")
    with services.redis(work / "redis") as url:
        runners = []
        for name in ("runner-1", "elsewhere/runner-two"):
            root = work / name
            data = demo_config(root, upstream, root / "cache", flavours=(args.flavour,))
            data["build"]["cache"] = {"backend": "redis", "url": url}
            runners.append((write_config(root, data), root / "cargo-home"))

        cases = []
        for label, (config, home), ref in (("cold", runners[0], TAG), ("other runner", runners[1], TAG),
                                           ("next version", runners[0], NEXT_TAG)):
            print(f"{label}: doit build:{args.flavour} at {ref} ...", flush=True)
            seconds, counts = build(config, args.flavour, ref, home)
            cases.append((label, seconds, counts))

    print()
    print(f"{'case':<14} {'seconds':>8} {'ratio':>6} {'nvcc run':>9} {'cached':>7} {'rustc cached':>13}")
    cold = cases[0][1]
    for label, seconds, c in cases:
        print(f"{label:<14} {seconds:8.1f} {seconds / cold:6.2f} {c['nvcc_total'] - c['nvcc_hits']:>9} "
              f"{c['nvcc_hits']:>7} {c['rustc_hits']:>6}/{c['rustc_total']:<6}")
    (_, x, _), (_, y, _), (_, z, nxt) = cases
    n, m = nxt["nvcc_total"] - nxt["nvcc_hits"], nxt["nvcc_total"]
    met = y / x <= 0.3 and z / x <= 0.5 and n == 0
    print(f"targets Y/X <= 0.3, Z/X <= 0.5, N = 0: {'met' if met else 'NOT met'}")
    print(f"cache: cold {x:.1f} s, other runner {y:.1f} s ({y / x:.2f}), next version {z:.1f} s ({z / x:.2f}), "
          f"kernels compiled on next version {n} of {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
