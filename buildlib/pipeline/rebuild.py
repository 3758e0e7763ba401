"""The rebuild check: build one flavour again in a scratch location (another
cache with its own mirror, source tree and target directory, another build
directory, a fresh cargo home), run its licenses stage there (the spec
packages the license archive and the SBOM), and compare the binary, the
unsigned RPM and the SBOM beside it with the current ones, naming the first
difference.

The scratch build takes the same configuration and nothing else of the
current build directory (the spec's Release comes from the channel, as on a
CI runner), so it renders the same spec with the same Release; what can
still differ is what the build leaks of where and when it ran, which
:mod:`buildlib.repro` names.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import repro
from ..config import Config, Flavour
from ..layout import Layout, sbom_beside
from ..run import Stopwatch, UserError, log, run
from .cargo import build_flavour, cargo_home
from .licenses import collect_licenses
from .records import BuildRecord, RpmRecord
from .rpmbuild import build_rpm
from .spec import render_spec
from .upstream import GIT, Source, fetch
from .verify import verify_artifact


@dataclass(frozen=True)
class RebuildResult:
    binary: str | None
    """None if the binaries are the same bytes, else the first difference."""
    rpm: str | None
    """None if the unsigned RPMs are the same bytes, else the first difference."""
    sbom: str | None
    """None if the SBOMs beside them in dist/ are the same bytes, else the first difference."""
    leaked: tuple[str, ...]
    """The reference build's paths found in its binary."""

    @property
    def identical(self) -> bool:
        return self.binary is None and self.rpm is None and self.sbom is None


def scratch_layout(layout: Layout, flavour: Flavour) -> Layout:
    root = layout.build / "rebuild-check" / flavour.name
    return Layout(cache=root / "cache", build=root / "build", artifacts=root / "artifacts", dist=root / "dist")


def reference(layout: Layout, flavour: Flavour) -> tuple[BuildRecord, RpmRecord]:
    """The current build and its RPM, which the check rebuilds."""
    record = BuildRecord.load(layout, flavour)
    if record.source != "cargo":
        raise UserError(f"{layout.build_record(flavour.name)}: the binary of {flavour.name} was not built here"
                        " (adopted); there is nothing to rebuild")
    rpm = RpmRecord.load(layout, flavour)
    if rpm.artifact_sha256 != record.sha256 or not rpm.path.is_file():
        raise UserError(f"{layout.rpm_record(flavour.name)} does not describe a package of the current build"
                        f" in {layout.dist}: run `doit rpm:{flavour.name}` first")
    return record, rpm


def rebuild_check(cfg: Config, layout: Layout, flavour: Flavour, scratch: Layout | None = None,
                  keep: bool = False) -> RebuildResult:
    """Rebuild the flavour in scratch (default :func:`scratch_layout`) and
    compare; the scratch location is removed unless keep or a difference."""
    record, rpm = reference(layout, flavour)
    if record.ref != cfg.upstream.ref.text:
        raise UserError(f"the current build of {flavour.name} is of {record.ref}, config.toml names"
                        f" {cfg.upstream.ref.text}: build and package that first")
    source = Source.load(layout.source_record)
    if source.commit != record.commit:
        raise UserError(f"{layout.source_record} names commit {source.commit[:12]}, the build record"
                        f" {record.commit}: run `doit build:{flavour.name}` first")
    watch = Stopwatch(f"rebuild-check {flavour.name}")
    scratch = scratch or scratch_layout(layout, flavour)
    root = scratch.build.parent
    if root.exists():
        shutil.rmtree(root)
    for d in (scratch.cache, scratch.build):
        d.mkdir(parents=True)
    home = root / "cargo-home"
    home.mkdir()
    # the mirror from the reference's (local), then fetched from upstream as usual
    run([GIT, "clone", "--quiet", "--mirror", "--", str(layout.mirror), str(scratch.mirror)])
    log(f"rebuild-check {flavour.name}: building {record.ref} again in {root} (CARGO_HOME {home})")
    fetch(cfg, scratch)
    build_flavour(cfg, scratch, flavour, home=home)
    verify_artifact(cfg, scratch, flavour)
    collect_licenses(cfg, scratch, flavour, home=home)
    render_spec(cfg, scratch, flavour)
    again = build_rpm(cfg, scratch, flavour)

    binary = repro.first_binary_difference(layout.artifact(flavour.name), scratch.artifact(flavour.name))
    rpm_difference = repro.first_difference(rpm.path, again)
    sbom = sbom_beside(rpm.file)
    sbom_difference = first_line_difference(layout.dist / sbom, scratch.dist / sbom_beside(again.name))
    leaked = tuple(repro.leaked_paths(layout.artifact(flavour.name), [
        str(layout.cache), str(layout.target_dir(flavour.name)), str(cargo_home())]))
    result = RebuildResult(binary, rpm_difference, sbom_difference, leaked)
    if result.identical:
        watch.done(f"identical: {layout.artifact(flavour.name).name}, {rpm.file} and {sbom}")
        if not keep:
            shutil.rmtree(root)
        return result
    lines = []
    if binary:
        lines.append(f"binary {layout.artifact(flavour.name).name}: {binary}")
    if rpm_difference:
        lines.append(f"rpm {rpm.file}: {rpm_difference}")
    if sbom_difference:
        lines.append(f"sbom {sbom}: {sbom_difference}")
    if leaked:
        lines.append(f"build paths in the binary: {', '.join(leaked)}")
    raise UserError(f"rebuild-check {flavour.name}: the rebuild differs ({'; '.join(lines)}); the rebuild is in {root}")


def first_line_difference(a: Path, b: Path) -> str | None:
    """None if the two text files are the same bytes, else their first
    differing line (each shortened), or the one that is missing."""
    for path in (a, b):
        if not path.is_file():
            return f"{path} is missing"
    if a.read_bytes() == b.read_bytes():
        return None
    la, lb = a.read_text(errors="replace").splitlines(), b.read_text(errors="replace").splitlines()
    for number, (x, y) in enumerate(zip(la + [""], lb + [""]), 1):
        if x != y:
            return f"line {number}: {x.strip()[:120]!r} != {y.strip()[:120]!r}"
    return "the bytes differ (line endings)"


def check(cfg: Config, layout: Layout, flavour: Flavour) -> dict:
    """The task's action: a difference fails it in one line."""
    result = rebuild_check(cfg, layout, flavour)
    return {"identical": result.identical}
