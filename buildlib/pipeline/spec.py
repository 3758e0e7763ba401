"""Render one flavour's spec from rpm/mistralrs.spec.j2 and its build record.

Nothing from outside (the build record, config.toml's free text) reaches the
spec unchecked: names, versions and digests must match their patterns (the
configuration's values were checked when it loaded), free text is one line of
printable characters, and the renderer (templates.render with spec=True)
escapes ``%`` in every value it writes into the spec.

The Release is decided here (:func:`choose_release`).  It is 1 for a new
(flavour, version) and goes up by one whenever that version is packaged
again from a different spec, never down; a ledger (layout.release_ledger)
remembers which spec digest got which release, so rendering the spec that
got the highest release again keeps its release, while going back to an
earlier spec (a setting tried and reverted) gets the next one.  Where the
ledger has no entry for the version (a fresh CI checkout), the numbering
goes on after the highest release the package's channel holds
(:mod:`buildlib.publish.held`).  The digest covers
the spec with the release left out, and the spec names the SHA-256 of every
file it packages, so a changed binary, unit or example file is a changed spec.
One of those files, the SBOM, names the release itself: the digest is taken
over the spec rendered with a placeholder release, which names the digest of
the SBOM made with that placeholder (so every other change to the SBOM, a
toolchain's version say, is a changed spec); the numbered spec and its SBOM
are then made again.

License and the bundled() provides come from the licenses stage's record
(:class:`.records.BundleRecord`), never from config.toml's free text.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

from .. import layout as paths
from ..config import URL, Config, Flavour, package_name
from ..layout import Layout
from ..publish.held import held_release
from ..run import Stopwatch, UserError, atomic_write, sha256_of
from ..spdx import spdx_problem
from ..templates import SpecLines, render
from .bundled import RESERVED_NAMES, SAFE_FILE_NAME
from .history import changelog_order, packaged_versions
from .records import SHA256, BuildRecord, BundleRecord, ChangelogEntry, read_json
from .sbom import package_sbom
from .sbom import validate as validate_sbom

RELEASE_PLACEHOLDER = "@@RELEASE@@"
# What the License tag may hold besides spdx_problem's check: SPDX ids
# (LicenseRef-/DocumentRef- included), AND/OR/WITH and parentheses, single
# spaces.  No '%' and no line break ever reach templates.spec_value.
LICENSE_TAG = re.compile(r"^[A-Za-z0-9.+():-]+( [A-Za-z0-9.+():-]+)*\Z")

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def spec_sources(layout: Layout, flavour: Flavour) -> tuple[Path, ...]:
    """Source0..SourceN of the spec, in the template's order.  The first is
    the binary, the last the SBOM (which the spec task writes itself)."""
    return (
        layout.artifact(flavour.name),
        paths.UNIT_TEMPLATE,
        paths.UNIT_EXAMPLE,
        paths.SYSUSERS,
        paths.NVIDIA_DEVICES_UNIT,
        layout.license_archive(flavour.name),
        layout.sbom(flavour.name),
    )


def spec_inputs(layout: Layout, flavour: Flavour) -> tuple[Path, ...]:
    """The sources the spec task reads (and hashes): all but the binary,
    covered by its record, and the SBOM, which the task writes."""
    return spec_sources(layout, flavour)[1:-1]


def spec_settings(cfg: Config, flavour: Flavour) -> dict:
    """Every setting of config.toml that reaches a flavour's spec: the spec
    task's up-to-date check and the rendering both take them from here."""
    pkg = cfg.package
    return {
        "payload": pkg.payload,
        "url": pkg.url,
        "dist": pkg.dist,
        "summary": pkg.summary,
        "packager": pkg.packager,
        "requires": list(pkg.requires),
        "feature_requires": {feature: list(deps) for feature, deps in pkg.feature_requires},
        "flavours": [f.name for f in cfg.flavours],
        "gpus": list(flavour.gpus),
        "compute_cap": flavour.compute_cap,
        "programs": [[".".join(map(str, p.first)), p.package, p.binary] for p in cfg.upstream.programs],
    }


def _requires(settings: dict, features: tuple[str, ...]) -> list[str]:
    """package.requires, then feature_requires of the features built, once each."""
    extra = [dep for feature, deps in settings["feature_requires"].items() if feature in features for dep in deps]
    return list(dict.fromkeys(settings["requires"] + extra))


# --- checked text --------------------------------------------------------------


def rpm_text(value: str, what: str) -> str:
    """One line of free text for a spec: printable (the renderer escapes %)."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise UserError(f"{what} {value!r}: expected one line of printable text")
    return value


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


def spec_text(cfg: Config, layout: Layout, flavour: Flavour, record: BuildRecord, release: str,
              known_releases: dict[str, int]) -> str:
    """The rendered spec, with `release` (a number or the placeholder) as Release."""
    record.check_fits(cfg, layout, flavour)
    bundle = BundleRecord.load(layout, flavour)
    bundle.check_fits(layout, record)
    settings = spec_settings(cfg, flavour)
    packager = rpm_text(settings["packager"], "package.packager")
    # checked before the SBOM, which names them too
    url = _checked(settings["url"], URL, "package.url", "an http(s) URL")
    license = _license(bundle.license)
    name = flavour.package

    changelog = list(record.changelog)
    if not changelog or changelog[0].rpm_version != record.rpm_version:
        # the commit's day where known: a rebuild on another day renders the same spec
        day = (datetime.fromtimestamp(record.source_date_epoch, timezone.utc).date()
               if record.source_date_epoch is not None else record.built_at.date())
        changelog.insert(0, ChangelogEntry(record.rpm_version, record.tag, day, record.commit))
    # Version order, only versions packaged (history.packaged_versions),
    # dates clamped so that rpm accepts the order (history.changelog_order).
    ordered = changelog_order(changelog, packaged_versions(cfg, changelog, known_releases))
    entries = []
    for i, entry in enumerate(ordered):
        entry_release = release if i == 0 else str(known_releases.get(entry.rpm_version, 1))
        entries.append({
            "header": f"{_changelog_day(entry.day)} {packager} - {entry.rpm_version}-{entry_release}",
            "lines": [rpm_text(_describe_change(entry), "changelog line")],
        })

    inputs = spec_inputs(layout, flavour)
    if sha256_of(layout.license_archive(flavour.name)) != bundle.license_archive_sha256:
        raise UserError(f"{layout.license_archive(flavour.name)} is not the one its bundle record names:"
                        f" run the licenses task for {flavour.name} again")
    sbom = hashlib.sha256(package_sbom(cfg, flavour, record, bundle, release).encode()).hexdigest()
    source_digests = [record.sha256] + [sha256_of(p) for p in inputs] + [sbom]
    values = {
        "flavour": flavour.name,
        "name": name,
        "version": record.rpm_version,
        "release": release,
        "summary": rpm_text(settings["summary"], "package.summary"),
        "license": license,
        "bundled_provides": list(bundle.bundle.provides()),
        "license_texts": any(c.license_files for c in bundle.bundle.crates),
        # upstream's own license text(s) at this commit, at the top of the archive
        "upstream_licenses": [_upstream_license_name(p.name) for p in bundle.bundle.upstream_licenses],
        "url": url,
        "payload": settings["payload"],
        "artifact_name": layout.artifact(flavour.name).name,
        "artifact_sha256": record.sha256,
        "binary_name": record.binary_name,
        "requires": _requires(settings, record.features),
        "conflicts": [package_name(other) for other in settings["flavours"] if other != flavour.name],
        "description": _description(tuple(settings["gpus"]), settings["compute_cap"], record),
        "source_digests": source_digests,
        "changelog": entries,
    }
    text = render(paths.SPEC_TEMPLATE, spec=True, **values)
    _check_sources(text, spec_sources(layout, flavour))
    return text


def _license(expression: str) -> str:
    """The License tag: the bundle's SPDX expression, checked once more
    (the bundle record is a file on disk, read back)."""
    problem = spdx_problem(expression) if LICENSE_TAG.match(expression) else "expected SPDX ids, AND, OR, WITH and parentheses"
    if problem:
        raise UserError(f"License {expression!r}: {problem}")
    return expression


def _upstream_license_name(name: str) -> str:
    """A name for %license: a plain file name (no glob or macro character),
    checked once more (the bundle record is a file on disk, read back)."""
    if not SAFE_FILE_NAME.match(name) or name in RESERVED_NAMES:
        raise UserError(f"upstream license file {name!r}: expected a plain file name; run the licenses task again")
    return name


def _description(gpus: tuple[str, ...], compute_cap: int, record: BuildRecord) -> SpecLines:
    if record.tag:
        origin = f"upstream release {record.tag}"
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
    lines: list[str] = []
    for p in paragraphs:
        lines += ([""] if lines else []) + textwrap.wrap(rpm_text(p, "description text"), width=79, break_on_hyphens=False)
    return SpecLines(lines)


def _check_sources(text: str, sources: tuple[Path, ...]) -> None:
    """The template's SourceN lines name the files spec_sources() lists."""
    for index, path in enumerate(sources):
        m = re.search(rf"^Source{index}:\s*(\S+)\s*$", text, re.MULTILINE)
        if not m or m.group(1) != path.name:
            found = m.group(1) if m else "nothing"
            raise UserError(f"{paths.SPEC_TEMPLATE}: Source{index} names {found}, expected {path.name}")


def render_spec(cfg: Config, layout: Layout, flavour: Flavour, release: int | None = None) -> Path:
    """Write layout.spec(flavour) for the flavour's build record; return its path."""
    clock = Stopwatch(f"spec {flavour.name}")
    if release is not None and (isinstance(release, bool) or not isinstance(release, int) or release < 1):
        raise UserError(f"release {release!r}: expected a whole number of 1 or more")
    record = BuildRecord.load(layout, flavour)
    name = f"mistralrs-{flavour.name}"
    with _ledger(layout) as ledger:
        versions = ledger.setdefault(flavour.name, {})
        known = {v: max(digests.values()) for v, digests in versions.items() if digests}
        unnumbered = spec_text(cfg, layout, flavour, record, RELEASE_PLACEHOLDER, known)
        digest = hashlib.sha256(unnumbered.encode()).hexdigest()
        digests = versions.setdefault(record.rpm_version, {})
        chosen, why = choose_release(digests, digest, release,
                                     lambda: held_release(cfg, name, record.rpm_version))
        digests[digest] = chosen
    # The SBOM names the release, so the numbered spec (its digest) is made again.
    text = spec_text(cfg, layout, flavour, record, str(chosen), known)
    sbom_text = package_sbom(cfg, flavour, record, BundleRecord.load(layout, flavour), str(chosen))
    validate_sbom(sbom_text)
    atomic_write(layout.sbom(flavour.name), sbom_text)
    target = layout.spec(flavour.name)
    atomic_write(target, text)
    clock.done(f"{flavour.package}-{record.rpm_version}-{chosen} ({why})")
    return target


def choose_release(digests: dict[str, int], digest: str, given: int | None,
                   held: Callable[[], int]) -> tuple[int, str]:
    """The Release for a spec digest, given the ledger's {spec digest:
    release} of its (flavour, version); returns (release, why).

    Releases only go up: the spec that got the highest release keeps it; any
    other spec, a new one or one used before (a setting tried and reverted),
    gets the next number, so a package built earlier never becomes the
    newest again.  With no entry for the version (a new version, or a lost
    ledger), ``held()`` tells the highest release the channel holds and the
    numbering goes on from there.
    """
    highest = max(digests.values(), default=0)
    if not digests:
        highest = held()
    if given is not None:
        if given < highest and digests.get(digest) != given:
            raise UserError(f"release {given} is lower than release {highest}, already used for this version:"
                            " Releases only go up")
        if given == highest and digests.get(digest) != given:
            # one NEVR, two different packages: the channel would refuse the second
            where = "by another spec" if digests else "in its channel"
            raise UserError(f"release {given} is already used for this version {where}:"
                            f" give {highest + 1} or more")
        return given, "given"
    if digest in digests and digests[digest] == highest:
        return highest, "spec unchanged"
    if digest in digests:
        return highest + 1, f"an earlier spec again (release {digests[digest]}); Releases only go up"
    if not digests and highest:
        return highest + 1, f"the channel holds release {highest}"
    return highest + 1, "new version" if highest == 0 else "spec changed"


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
