"""What a publish does to one channel, decided without touching anything.

:func:`plan_channel` is a plain function of what the publish found: the
channel's metadata as fetched, the host's listing of the channel directory,
the checks' results (:mod:`.checks`), dist/'s packages, the retention and the
file names the current rpm records allow.  Its answer, a :class:`ChannelPlan`,
says what stays as it is, what is new (signed and uploaded), what is pruned,
what is repaired and whether the metadata is made afresh; :mod:`.apply`
carries it out.  Nothing here runs a program, reads a file or logs: the lines
to log are part of the plan (``notes``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ..layout import GATE_SUFFIX, SBOM_SUFFIX
from .channels import PublishError
from .repodata import Metadata
from .rpms import LocalRpm, newest_first
from .transport import Entry


class PackageId(NamedTuple):
    """A package's name and EVR ("E:V-R"): what retention counts by."""

    name: str
    evr: str


class Held(NamedTuple):
    """A package found intact on the host: who it is, and its main header's
    SHA-256 where known (None: the index did not name it)."""

    id: PackageId
    header_sha256: str | None


@dataclass(frozen=True)
class Checked:
    """What the checks of the published packages found (:mod:`.checks`)."""

    trusted: bool
    """The metadata carries the repository key's signature (or there is none yet)."""
    damaged: Mapping[str, str]
    """href -> what is wrong with the package on the host."""
    good: Mapping[str, LocalRpm] | None = None
    """Untrusted metadata: the published packages fetched and found signed by
    the key (href -> package).  None where the metadata is trusted."""


def intact(old: Metadata, checked: Checked) -> dict[str, Held]:
    """The packages that stay published as they are (before retention),
    from the trusted metadata or from the packages fetched and checked."""
    if checked.good is None:
        return {h: Held(PackageId(p.name, p.evr), old.index.get(p.pkgid)) for h, p in old.packages.items()
                if h not in checked.damaged}
    return {h: Held(PackageId(r.name, r.evr), r.header_sha256) for h, r in checked.good.items()}


def select_kept(packages: Mapping[str, PackageId], retention: int) -> tuple[list[str], list[str]]:
    """(kept, pruned) hrefs: the newest ``retention`` of each name, in rpm's
    version order, are kept."""
    by_name: dict[str, dict[str, str]] = {}
    for href, pkg in packages.items():
        by_name.setdefault(pkg.name, {})[pkg.evr] = href
    kept, pruned = [], []
    for _, evrs in sorted(by_name.items()):
        order = newest_first(list(evrs))
        kept += [evrs[e] for e in order[:retention]]
        pruned += [evrs[e] for e in order[retention:]]
    return sorted(kept), sorted(pruned)


@dataclass(frozen=True)
class ChannelPlan:
    channel: str
    """The report's name: the channel's, or ``<channel>/staging``."""
    trusted: bool
    """False: the metadata is made afresh from the packages kept."""
    had_metadata: bool
    held: Mapping[str, Held]
    """What was found intact on the host (href -> package), kept or pruned."""
    new: tuple[LocalRpm, ...]
    """dist/'s packages to sign and upload, healed ones included."""
    unchanged: tuple[str, ...]
    kept: tuple[str, ...]
    """Every href the channel holds afterwards."""
    pruned: tuple[str, ...]
    """Intact packages past retention."""
    stray: tuple[str, ...]
    """Package files on the host that no metadata keeps."""
    orphans: tuple[str, ...]
    """SBOMs and gate records whose package is not kept."""
    damaged: Mapping[str, str]
    healed: tuple[str, ...]
    """Damaged packages uploaded again from dist/; the other damaged ones are dropped."""
    old_md: frozenset[str]
    """The metadata files on the host now."""
    retained_md: frozenset[str]
    """Old metadata files that stay though the new repomd.xml does not name
    them (untrusted metadata: those clients may still fetch)."""
    notes: tuple[str, ...] = ()
    """Lines to log, in order."""
    sbom_damaged: Mapping[str, str] = field(default_factory=dict)
    sbom_fixes: Mapping[str, Path] = field(default_factory=dict)
    """SBOMs to upload again: name -> dist/'s copy."""

    @property
    def up_to_date(self) -> bool:
        """Nothing to sign, no metadata to make: at most SBOMs repaired and strays deleted."""
        return not self.new and not self.pruned and self.trusted and not self.damaged

    @property
    def forget_damaged(self) -> bool:
        """createrepo_c must first drop the damaged packages' entries
        (``--skip-stat`` would reuse them by name)."""
        return self.trusted and bool(self.damaged) and self.had_metadata

    def stays(self) -> dict[str, str]:
        """The intact packages kept (href -> name): whose SBOMs are checked."""
        return {h: self.held[h].id.name for h in self.kept if h in self.held}

    def header_digests(self) -> dict[str, str]:
        """href -> main header's SHA-256, for the channel's package index."""
        digests = {h: held.header_sha256 for h, held in self.held.items() if held.header_sha256}
        digests.update({r.path.name: r.header_sha256 for r in self.new})
        return digests

    def with_sboms(self, damaged: Mapping[str, str], fixes: Mapping[str, Path]) -> ChannelPlan:
        """The plan with the SBOM check of :meth:`stays` (:func:`.checks.check_sboms`)."""
        return replace(self, sbom_damaged=dict(damaged), sbom_fixes=dict(sorted(fixes.items())))


def _repairs(old: Metadata, checked: Checked, by_file: Mapping[str, LocalRpm], tag: str,
             notes: list[str]) -> list[str]:
    """The damaged packages dist/ holds (healed); one whose published header
    differs from dist/'s is refused."""
    healed = []
    for href, why in sorted(checked.damaged.items()):
        if href in by_file:
            published = old.index.get(old.packages[href].pkgid) if checked.trusted and href in old.packages else None
            if published and published != by_file[href].header_sha256:
                raise PublishError(f"{tag}: {href} on the host {why}, and dist/'s {href} has other content;"
                                   " a published package is never replaced by another: raise the release")
            healed.append(href)
            notes.append(f"{tag}: {href} on the host {why}; uploading it again from dist/")
        else:
            notes.append(f"warning: {tag}: {href} on the host {why}, and dist/ does not hold it: dropped from the"
                         " metadata (put it into dist/ and publish again to restore it)")
    return healed


def _sort_dist(rpms: Sequence[LocalRpm], held: Mapping[str, Held], old: Metadata, current: frozenset[str] | None,
               channel_name: str, tag: str, notes: list[str]) -> tuple[list[LocalRpm], list[str]]:
    """dist/'s packages: (new, unchanged); a name-version-release published
    with other content is refused."""
    new, unchanged = [], []
    for rpm in rpms:
        href = rpm.path.name
        if href not in held and current is not None and href not in current and href not in old.packages:
            notes.append(f"{tag}: leaving out {href}: no current rpm record names it (an earlier or abandoned build)")
        elif href not in held:
            new.append(rpm)
        elif held[href].header_sha256 == rpm.header_sha256:
            unchanged.append(href)
        else:
            raise PublishError(f"{href} is already published in channel {channel_name} with other content;"
                               " a published package is never overwritten: raise the release and package again")
    return new, unchanged


def plan_channel(*, channel: str, channel_name: str, tag: str, old: Metadata, had_metadata: bool,
                 listing: Mapping[str, Entry], checked: Checked, rpms: Sequence[LocalRpm], retention: int,
                 current: frozenset[str] | None, release_href: str | None = None,
                 md_mtimes: Mapping[str, float] | None = None, md_horizon: float = 0.0) -> ChannelPlan:
    """The plan for one channel.  channel: the report's name; channel_name:
    the configured channel's; rpms: dist/'s packages for it; current: the
    file names this publish may add (None: any); release_href: the channel's
    mistralrs-release that stays (:mod:`.release`); md_mtimes: the fetched
    metadata files' times on the host, of which those not older than
    md_horizon stay where the metadata is made afresh."""
    notes: list[str] = []
    held = intact(old, checked)
    by_file = {r.path.name: r for r in rpms}
    healed = _repairs(old, checked, by_file, tag, notes)
    new, unchanged = _sort_dist(rpms, held, old, current, channel_name, tag, notes)
    if release_href is not None:
        unchanged.append(release_href)
    candidates = {href: h.id for href, h in held.items()}
    candidates.update({r.path.name: PackageId(r.name, r.evr) for r in new})
    kept, pruned = select_kept(candidates, retention)
    new = [r for r in new if r.path.name in kept]  # a package older than N retained ones is not worth adding
    files = {n for n, e in listing.items() if not e.is_dir}
    stray = sorted(n for n in files if n.endswith(".rpm") and n not in kept and n not in {r.path.name for r in new})
    # An SBOM (and a gate record) stays exactly as long as its package.
    orphans = sorted(n for n in files if any(n.endswith(suffix) and n.removesuffix(suffix) + ".rpm" not in kept
                                             for suffix in (SBOM_SUFFIX, GATE_SUFFIX)))
    retained = frozenset() if checked.trusted else frozenset(
        n for n, t in (md_mtimes or {}).items() if n in old.files and t >= md_horizon)
    return ChannelPlan(
        channel=channel, trusted=checked.trusted, had_metadata=had_metadata, held=held, new=tuple(new),
        unchanged=tuple(unchanged), kept=tuple(kept), pruned=tuple(h for h in pruned if h in held),
        stray=tuple(stray), orphans=tuple(orphans), damaged=dict(checked.damaged), healed=tuple(healed),
        old_md=frozenset(old.files), retained_md=retained, notes=tuple(notes))


@dataclass
class ChannelReport:
    channel: str
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    metadata_rebuilt: bool = False
    damaged: dict[str, str] = field(default_factory=dict)
    """Published packages found not to be what the metadata says: href -> why."""
    healed: list[str] = field(default_factory=list)
    """Of those, uploaded again from dist/."""
    sbom_damaged: dict[str, str] = field(default_factory=dict)
    """Published SBOMs missing or not dist/'s copy (:func:`.checks.check_sboms`): name -> why."""

    @classmethod
    def of(cls, plan: ChannelPlan) -> ChannelReport:
        """What the plan does, once applied."""
        return cls(plan.channel, added=[r.path.name for r in plan.new], unchanged=list(plan.unchanged),
                   pruned=sorted(set(plan.pruned) | set(plan.stray)), kept=list(plan.kept),
                   metadata_rebuilt=not plan.up_to_date, damaged=dict(plan.damaged), healed=list(plan.healed),
                   sbom_damaged=dict(plan.sbom_damaged))
