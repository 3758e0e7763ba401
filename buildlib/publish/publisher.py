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

**The repository's key** (:func:`.anchor.repository_key`): under the lock and
before anything is uploaded, the host's ``RPM-GPG-KEY-mistralrs`` (or the
key ``publish.key_fingerprint`` pins) is compared with the signing key, and
another key is refused; every signature check below is made against that
anchor, and a package in dist/ already signed by another key is refused.

**Sequence**, all under one lock held on the host, in three parts per
channel (:func:`publish_channel`): what the host holds is inspected
(:mod:`.checks`), a pure plan is made of it (:mod:`.plan`), and the plan is
carried out (:mod:`.apply`).  Fetch the metadata and
check its signature; check the published packages against it
(:func:`.checks.check_published`: size, SHA-256 where cheap; missing or damaged ones
are published again from dist/ or dropped); check the SBOMs of the packages that stay
(:func:`.checks.check_sboms`: not in the metadata, so against the copy beside the
package in dist/; a missing or different one is uploaded again from there); metadata the key did not sign
is not believed (:func:`.checks.check_untrusted`: the packages are fetched and each
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

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..config import Channel, Config, LocalTarget, Publish, SshTarget
from ..layout import GATE_SUFFIX, INSTALLED_SBOM, STAGING_SUBDIR, Layout, gate_beside, sbom_beside
from ..pipeline.records import RpmRecord
from ..run import Stopwatch, UserError, log, sha256_of
from . import cleanup, signing, site
from .anchor import Anchor, refuse_foreign_signed, repository_key
from .apply import Destination, apply_plan, expire_minutes
from .channels import RELEASE_PACKAGE, REPO_FILE_NAME, PublishError, channel_dir, render_repo_file, staging_dir
from .checks import by_sbom, check_sboms, inspect_channel, sbom_of
from .plan import ChannelReport, intact, plan_channel
from .release import ReleaseBuilder
from .rpms import LocalRpm, installed_file_sha256, read_rpms
from .transport import Transport
from .transport_local import LocalTransport
from .transport_ssh import SshTransport

__all__ = ["Anchor", "ChannelReport", "Session", "current_packages", "open_transport", "publish_channel",
           "publish_dist", "refuse_foreign_signed", "repository_key"]


def open_transport(publish: Publish, scratch: Path, digest_memo: Path | None = None) -> Transport:
    """The transport for publish.target, one line per kind of target
    (digest_memo: where a local target remembers its files' digests)."""
    if isinstance(publish.target, SshTarget):
        return SshTransport(publish, publish.target, scratch)
    if isinstance(publish.target, LocalTarget):
        return LocalTransport(publish.target, scratch, digest_memo)
    raise PublishError(f"publish.target {publish.target}: no transport for it")


# --- one channel -----------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What every channel of one publish (or promotion) shares: the
    repository host, reached and locked, and the key that signs."""

    cfg: Config
    layout: Layout
    target: Transport
    key: signing.SigningKey
    anchor: Anchor


def publish_channel(s: Session, channel: Channel, rpms: Sequence[LocalRpm], current: frozenset[str] | None = None,
                    release: ReleaseBuilder | None = None, staging: bool = False,
                    presigned: bool = False) -> ChannelReport:
    """Inspect the channel on the host (:mod:`.checks`), plan (:mod:`.plan`),
    apply (:mod:`.apply`).  current: the file names this publish may add
    (:func:`current_packages`; None: any).  release: where the channel's
    mistralrs-release comes from (:mod:`.release`: built here when the
    channel lacks a current one, and dist/'s left aside); None: from rpms,
    as any package.  staging: into the channel's staging area
    (:func:`.channels.staging_dir`), not the channel.  presigned: rpms are
    signed already (promotion: staging's signed bytes go up as they are,
    checked, never signed again)."""
    name = f"{channel.name}/{STAGING_SUBDIR}" if staging else channel.name
    rel = staging_dir(s.cfg, channel) if staging else channel_dir(s.cfg, channel)
    stage = s.layout.staging(f"{channel.name}-{STAGING_SUBDIR}" if staging else channel.name)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    to = Destination(s.target, rel, stage, f"{'promote' if presigned else 'publish'}[{name}]", s.key, s.anchor)
    found = inspect_channel(s.target, rel, stage, s.anchor, to.tag)
    release_href = None
    if release is not None:
        aside = sorted(r.path.name for r in rpms if r.name == RELEASE_PACKAGE)
        if aside:
            log(f"{to.tag}: leaving dist/'s {', '.join(aside)} aside: the publish builds {RELEASE_PACKAGE} itself")
        rpms = [r for r in rpms if r.name != RELEASE_PACKAGE]
        own, release_href = release.for_channel(s.target, rel, found.old, set(intact(found.old, found.checked)),
                                                s.target.scratch / stage.name / "release", to.tag)
        if own is not None:
            rpms.append(own)
            current = None if current is None else current | {own.path.name}
    keep_minutes = expire_minutes(s.cfg.publish.metadata_expire)
    plan = plan_channel(channel=name, channel_name=channel.name, tag=to.tag, old=found.old,
                        had_metadata=found.had_metadata, listing=found.listing, checked=found.checked, rpms=rpms,
                        retention=s.cfg.publish.retention, current=current, release_href=release_href,
                        md_mtimes=found.md_mtimes, md_horizon=time.time() - keep_minutes * 60)
    for note in plan.notes:
        log(note)
    by_file = {r.path.name: r for r in rpms}
    damaged, fixes = check_sboms(s.target, rel, plan.stays(), found.listing, by_file,
                                 s.target.scratch / stage.name / "sboms")
    for sbom, why in sorted(damaged.items()):
        if sbom in fixes:
            log(f"{to.tag}: {sbom} on the host {why}; uploading it again from dist/")
        else:
            log(f"warning: {to.tag}: {sbom} on the host {why}")
    dist_sboms = by_sbom(by_file)
    plan = plan.with_sboms(damaged, {n: dist_sboms[n] for n in fixes})
    return apply_plan(plan, to, keep_minutes, presigned)


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
    the copy that goes up with the package and that :func:`.checks.check_sboms`
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
    it; mistralrs-release has none (:func:`.checks.sbom_of`)."""
    for rpm in rpms:
        if current is None or rpm.path.name in current:
            sbom_of(rpm)


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


def packages_by_channel(cfg: Config, rpms: list[LocalRpm], channel: str | None) -> dict[str, list[LocalRpm]]:
    """dist/'s packages by the channel each goes to (only ``channel``'s, when given)."""
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
    return by_channel


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
    by_channel = packages_by_channel(cfg, rpms, channel)
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
            session = Session(cfg, layout, target, key, anchor)
            release = ReleaseBuilder(cfg, layout, anchor.public_key) if release_package else None
            for name in configured:
                if name not in by_channel:
                    continue
                if not staging:
                    reports.append(publish_channel(session, cfg.channel(name), by_channel[name], current, release))
                    continue
                # flavour packages wait in staging for their gate (doit promote); mistralrs-release,
                # which runs on no GPU, goes to the channel as before
                gated = [r for r in by_channel[name] if r.name != RELEASE_PACKAGE]
                direct = [r for r in by_channel[name] if r.name == RELEASE_PACKAGE]
                if direct or release is not None:
                    reports.append(publish_channel(session, cfg.channel(name), direct, current, release))
                if gated:
                    reports.append(publish_channel(session, cfg.channel(name), gated, current, staging=True))
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
