"""Render one flavour's spec from rpm/mistralrs.spec.j2 and its build record.

Nothing from outside (the build record, config.toml's free text) reaches the
spec unchecked: names, versions and digests must match their patterns, free
text is one line of printable characters with ``%`` escaped.

The Release is decided here.  It is 1 for a new (flavour, version) and goes
up by one whenever that version is packaged again from a different spec; a
ledger (layout.release_ledger) remembers which spec digest got which release,
so rendering an unchanged spec again keeps its release.  The digest covers
the spec with the release left out, and the spec names the SHA-256 of every
file it packages, so a changed binary, unit or example file is a changed spec.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from . import layout as paths
from .config import FEATURE_NAME, FLAVOUR_NAME, PACKAGE_NAME, Config
from .layout import Layout
from .refs import COMMIT, TAG, check_rpm_version
from .run import Stopwatch, UserError, atomic_write, sha256_of
from .templates import render

RELEASE_PLACEHOLDER = "@@RELEASE@@"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
UPSTREAM_VERSION = re.compile(r"^\d+\.\d+\.\d+(-rc\d+)?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SPDX_EXPRESSION = re.compile(r"^[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*$")
URL = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]+$")

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def spec_sources(layout: Layout, flavour: str) -> tuple[Path, ...]:
    """Source0..SourceN of the spec, in the template's order."""
    return (
        layout.artifact(flavour),
        paths.UNIT_TEMPLATE,
        paths.UNIT_EXAMPLE,
        paths.SYSUSERS,
        paths.NVIDIA_DEVICES_UNIT,
        paths.LICENSE_TEXT,
    )


# --- the build record --------------------------------------------------------


@dataclass(frozen=True)
class ChangelogEntry:
    rpm_version: str
    tag: str | None
    day: date
    commit: str | None


@dataclass(frozen=True)
class BuildRecord:
    flavour: str
    source: str
    ref: str | None
    commit: str | None
    version: str
    rpm_version: str
    compute_cap: int
    features: tuple[str, ...]
    binary_name: str
    sha256: str
    size: int
    built_at: datetime
    changelog: tuple[ChangelogEntry, ...]


def read_build_record(layout: Layout, flavour: str) -> BuildRecord:
    """The build record of a flavour, every field checked."""
    path = layout.build_record(flavour)
    data = read_json(path, "build record", hint="build or drop in the artifact first")

    def field(name: str, kind: type | tuple[type, ...], *, optional: bool = False):
        if name not in data:
            raise UserError(f"{path}: field {name!r} is missing")
        value = data[name]
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise UserError(f"{path}: field {name!r} = {value!r} has the wrong type")
        return value

    def matching(name: str, pattern: re.Pattern, form: str, *, optional: bool = False):
        value = field(name, str, optional=optional)
        if value is not None and not pattern.match(value):
            raise UserError(f"{path}: field {name!r} = {value!r}: expected {form}")
        return value

    record_flavour = matching("flavour", FLAVOUR_NAME, "a flavour name")
    if record_flavour != flavour:
        raise UserError(f"{path}: written for flavour {record_flavour!r}, not {flavour!r}")
    version = matching("version", UPSTREAM_VERSION, "an upstream version X.Y.Z or X.Y.Z-rcN")
    rpm_version = check_rpm_version(field("rpm_version", str))
    base = rpm_version.split("^", 1)[0]
    if base != version.replace("-rc", "~rc"):
        raise UserError(f"{path}: rpm_version {rpm_version!r} does not belong to upstream version {version!r}")
    ref = field("ref", str, optional=True)
    if ref is not None and not (TAG.match(ref) or COMMIT.match(ref)):
        raise UserError(f"{path}: field 'ref' = {ref!r}: expected a release tag or a 40-hex commit id")
    commit = matching("commit", COMMIT, "a 40-hex commit id", optional=True)
    features = field("features", list)
    for feature in features:
        if not isinstance(feature, str) or not FEATURE_NAME.match(feature):
            raise UserError(f"{path}: feature {feature!r} is not a cargo feature name")
    size = field("size", int)
    if size <= 0:
        raise UserError(f"{path}: field 'size' = {size}: expected a positive number of bytes")
    built_at_text = field("built_at", str)
    try:
        built_at = datetime.fromisoformat(built_at_text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{path}: field 'built_at' = {built_at_text!r}: expected an ISO 8601 time") from None
    entries = field("changelog", list)
    changelog = tuple(_changelog_entry(path, i, e) for i, e in enumerate(entries))
    return BuildRecord(
        flavour=record_flavour,
        source=matching("source", re.compile(r"^(cargo|prebuilt)$"), '"cargo" or "prebuilt"'),
        ref=ref,
        commit=commit,
        version=version,
        rpm_version=rpm_version,
        compute_cap=field("compute_cap", int),
        features=tuple(features),
        binary_name=matching("binary_name", PACKAGE_NAME, "a program name such as \"mistralrs\""),
        sha256=matching("sha256", SHA256, "64 lower-case hex digits"),
        size=size,
        built_at=built_at,
        changelog=changelog,
    )


def _changelog_entry(path: Path, index: int, entry: object) -> ChangelogEntry:
    where = f"{path}: changelog[{index}]"
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
    return ChangelogEntry(rpm_version=rpm_version, tag=tag, day=day, commit=commit)


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


# --- checked text --------------------------------------------------------------


def rpm_text(value: str, what: str) -> str:
    """One line of free text for a spec: printable, with % escaped."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise UserError(f"{what} {value!r}: expected one line of printable text")
    return value.replace("%", "%%")


def _checked(value: str, pattern: re.Pattern, what: str, form: str) -> str:
    if not pattern.match(value):
        raise UserError(f"{what} {value!r}: expected {form}")
    return value


def _cuda_arch(compute_cap: int) -> str:
    return f"{compute_cap // 10}.{compute_cap % 10}"


def _changelog_day(day: date) -> str:
    return f"{_WEEKDAYS[day.weekday()]} {_MONTHS[day.month - 1]} {day.day:02d} {day.year}"


def _describe_change(entry: ChangelogEntry) -> str:
    commit = f" (commit {entry.commit[:12]})" if entry.commit else ""
    if entry.tag and "-rc" in entry.tag:
        return f"Update to upstream release candidate {entry.tag}{commit}"
    if entry.tag:
        return f"Update to upstream release {entry.tag}{commit}"
    return f"Snapshot of upstream{commit or ' (commit not recorded)'}"


# --- rendering ------------------------------------------------------------------


def spec_text(cfg: Config, layout: Layout, record: BuildRecord, release: str, known_releases: dict[str, int]) -> str:
    """The rendered spec, with `release` (a number or the placeholder) as Release."""
    flavour = cfg.flavour(record.flavour)
    if record.compute_cap != flavour.compute_cap:
        raise UserError(
            f"{layout.build_record(flavour.name)}: built for compute capability {record.compute_cap},"
            f" but config.toml says flavours.{flavour.name}.compute_cap = {flavour.compute_cap}: rebuild the flavour"
        )
    expected_binary = cfg.upstream.binary_name(record.version)
    if record.binary_name != expected_binary:
        raise UserError(
            f"{layout.build_record(flavour.name)}: binary_name {record.binary_name!r}, but config.toml's"
            f" upstream.programs gives {expected_binary!r} for version {record.version}"
        )
    pkg = cfg.package
    packager = rpm_text(pkg.packager, "package.packager")
    name = f"mistralrs-{flavour.name}"

    changelog = list(record.changelog)
    if not changelog or changelog[0].rpm_version != record.rpm_version:
        changelog.insert(0, ChangelogEntry(record.rpm_version, record.ref if record.ref and TAG.match(record.ref) else None,
                                           record.built_at.date(), record.commit))
    # Version order, only versions packaged (history.packaged_versions),
    # dates clamped so that rpm accepts the order (history.changelog_order).
    from .history import changelog_order, packaged_versions

    ordered = changelog_order(changelog, packaged_versions(cfg, changelog, known_releases))
    entries = []
    for i, entry in enumerate(ordered):
        entry_release = release if i == 0 else str(known_releases.get(entry.rpm_version, 1))
        entries.append({
            "header": f"{_changelog_day(entry.day)} {packager} - {entry.rpm_version}-{entry_release}",
            "lines": [rpm_text(_describe_change(entry), "changelog line")],
        })

    source_digests = [record.sha256] + [sha256_of(p) for p in spec_sources(layout, flavour.name)[1:]]
    values = {
        "flavour": flavour.name,
        "name": name,
        "version": record.rpm_version,
        "release": release,
        "summary": rpm_text(pkg.summary, "package.summary"),
        "license": _checked(pkg.license, SPDX_EXPRESSION, "package.license", "an SPDX license expression such as MIT"),
        "url": _checked(pkg.url, URL, "package.url", "an http(s) URL"),
        "payload": pkg.payload,
        "artifact_name": layout.artifact(flavour.name).name,
        "artifact_sha256": record.sha256,
        "binary_name": record.binary_name,
        "requires": list(pkg.requires_for(record.features)),
        "conflicts": [f"mistralrs-{other.name}" for other in cfg.flavours if other.name != flavour.name],
        "description": _description(flavour.gpus, flavour.compute_cap, record),
        "source_digests": source_digests,
        "changelog": entries,
    }
    text = render(paths.SPEC_TEMPLATE, **values)
    _check_sources(text, spec_sources(layout, flavour.name))
    return text


def _description(gpus: tuple[str, ...], compute_cap: int, record: BuildRecord) -> str:
    if record.ref and TAG.match(record.ref):
        origin = f"upstream release {record.ref}"
    else:
        origin = f"upstream version {record.version} (snapshot)"
    commit = f", commit {record.commit}" if record.commit else " (commit not recorded)"
    how = "" if record.source == "cargo" else " The binary was built outside this pipeline and dropped in."
    paragraphs = [
        "mistral.rs is a fast LLM inference server with an OpenAI-compatible HTTP API.",
        f"This build is for NVIDIA GPUs of compute capability {_cuda_arch(compute_cap)} (sm_{compute_cap}),"
        f" such as: {', '.join(gpus)}. Install the flavour that matches the GPU; the flavours conflict with each other.",
        f"Built from {origin}{commit}, with the cargo features {', '.join(record.features) or '(none)'}.{how}",
        "The systemd template unit mistralrs@.service runs one server per model, configured in"
        " /etc/mistralrs/<instance>.conf (see /etc/mistralrs/mistralrs@.conf.example). The server has no"
        " authentication; the example listens on 127.0.0.1 only.",
    ]
    wrapped = [textwrap.fill(rpm_text(p, "description text"), width=79, break_on_hyphens=False) for p in paragraphs]
    return "\n\n".join(wrapped)


def _check_sources(text: str, sources: tuple[Path, ...]) -> None:
    """The template's SourceN lines name the files spec_sources() lists."""
    for index, path in enumerate(sources):
        m = re.search(rf"^Source{index}:\s*(\S+)\s*$", text, re.MULTILINE)
        if not m or m.group(1) != path.name:
            found = m.group(1) if m else "nothing"
            raise UserError(f"{paths.SPEC_TEMPLATE}: Source{index} names {found}, expected {path.name}")


def render_spec(cfg: Config, layout: Layout, flavour: str, release: int | None = None) -> Path:
    """Write layout.spec(flavour) for the flavour's build record; return its path."""
    clock = Stopwatch(f"spec {flavour}")
    if not FLAVOUR_NAME.match(flavour):
        raise UserError(f"refusing flavour name {flavour!r}")
    cfg.flavour(flavour)
    if release is not None and (isinstance(release, bool) or not isinstance(release, int) or release < 1):
        raise UserError(f"release {release!r}: expected a whole number of 1 or more")
    record = read_build_record(layout, flavour)
    with _ledger(layout) as ledger:
        versions = ledger.setdefault(flavour, {})
        known = {v: max(digests.values()) for v, digests in versions.items() if digests}
        unnumbered = spec_text(cfg, layout, record, RELEASE_PLACEHOLDER, known)
        digest = hashlib.sha256(unnumbered.encode()).hexdigest()
        digests = versions.setdefault(record.rpm_version, {})
        if release is not None:
            chosen, why = release, "given"
        elif digest in digests:
            chosen, why = digests[digest], "spec unchanged"
        else:
            chosen = max(digests.values(), default=0) + 1
            why = "new version" if chosen == 1 else "spec changed"
        digests[digest] = chosen
    text = unnumbered.replace(RELEASE_PLACEHOLDER, str(chosen))
    target = layout.spec(flavour)
    atomic_write(target, text)
    clock.done(f"mistralrs-{flavour}-{record.rpm_version}-{chosen} ({why})")
    return target


@contextmanager
def _ledger(layout: Layout) -> Iterator[dict]:
    """The release ledger, read and written under a lock (flavours render in parallel)."""
    path = layout.release_ledger
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = read_json(path, "release ledger", hint="") if path.exists() else {}
        _check_ledger(path, ledger)
        yield ledger
        atomic_write(path, json.dumps(ledger, indent=2, sort_keys=True) + "\n")


def _check_ledger(path: Path, ledger: dict) -> None:
    for flavour, versions in ledger.items():
        if not isinstance(versions, dict):
            raise UserError(f"{path}: entry {flavour!r} is not an object; fix or remove the file")
        for version, digests in versions.items():
            if not isinstance(digests, dict) or not all(
                SHA256.match(d) and isinstance(r, int) and not isinstance(r, bool) and r >= 1 for d, r in digests.items()
            ):
                raise UserError(f"{path}: entry {flavour}/{version} is not {{spec digest: release}}; fix or remove the file")
