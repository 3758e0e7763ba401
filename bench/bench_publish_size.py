#!/usr/bin/env python3
"""Benchmark: publishing 4 new packages into a channel that already holds
many big ones, against publishing the same 4 into an empty channel.

Every publish checks each published package against the signed metadata.
A local-directory target used to hash every package on every publish, so
the cost grew with the bytes already published (six flavours x three kept
versions x two channels of several hundred MB is over 10 GB).  The digest
memo (transport_local.DigestMemo) hashes each package once in its lifetime.

Runs, in one temporary directory, each timed:
  empty:   4 new packages of --size-mib into an empty channel (the baseline);
  full:    the channel already holds --count packages of --size-mib, checked
           once by an earlier publish (the steady state); 4 new ones added;
  no memo: the same with the memo removed first (what every publish cost
           before): for comparison.

Prints one line at the end:
  publish: empty X s, full Y s (Y/X), full without memo Z s (Z/X)
Target: Y/X <= 1.2.  The real-size case is the default (36 x 300 MiB:
about 11 GB of disk); --size-mib 30 gives the same ratios' shape quickly.

Usage:  .venv/bin/python bench/bench_publish_size.py [--count 36] [--size-mib 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from fixtures import fakerpm  # noqa: E402

from bench_publish import write_config  # noqa: E402
from buildlib.layout import Layout  # noqa: E402
from buildlib.publish import publisher, signing  # noqa: E402

FLAVOURS = ("ampere", "ada", "hopper", "blackwell")


def timed_publish(cfg, layout) -> float:
    start = time.perf_counter()
    publisher.publish_dist(cfg, layout)
    return time.perf_counter() - start


def new_release(layout: Layout, version: str, size_kib: int) -> None:
    for p in layout.dist.glob("*"):
        p.unlink()
    for flavour in FLAVOURS:
        fakerpm.build(layout.dist, flavour, version=version, size_kib=size_kib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=36)
    ap.add_argument("--size-mib", type=int, default=300)
    args = ap.parse_args()
    size_kib = args.size_mib * 1024

    with tempfile.TemporaryDirectory(prefix="mrpm-bench-publish-size-") as tmp:
        tmp = Path(tmp)
        key, _ = signing.make_demo_key(tmp / "key")

        # baseline: 4 new into an empty channel
        work = tmp / "empty"
        work.mkdir()
        cfg = write_config(work, tmp / "srv-empty", key, retention=1000)
        layout = Layout.of(cfg)
        layout.dist.mkdir(parents=True)
        new_release(layout, "2.0.0", size_kib)
        empty = timed_publish(cfg, layout)

        # a channel of count big packages, checked once by a publish
        work = tmp / "full"
        work.mkdir()
        cfg = write_config(work, tmp / "srv-full", key, retention=1000)
        layout = Layout.of(cfg)
        layout.dist.mkdir(parents=True)
        t0 = time.perf_counter()
        fakerpm.build_many(layout.dist, args.count, version="0.9.1", size_kib=size_kib)
        publisher.publish_dist(cfg, layout)
        new_release(layout, "1.0.0", size_kib)
        publisher.publish_dist(cfg, layout)  # hashes the published ones once
        print(f"set-up: {args.count} x {args.size_mib} MiB published and checked in"
              f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        new_release(layout, "2.0.0", size_kib)
        full = timed_publish(cfg, layout)

        new_release(layout, "3.0.0", size_kib)
        layout.publish_digests.unlink()
        no_memo = timed_publish(cfg, layout)

    print(f"{'publish 4 new of ' + str(args.size_mib) + ' MiB':48} {'seconds':>8}")
    print(f"{'  into an empty channel':48} {empty:8.2f}")
    print(f"{'  into ' + str(args.count) + ' published (memo)':48} {full:8.2f}")
    print(f"{'  into ' + str(args.count) + ' published (no memo, as before)':48} {no_memo:8.2f}")
    print(f"publish: empty {empty:.1f} s, full {full:.1f} s ({full / empty:.2f}),"
          f" full without memo {no_memo:.1f} s ({no_memo / empty:.2f})")


if __name__ == "__main__":
    main()
