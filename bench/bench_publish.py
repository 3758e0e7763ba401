#!/usr/bin/env python3
"""Benchmark publishing: adding 4 RPMs to a channel that holds 400, against
regenerating its metadata from scratch; and the bytes uploaded when
publishing again with nothing new.

The 400 packages are small fabricated RPMs (tests/fixtures/fakerpm.py),
published once to a local-directory target.  Then:

* incremental: ``publish_dist`` with 4 new packages in dist/ (sign, fetch
  metadata, ``createrepo_c --update --skip-stat`` over 404 names with only 4
  files present, sign, upload, swap) — and its createrepo_c step alone;
* from scratch: ``createrepo_c`` over all 404 packages, which needs every
  package file present where it runs (on the host, or downloaded);
* again: ``publish_dist`` with the same dist/; rsync --stats per step.

Usage:  .venv/bin/python bench/bench_publish.py [--count 400] [--runs 3]
Figures with tiny packages understate the from-scratch cost: createrepo_c
reads and checksums every package (real ones are hundreds of MB each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

import pipeline  # noqa: E402
from fixtures import fakerpm  # noqa: E402
from pipeline import project_config  # noqa: E402

from buildlib import config  # noqa: E402
from buildlib.publish import channels, publisher, signing
from buildlib.layout import Layout  # noqa: E402


def write_config(work: Path, target: Path, key: Path, retention: int) -> config.Config:
    """The project's config.toml (its tables up to [publish]), publishing to target."""
    data = project_config()
    for table in ("poll", "host"):
        del data[table]
    data["publish"] = {"target": str(target), "base_url": "http://127.0.0.1:9/", "retention": retention,
                       "key_file": str(key), "metadata_expire": "1h"}
    data["paths"] = {"cache": "cache", "build": "build", "artifacts": "artifacts", "dist": "dist"}
    return config.load(pipeline.write_config(work, data))


def createrepo_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--filler-kib", type=int, default=1024, help="payload of each of the 400 packages")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mrpm-bench-publish-") as tmp:
        tmp = Path(tmp)
        key, _ = signing.make_demo_key(tmp / "key")
        work, target = tmp / "work", tmp / "srv"
        work.mkdir()
        cfg = write_config(work, target, key, retention=1000)
        layout = Layout.of(cfg)
        layout.dist.mkdir(parents=True)

        t0 = time.perf_counter()
        filler = fakerpm.build_many(layout.dist, args.count, version="0.9.1", size_kib=args.filler_kib)
        print(f"made {len(filler)} packages in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        publisher.publish_dist(cfg, layout)
        initial = time.perf_counter() - t0
        signed_all = tmp / "signed-all"
        shutil.copytree(target / channels.channel_dir(cfg, cfg.channel("stable")), signed_all)

        incremental, incremental_cr, scratch_cr = [], [], []
        version = 0
        for _ in range(args.runs):
            # 4 new packages: the 4 flavours of a new release
            for p in layout.dist.glob("*.rpm"):
                p.unlink()
            version += 1
            for flavour in ("ampere", "ada", "hopper", "blackwell"):
                fakerpm.build(layout.dist, flavour, version=f"1.0.{version}")
            t0 = time.perf_counter()
            report = publisher.publish_dist(cfg, layout)
            incremental.append(time.perf_counter() - t0)
            assert len(report["channels"]["stable"]["added"]) == 4

            # the createrepo_c step alone, as publish runs it
            stage = tmp / "stage"
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
            shutil.copytree(signed_all / "repodata", stage / "repodata")
            for p in layout.dist.glob("*.rpm"):
                shutil.copy(p, stage)
            names = sorted(p.name for p in filler) + sorted(p.name for p in layout.dist.glob("*.rpm"))
            (tmp / "list").write_text("\n".join(names) + "\n")
            incremental_cr.append(createrepo_seconds(
                ["createrepo_c", "--quiet", "--no-database", "--update", "--skip-stat", "--pkglist", str(tmp / "list"),
                 "--workers", "4", str(stage)]))

            # from scratch: every package present
            full = tmp / "full"
            shutil.rmtree(full, ignore_errors=True)
            shutil.copytree(signed_all, full, ignore=shutil.ignore_patterns("repodata", "unstable"))
            for p in layout.dist.glob("*.rpm"):
                shutil.copy(p, full)
            scratch_cr.append(createrepo_seconds(
                ["createrepo_c", "--quiet", "--no-database", "--workers", "4", str(full)]))

        again = publisher.publish_dist(cfg, layout)
        scratch_bytes = sum(p.stat().st_size for p in full.glob("*.rpm"))

    med = statistics.median
    result = {
        "channel_size": args.count,
        "initial_publish_s": round(initial, 2),
        "add4_publish_total_s": round(med(incremental), 2),
        "add4_createrepo_update_s": round(med(incremental_cr), 3),
        "scratch_createrepo_s": round(med(scratch_cr), 3),
        "scratch_needs_bytes_present": scratch_bytes,
        "createrepo_ratio_scratch_over_update": round(med(scratch_cr) / med(incremental_cr), 1),
        "again_bytes_sent": again["bytes_sent"],
        "again_package_bytes": again["bytes_sent"].get("packages", 0),
        "again_s": again["seconds"],
    }
    print(f"{'step':44} {'seconds':>8}")
    print(f"{'initial publish of ' + str(args.count) + ' packages':44} {result['initial_publish_s']:8.2f}")
    print(f"{'publish 4 new (whole publish_dist)':44} {result['add4_publish_total_s']:8.2f}")
    print(f"{'  createrepo_c --update --skip-stat (4 of 404)':44} {result['add4_createrepo_update_s']:8.3f}")
    print(f"{'createrepo_c from scratch (404 present)':44} {result['scratch_createrepo_s']:8.3f}")
    print(f"ratio scratch/update: {result['createrepo_ratio_scratch_over_update']}x;"
          f" from scratch needs {scratch_bytes / 2**20:.0f} MiB of packages where createrepo_c runs")
    print(f"publish again, nothing new: {result['again_s']} s, bytes sent by step {result['again_bytes_sent']}"
          f" (package bytes: {result['again_package_bytes']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
