"""Render one flavour's spec from rpm/mistralrs.spec.j2 and its build record.

Nothing from outside (the build record, config.toml's free text) reaches the
spec unchecked: names, versions and digests must match their patterns (the
configuration's values were checked when it loaded), free text is one line of
printable characters, and the renderer (templates.render with spec=True)
escapes ``%`` in every value it writes into the spec.

The unsigned RPM is a function of the tag, the flavour, the configuration and
what the package's channel has published, and of nothing in the build
directory: a fresh clone, a long-lived build directory and a CI runner whose
``build/`` starts empty make the same bytes.  (An old ``build/releases.json``,
the local ledger this once kept, is ignored.)

**Release** (:func:`choose_release`).  The spec is first rendered with a
placeholder Release; its SHA-256 (the *spec digest*) covers everything that
reaches the package: the spec names the SHA-256 of every file it packages
(the binary, the unit, the example, the license archive, the SBOM), every
setting of config.toml and the %changelog.  One of those files, the SBOM,
names the release itself: the digest is taken over the spec rendered with the
placeholder, which names the digest of the SBOM made with that placeholder
(so every other change to the SBOM, a toolchain's version say, is a changed
spec).  The package carries the digest as a provide
(``repodata.SPEC_PROVIDE``), so the channel's metadata tells which spec each
published Release was built from (:mod:`buildlib.publish.held`), and:

- the channel's highest Release of this version carries this digest: that
  Release again (the same package; publish finds it unchanged);
- else the channel holds the version: its highest Release + 1 (also when an
  older Release carries this digest: a setting tried, published and
  reverted must become the newest for dnf; Releases only go up);
- else 1.

The digest of the spec, not only of the binary, is what is matched: the same
binary with other Requires, another unit or another summary is another
unsigned RPM, and giving it a published NEVR would only have publish refuse
it.  A channel that cannot be read stops the stage in one line, unless the
release is given (``render_spec(release=...)``).  Packages published before
they carried the provide match no spec: the next build of such a version
takes the next Release, once.

**%changelog** (:func:`buildlib.pipeline.history.changelog_versions`): the
version packaged now, then every final release among upstream's tags in the
commit's history (the build record's changelog) from the first row of
upstream.programs on, each as ``V-1``, the Release that brought that upstream
version (later Releases of a version change packaging, not upstream, and get
no entry; Fedora's changelog formats all carry a version-release, so it is
not left out).  Release candidates other than the one packaged now are never
listed, and nothing comes from the channel: whether an rc was ever packaged
is not in the tags, and a channel forgets packages (retention), so a
changelog read from it would change the spec of one tag over time and turn a
rebuild of a published package into a new Release.

License and the bundled() provides come from the licenses stage's record
(:class:`.records.BundleRecord`), never from config.toml's free text.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Sequence
from datetime import date, datetime, timezone
from pathlib import Path

from .. import layout as paths
from ..config import URL, Config, Flavour, package_name
from ..layout import Layout
from ..publish.held import ChannelUnreadable, HeldRelease, held_releases
from ..publish.repodata import SPEC_PROVIDE
from ..run import Stopwatch, UserError, atomic_write, log, sha256_of
from ..spdx import spdx_problem
from ..templates import SpecLines, render
from .license_files import RESERVED_NAMES, SAFE_FILE_NAME
from .history import changelog_order, changelog_versions
from .records import BuildRecord, BundleRecord, ChangelogEntry
from .sbom import package_sbom
from .sbom import validate as validate_sbom

RELEASE_PLACEHOLDER = "@@RELEASE@@"
SPEC_DIGEST_PLACEHOLDER = "@@SPEC_SHA256@@"
"""What the spec provides as its own digest while the digest is taken."""
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
        # NAME-{cuda} already spelled out for package.cuda_runtime, so that a
        # change of the range re-renders the spec
        "requires": [pkg.dependency(dep) for dep in pkg.requires],
        "feature_requires": {feature: [pkg.dependency(dep) for dep in deps] for feature, deps in pkg.feature_requires},
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
              spec_sha256: str = SPEC_DIGEST_PLACEHOLDER) -> str:
    """The rendered spec, with `release` (a number or the placeholder) as
    Release and `spec_sha256` (the digest or its placeholder) as the
    SPEC_PROVIDE's version."""
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
    # Version order, only the versions history.changelog_versions lists,
    # dates clamped so that rpm accepts the order (history.changelog_order).
    # An older version shows Release 1, the one that brought it (see above).
    ordered = changelog_order(changelog, changelog_versions(cfg, changelog))
    entries = []
    for i, entry in enumerate(ordered):
        entry_release = release if i == 0 else "1"
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
        "spec_provide": SPEC_PROVIDE,
        "spec_sha256": spec_sha256,
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
    unnumbered = spec_text(cfg, layout, flavour, record, RELEASE_PLACEHOLDER)
    digest = hashlib.sha256(unnumbered.encode()).hexdigest()
    try:
        held = held_releases(cfg, flavour.package, record.rpm_version)
    except ChannelUnreadable as e:
        if release is None:
            raise
        # the release was given for this case; publish still refuses a NEVR it holds with other content
        log(f"warning: {e}; taking the given release {release}")
        held = []
    chosen, why = choose_release(held, digest, release)
    # The SBOM names the release, so the numbered spec (its digest) is made again.
    text = spec_text(cfg, layout, flavour, record, str(chosen), digest)
    sbom_text = package_sbom(cfg, flavour, record, BundleRecord.load(layout, flavour), str(chosen))
    validate_sbom(sbom_text)
    atomic_write(layout.sbom(flavour.name), sbom_text)
    target = layout.spec(flavour.name)
    atomic_write(target, text)
    clock.done(f"{flavour.package}-{record.rpm_version}-{chosen} ({why})")
    return target


def choose_release(held: Sequence[HeldRelease], digest: str, given: int | None) -> tuple[int, str]:
    """The Release for the spec digest `digest`, given what the channel
    holds of its (flavour, version) (:func:`buildlib.publish.held.held_releases`);
    returns (release, why).  The rules are the module's."""
    highest = max((h.release for h in held), default=0)
    same = sorted(h.release for h in held if h.spec_sha256 == digest)
    if given is not None:
        taken = {h.release for h in held if h.spec_sha256 != digest}
        if given in taken:
            # one NEVR, two different packages: publish would refuse the second
            raise UserError(f"release {given} of this version is published with another spec:"
                            f" give {highest + 1} or more")
        if given < highest and given not in same:
            raise UserError(f"release {given} is lower than release {highest}, published for this version:"
                            " Releases only go up")
        return given, "given"
    if same and same[-1] == highest:
        return highest, "published with this spec"
    if same:
        return highest + 1, (f"this spec is published as release {same[-1]}, release {highest} is newer;"
                             " Releases only go up")
    if highest:
        return highest + 1, f"the channel holds release {highest} with another spec"
    return 1, "new version"
