"""What one stage hands the next, one frozen dataclass per record, each
written and read here only.

- :class:`BuildRecord` (``artifacts/mistralrs-<flavour>.json``): the build
  (or the adoption of a prebuilt binary) describes the artifact.
- :class:`VerifyRecord` (``artifacts/mistralrs-<flavour>.verified.json``):
  verify's verdict on that artifact.
- :class:`BundleRecord` (``build/licenses/mistralrs-<flavour>.json``): what
  the binary bundles, from the licenses stage (crates, licenses, components).
- :class:`RpmRecord` (``build/rpm/mistralrs-<flavour>.json``): the package
  rpmbuild put into dist/.
- :class:`RebuildRecord` (``build/rpm/mistralrs-<flavour>.rebuilt.json``):
  a rebuild-check reproduced that package bit for bit (written only then).

Loading checks every field (a record is a file anyone can edit);
:meth:`BuildRecord.check_fits` is the one check that a record still fits the
configuration (spec and verify run it); verify adds
:meth:`BuildRecord.check_provenance`: cargo's own word that this run built
the artifact from the source fetched now.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ..config import (COMPONENT_COMMIT, COMPONENT_NAME, COMPONENT_URL, COMPONENT_VERSION, CRATE_NAME, FEATURE_NAME,
                      FLAVOUR_NAME, PACKAGE_NAME, SEMVER, BundledComponent, Config, Flavour)
from ..layout import Layout
from ..refs import COMMIT, TAG, check_rpm_version
from ..run import UserError, atomic_write
from ..spdx import spdx_problem
from .bundled import CRATES_IO, GIT_SOURCE, RESERVED_NAMES, SAFE_FILE_NAME, Bundle, Crate
from .cargo_messages import package_name_version
from .upstream import Source

SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
UPSTREAM_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\Z")
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
UNKNOWN = "unknown"


def utc_stamp(when: datetime | None = None) -> str:
    """2026-11-25T17:00:00Z: how every record writes a time."""
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        raise NotImplementedError

    def write(self, layout: Layout) -> Path:
        path = getattr(layout, self._where)(self.flavour)
        _write(path, self.to_json())
        return path


class _Fields:
    """Typed access to one record's JSON object; errors name file and field."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False, default: Any = None) -> Any:
        if name not in self.data:
            if default is not None:
                return default
            raise UserError(f"{self.path}: field {name!r} is missing")
        value = self.data[name]
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise UserError(f"{self.path}: field {name!r} = {value!r} has the wrong type")
        return value

    def maybe(self, name: str, kind: type) -> Any:
        """A field a record may leave out or set to null (None then)."""
        return self.get(name, kind, optional=True) if name in self.data else None

    def time(self, name: str) -> datetime:
        text = self.get(name, str)
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{self.path}: field {name!r} = {text!r}: expected an ISO 8601 time") from None

    def matching(self, name: str, pattern: re.Pattern, form: str, *, optional: bool = False) -> Any:
        value = self.get(name, str, optional=optional)
        if value is not None and not pattern.match(value):
            raise UserError(f"{self.path}: field {name!r} = {value!r}: expected {form}")
        return value


# --- build -------------------------------------------------------------------


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


@dataclass(frozen=True)
class BuildRecord(_PerFlavour):
    """The artifact of one flavour: where it came from and its digest."""

    _where = "build_record"

    source: str
    """"cargo" (built here) or "prebuilt" (dropped in and adopted)."""
    ref: str | None
    commit: str | None
    version: str
    rpm_version: str
    flavour: str
    compute_cap: int
    features: tuple[str, ...]
    package: str
    """The cargo package built (upstream.programs' row for the version)."""
    binary_name: str
    package_id: str | None
    """From here to cargo_fresh: what cargo's messages said about the binary
    of this run (None for an adopted binary)."""
    cargo_version: str | None
    cargo_executable: str | None
    cargo_fresh: bool | None
    """True when cargo compiled nothing (every unit was fresh)."""
    rustc: str
    cargo: str
    nvcc: str
    rustflags: str
    sha256: str
    size: int
    duration_s: float
    built_at: datetime
    changelog: tuple[ChangelogEntry, ...]
    source_date_epoch: int | None = None
    """The upstream commit's time (seconds since 1970): SOURCE_DATE_EPOCH of
    the build and of rpmbuild.  None for an adopted binary (rpm then takes
    the time of the newest changelog entry)."""
    compile_cache: dict | None = field(default=None, compare=False)
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

    def to_json(self) -> dict:
        return {
            "source": self.source, "ref": self.ref, "commit": self.commit, "version": self.version,
            "rpm_version": self.rpm_version, "flavour": self.flavour, "compute_cap": self.compute_cap,
            "features": list(self.features), "package": self.package, "binary_name": self.binary_name,
            "package_id": self.package_id, "cargo_version": self.cargo_version,
            "cargo_executable": self.cargo_executable, "cargo_fresh": self.cargo_fresh,
            "rustc": self.rustc, "cargo": self.cargo, "nvcc": self.nvcc, "rustflags": self.rustflags,
            "sha256": self.sha256, "size": self.size, "duration_s": self.duration_s,
            "built_at": utc_stamp(self.built_at), "changelog": [e.to_json() for e in self.changelog],
            "source_date_epoch": self.source_date_epoch,
            **({"compile_cache": self.compile_cache} if self.compile_cache is not None else {}),
        }

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "BuildRecord":
        """The build record of a flavour, every field checked."""
        name = _name(flavour)
        path = layout.build_record(name)
        f = _Fields(path, read_json(path, "build record", hint="build or drop in the artifact first"))
        record_flavour = f.matching("flavour", FLAVOUR_NAME, "a flavour name")
        if record_flavour != name:
            raise UserError(f"{path}: written for flavour {record_flavour!r}, not {name!r}")
        version = f.matching("version", UPSTREAM_VERSION, "an upstream version X.Y.Z or X.Y.Z-rcN")
        rpm_version = check_rpm_version(f.get("rpm_version", str))
        base = rpm_version.split("^", 1)[0]
        if base != version.replace("-rc", "~rc"):
            raise UserError(f"{path}: rpm_version {rpm_version!r} does not belong to upstream version {version!r}")
        ref = f.get("ref", str, optional=True)
        if ref is not None and not (TAG.match(ref) or COMMIT.match(ref)):
            raise UserError(f"{path}: field 'ref' = {ref!r}: expected a release tag or a 40-hex commit id")
        commit = f.matching("commit", COMMIT, "a 40-hex commit id", optional=True)
        features = f.get("features", list)
        for feature in features:
            if not isinstance(feature, str) or not FEATURE_NAME.match(feature):
                raise UserError(f"{path}: feature {feature!r} is not a cargo feature name")
        size = f.get("size", int)
        if size <= 0:
            raise UserError(f"{path}: field 'size' = {size}: expected a positive number of bytes")
        built_at = f.time("built_at")
        entries = f.get("changelog", list)
        sde = f.get("source_date_epoch", int, optional=True) if "source_date_epoch" in f.data else None
        if sde is not None and sde < 0:
            raise UserError(f"{path}: field 'source_date_epoch' = {sde}: expected seconds since 1970")
        return cls(
            source=f.matching("source", re.compile(r"^(cargo|prebuilt)$"), '"cargo" or "prebuilt"'),
            ref=ref,
            commit=commit,
            version=version,
            rpm_version=rpm_version,
            flavour=record_flavour,
            compute_cap=f.get("compute_cap", int),
            features=tuple(features),
            package=f.matching("package", PACKAGE_NAME, "a cargo package name such as \"mistralrs-cli\""),
            binary_name=f.matching("binary_name", PACKAGE_NAME, "a program name such as \"mistralrs\""),
            package_id=f.maybe("package_id", str),
            cargo_version=f.maybe("cargo_version", str),
            cargo_executable=f.maybe("cargo_executable", str),
            cargo_fresh=f.maybe("cargo_fresh", bool),
            # provenance only: shown, never acted on
            rustc=f.get("rustc", str, default=UNKNOWN),
            cargo=f.get("cargo", str, default=UNKNOWN),
            nvcc=f.get("nvcc", str, default=UNKNOWN),
            rustflags=f.get("rustflags", str, default=UNKNOWN),
            sha256=f.matching("sha256", SHA256, "64 lower-case hex digits"),
            size=size,
            duration_s=float(f.get("duration_s", (int, float), default=0.0)),
            built_at=built_at,
            changelog=tuple(ChangelogEntry.from_json(f"{path}: changelog[{i}]", e) for i, e in enumerate(entries)),
            source_date_epoch=sde,
            compile_cache=f.maybe("compile_cache", dict),
        )

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


# --- verify ------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRecord:
    """Verify's verdict: the artifact with this digest passed."""

    sha256: str
    ok: bool
    binary_name: str = UNKNOWN
    method: str = UNKNOWN
    """How the CUDA code was found (cuobjdump or the embedded images)."""
    archs: tuple[int, ...] = ()
    images: int = 0

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "ok": self.ok, "binary_name": self.binary_name, "method": self.method,
                "archs": list(self.archs), "images": self.images}

    def write(self, layout: Layout, flavour: Flavour) -> Path:
        path = layout.verify_record(flavour.name)
        _write(path, self.to_json())
        return path

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour) -> "VerifyRecord":
        path = layout.verify_record(flavour.name)
        f = _Fields(path, read_json(path, "verify record", hint=f"run the verify task for {flavour.name} first"))
        archs = f.get("archs", list, default=[])
        return cls(
            sha256=f.matching("sha256", SHA256, "64 lower-case hex digits"),
            ok=f.get("ok", bool),
            binary_name=f.get("binary_name", str, default=UNKNOWN),
            method=f.get("method", str, default=UNKNOWN),
            archs=tuple(a for a in archs if isinstance(a, int)),
            images=f.get("images", int, default=0),
        )


# --- rpm -----------------------------------------------------------------------


@dataclass(frozen=True)
class RpmRecord(_PerFlavour):
    """The package rpmbuild put into dist/."""

    _where = "rpm_record"

    flavour: str
    path: Path
    name: str
    version: str
    release: str
    arch: str
    sha256: str
    size: int
    payload: str
    payload_compressor: str
    payload_flags: str
    artifact_sha256: str
    duration_s: float
    built_at: datetime

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"

    def to_json(self) -> dict:
        return {
            "flavour": self.flavour, "path": str(self.path), "file": self.file, "nevra": self.nevra,
            "name": self.name, "version": self.version, "release": self.release, "arch": self.arch,
            "sha256": self.sha256, "size": self.size, "payload": self.payload,
            "payload_compressor": self.payload_compressor, "payload_flags": self.payload_flags,
            "artifact_sha256": self.artifact_sha256, "duration_s": self.duration_s,
            "built_at": utc_stamp(self.built_at),
        }

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "RpmRecord":
        name = _name(flavour)
        path = layout.rpm_record(name)
        f = _Fields(path, read_json(path, "rpm record", hint=f"run the rpm task for {name} first"))
        file = f.get("file", str)
        rpm_path = Path(f.get("path", str))
        if "/" in file or rpm_path.name != file:
            raise UserError(f"{path}: field 'file' = {file!r} is not the name of field 'path'")
        built_at = f.time("built_at")
        return cls(
            flavour=f.matching("flavour", FLAVOUR_NAME, "a flavour name"),
            path=rpm_path,
            name=f.get("name", str), version=f.get("version", str), release=f.get("release", str),
            arch=f.get("arch", str),
            sha256=f.matching("sha256", SHA256, "64 lower-case hex digits"),
            size=f.get("size", int),
            payload=f.get("payload", str),
            payload_compressor=f.get("payload_compressor", str),
            payload_flags=f.get("payload_flags", str),
            artifact_sha256=f.matching("artifact_sha256", SHA256, "64 lower-case hex digits"),
            duration_s=float(f.get("duration_s", (int, float))),
            built_at=built_at,
        )


@dataclass(frozen=True)
class RebuildRecord(_PerFlavour):
    """A rebuild-check that found the rebuild identical: the unsigned RPM
    (by digest) that a second, independent build reproduced."""

    _where = "rebuild_record"

    flavour: str
    rpm_file: str
    rpm_sha256: str
    artifact_sha256: str
    ref: str
    commit: str
    checked_at: datetime

    def to_json(self) -> dict:
        return {"flavour": self.flavour, "rpm_file": self.rpm_file, "rpm_sha256": self.rpm_sha256,
                "artifact_sha256": self.artifact_sha256, "ref": self.ref, "commit": self.commit,
                "checked_at": utc_stamp(self.checked_at)}

    @classmethod
    def load(cls, layout: Layout, flavour: Flavour | str) -> "RebuildRecord":
        name = _name(flavour)
        path = layout.rebuild_record(name)
        f = _Fields(path, read_json(path, "rebuild-check record", hint=f"run `doit rebuild-check:{name}`"))
        record_flavour = f.matching("flavour", FLAVOUR_NAME, "a flavour name")
        if record_flavour != name:
            raise UserError(f"{path}: written for flavour {record_flavour!r}, not {name!r}")
        ref = f.get("ref", str)
        if not (TAG.match(ref) or COMMIT.match(ref)):
            raise UserError(f"{path}: field 'ref' = {ref!r}: expected a release tag or a 40-hex commit id")
        rpm_file = f.get("rpm_file", str)
        if "/" in rpm_file or not rpm_file.endswith(".rpm"):
            raise UserError(f"{path}: field 'rpm_file' = {rpm_file!r}: expected the file name of an RPM")
        return cls(
            flavour=record_flavour, rpm_file=rpm_file,
            rpm_sha256=f.matching("rpm_sha256", SHA256, "64 lower-case hex digits"),
            artifact_sha256=f.matching("artifact_sha256", SHA256, "64 lower-case hex digits"),
            ref=ref, commit=f.matching("commit", COMMIT, "a 40-hex commit id"),
            checked_at=f.time("checked_at"),
        )


# --- licenses ------------------------------------------------------------------


@dataclass(frozen=True)
class BundleRecord(_PerFlavour):
    """What one flavour's binary bundles (the linked crates with their
    licenses, the declared components) and the license files packed for the
    spec, computed from the source tree the binary was built from."""

    _where = "bundle_record"

    flavour: str
    commit: str
    version: str
    source_date_epoch: int
    """The commit's time: the SBOM's timestamp."""
    features: tuple[str, ...]
    license_archive_sha256: str
    bundle: Bundle

    @property
    def license(self) -> str:
        return self.bundle.license

    def to_json(self) -> dict:
        b = self.bundle
        return {
            "flavour": self.flavour, "commit": self.commit, "version": self.version,
            "source_date_epoch": self.source_date_epoch, "features": list(self.features),
            "license_archive_sha256": self.license_archive_sha256,
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
        f = _Fields(path, read_json(path, "bundle record", hint=f"run the licenses task for {name} first"))
        record_flavour = f.matching("flavour", FLAVOUR_NAME, "a flavour name")
        if record_flavour != name:
            raise UserError(f"{path}: written for flavour {record_flavour!r}, not {name!r}")
        features = f.get("features", list)
        for feature in features:
            if not isinstance(feature, str) or not FEATURE_NAME.match(feature):
                raise UserError(f"{path}: feature {feature!r} is not a cargo feature name")
        crates = tuple(_crate_of(path, i, e) for i, e in enumerate(f.get("crates", list)))
        components = tuple(_component_of(path, i, e) for i, e in enumerate(f.get("components", list)))
        keys = {c.key for c in crates}
        edges = []
        for i, edge in enumerate(f.get("edges", list)):
            if (not isinstance(edge, list) or len(edge) != 2 or edge[0] not in keys or not isinstance(edge[1], list)
                    or not all(d in keys for d in edge[1])):
                raise UserError(f"{path}: edges[{i}] is not [crate, [crates it links]] of the listed crates")
            edges.append((edge[0], tuple(edge[1])))
        license = f.get("license", str)
        problem = spdx_problem(license)
        if problem:
            raise UserError(f"{path}: field 'license' = {license!r}: {problem}")
        upstream_files = f.get("upstream_license_files", list)
        if not upstream_files or not all(isinstance(n, str) and SAFE_FILE_NAME.match(n) and n not in RESERVED_NAMES
                                         for n in upstream_files):
            raise UserError(f"{path}: upstream_license_files {upstream_files!r}: expected plain file names,"
                            " at least one: run the licenses task again")
        bundle = Bundle(package=f.matching("package", PACKAGE_NAME, "a cargo package name"), crates=crates,
                        components=components, edges=tuple(edges), license=license,
                        upstream_licenses=tuple(Path(n) for n in upstream_files))
        if not any(c.name == bundle.package and c.workspace_member for c in crates):
            raise UserError(f"{path}: the packaged crate {bundle.package!r} is not among the crates")
        epoch = f.get("source_date_epoch", int)
        if epoch < 0:
            raise UserError(f"{path}: field 'source_date_epoch' = {epoch}: expected seconds since 1970")
        return cls(
            flavour=record_flavour,
            commit=f.matching("commit", COMMIT, "a 40-hex commit id"),
            version=f.matching("version", UPSTREAM_VERSION, "an upstream version X.Y.Z or X.Y.Z-rcN"),
            source_date_epoch=epoch,
            features=tuple(features),
            license_archive_sha256=f.matching("license_archive_sha256", SHA256, "64 lower-case hex digits"),
            bundle=bundle,
        )

    def check_fits(self, layout: Layout, build: BuildRecord) -> None:
        """The bundle describes the binary of the build record: same commit
        (a prebuilt binary, which has none: same version) and features."""
        path = layout.bundle_record(self.flavour)
        same_source = self.commit == build.commit if build.commit else self.version == build.version
        if not same_source or tuple(sorted(self.features)) != tuple(sorted(build.features)):
            raise UserError(f"{path} describes another build than {layout.build_record(self.flavour)}:"
                            f" run the licenses task for {self.flavour} again")


def _crate_of(path: Path, i: int, entry: object) -> Crate:
    where = f"{path}: crates[{i}]"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object")
    f = _Fields(Path(where), entry)
    name = f.matching("name", CRATE_NAME, "a crate name")
    version = f.matching("version", SEMVER, "a semver version")
    source = f.get("source", str)
    if source and not (source == CRATES_IO or GIT_SOURCE.match(source)):
        raise UserError(f"{where}: source {source!r} is neither crates.io nor a git repository pinned to a commit")
    license = f.get("license", str)
    problem = spdx_problem(license)
    if problem:
        raise UserError(f"{where}: license {license!r}: {problem}")
    checksum = f.get("checksum", str)
    if checksum and not SHA256.match(checksum):
        raise UserError(f"{where}: checksum {checksum!r} is not 64 lower-case hex digits")
    files = f.get("license_files", list)
    if not all(isinstance(n, str) and SAFE_FILE_NAME.match(n) for n in files):
        raise UserError(f"{where}: license_files {files!r}: expected plain file names")
    return Crate(name=name, version=version, source=source, license=license,
                 declared_license=f.get("declared_license", str),
                 license_from_config=f.get("license_from_config", bool), checksum=checksum,
                 directory=Path("."), license_files=tuple(Path(n) for n in files),
                 workspace_member=f.get("workspace_member", bool))


def _component_of(path: Path, i: int, entry: object) -> BundledComponent:
    where = f"{path}: components[{i}]"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object")
    f = _Fields(Path(where), entry)
    component = BundledComponent(
        name=f.matching("name", COMPONENT_NAME, "a component name"),
        version=f.matching("version", COMPONENT_VERSION, "an rpm version"),
        license=f.get("license", str),
        url=f.matching("url", COMPONENT_URL, "an http(s) URL"),
        commit=f.matching("commit", COMPONENT_COMMIT, "a 40-hex commit id or \"\""),
    )
    problem = spdx_problem(component.license)
    if problem:
        raise UserError(f"{where}: license {component.license!r}: {problem}")
    return component
