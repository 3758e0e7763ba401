"""Build one flavour's RPM from its rendered spec and its verified artifact.

rpmbuild runs in a top directory of its own per flavour (cleaned first), with
its package database and temporary files inside it, so that it never reads
or writes the home directory's or the system's.  The RPM is moved into
layout.dist atomically, its SBOM (``<name>-<version>-<release>.<arch>.cdx.json``,
the one the package installs) put beside it first, and the RPM described by
layout.rpm_record(flavour).

On a host whose rpm lacks Fedora's macros (Debian's rpm 4.18 for the tests),
the missing definitions are taken from rpm/compat.macros; on Fedora none are.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .. import layout as paths
from .. import repro
from ..config import Config, Flavour
from ..layout import Layout, sbom_beside
from ..run import Stopwatch, UserError, atomic_copy, atomic_write, output, run, sha256_of
from ..rpmtools import rpmbuild
from .records import BuildRecord, RpmRecord, VerifyRecord
from .spec import spec_sources

MACRO_DEFINITION = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)(\(\S*\))?[ \t]")
FILE_ATTRIBUTE_PATH = re.compile(r"^__([a-z0-9_]+)_path$")


def check_artifact(layout: Layout, flavour: Flavour) -> str:
    """The artifact's SHA-256, once the build record, the verify record and
    the file on disk agree on it; a UserError otherwise."""
    record = BuildRecord.load(layout, flavour)
    verified = VerifyRecord.load(layout, flavour)
    verify_path = layout.verify_record(flavour.name)
    if not verified.ok:
        raise UserError(f"{verify_path}: the artifact of {flavour.name} did not pass verification; it is not packaged")
    if verified.sha256 != record.sha256:
        raise UserError(
            f"{verify_path} verified {verified.sha256[:12]}, but the build record names {record.sha256[:12]}:"
            f" verify the artifact of {flavour.name} again"
        )
    artifact = layout.artifact(flavour.name)
    if not artifact.is_file():
        raise UserError(f"no artifact at {artifact}: build or drop in the binary of {flavour.name}")
    on_disk = sha256_of(artifact)
    if on_disk != record.sha256:
        raise UserError(
            f"{artifact} changed after it was verified (SHA-256 {on_disk[:12]}, verified {record.sha256[:12]}):"
            " refusing to package it; rebuild or verify it again"
        )
    return on_disk


def build_rpm(cfg: Config, layout: Layout, flavour: Flavour) -> Path:
    """Build the flavour's RPM into layout.dist; return its path."""
    clock = Stopwatch(f"rpm {flavour.name}")
    artifact_sha = check_artifact(layout, flavour)
    spec = layout.spec(flavour.name)
    if not spec.is_file():
        raise UserError(f"no spec at {spec}: run the spec task for {flavour.name} first")
    m = re.search(r"^%global artifact_sha256 ([0-9a-f]{64})$", spec.read_text(), re.MULTILINE)
    if not m or m.group(1) != artifact_sha:
        raise UserError(f"{spec} was rendered for another artifact: render the spec of {flavour.name} again")

    topdir = layout.rpm_topdir(flavour.name)
    if topdir.exists():
        shutil.rmtree(topdir)
    sources = topdir / "SOURCES"
    for sub in (sources, topdir / "tmp"):
        sub.mkdir(parents=True)
    placed = []
    for index, path in enumerate(spec_sources(layout, flavour)):
        placed.append(sources / path.name)
        # the binary (maybe a gigabyte) is linked; the small files are copied,
        # so that setting their times below leaves the project's files alone
        if index == 0:
            _place(path, placed[-1])
        else:
            shutil.copyfile(path, placed[-1])
    # Bit for bit (buildlib/repro.py): every source with one time and mode,
    # SOURCE_DATE_EPOCH the upstream commit's time.
    record = BuildRecord.load(layout, flavour)
    env = {}
    if record.source_date_epoch is not None:
        repro.normalize_sources(placed, record.source_date_epoch)
        env = repro.rpmbuild_env(record.source_date_epoch)
    else:
        # an adopted binary: the spec's changelog decides the time
        repro.normalize_sources(placed, changelog_epoch(spec))

    macro_args, foreign = host_macro_args(cfg, topdir)
    # On a Fedora-like host, rpmbuild checks BuildRequires against the system's database.
    built = rpmbuild(spec, topdir, options=[*macro_args, *(["--nodeps"] if foreign else [])], own_db=False,
                     capture=False, expect=1, env=env)
    fields = output([
        "rpm", "-qp", *(["--define", f"_dbpath {topdir / 'rpmdb'}"] if foreign else []),
        "--qf", "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{ARCH}\\n%{PAYLOADCOMPRESSOR}\\n%{PAYLOADFLAGS}\\n",
        str(built[0]),
    ], quiet=True).splitlines()
    name, version, release, arch, compressor, flags = fields

    # Its SBOM first, beside it: a package in dist/ never lacks its SBOM.
    atomic_write(layout.dist / sbom_beside(built[0].name), (sources / layout.sbom(flavour.name).name).read_bytes())
    target = _move_into(built[0], layout.dist)
    shutil.rmtree(topdir)

    size = target.stat().st_size
    RpmRecord(
        flavour=flavour.name, path=target, name=name, version=version, release=release, arch=arch,
        sha256=sha256_of(target), size=size, payload=cfg.package.payload,
        payload_compressor=compressor, payload_flags=flags, artifact_sha256=artifact_sha,
        duration_s=round(clock.seconds, 2), built_at=datetime.now(timezone.utc),
    ).write(layout)
    clock.done(f"{target.name}, {size / 2**20:.1f} MiB, payload {cfg.package.payload}")
    return target


def changelog_epoch(spec: Path) -> int:
    """The time of the spec's newest %changelog entry (midnight UTC of its
    day), as rpm's %source_date_epoch_from_changelog takes it."""
    m = re.search(r"^%changelog\n\* \w{3} (\w{3} \d{2} \d{4}) ", spec.read_text(), re.MULTILINE)
    if not m:
        raise UserError(f"{spec}: no %changelog entry to take the build time from")
    return int(datetime.strptime(m.group(1), "%b %d %Y").replace(tzinfo=timezone.utc).timestamp())


def _move_into(rpm: Path, dist: Path) -> Path:
    """Move a finished RPM into dist atomically: readers see no half file."""
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / rpm.name
    try:
        os.replace(rpm, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        atomic_copy(rpm, target)
    return target


def _place(source: Path, dest: Path) -> None:
    """Hard-link (a binary can be a gigabyte) or copy a source into SOURCES."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


# --- the host's macros ------------------------------------------------------------


def host_macro_args(cfg: Config, topdir: Path) -> tuple[list[str], bool]:
    """rpm options that make this host build as Fedora 43 would.

    Always: the top directory and a temporary directory inside it.  Where
    the host lacks them: dist (from config) and the definitions of
    rpm/compat.macros, written to topdir/compat.macros and loaded with
    --load (--macros would replace the host's own list of macro files).
    A file attribute among them (%__NAME_path: rpm >= 4.19's sysusers) is
    also registered where rpm <= 4.18 looks for attributes (_fileattrsdir).

    A host that lacks any of those is not Fedora-like, and its rpm database
    (if any) does not describe the system's packages: there the database
    moves into the top directory (rpmbuild never touches the home
    directory's), and the caller should not check BuildRequires (--nodeps).
    Returns (options, whether the host is such a foreign one).
    """
    args = ["--define", f"_tmppath {topdir / 'tmp'}"]
    blocks = compat_blocks(paths.COMPAT_MACROS.read_text())
    probes = ["%{?dist}", "%{_fileattrsdir}"]
    for name, text in blocks.items():
        # A program macro's value is checked; a parametric one is not run.
        value = name.startswith("__") and not MACRO_DEFINITION.match(text).group(2)
        probes.append(f"%{{?{name}}}" if value else f"%{{?{name}:1}}")
    # One line per --eval; every probe's answer is a single line.
    result = run(["rpm", *[a for p in probes for a in ("--eval", p)]], capture=True, quiet=True)
    answers = result.stdout.decode().split("\n")[: len(probes)]
    if len(answers) != len(probes):
        raise UserError(f"rpm --eval gave {len(answers)} answers to {len(probes)} questions: {result.stdout!r}")
    if not answers[0].strip():
        args += ["--define", f"dist {cfg.package.dist}"]
    missing = {
        name: text for (name, text), answer in zip(blocks.items(), answers[2:])
        if _host_lacks(name, answer.strip())
    }
    if missing:
        compat = topdir / "compat.macros"
        compat.parent.mkdir(parents=True, exist_ok=True)
        compat.write_text("\n".join(missing.values()))
        args += ["--load", str(compat), "--define", f"_dbpath {topdir / 'rpmdb'}"]
    new_attrs = [m.group(1) for m in map(FILE_ATTRIBUTE_PATH.match, missing) if m]
    if new_attrs:
        args += ["--define", f"_fileattrsdir {_fileattrs_dir(topdir, Path(answers[1].strip()), new_attrs)}"]
    return args, bool(missing)


def _fileattrs_dir(topdir: Path, host_dir: Path, new_attrs: list[str]) -> Path:
    """rpm <= 4.18 knows a file attribute only by a file <name>.attr in
    %_fileattrsdir (the definitions themselves are ordinary macros): a
    directory with the host's attribute files and one for each attribute of
    compat.macros (a %__<name>_path block the host lacks)."""
    attrs = topdir / "fileattrs"
    attrs.mkdir(parents=True, exist_ok=True)
    for host_attr in sorted(host_dir.glob("*.attr")):
        (attrs / host_attr.name).symlink_to(host_attr)
    for name in new_attrs:
        (attrs / f"{name}.attr").write_text(f"# %__{name}_* are defined in compat.macros, loaded with --load.\n")
    return attrs


def _host_lacks(name: str, answer: str) -> bool:
    if not answer:
        return True
    # A program macro (__gpg) the host defines, naming a program it does not have.
    if name.startswith("__") and answer.startswith("/"):
        return not os.access(answer.split()[0], os.X_OK)
    return False


def compat_blocks(text: str) -> dict[str, str]:
    """{macro name: its definition} of a macros file, comments left out.
    A definition goes on over lines ending in a backslash, and until its
    braces close (a %{lua: ...} body)."""
    blocks: dict[str, list[str]] = {}
    name = None  # the definition being continued with backslashes
    for line in text.splitlines():
        if name is None:
            if not line.strip() or line.startswith("#"):
                continue
            m = MACRO_DEFINITION.match(line + " ")
            if not m:
                raise UserError(f"{paths.COMPAT_MACROS}: cannot read line {line!r}")
            name = m.group(1)
            blocks[name] = []
        blocks[name].append(line)
        text = "\n".join(blocks[name])
        if not line.endswith("\\") and text.count("{") <= text.count("}"):
            name = None
    return {macro: "\n".join(lines) + "\n" for macro, lines in blocks.items()}
