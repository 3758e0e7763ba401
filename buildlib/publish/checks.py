"""The checks of what a channel holds on the host, before the plan.

:func:`inspect_channel` fetches the channel's ``repodata/`` (packages never,
unless the metadata is not signed by the repository's key) and checks the
published packages against it; :func:`check_sboms` checks the SBOMs of the
packages the plan keeps.  Their results are the plan's input
(:mod:`.plan`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..layout import sbom_beside
from ..run import log, sha256_of
from . import signing
from .anchor import Anchor
from .channels import RELEASE_PACKAGE, PublishError
from .plan import Checked
from .repodata import Metadata, read_metadata
from .rpms import FILE_NAME, LocalRpm, read_rpms
from .transport import Entry, Transport


@dataclass(frozen=True)
class Found:
    """What :func:`inspect_channel` found on the host."""

    listing: Mapping[str, Entry]
    old: Metadata
    had_metadata: bool
    checked: Checked
    md_mtimes: Mapping[str, float]
    """The fetched metadata files' times on the host."""


def inspect_channel(target: Transport, rel: PurePosixPath, stage: Path, anchor: Anchor, tag: str) -> Found:
    """Fetch the channel's metadata into stage/repodata, check its signature
    and the published packages against it (or, where it is not the key's,
    against the key: :func:`check_untrusted`)."""
    listing = target.stat_dir(rel) or {}
    if "repodata" in listing:
        target.fetch(rel / "repodata", stage / "repodata")
    old = read_metadata(stage / "repodata")
    had_metadata = bool(old.packages) or (stage / "repodata" / "repomd.xml").exists()
    trusted = not had_metadata
    if had_metadata:
        try:
            signing.verify_repomd(anchor.public_key, anchor.fingerprint, stage / "repodata")
            trusted = True
        except signing.SigningError as e:
            log(f"{tag}: the published metadata's signature is not good ({e}); rebuilding it from the packages")
    if trusted:
        checked = Checked(True, check_published(target, rel, old, listing, target.scratch / stage.name))
    else:
        good, damaged = check_untrusted(target, rel, old, listing, anchor, stage, tag)
        checked = Checked(False, damaged, good)
    md = stage / "repodata"
    md_mtimes = {n: (md / n).stat().st_mtime for n in old.files if (md / n).is_file()}
    return Found(listing, old, had_metadata, checked, md_mtimes)


def check_published(target: Transport, rel: PurePosixPath, old: Metadata, listing: Mapping[str, Entry],
                    scratch: Path) -> dict[str, str]:
    """The channel's packages on the host against its (trusted) metadata:
    href -> what is wrong, for each one missing or not the file the metadata
    describes.  Size always; SHA-256 of every file where the transport hashes
    cheaply (a local directory), else of those whose time changed since the
    metadata was made (only those are fetched)."""
    damaged: dict[str, str] = {}
    suspect = []
    for href, pub in sorted(old.packages.items()):
        entry = listing.get(href)
        if entry is None or entry.is_dir:
            damaged[href] = "is missing"
        elif pub.size >= 0 and entry.size != pub.size:
            damaged[href] = f"has {entry.size} bytes where the metadata says {pub.size}"
        elif pub.checksum_type == "sha256" and (pub.mtime < 0 or entry.mtime != pub.mtime):
            suspect.append(href)
    hashed = target.digests(rel, [h for h in old.packages if h not in damaged and old.packages[h].checksum_type == "sha256"])
    if hashed is None:
        fetched = scratch / "suspect"
        target.fetch_files(rel, suspect, fetched)
        hashed = {h: sha256_of(fetched / h) for h in suspect if (fetched / h).is_file()}
    for href, digest in hashed.items():
        if digest != old.packages[href].pkgid:
            damaged[href] = "does not match the SHA-256 in the metadata"
    return damaged


def check_untrusted(target: Transport, rel: PurePosixPath, old: Metadata, listing: Mapping[str, Entry],
                     anchor: Anchor, stage: Path, tag: str) -> tuple[dict[str, LocalRpm], dict[str, str]]:
    """Metadata not signed by the repository's key says nothing: fetch the
    packages it lists and check each against the key.  Returns the good ones
    (href -> package, their files in stage) and the bad ones (href -> why).
    A package signed by another key is never signed over (not even by the
    key being replaced: the host's key file is not trusted for that)."""
    names = sorted(h for h in old.packages if FILE_NAME.match(h) and h in listing and not listing[h].is_dir)
    damaged = {h: "is missing" for h in old.packages if FILE_NAME.match(h) and h not in names}
    log(f"{tag}: checking the {len(names)} published package(s) against the repository's key")
    target.fetch_files(rel, names, stage)
    files = [stage / n for n in names if (stage / n).is_file()]
    for f, why in signing.check_rpms(anchor.public_key, anchor.fingerprint, files).items():
        if why:
            damaged[f.name] = f"fails the check against the repository's key ({why})"
            f.unlink()
    good = {r.path.name: r for r in read_rpms([f for f in files if f.exists()])}
    return good, damaged


def sbom_of(rpm: LocalRpm) -> str | None:
    """The name of the SBOM that goes up with rpm (beside it in dist/), None
    for mistralrs-release, which has none; a flavour package without one is
    refused."""
    sbom = rpm.path.with_name(sbom_beside(rpm.path.name))
    if sbom.is_file():
        return sbom.name
    if rpm.name == RELEASE_PACKAGE:
        return None
    raise PublishError(f"{rpm.path.name}: its SBOM {sbom.name} is not beside it in {rpm.path.parent};"
                       " package it again, or copy the SBOM there with the package")


def by_sbom(by_file: Mapping[str, LocalRpm]) -> dict[str, Path]:
    """SBOM file name -> its path in dist/, for the packages in dist/."""
    return {sbom_beside(href): rpm.path.with_name(sbom_beside(href)) for href, rpm in by_file.items()}


def check_sboms(target: Transport, rel: PurePosixPath, published: dict[str, str], listing: Mapping[str, Entry],
                by_file: Mapping[str, LocalRpm], scratch: Path) -> tuple[dict[str, str], list[str]]:
    """The SBOMs of the packages that stay published (published: href ->
    package name).  They are not in the repository's metadata, so nothing
    signed names their digest; the copy beside the package in dist/ is the
    reference where there is one (the package installs the same file: its
    spec checks the SHA-256).  Returns (SBOM name -> what is wrong, SBOMs to
    upload again from dist/).  The SBOM of a package that dist/ does not hold
    is checked for presence only; a missing one is reported, not restored.
    mistralrs-release has no SBOM."""
    local = by_sbom(by_file)
    damaged: dict[str, str] = {}
    compare = []
    for href, name in sorted(published.items()):
        if name == RELEASE_PACKAGE:
            continue
        sbom = sbom_beside(href)
        entry = listing.get(sbom)
        here = local.get(sbom)
        if here is not None and not here.is_file():
            here = None
        if entry is None or entry.is_dir:
            damaged[sbom] = "is missing" + ("" if here else ", and dist/ does not hold it to restore it from")
        elif here is not None and entry.size != here.stat().st_size:
            damaged[sbom] = f"has {entry.size} bytes where dist/'s copy has {here.stat().st_size}"
        elif here is not None:
            compare.append(sbom)
    hashed = target.digests(rel, compare) if compare else {}
    if hashed is None:
        target.fetch_files(rel, compare, scratch)
        hashed = {n: sha256_of(scratch / n) for n in compare if (scratch / n).is_file()}
    for sbom in compare:
        if hashed.get(sbom) != sha256_of(local[sbom]):
            damaged[sbom] = "is not the copy beside its package in dist/"
    fixes = sorted(n for n in damaged if n in local and local[n].is_file())
    return damaged, fixes


