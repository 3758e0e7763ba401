"""Carrying out a :class:`.plan.ChannelPlan`: sign, make and sign the
metadata, upload, swap, prune.

The order is what keeps a client safe (:mod:`.publisher`): (1) the new
packages and their SBOMs, (2) the new metadata files, (3) ``repomd.xml``,
its signature and our package index together (``--delay-updates``), (4) the
deletions.  A publish killed before (3) leaves the old repository whole; one
killed after it leaves the new one plus files the next publish deletes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..run import atomic_write, log, require_tool, run
from . import signing
from .anchor import Anchor
from .channels import PublishError
from .checks import sbom_of
from .plan import ChannelPlan, ChannelReport
from .repodata import INDEX_NAME, read_metadata, referenced_files
from .transport import Transport

SWAP_FILES = ("repomd.xml", "repomd.xml.asc", INDEX_NAME)


def expire_minutes(seconds: int) -> int:
    """createrepo_c's --retain-old-md-by-age, in whole minutes (at least 1)."""
    return max(1, -(-seconds // 60))


@dataclass(frozen=True)
class Destination:
    """Where a plan is carried out: the channel's directory on the host
    (rel), the staging directory here that holds its fetched metadata, and
    the key that signs."""

    target: Transport
    rel: PurePosixPath
    stage: Path
    tag: str
    key: signing.SigningKey
    anchor: Anchor


def createrepo(stage: Path, pkglist: Sequence[str], update: bool, keep_minutes: int, workers: int = 4) -> None:
    listing = stage / ".pkglist"
    listing.write_text("".join(f"{h}\n" for h in pkglist))
    args = [require_tool("createrepo_c", "install createrepo-c"), "--quiet", "--no-database",
            "--pkglist", listing, "--workers", str(workers)]
    if update:
        args += ["--update", "--skip-stat", f"--retain-old-md-by-age={keep_minutes}m"]
    run([*args, stage], capture=True)


def apply_plan(plan: ChannelPlan, to: Destination, keep_minutes: int, presigned: bool = False) -> ChannelReport:
    """presigned: the new packages are signed already (promotion: checked,
    never signed again)."""
    if plan.up_to_date:
        log(f"{to.tag}: up to date ({len(plan.unchanged)} unchanged, already published, every one as its metadata"
            " says)")
        if plan.sbom_fixes:
            for sbom, source in plan.sbom_fixes.items():
                shutil.copyfile(source, to.stage / sbom)
            to.target.upload(to.stage, list(plan.sbom_fixes), to.rel, what="sboms")
        to.target.delete(to.rel, list(plan.stray + plan.orphans))
        return ChannelReport.of(plan)
    staged, sboms = _sign(plan, to, presigned)
    _make_metadata(plan, to, staged, keep_minutes)
    _upload(plan, to, staged, sboms)
    return ChannelReport.of(plan)


def _sign(plan: ChannelPlan, to: Destination, presigned: bool) -> tuple[list[Path], list[str]]:
    """Copies of the new packages and the SBOMs to upload, in staging (dist/
    keeps the unsigned originals), signed and checked."""
    for rpm in plan.new:
        shutil.copyfile(rpm.path, to.stage / rpm.path.name)
    staged = [to.stage / r.path.name for r in plan.new]
    sources = dict(plan.sbom_fixes)
    for rpm in plan.new:
        if sbom := sbom_of(rpm):
            sources[sbom] = rpm.path.with_name(sbom)
    sboms = sorted(sources)
    for sbom in sboms:
        shutil.copyfile(sources[sbom], to.stage / sbom)
    if not presigned:
        signing.sign_rpms(to.key, staged)
    signing.verify_rpms(to.anchor.public_key, to.anchor.fingerprint, staged)
    return staged, sboms


def _make_metadata(plan: ChannelPlan, to: Destination, staged: Sequence[Path], keep_minutes: int) -> None:
    """createrepo_c over the kept packages (updating the fetched metadata, or
    afresh where it is not trusted), our package index, the signature."""
    repodata = to.stage / "repodata"
    kept = list(plan.kept)
    if not plan.trusted:
        # every kept package is here, checked: metadata made afresh from the files
        shutil.rmtree(repodata, ignore_errors=True)
        createrepo(to.stage, kept, update=False, keep_minutes=keep_minutes)
    else:
        if plan.forget_damaged:
            createrepo(to.stage, [h for h in kept if h in plan.held], update=True, keep_minutes=keep_minutes)
        createrepo(to.stage, kept, update=plan.had_metadata, keep_minutes=keep_minutes)
    built = read_metadata(repodata)
    if sorted(built.packages) != kept:
        raise PublishError(f"{to.tag}: createrepo_c produced metadata for {sorted(built.packages)}, expected {kept}")
    header_digest = plan.header_digests()
    index = {pub.pkgid: header_digest[href] for href, pub in built.packages.items() if href in header_digest}
    atomic_write(repodata / INDEX_NAME, json.dumps({"header_sha256": index}, indent=1, sort_keys=True) + "\n")
    signing.sign_repomd(to.key, repodata)
    # the last word before anything leaves this machine
    signing.verify_rpms(to.anchor.public_key, to.anchor.fingerprint, staged)
    signing.verify_repomd(to.anchor.public_key, to.anchor.fingerprint, repodata)
    referenced = referenced_files(repodata / "repomd.xml")
    for p in repodata.iterdir():  # an intermediate run's files (above) never leave here
        if p.is_file() and p.name not in referenced | plan.old_md | set(SWAP_FILES):
            p.unlink()


def _upload(plan: ChannelPlan, to: Destination, staged: Sequence[Path], sboms: Sequence[str]) -> None:
    """Steps (1) to (4), in this order."""
    repodata = to.stage / "repodata"
    md_files = sorted(p.name for p in repodata.iterdir() if p.is_file())
    hashed = [n for n in md_files if n not in SWAP_FILES and n not in plan.old_md]
    log(f"{to.tag}: uploading {len(staged)} package(s)")
    # --checksum: a damaged package healed from dist/ has the size of the good one, and its time may
    # fall in the second the copy here was made; rsync's size-and-time check would then skip it and
    # report it healed.  Only files on both sides of one size are read for it: new ones cost nothing.
    to.target.upload(to.stage, [p.name for p in staged], to.rel, what="packages", checksum=True)
    if sboms:
        to.target.upload(to.stage, list(sboms), to.rel, what="sboms")
    log(f"{to.tag}: uploading {len(hashed)} metadata file(s)")
    to.target.upload(repodata, hashed, to.rel / "repodata", what="metadata")
    log(f"{to.tag}: swapping in repomd.xml")
    to.target.upload(repodata, list(SWAP_FILES), to.rel / "repodata", what="swap", delay_updates=True, checksum=True)
    log(f"{to.tag}: pruning")
    to.target.delete(to.rel, sorted(set(plan.pruned) | set(plan.stray) | set(plan.orphans)))
    to.target.delete(to.rel / "repodata", sorted(plan.old_md - set(md_files) - plan.retained_md))
