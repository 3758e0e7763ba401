"""The rebuild check: build one flavour again in a scratch location (another
cache with its own mirror, source tree and target directory, another build
directory, a fresh cargo home), run its licenses stage there (the spec
packages the license archive and the SBOM), and compare the binary, the
unsigned RPM and the SBOM beside it with the current ones, naming the first
difference.

An identical rebuild is recorded (:class:`.records.RebuildRecord`); with
``build.rebuild_check = "releases"`` a release tag's RPM is built and
checked by the rpm task and published only with that record
(:func:`check_rebuilt`).

The scratch build takes the same configuration and nothing else of the
current build directory (the spec's Release comes from the channel, as on a
CI runner), so it renders the same spec with the same Release; what can
still differ is what the build leaks of where and when it ran, which
:mod:`buildlib.repro` names.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import repro
from ..config import Config, Flavour
from ..layout import Layout, cargo_home, sbom_beside
from ..run import Stopwatch, UserError, log, run, sha256_of
from .cargo import build_flavour
from .licenses import collect_licenses
from .records import BuildRecord, ChangelogEntry, RebuildRecord, RpmRecord
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
    inputs: tuple[str, ...] = ()
    """The build inputs the two build records disagree on (:func:`differing_inputs`)."""

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
    # a pass is recorded only by this check finding the rebuild identical
    layout.rebuild_record(flavour.name).unlink(missing_ok=True)
    if record.ref != cfg.upstream.ref.text:
        raise UserError(f"the current build of {flavour.name} is of {record.ref}, {cfg.source} names"
                        f" {cfg.upstream.ref.text} (upstream.ref, or MRPM_REF): build and package that first")
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
    inputs = differing_inputs(record, BuildRecord.load(scratch, flavour))
    result = RebuildResult(binary, rpm_difference, sbom_difference, leaked, inputs)
    if result.identical:
        RebuildRecord(flavour=flavour.name, rpm_file=rpm.file, rpm_sha256=sha256_of(rpm.path),
                      artifact_sha256=record.sha256, ref=record.ref, commit=record.commit,
                      checked_at=datetime.now(timezone.utc)).write(layout)
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
    if inputs:
        # the likely cause, e.g. another rustc on the host since the reference was built
        lines.append(f"the build records' inputs differ: {'; '.join(inputs)}")
    raise UserError(f"rebuild-check {flavour.name}: the rebuild differs ({'; '.join(lines)}); the rebuild is in {root}")


def differing_inputs(reference: BuildRecord, rebuild: BuildRecord) -> tuple[str, ...]:
    """The build inputs (:attr:`BuildRecord.INPUTS`) the two records
    disagree on, each as "name: reference's != rebuild's"."""
    return tuple(f"{name}: {_shown(getattr(reference, name))} != {_shown(getattr(rebuild, name))}"
                 for name in BuildRecord.INPUTS if getattr(reference, name) != getattr(rebuild, name))


def _shown(value: object) -> str:
    if isinstance(value, tuple) and all(isinstance(e, ChangelogEntry) for e in value):
        value = [f"{e.rpm_version} {e.day}" for e in value]
    elif isinstance(value, tuple):
        value = list(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


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


def required(cfg: Config, record: BuildRecord) -> bool:
    """Whether build.rebuild_check asks for a passing rebuild-check before
    this build's RPM is published: "releases" and a build of a release tag
    (rc tags too: they are signed and published, to unstable)."""
    return cfg.build.rebuild_releases and record.tag is not None


def check_rebuilt(cfg: Config, layout: Layout, flavour: Flavour) -> None:
    """Refuse, in one line, the flavour's current RPM where
    :func:`required` and no passing rebuild-check names that very RPM
    (its file name and SHA-256)."""
    if not cfg.build.rebuild_releases:
        return  # off: no record is read, so a publish is as it was without the switch
    record = BuildRecord.load(layout, flavour)
    if not required(cfg, record):
        return
    rpm = RpmRecord.load(layout, flavour)
    why = 'build.rebuild_check = "releases"'
    if record.source != "cargo":
        raise UserError(f"{rpm.file} packages a binary built elsewhere (adopted), which no rebuild-check can"
                        f" reproduce, and {why}: build {flavour.name} here, or set build.rebuild_check = \"off\"")
    hint = f"run `doit rebuild-check:{flavour.name}` ({why})"
    if not layout.rebuild_record(flavour.name).is_file():
        raise UserError(f"{rpm.file} has no passing rebuild-check: {hint}")
    passed = RebuildRecord.load(layout, flavour)
    if (passed.rpm_file, passed.rpm_sha256) != (rpm.file, sha256_of(rpm.path)):
        raise UserError(f"{layout.rebuild_record(flavour.name)} names another package than {rpm.file}"
                        f" in {layout.dist}: {hint}")


def check_current_rebuilt(cfg: Config, layout: Layout) -> None:
    """:func:`check_rebuilt` for every flavour with a current package (an
    rpm record), before a publish.  Without rpm records (CI's publish job,
    given dist/ only) there is nothing to check here: there the build job's
    rpm task ran the rebuild-check and handed over nothing when it failed."""
    for flavour in cfg.flavours:
        if layout.rpm_record(flavour.name).exists():
            check_rebuilt(cfg, layout, flavour)


def check(cfg: Config, layout: Layout, flavour: Flavour) -> dict:
    """The task's action: a difference fails it in one line."""
    result = rebuild_check(cfg, layout, flavour)
    return {"identical": result.identical}
