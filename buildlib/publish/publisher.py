"""Publishing: staging, metadata, the lock, upload, the swap, retention.

What the repository host holds (``publish.target``, a local directory or
``user@host:/path`` reached with rsync over SSH)::

    RPM-GPG-KEY-mistralrs            the public key
    mistralrs.repo                   the users' .repo file
    index.html, style.css            the index page (buildlib/publish/site.py)
    fedora/<releasever>/x86_64/      stable: packages + repodata/
    fedora/<releasever>/x86_64/unstable/   unstable: packages + repodata/

Which channel a package goes to: :mod:`.channels`.  The host is reached
through a :mod:`.transport` (a local directory or SSH); the metadata is read
with :mod:`.repodata`.  ``doit publish --channel NAME`` publishes only that
channel's packages (``mistralrs-release`` included).  Packages are x86_64;
the one noarch package accepted is ``mistralrs-release`` (``NOARCH``).

**Packages move one way, up.**  createrepo_c runs here, where the key is, on
metadata alone: the channel's current ``repodata/`` (small) is fetched into
the staging directory, the new signed packages are put beside it, and
``createrepo_c --update --skip-stat --pkglist LIST`` reuses the old packages'
metadata by file name without their files (tested with createrepo_c 0.17.3:
with ``--skip-stat`` it never stats a cached package).  The explicit list
also keeps the unstable channel's packages, which live below the stable
channel's directory, out of the stable metadata.  Old metadata files stay
for ``publish.metadata_expire`` (``--retain-old-md-by-age``) for clients that
fetched the previous ``repomd.xml`` a moment before the swap.

**The repository's key** (:func:`repository_key`): under the lock and
before anything is uploaded, the host's ``RPM-GPG-KEY-mistralrs`` (or the
key ``publish.key_fingerprint`` pins) is compared with the signing key, and
another key is refused; every signature check below is made against that
anchor, and a package in dist/ already signed by another key is refused.

**Sequence**, all under one lock held on the host: fetch the metadata and
check its signature; check the published packages against it
(:func:`check_published`: size, SHA-256 where cheap; missing or damaged ones
are published again from dist/ or dropped); check the SBOMs of the packages that stay
(:func:`check_sboms`: not in the metadata, so against the copy beside the
package in dist/; a missing or different one is uploaded again from there); metadata the key did not sign
is not believed (:func:`_check_untrusted`: the packages are fetched and each
checked against the key, the metadata made afresh);
refuse a name-version-release that is already published with other content;
sign copies of the new packages in staging (never dist/'s files) and check
every signature; build, sign and check the metadata; (1) upload the new
packages and each one's SBOM (``<name>-<version>-<release>.<arch>.cdx.json``
from beside it in dist/; only ``mistralrs-release`` has none), no deletions; (2) upload the new metadata files (hashed names, no
deletions); (3) swap in ``repomd.xml``, ``repomd.xml.asc`` and our package
index (``mrpm-index.json``, below) in one ``rsync --delay-updates``, which
renames them into place together at the end; (4) delete pruned packages
(with their SBOMs: an SBOM stays as long as its package) and expired
metadata files; once every
channel is done, (5) render the index page (:func:`buildlib.site.render_index`:
what each channel holds now, from this publish's metadata or, for a channel
it did not touch, from that channel's fetched ``repodata/``; the key's
fingerprint; the time of this publish) and upload ``index.html`` and
``style.css`` at the top together (``--delay-updates``).  A publish killed
before (3) leaves the old repository, whose files are all still there; one
killed after (3) leaves the new one plus files the next publish deletes.
(rsync's renames in (3) are separate renames microseconds apart; a client
fetches ``repomd.xml`` and its signature in two requests anyway, and retries
on a mismatch.)

**Same name, other content.**  A published package's signed bytes cannot be
reproduced (the signature carries its time), so each channel keeps
``repodata/mrpm-index.json``: the SHA-256 of each published package's main
header (``%{SHA256HEADER}``, which signing leaves alone) by its file's
checksum.  A package in dist/ whose file name is published with the same
header digest is already there and is reported unchanged (publishing again
uploads no package bytes).  The main header holds the payload's digest
(PAYLOADDIGEST) and every file's, and signing adds only a signature header,
so a bit-for-bit rebuild of a published package (``doit rebuild-check``)
compares equal whatever was signed; with another digest the publish stops:
raise the release.

**The lock** (:meth:`.transport.Transport.lock`).  Local target:
``fcntl.flock`` on the lock file at the top (``layout.PUBLISH_LOCK_NAME``).
Remote target: one SSH session runs ``lock``; the key's forced command
(``scripts/repo-shell``) takes ``flock`` on the same file and holds it until
its standard input closes.  A publish killed in any way closes its SSH
connection, which releases the lock.  The lock covers every step from
fetching the metadata to pruning, so two publishes (or the stable and the
unstable one) never interleave and the second one builds on the first one's
metadata.

**Which packages.**  A publish adds only those the current rpm records
name, plus the current ``mistralrs-release`` (:func:`current_packages`): a
package left in dist/ by an earlier or abandoned build never reaches users.
Other packages of dist/ serve only where their channel lists them already
(restored when damaged, signed anew when the key is replaced).

**Cancelled or killed**: :mod:`.cleanup`.

**CI.**  ``doit publish`` reads only dist/ (and build/rpm/ where present) and
depends on no build task, so a CI job that downloads the packages into dist/
publishes them with an empty doit state and runs no build.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..config import Channel, Config, LocalTarget, Publish, SshTarget
from ..layout import GATE_SUFFIX, INSTALLED_SBOM, SBOM_SUFFIX, STAGING_SUBDIR, Layout, gate_beside, sbom_beside
from ..pipeline.records import RpmRecord
from ..run import Stopwatch, UserError, atomic_write, log, require_tool, run, sha256_of
from . import cleanup, signing, site
from .release import ReleaseBuilder
from .channels import RELEASE_PACKAGE, REPO_FILE_NAME, PublishError, channel_dir, render_repo_file, staging_dir
from .repodata import INDEX_NAME, Metadata, read_metadata, referenced_files
from .rpms import FILE_NAME, LocalRpm, installed_file_sha256, newest_first, read_rpms
from .transport import Entry, Transport
from .transport_local import LocalTransport
from .transport_ssh import SshTransport

SWAP_FILES = ("repomd.xml", "repomd.xml.asc", INDEX_NAME)
MAX_KEY_FILE = 1 << 20
"""More than any public key file needs: a bigger RPM-GPG-KEY-mistralrs is not read."""


def open_transport(publish: Publish, scratch: Path, digest_memo: Path | None = None) -> Transport:
    """The transport for publish.target, one line per kind of target
    (digest_memo: where a local target remembers its files' digests)."""
    if isinstance(publish.target, SshTarget):
        return SshTransport(publish, publish.target, scratch)
    if isinstance(publish.target, LocalTarget):
        return LocalTransport(publish.target, scratch, digest_memo)
    raise PublishError(f"publish.target {publish.target}: no transport for it")


def expire_minutes(seconds: int) -> int:
    """createrepo_c's --retain-old-md-by-age, in whole minutes (at least 1)."""
    return max(1, -(-seconds // 60))


# --- one channel -----------------------------------------------------------


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
    """Published SBOMs missing or not dist/'s copy (:func:`check_sboms`): name -> why."""


@dataclass(frozen=True)
class Anchor:
    """The repository's key, which every signature is checked against: the
    public key on the host (``RPM-GPG-KEY-mistralrs``), or the one
    ``publish.key_fingerprint`` pins (:func:`repository_key`)."""

    fingerprint: str
    public_key: str
    upload: bool = False
    """The host's key file is to be written (first publish, or the key replaced on purpose)."""


def repository_key(cfg: Config, target: Transport, key: signing.SigningKey) -> Anchor:
    """The anchor, decided before anything is uploaded: a signing key whose
    public half is not the repository's key is refused here, in one line."""
    mine = key.fingerprint.upper()
    pinned = cfg.publish.key_fingerprint
    if pinned and mine != pinned:
        raise signing.SigningError(
            f"publish: the signing key {mine} is not the key publish.key_fingerprint pins ({pinned});"
            " nothing was uploaded")
    top = target.stat_dir(PurePosixPath(".")) or {}
    entry = top.get(signing.KEY_FILE_NAME)
    if entry is None:
        log(f"publish: the repository has no {signing.KEY_FILE_NAME} yet; key {mine} becomes its key")
        return Anchor(mine, key.public_key, upload=True)
    if entry.is_dir or entry.size > MAX_KEY_FILE:
        raise signing.SigningError(f"publish: {signing.KEY_FILE_NAME} on the host is not a key file; nothing was uploaded")
    target.fetch_files(PurePosixPath("."), [signing.KEY_FILE_NAME], target.scratch / "anchor")
    armored = (target.scratch / "anchor" / signing.KEY_FILE_NAME).read_text(errors="replace")
    found = signing.key_fingerprints(armored)
    if len(found) != 1:
        raise signing.SigningError(
            f"publish: {signing.KEY_FILE_NAME} on the host holds {len(found)} keys, expected the repository's one;"
            " nothing was uploaded (put the right public key back, or pin it in publish.key_fingerprint)")
    theirs = found[0]
    if theirs == mine:
        return Anchor(theirs, armored)
    if pinned:  # == mine: the key is being replaced on purpose
        log(f"publish: replacing the repository's key {theirs} with {mine} (publish.key_fingerprint pins it)")
        return Anchor(mine, key.public_key, upload=True)
    raise signing.SigningError(
        f"publish: the signing key {mine} is not the repository's key {theirs} ({signing.KEY_FILE_NAME} on the host);"
        " nothing was uploaded (to replace the repository's key on purpose, pin the new one in publish.key_fingerprint)")


def refuse_foreign_signed(rpms: Sequence[LocalRpm], anchor: Anchor) -> None:
    """dist/ holds unsigned packages; one already signed by another key than
    the repository's is refused, not signed over."""
    own = anchor.fingerprint[-16:].lower()
    for rpm in rpms:
        foreign = [k for k in rpm.signers if k != own]
        if foreign:
            raise PublishError(
                f"{rpm.path.name} in dist/ is already signed by key {foreign[0].upper()}, not the repository's key"
                f" {own.upper()}; refusing to publish it (dist/ takes the unsigned packages `doit rpm` makes)")


def _select_kept(packages: dict[str, str], retention: int) -> tuple[list[str], list[str]]:
    """packages: href -> (name, evr) flattened as 'name\tevr'; newest
    ``retention`` per name are kept."""
    by_name: dict[str, dict[str, str]] = {}
    for href, key in packages.items():
        name, evr = key.split("\t")
        by_name.setdefault(name, {})[evr] = href
    kept, pruned = [], []
    for name, evrs in sorted(by_name.items()):
        order = newest_first(list(evrs))
        kept += [evrs[e] for e in order[:retention]]
        pruned += [evrs[e] for e in order[retention:]]
    return sorted(kept), sorted(pruned)


def _createrepo(stage: Path, pkglist: Sequence[str], update: bool, keep_minutes: int, workers: int = 4) -> None:
    listing = stage / ".pkglist"
    listing.write_text("".join(f"{h}\n" for h in pkglist))
    args = [require_tool("createrepo_c", "install createrepo-c"), "--quiet", "--no-database",
            "--pkglist", listing, "--workers", str(workers)]
    if update:
        args += ["--update", "--skip-stat", f"--retain-old-md-by-age={keep_minutes}m"]
    run([*args, stage], capture=True)


def check_published(target: Transport, rel: PurePosixPath, old: Metadata, listing: dict[str, Entry],
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


def _check_untrusted(target: Transport, rel: PurePosixPath, old: Metadata, listing: dict[str, Entry],
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


def recent_files(directory: Path, names: set[str], minutes: int) -> set[str]:
    """The names among ``names`` whose copy in directory (fetched with the
    host's times) changed less than ``minutes`` ago."""
    horizon = time.time() - minutes * 60
    return {n for n in names if (directory / n).is_file() and (directory / n).stat().st_mtime >= horizon}


def _sbom_of(rpm: LocalRpm) -> str | None:
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


def by_sbom(by_file: dict[str, LocalRpm]) -> dict[str, Path]:
    """SBOM file name -> its path in dist/, for the packages in dist/."""
    return {sbom_beside(href): rpm.path.with_name(sbom_beside(href)) for href, rpm in by_file.items()}


def check_sboms(target: Transport, rel: PurePosixPath, published: dict[str, str], listing: dict[str, Entry],
                by_file: dict[str, LocalRpm], scratch: Path) -> tuple[dict[str, str], list[str]]:
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


def publish_channel(cfg: Config, layout: Layout, target: Transport, key: signing.SigningKey, anchor: Anchor,
                    channel: Channel, rpms: Sequence[LocalRpm],
                    current: frozenset[str] | None = None, release: ReleaseBuilder | None = None,
                    staging: bool = False, presigned: bool = False) -> ChannelReport:
    """current: the file names this publish may add (:func:`current_packages`;
    None: any).  release: where the channel's mistralrs-release comes from
    (:mod:`.release`: built here when the channel lacks a current one, and
    dist/'s left aside); None: from rpms, as any package.  staging: into
    the channel's staging area (:func:`.channels.staging_dir`), not the
    channel.  presigned: rpms are signed already (promotion: staging's
    signed bytes go up as they are, checked, never signed again)."""
    report = ChannelReport(f"{channel.name}/{STAGING_SUBDIR}" if staging else channel.name)
    rel = staging_dir(cfg, channel) if staging else channel_dir(cfg, channel)
    stage = layout.staging(f"{channel.name}-{STAGING_SUBDIR}" if staging else channel.name)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    tag = f"{'promote' if presigned else 'publish'}[{report.channel}]"

    listing = target.stat_dir(rel) or {}
    if "repodata" in listing:
        target.fetch(rel / "repodata", stage / "repodata")
    old = read_metadata(stage / "repodata")
    remote_md_files = set(old.files)
    had_metadata = bool(old.packages) or (stage / "repodata" / "repomd.xml").exists()
    trusted = not had_metadata
    if had_metadata:
        try:
            signing.verify_repomd(anchor.public_key, anchor.fingerprint, stage / "repodata")
            trusted = True
        except signing.SigningError as e:
            log(f"{tag}: the published metadata's signature is not good ({e}); rebuilding it from the packages")

    # what stays published as it is: href -> (name\tevr, header digest)
    if trusted:
        report.damaged = check_published(target, rel, old, listing, target.scratch / stage.name)
        base = {h: (f"{p.name}\t{p.evr}", old.index.get(p.pkgid)) for h, p in old.packages.items()
                if h not in report.damaged}
    else:
        good, report.damaged = _check_untrusted(target, rel, old, listing, anchor, stage, tag)
        base = {h: (f"{r.name}\t{r.evr}", r.header_sha256) for h, r in good.items()}
    release_href = None
    if release is not None:
        aside = sorted(r.path.name for r in rpms if r.name == RELEASE_PACKAGE)
        if aside:
            log(f"{tag}: leaving dist/'s {', '.join(aside)} aside: the publish builds {RELEASE_PACKAGE} itself")
        rpms = [r for r in rpms if r.name != RELEASE_PACKAGE]
        own, release_href = release.for_channel(target, rel, old, set(base), target.scratch / stage.name / "release",
                                                tag)
        if own is not None:
            rpms.append(own)
            current = None if current is None else current | {own.path.name}
    by_file = {r.path.name: r for r in rpms}
    for href, why in sorted(report.damaged.items()):
        if href in by_file:
            published_digest = old.index.get(old.packages[href].pkgid) if trusted and href in old.packages else None
            if published_digest and published_digest != by_file[href].header_sha256:
                raise PublishError(f"{tag}: {href} on the host {why}, and dist/'s {href} has other content;"
                                   " a published package is never replaced by another: raise the release")
            report.healed.append(href)
            log(f"{tag}: {href} on the host {why}; uploading it again from dist/")
        else:
            log(f"warning: {tag}: {href} on the host {why}, and dist/ does not hold it: dropped from the metadata"
                " (put it into dist/ and publish again to restore it)")

    new: list[LocalRpm] = []
    for rpm in rpms:
        href = rpm.path.name
        if href not in base and current is not None and href not in current and href not in old.packages:
            log(f"{tag}: leaving out {href}: no current rpm record names it (an earlier or abandoned build)")
        elif href not in base:
            new.append(rpm)
        elif base[href][1] == rpm.header_sha256:
            report.unchanged.append(href)
        else:
            raise PublishError(
                f"{href} is already published in channel {channel.name} with other content;"
                " a published package is never overwritten: raise the release and package again"
            )

    if release_href is not None:
        report.unchanged.append(release_href)
    candidates = {href: nevr for href, (nevr, _) in base.items()}
    candidates.update({r.path.name: f"{r.name}\t{r.evr}" for r in new})
    kept, pruned = _select_kept(candidates, cfg.publish.retention)
    new = [r for r in new if r.path.name in kept]  # a package older than N retained ones is not worth adding
    report.kept, report.pruned = kept, [h for h in pruned if h in base]
    stray = sorted(n for n, e in listing.items() if not e.is_dir and n.endswith(".rpm") and n not in kept
                   and n not in {r.path.name for r in new})
    # An SBOM (and a gate record) stays exactly as long as its package.
    orphans = sorted(n for n, e in listing.items() if not e.is_dir and any(
        n.endswith(suffix) and n.removesuffix(suffix) + ".rpm" not in kept for suffix in (SBOM_SUFFIX, GATE_SUFFIX)))

    report.sbom_damaged, sbom_fixes = check_sboms(
        target, rel, {h: base[h][0].split("\t")[0] for h in kept if h in base}, listing, by_file,
        target.scratch / stage.name / "sboms")
    for sbom, why in sorted(report.sbom_damaged.items()):
        if sbom in sbom_fixes:
            log(f"{tag}: {sbom} on the host {why}; uploading it again from dist/")
        else:
            log(f"warning: {tag}: {sbom} on the host {why}")
    dist_sboms = by_sbom(by_file)

    if not new and not report.pruned and trusted and not report.damaged:
        log(f"{tag}: up to date ({len(report.unchanged)} unchanged, already published, every one as its metadata says)")
        if sbom_fixes:
            for sbom in sbom_fixes:
                shutil.copyfile(dist_sboms[sbom], stage / sbom)
            target.upload(stage, sbom_fixes, rel, what="sboms")
        target.delete(rel, stray + orphans)
        report.pruned += stray
        return report

    # sign copies in staging; dist/ keeps the unsigned originals
    for rpm in new:
        shutil.copyfile(rpm.path, stage / rpm.path.name)
    staged = [stage / r.path.name for r in new]
    sboms = [sbom for rpm in new if (sbom := _sbom_of(rpm))]
    sboms = sorted(set(sboms) | set(sbom_fixes))
    for sbom in sboms:
        shutil.copyfile(dist_sboms[sbom], stage / sbom)
    if not presigned:
        signing.sign_rpms(key, staged)
    signing.verify_rpms(anchor.public_key, anchor.fingerprint, staged)

    keep_minutes = expire_minutes(cfg.publish.metadata_expire)
    retained: set[str] = set()
    if not trusted:
        # Clients may still hold the last good repomd.xml and fetch the files
        # it names for metadata_expire: those stay on the host as on every
        # publish (a client checks each against the repomd.xml it verified).
        retained = recent_files(stage / "repodata", remote_md_files, keep_minutes)
        # every kept package is here, checked: metadata made afresh from the files
        shutil.rmtree(stage / "repodata", ignore_errors=True)
        _createrepo(stage, kept, update=False, keep_minutes=keep_minutes)
    else:
        if report.damaged and had_metadata:
            # forget the damaged packages' entries first: --skip-stat would reuse them by name
            _createrepo(stage, [h for h in kept if h in base], update=True, keep_minutes=keep_minutes)
        _createrepo(stage, kept, update=had_metadata, keep_minutes=keep_minutes)
    built = read_metadata(stage / "repodata")
    if sorted(built.packages) != kept:
        raise PublishError(f"{tag}: createrepo_c produced metadata for {sorted(built.packages)}, expected {kept}")
    header_digest = {h: d for h, (_, d) in base.items() if d}
    header_digest.update({r.path.name: r.header_sha256 for r in new})
    index = {pub.pkgid: header_digest[href] for href, pub in built.packages.items() if href in header_digest}
    atomic_write(stage / "repodata" / INDEX_NAME, json.dumps({"header_sha256": index}, indent=1, sort_keys=True) + "\n")
    signing.sign_repomd(key, stage / "repodata")
    # the last word before anything leaves this machine
    signing.verify_rpms(anchor.public_key, anchor.fingerprint, staged)
    signing.verify_repomd(anchor.public_key, anchor.fingerprint, stage / "repodata")
    report.metadata_rebuilt = True

    repodata = stage / "repodata"
    referenced = referenced_files(repodata / "repomd.xml")
    for p in repodata.iterdir():  # an intermediate run's files (above) never leave here
        if p.is_file() and p.name not in referenced | remote_md_files | set(SWAP_FILES):
            p.unlink()
    md_files = sorted(p.name for p in repodata.iterdir() if p.is_file())
    hashed = [n for n in md_files if n not in SWAP_FILES and n not in remote_md_files]
    log(f"{tag}: uploading {len(staged)} package(s)")
    target.upload(stage, [p.name for p in staged], rel, what="packages")
    if sboms:
        target.upload(stage, sboms, rel, what="sboms")
    log(f"{tag}: uploading {len(hashed)} metadata file(s)")
    target.upload(repodata, hashed, rel / "repodata", what="metadata")
    log(f"{tag}: swapping in repomd.xml")
    target.upload(repodata, list(SWAP_FILES), rel / "repodata", what="swap", delay_updates=True, checksum=True)
    log(f"{tag}: pruning")
    target.delete(rel, sorted(set(report.pruned) | set(stray) | set(orphans)))
    target.delete(rel / "repodata", sorted(remote_md_files - set(md_files) - retained))
    report.pruned = sorted(set(report.pruned) | set(stray))
    report.added = [p.name for p in staged]
    return report


# --- the whole publish -----------------------------------------------------


def _upload_top(cfg: Config, target: Transport, anchor: Anchor) -> None:
    """.repo file and the channel directories; the public key only where the
    host has none yet or it is being replaced on purpose (:func:`repository_key`)."""
    top = target.scratch / "top"
    top.mkdir()
    (top / REPO_FILE_NAME).write_text(render_repo_file(cfg))
    names = [REPO_FILE_NAME]
    if anchor.upload:
        (top / signing.KEY_FILE_NAME).write_text(anchor.public_key)
        names.append(signing.KEY_FILE_NAME)
    for channel in cfg.channels:
        path = channel_dir(cfg, channel)
        (top / path).mkdir(parents=True, exist_ok=True)
        names.append(str(path))
    target.upload(top, names, PurePosixPath("."), what="top", checksum=True)


def published_files(cfg: Config, target: Transport, channel: Channel) -> list[str]:
    """The package file names a channel's published metadata lists (its
    ``repodata/`` fetched into the scratch directory; packages never)."""
    rel = channel_dir(cfg, channel)
    listing = target.list_dir(rel) or {}
    if not listing.get("repodata"):
        return []
    dest = target.scratch / "published" / channel.name / "repodata"
    target.fetch(rel / "repodata", dest)
    return site.packages_in(dest)


def gate_results(cfg: Config, target: Transport, held: dict[str, list[str]]) -> dict[str, str]:
    """Package file name -> where and when it passed its gate, from the gate
    records promotion put beside the channels' packages."""
    from ..gate.record import GateRecord

    tested: dict[str, str] = {}
    for channel in cfg.channels:
        rel = channel_dir(cfg, channel)
        listing = target.stat_dir(rel) or {}
        names = [gate_beside(h) for h in held.get(channel.name, []) if gate_beside(h) in listing]
        if not names:
            continue
        dest = target.scratch / "gate-records" / channel.name
        target.fetch_files(rel, names, dest)
        for name in names:
            try:
                record = GateRecord.from_json((dest / name).read_text(errors="replace"), name)
            except UserError:
                continue
            if record.passed:
                tested[name.removesuffix(GATE_SUFFIX) + ".rpm"] = record.proven()
    return tested


def _upload_index(cfg: Config, target: Transport, key: signing.SigningKey, reports: Sequence[ChannelReport],
                  when: datetime) -> dict[str, list[str]]:
    """Render the index page from what every channel holds now and upload
    index.html and style.css at the top, together (step 5)."""
    done = {r.channel: sorted(r.kept) for r in reports}
    held = {c.name: done[c.name] if c.name in done else published_files(cfg, target, c) for c in cfg.channels}
    out = target.scratch / "site"
    out.mkdir()
    files = site.render_index(cfg, out, held, key.fingerprint, when, gate_results(cfg, target, held))
    target.upload(out, [f.name for f in files], PurePosixPath("."), what="site", delay_updates=True, checksum=True)
    return held


def current_packages(cfg: Config, layout: Layout) -> frozenset[str] | None:
    """The file names in dist/ that a publish may add to a channel: those
    the current rpm records name (one per configured flavour,
    layout.rpm_record) and the current mistralrs-release package.  Any other
    package in dist/ (an earlier version, a build abandoned when a setting
    was reverted) is added nowhere; it is used only where its channel lists
    it already (published before: restored or signed anew from dist/).
    Each record's SBOM must be beside its package in dist/ and be the very
    file the package installs (INSTALLED_SBOM, by rpm's file digest): it is
    the copy that goes up with the package and that :func:`check_sboms`
    holds the published one to.  None where there is no rpm record at all: dist/ was handed over without
    them (a CI publish job downloads only the packages, built in the same
    run), and any of its packages may be added."""
    records = [RpmRecord.load(layout, f) for f in cfg.flavours if layout.rpm_record(f.name).exists()]
    if not records:
        log(f"publish: no rpm record of any flavour: every package in {layout.dist} counts (handed over, as in CI)")
        return None
    current = {layout.release_rpm(cfg.host.release_package_version, cfg.package.dist).name}
    for record in records:
        if not (layout.dist / record.file).is_file():
            raise PublishError(f"{layout.rpm_record(record.flavour)} names {record.file}, which is not in"
                               f" {layout.dist}: run `doit rpm:{record.flavour}` again")
        # its SBOM goes up with it, and check_sboms holds the published one to this copy
        sbom = layout.dist / sbom_beside(record.file)
        if not sbom.is_file():
            raise PublishError(f"{layout.rpm_record(record.flavour)} names {record.file}, but its SBOM {sbom.name}"
                               f" is not beside it in {layout.dist}: run `doit rpm:{record.flavour}` again")
        if installed_file_sha256(layout.dist / record.file, INSTALLED_SBOM) != sha256_of(sbom):
            raise PublishError(f"{sbom.name} in {layout.dist} is not the SBOM {record.file} installs"
                               f" ({INSTALLED_SBOM}): run `doit rpm:{record.flavour}` again")
        current.add(record.file)
    return frozenset(current)


def check_selected_sboms(rpms: Sequence[LocalRpm], current: frozenset[str] | None) -> None:
    """Before anything is uploaded: every package this publish may add
    (current's, or all of dist/ where current is None) has its SBOM beside
    it; mistralrs-release has none (:func:`_sbom_of`)."""
    for rpm in rpms:
        if current is None or rpm.path.name in current:
            _sbom_of(rpm)


def publish_dist(cfg: Config, layout: Layout, channel: str | None = None, release_package: bool = False,
                 staging: bool = False) -> dict:
    """Publish dist/'s current packages (:func:`current_packages`): each to
    its channels (:func:`.channels.channels_for`), or only to ``channel``;
    then the index page at the top.  SIGTERM, SIGHUP and SIGINT end it with
    one line, its secrets removed (:mod:`.cleanup`).  release_package: the
    publish builds each channel's mistralrs-release itself where the channel
    lacks a current one (:mod:`.release`; CI), and a publish of every
    channel reaches every channel; else dist/'s is published as any package.
    staging (what `doit publish` does): the flavour packages go to their
    channel's staging area, for `doit gate` and `doit promote`
    (:mod:`.promote`); mistralrs-release still goes to the channel."""
    with cleanup.cancellable("publish"):
        return _publish_dist(cfg, layout, channel, release_package, staging)


def _publish_dist(cfg: Config, layout: Layout, channel: str | None, release_package: bool = False,
                  staging: bool = False) -> dict:
    watch = Stopwatch("publish")
    cleanup.sweep([layout.gnupg_parent])
    if channel:
        cfg.channel(channel)  # validates the name
    paths = sorted(layout.dist.glob("*.rpm"))
    current = current_packages(cfg, layout)
    if not paths:
        raise PublishError(f"nothing to publish: {layout.dist} holds no RPMs (run `doit rpm`, or put the packages there)")
    rpms = read_rpms(paths)
    configured = [c.name for c in cfg.channels]
    by_channel: dict[str, list[LocalRpm]] = {}
    for rpm in rpms:
        targets = rpm.channels(configured)
        for name in targets:
            if name not in configured:
                raise PublishError(f"{rpm.path.name} belongs to channel {name}, which {cfg.source} has no [channels.{name}] for")
        if channel and channel not in targets:
            log(f"publish: {rpm.path.name} belongs to channel {', '.join(targets)}; not publishing it (--channel {channel})")
            continue
        for name in targets if not channel else [channel]:
            by_channel.setdefault(name, []).append(rpm)
    if not by_channel:
        raise PublishError(f"nothing to publish for channel {channel}: dist/ holds no package of that channel")
    if release_package and not channel:  # every channel gets a current mistralrs-release, whatever dist/ holds for it
        for name in configured:
            by_channel.setdefault(name, [])
    check_selected_sboms([r for rs in by_channel.values() for r in rs], current)
    reports = []
    layout.build.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=cleanup.SCRATCH_PREFIX) as scratch:
        cleanup.mark_owner(Path(scratch))
        cleanup.watch(Path(scratch))  # the upload key lives here
        target = open_transport(cfg.publish, Path(scratch), layout.publish_digests)
        with signing.signing_key(cfg.publish, layout.gnupg_parent) as key, target.lock():
            anchor = repository_key(cfg, target, key)
            refuse_foreign_signed(rpms, anchor)
            _upload_top(cfg, target, anchor)
            release = ReleaseBuilder(cfg, layout, anchor.public_key) if release_package else None
            for name in configured:
                if name not in by_channel:
                    continue
                if not staging:
                    reports.append(publish_channel(cfg, layout, target, key, anchor, cfg.channel(name),
                                                   by_channel[name], current, release))
                    continue
                # flavour packages wait in staging for their gate (doit promote); mistralrs-release,
                # which runs on no GPU, goes to the channel as before
                gated = [r for r in by_channel[name] if r.name != RELEASE_PACKAGE]
                direct = [r for r in by_channel[name] if r.name == RELEASE_PACKAGE]
                if direct or release is not None:
                    reports.append(publish_channel(cfg, layout, target, key, anchor, cfg.channel(name),
                                                   direct, current, release))
                if gated:
                    reports.append(publish_channel(cfg, layout, target, key, anchor, cfg.channel(name),
                                                   gated, current, None, staging=True))
            log("publish: index page")
            held = _upload_index(cfg, target, key, reports, datetime.now(timezone.utc))
        sent = dict(target.bytes_sent)
    summary = "; ".join(
        f"{r.channel}: +{len(r.added)} ={len(r.unchanged)} -{len(r.pruned)}" for r in reports
    )
    watch.done(f"{summary}; package bytes sent {sent.get('packages', 0)}")
    return {
        "channels": {r.channel: {"added": r.added, "unchanged": r.unchanged, "pruned": r.pruned, "kept": r.kept,
                                 "metadata_rebuilt": r.metadata_rebuilt, "damaged": r.damaged,
                                 "healed": r.healed, "sbom_damaged": r.sbom_damaged} for r in reports},
        "index": held,
        "bytes_sent": sent,
        "seconds": round(watch.seconds, 2),
    }
