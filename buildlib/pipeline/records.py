"""What one stage hands the next, one frozen dataclass per record (where
each lives: :class:`..layout.Layout`): BuildRecord (the artifact), VerifyRecord
(verify's verdict), BundleRecord (what the binary bundles), RpmRecord (the
package in dist/), RebuildRecord (a rebuild-check reproduced it).  Each field
is declared once (:func:`..config.schema.setting`), read and written by the
one reader: a record is a file anyone can edit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar

from ..config import (CRATE_NAME, FEATURE_NAME,
                      FLAVOUR_NAME, PACKAGE_NAME, SEMVER, BundledComponent, Config, Flavour)
from ..config.schema import RecordTable, Spec, dump, optional, read, setting
from ..layout import Layout
from ..refs import COMMIT, TAG, check_rpm_version
from ..run import UserError, atomic_write
from ..spdx import spdx_problem
from .bundled import CRATES_IO, GIT_SOURCE, Bundle, Crate
from .license_files import RESERVED_NAMES, SAFE_FILE_NAME
from .cargo_messages import package_name_version
from .upstream import Source

SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
UPSTREAM_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\Z")
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
UNKNOWN = "unknown"


def read_json(path: Path, what: str, *, hint: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}: {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} is not a JSON object")
    return data


def _write(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _name(flavour: Flavour | str) -> str:
    return flavour if isinstance(flavour, str) else flavour.name


class _PerFlavour:
    """A record that names its flavour, kept where ``Layout.<_where>`` says."""

    _where: ClassVar[str]
    flavour: str

    def to_json(self) -> dict:
        return dump(self)

    def write(self, layout: Layout) -> Path:
        path = getattr(layout, self._where)(self.flavour)
        _write(path, self.to_json())
        return path


def _load(cls: type, path: Path, what: str, hint: str, flavour: str | None = None, **given: Any) -> Any:
    """A record of type cls from path, each field read and checked as its
    declaration says; flavour: the flavour it must have been written for."""
    data = read_json(path, what, hint=hint)
    record = read(cls, RecordTable(data, str(path)), **given)
    if flavour is not None and record.flavour != flavour:
        raise UserError(f"{path}: written for flavour {record.flavour!r}, not {flavour!r}")
    return record


def _tag_or_commit(ref: str) -> str:
    return "" if TAG.match(ref) or COMMIT.match(ref) else "expected a release tag or a 40-hex commit id"


def _epoch(value: int) -> str:
    return "" if value >= 0 else "expected seconds since 1970"


def _rpm_version(text: str, key: str) -> str:
    return check_rpm_version(text)


DIGEST = {"pattern": SHA256, "form": "64 lower-case hex digits"}
FLAVOUR = {"pattern": FLAVOUR_NAME, "form": "a flavour name"}
UPSTREAM = {"pattern": UPSTREAM_VERSION, "form": "an upstream version X.Y.Z or X.Y.Z-rcN"}
FEATURES = {"pattern": FEATURE_NAME, "form": "a cargo feature name"}



@dataclass(frozen=True)
class ChangelogEntry:
    rpm_version: str
    tag: str | None
    day: date
    commit: str | None

    def to_json(self) -> dict:
        return {"rpm_version": self.rpm_version, "tag": self.tag, "date": self.day.isoformat(), "commit": self.commit}

    @classmethod
    def from_json(cls, where: str, entry: object) -> "ChangelogEntry":
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected an object")
        try:
            rpm_version = check_rpm_version(entry.get("rpm_version"))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        tag = entry.get("tag")
        if tag is not None and not (isinstance(tag, str) and TAG.match(tag)):
            raise UserError(f"{where}: tag {tag!r} is not a release tag")
        commit = entry.get("commit")
        if commit is not None and not (isinstance(commit, str) and COMMIT.match(commit)):
            raise UserError(f"{where}: commit {commit!r} is not a 40-hex commit id")
        day_text = entry.get("date")
        try:
            if not isinstance(day_text, str) or not ISO_DATE.match(day_text):
                raise ValueError
            day = date.fromisoformat(day_text)
        except ValueError:
            raise UserError(f"{where}: date {day_text!r} is not YYYY-MM-DD") from None
        return cls(rpm_version=rpm_version, tag=tag, day=day, commit=commit)


@dataclass(frozen=True, kw_only=True)
class BuildRecord(_PerFlavour):
    """The artifact of one flavour: where it came from and its digest."""

    _where = "build_record"

    source: str = setting(pattern=re.compile(r"^(cargo|prebuilt)\Z"), form='"cargo" or "prebuilt"')
    """"cargo" (built here) or "prebuilt" (dropped in and adopted)."""
    ref: str | None = setting(check=_tag_or_commit)
    commit: str | None = setting(pattern=COMMIT, form="a 40-hex commit id")
    version: str = setting(**UPSTREAM)
    rpm_version: str = setting(convert=_rpm_version)
    flavour: str = setting(**FLAVOUR)
    compute_cap: int = setting()
    features: tuple[str, ...] = setting(**FEATURES)
    package: str = setting(pattern=PACKAGE_NAME, form="a cargo package name such as \"mistralrs-cli\"")
    """The cargo package built (upstream.programs' row for the version)."""
    binary_name: str = setting(pattern=PACKAGE_NAME, form="a program name such as \"mistralrs\"")
    package_id: str | None = setting(None)
    """From here to cargo_fresh: what cargo's messages said about the binary
    of this run (None for an adopted binary)."""
    cargo_version: str | None = setting(None)
    cargo_executable: str | None = setting(None)
    cargo_fresh: bool | None = setting(None)
    """True when cargo compiled nothing (every unit was fresh)."""
    # provenance only: shown, never acted on
    rustc: str = setting(UNKNOWN)
    cargo: str = setting(UNKNOWN)
    nvcc: str = setting(UNKNOWN)
    rustflags: str = setting(UNKNOWN)
    sha256: str = setting(**DIGEST)
    size: int = setting(check=lambda n: "" if n > 0 else "expected a positive number of bytes")
    duration_s: float = setting(0.0)
    built_at: datetime = setting()
    changelog: tuple[ChangelogEntry, ...] = setting(read=lambda t, f: tuple(
        ChangelogEntry.from_json(f"{t.where}: changelog[{i}]", e) for i, e in enumerate(t.get(f.name, list))),
        dump=lambda entries: [e.to_json() for e in entries])
    source_date_epoch: int | None = setting(None, check=_epoch)
    """The upstream commit's time (seconds since 1970): SOURCE_DATE_EPOCH of
    the build and of rpmbuild.  None for an adopted binary (rpm then takes
    the time of the newest changelog entry)."""
    compile_cache: dict | None = setting(None, compare=False)
    """What sccache did in this build (pipeline/compile_cache.py,
    CacheStats.to_json): backend, rustc and nvcc hits and totals; None with
    [build.cache] off or for an adopted binary.  Not an input: a cached
    build gives the same bytes."""

    INPUTS: ClassVar[tuple[str, ...]] = (
        "ref", "commit", "version", "rpm_version", "compute_cap", "features", "package", "binary_name",
        "cargo_version", "rustc", "cargo", "nvcc", "rustflags", "source_date_epoch", "changelog",
    )
    """The fields that say what went into the build (the rest say what came
    out, when, or where: digest, size, times, cargo's paths and package id,
    which name the source tree's directory)."""

    @property
    def tag(self) -> str | None:
        """The release tag built, or None for a snapshot."""
        return self.ref if self.ref and TAG.match(self.ref) else None

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "BuildRecord":
        """The build record of a flavour, every field checked."""
        name = _name(flavour)
        path = layout.build_record(name)
        record = _load(cls, path, "build record", "build or drop in the artifact first", name)
        if record.rpm_version.split("^", 1)[0] != record.version.replace("-rc", "~rc"):
            raise UserError(f"{path}: rpm_version {record.rpm_version!r} does not belong to upstream version"
                            f" {record.version!r}")
        return record

    def check_fits(self, cfg: Config, layout: Layout, flavour: Flavour) -> None:
        """The one check that this record still fits config.toml: the
        flavour's compute capability, and the package and binary that
        upstream.programs gives for the version."""
        path = layout.build_record(flavour.name)
        if self.compute_cap != flavour.compute_cap:
            raise UserError(
                f"{path}: built for compute capability {self.compute_cap},"
                f" but {cfg.source} says flavours.{flavour.name}.compute_cap = {flavour.compute_cap}: rebuild the flavour"
            )
        program = cfg.upstream.program(self.version)
        if self.binary_name != program.binary:
            raise UserError(
                f"{path}: binary_name {self.binary_name!r}, but {cfg.source}'s"
                f" upstream.programs gives {program.binary!r} for version {self.version}"
            )
        if self.package != program.package:
            raise UserError(f"{path}: built from package {self.package}, but version {self.version} is built from"
                            f" {program.package} (upstream.programs): rebuild the flavour")

    def check_provenance(self, cfg: Config, layout: Layout, flavour: Flavour) -> None:
        """For an artifact cargo built here: cargo's own record of the run
        (its package id) names the package check_fits expects, and the
        commit built is the one fetched now."""
        if self.source != "cargo":
            return
        path = layout.build_record(flavour.name)
        if self.package_id is None or not self.cargo_executable:
            raise UserError(f"{path}: no cargo package id or executable recorded; rebuild the flavour")
        try:
            package, version = package_name_version(self.package_id)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        program = cfg.upstream.program(self.version)
        if package != program.package:
            raise UserError(f"{path}: built from package {package}, but version {self.version} is built from"
                            f" {program.package} (upstream.programs): rebuild the flavour")
        if version != self.cargo_version:
            raise UserError(f"{path}: package id {self.package_id!r} disagrees with cargo_version {self.cargo_version!r}")
        if layout.source_record.exists():
            source = Source.load(layout.source_record)
            if (source.ref, source.commit) != (self.ref, self.commit):
                raise UserError(f"{path}: built from {self.ref} ({str(self.commit)[:12]}), but the fetched source is"
                                f" {source.ref} ({source.commit[:12]}): build the flavour again")



@dataclass(frozen=True, kw_only=True)
class VerifyRecord:
    """Verify's verdict: the artifact with this digest passed."""

    sha256: str = setting(**DIGEST)
    ok: bool = setting()
    binary_name: str = setting(UNKNOWN)
    method: str = setting(UNKNOWN)
    """How the CUDA code was found (cuobjdump or the embedded images)."""
    archs: tuple[int, ...] = setting((), read=lambda t, f: tuple(a for a in t.get(f.name, list, []) if isinstance(a, int)))
    images: int = setting(0)

    def to_json(self) -> dict:
        return dump(self)

    def write(self, layout: Layout, flavour: Flavour) -> Path:
        path = layout.verify_record(flavour.name)
        _write(path, self.to_json())
        return path

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour) -> "VerifyRecord":
        path = layout.verify_record(flavour.name)
        return _load(cls, path, "verify record", f"run the verify task for {flavour.name} first")



@dataclass(frozen=True, kw_only=True)
class RpmRecord(_PerFlavour):
    """The package rpmbuild put into dist/."""

    _where = "rpm_record"

    flavour: str = setting(**FLAVOUR)
    path: Path = setting()
    name: str = setting()
    version: str = setting()
    release: str = setting()
    arch: str = setting()
    sha256: str = setting(**DIGEST)
    size: int = setting()
    payload: str = setting()
    payload_compressor: str = setting()
    payload_flags: str = setting()
    artifact_sha256: str = setting(**DIGEST)
    duration_s: float = setting()
    built_at: datetime = setting()

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"

    def to_json(self) -> dict:
        flavour, path, *rest = dump(self).items()
        return dict([flavour, path, ("file", self.file), ("nevra", self.nevra), *rest])

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "RpmRecord":
        name = _name(flavour)
        path = layout.rpm_record(name)
        record = _load(cls, path, "rpm record", f"run the rpm task for {name} first")
        file = read_json(path, "rpm record", hint="").get("file")
        if not isinstance(file, str) or "/" in file or record.path.name != file:
            raise UserError(f"{path}: field 'file' = {file!r} is not the name of field 'path'")
        return record


@dataclass(frozen=True, kw_only=True)
class RebuildRecord(_PerFlavour):
    """A rebuild-check that found the rebuild identical: the unsigned RPM
    (by digest) that a second, independent build reproduced."""

    _where = "rebuild_record"

    flavour: str = setting(**FLAVOUR)
    rpm_file: str = setting(check=lambda f: "" if "/" not in f and f.endswith(".rpm") else "expected the file name of an RPM")
    rpm_sha256: str = setting(**DIGEST)
    artifact_sha256: str = setting(**DIGEST)
    ref: str = setting(check=_tag_or_commit)
    commit: str = setting(pattern=COMMIT, form="a 40-hex commit id")
    checked_at: datetime = setting()

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "RebuildRecord":
        name = _name(flavour)
        return _load(cls, layout.rebuild_record(name), "rebuild-check record", f"run `doit rebuild-check:{name}`", name)



@dataclass(frozen=True, kw_only=True)
class BundleRecord(_PerFlavour):
    """What one flavour's binary bundles (the linked crates with their
    licenses, the declared components) and the license files packed for the
    spec, computed from the source tree the binary was built from."""

    _where = "bundle_record"

    flavour: str = setting(**FLAVOUR)
    commit: str = setting(pattern=COMMIT, form="a 40-hex commit id")
    version: str = setting(**UPSTREAM)
    source_date_epoch: int = setting(check=_epoch)
    """The commit's time: the SBOM's timestamp."""
    features: tuple[str, ...] = setting(**FEATURES)
    license_archive_sha256: str = setting(**DIGEST)
    bundle: Bundle

    @property
    def license(self) -> str:
        return self.bundle.license

    def to_json(self) -> dict:
        b = self.bundle
        return {
            **dump(self),
            "package": b.package, "license": b.license,
            "crates": [{
                "name": c.name, "version": c.version, "source": c.source, "license": c.license,
                "declared_license": c.declared_license, "license_from_config": c.license_from_config,
                "checksum": c.checksum, "workspace_member": c.workspace_member,
                "license_files": [p.name for p in c.license_files],
            } for c in b.crates],
            "components": [{"name": c.name, "version": c.version, "license": c.license, "url": c.url,
                            "commit": c.commit} for c in b.components],
            "edges": [[key, list(deps)] for key, deps in b.edges],
            "upstream_license_files": [p.name for p in b.upstream_licenses],
        }

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "BundleRecord":
        name = _name(flavour)
        path = layout.bundle_record(name)
        f = RecordTable(read_json(path, "bundle record", hint=f"run the licenses task for {name} first"), str(path))
        crates = tuple(_crate_of(path, i, e) for i, e in enumerate(f.get("crates", list)))
        components = tuple(read(BundledComponent, _entry(path, "components", i, e), evidence=None)
                           for i, e in enumerate(f.get("components", list)))
        keys = {c.key for c in crates}
        edges = []
        for i, edge in enumerate(f.get("edges", list)):
            if (not isinstance(edge, list) or len(edge) != 2 or edge[0] not in keys or not isinstance(edge[1], list)
                    or not all(d in keys for d in edge[1])):
                raise UserError(f"{path}: edges[{i}] is not [crate, [crates it links]] of the listed crates")
            edges.append((edge[0], tuple(edge[1])))
        upstream_files = f.get("upstream_license_files", list)
        if not upstream_files or not all(isinstance(n, str) and SAFE_FILE_NAME.match(n) and n not in RESERVED_NAMES
                                         for n in upstream_files):
            raise UserError(f"{path}: upstream_license_files {upstream_files!r}: expected plain file names,"
                            " at least one: run the licenses task again")
        bundle = Bundle(package=f.get("package", str, spec=Spec(pattern=PACKAGE_NAME, form="a cargo package name")),
                        crates=crates, components=components, edges=tuple(edges),
                        license=f.get("license", str, spec=Spec(check=spdx_problem)),
                        upstream_licenses=tuple(Path(n) for n in upstream_files))
        if not any(c.name == bundle.package and c.workspace_member for c in crates):
            raise UserError(f"{path}: the packaged crate {bundle.package!r} is not among the crates")
        return _load(cls, path, "bundle record", "", name, bundle=bundle)

    def check_fits(self, layout: Layout, build: BuildRecord) -> None:
        """The bundle describes the binary of the build record: same commit
        (a prebuilt binary, which has none: same version) and features."""
        path = layout.bundle_record(self.flavour)
        same_source = self.commit == build.commit if build.commit else self.version == build.version
        if not same_source or tuple(sorted(self.features)) != tuple(sorted(build.features)):
            raise UserError(f"{path} describes another build than {layout.build_record(self.flavour)}:"
                            f" run the licenses task for {self.flavour} again")


def _entry(path: Path, array: str, i: int, entry: object) -> RecordTable:
    where = f"{path}: {array}[{i}]"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object")
    return RecordTable(entry, where)


def _crate_source(source: str) -> str:
    if source and not (source == CRATES_IO or GIT_SOURCE.match(source)):
        return "neither crates.io nor a git repository pinned to a commit"
    return ""


def _crate_of(path: Path, i: int, entry: object) -> Crate:
    f = _entry(path, "crates", i, entry)
    files = f.get("license_files", list)
    if not all(isinstance(n, str) and SAFE_FILE_NAME.match(n) for n in files):
        raise UserError(f"{f.where}: license_files {files!r}: expected plain file names")
    return Crate(name=f.get("name", str, spec=Spec(pattern=CRATE_NAME, form="a crate name")),
                 version=f.get("version", str, spec=Spec(pattern=SEMVER, form="a semver version")),
                 source=f.get("source", str, spec=Spec(check=_crate_source)),
                 license=f.get("license", str, spec=Spec(check=spdx_problem)),
                 declared_license=f.get("declared_license", str),
                 license_from_config=f.get("license_from_config", bool),
                 checksum=f.get("checksum", str, spec=Spec(pattern=optional(SHA256), form="64 lower-case hex digits")),
                 directory=Path("."), license_files=tuple(Path(n) for n in files),
                 workspace_member=f.get("workspace_member", bool))
