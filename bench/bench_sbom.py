"""SBOM benchmark: making and validating the CycloneDX document of a graph
the size of upstream's (v0.9.2's Cargo.lock: 804 packages), made up here,
and the dependency graph set the way cyclonedx-python-lib's own
``Bom.register_dependency`` would (one search of the list per call).

    python bench/bench_sbom.py [--crates 800] [--deps 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)

from buildlib.pipeline import sbom
from buildlib.pipeline.bundled import CRATES_IO, Bundle, Crate


def made_up_bundle(count: int, deps: int) -> Bundle:
    rng = random.Random(1)
    crates = [Crate(name=f"crate-{i:04d}", version=f"1.{i % 7}.{i % 13}", source="" if i == 0 else CRATES_IO,
                    license="MIT OR Apache-2.0", declared_license="MIT OR Apache-2.0", license_from_config=False,
                    checksum="" if i == 0 else f"{i:064x}", directory=Path("."), license_files=(),
                    workspace_member=i == 0) for i in range(count)]
    keys = [c.key for c in crates]
    edges = tuple(sorted((key, tuple(sorted(set(rng.sample(keys[j + 1:], min(deps, count - j - 1))))))
                         for j, key in enumerate(keys)))
    return Bundle(package=crates[0].name, crates=tuple(crates), components=(), edges=edges,
                  license="MIT OR Apache-2.0")


SUBJECT = sbom.Subject(
    rpm_name="mistralrs-ampere", rpm_version="0.9.2", rpm_release="1.fc43", arch="x86_64",
    upstream_url="https://github.com/EricLBuehler/mistral.rs", upstream_tag="v0.9.2", upstream_commit="0" * 40,
    flavour="ampere", compute_cap=86, features=("cuda",), toolchain={"rustc": "rustc 1.94.0"},
    binary_path="/usr/bin/mistralrs", binary_sha256="1" * 64, source_date_epoch=1767225600,
)


def register_one_by_one(bundle: Bundle) -> float:
    """Seconds to set the same graph with Bom.register_dependency."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component

    components = {c.key: Component(name=c.name, version=c.version, bom_ref=f"crate:{c.key}") for c in bundle.crates}
    bom = Bom(components=list(components.values()))
    start = time.perf_counter()
    for key, deps in bundle.edges:
        bom.register_dependency(components[key], [components[d] for d in deps])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crates", type=int, default=800)
    parser.add_argument("--deps", type=int, default=5, help="dependencies per crate")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bundle = made_up_bundle(args.crates, args.deps)
    make, check = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        text = sbom.make(bundle, SUBJECT)
        middle = time.perf_counter()
        sbom.validate(text)
        make.append(middle - start)
        check.append(time.perf_counter() - middle)
    register = register_one_by_one(bundle)
    print(f"{args.crates} crates, {len(text) // 1024} KiB of JSON, median of {args.runs}:")
    print(f"  sbom.make (graph set in one go)          {statistics.median(make):7.2f} s")
    print(f"  sbom.validate (CycloneDX 1.6 schema)     {statistics.median(check):7.2f} s")
    print(f"  the graph alone via register_dependency  {register:7.2f} s (once)")


if __name__ == "__main__":
    main()
