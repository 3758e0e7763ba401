"""`doit promote --channel NAME`: from the channel's staging area into the
channel, exactly the bytes that passed their gate.

Under the publish lock: staging's metadata must carry the repository key's
signature; per flavour, the newest staged package is taken where the
channel does not hold it yet.  A flavour with ``gate = "required"`` needs
its gate record beside the staged package (:mod:`buildlib.gate.record`),
passed, naming the main header's SHA-256 that staging's metadata gives and
that the staged file (fetched here) has; ``gate = "off"`` is promoted
untested.  The chosen files go into the channel as they are, their
signatures checked and never made again (:func:`.publisher.publish_channel`
with ``presigned``), with the same signed-metadata swap as a publish; the
gate record goes beside each, for the index page.  Nothing is rebuilt or
re-signed.  A package refused leaves the others to go: the task then ends
with one line naming each refusal."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..config import Config, Gate
from ..gate.record import GateRecord
from ..layout import Layout, gate_beside, sbom_beside
from ..run import Refused, log
from . import cleanup, signing
from .channels import channel_dir, staging_dir
from .publisher import Session, _upload_index, open_transport, publish_channel, repository_key
from .repodata import read_metadata
from .rpms import LocalRpm, newest_first, read_rpms
from .transport import Entry, Transport


def promote(cfg: Config, layout: Layout, channel: str) -> dict:
    ch = cfg.channel(channel)
    with cleanup.cancellable("promote"):
        return _promote(cfg, layout, ch)


def _fetch_chosen(target: Transport, srel: PurePosixPath, chosen: dict[str, str], listing: Mapping[str, Entry],
                  got: Path) -> tuple[list[LocalRpm], dict[str, str]]:
    """The chosen packages fetched from staging into got, with their SBOMs
    and gate records, each held to the header digest chosen for it: (the
    good ones, href -> why refused)."""
    names = sorted(chosen) + sorted(sbom_beside(h) for h in chosen)
    names += sorted(gate_beside(h) for h in chosen if gate_beside(h) in listing)
    got.mkdir()
    if chosen:
        target.fetch_files(srel, names, got)
    rpms, refused = [], {}
    for rpm in read_rpms([got / h for h in sorted(chosen)]):
        # the file itself, not only staging's word for it
        if rpm.header_sha256 != chosen[rpm.path.name]:
            refused[rpm.path.name] = (f"{rpm.path.name} in staging is not the package that passed its gate (its header"
                                      f" SHA-256 is {rpm.header_sha256[:16]}…, expected {chosen[rpm.path.name][:16]}…)")
        else:
            rpms.append(rpm)
    return rpms, refused


def _promote(cfg: Config, layout: Layout, ch) -> dict:
    tag = f"promote[{ch.name}]"
    refused: list[str] = []
    untested: list[str] = []
    proven: dict[str, str] = {}
    layout.build.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=cleanup.SCRATCH_PREFIX) as scratch_name:
        scratch = Path(scratch_name)
        cleanup.mark_owner(scratch)
        cleanup.watch(scratch)
        target = open_transport(cfg.publish, scratch)
        with signing.signing_key(cfg.publish, layout.gnupg_parent) as key, target.lock():
            anchor = repository_key(cfg, target, key)
            srel, crel = staging_dir(cfg, ch), channel_dir(cfg, ch)
            listing = target.stat_dir(srel) or {}
            if "repodata" not in listing:
                raise Refused(f"{tag}: the {ch.name} staging area ({srel}) holds nothing: `doit publish` puts packages there")
            target.fetch(srel / "repodata", scratch / "staged-md" / "repodata")
            signing.verify_repomd(anchor.public_key, anchor.fingerprint, scratch / "staged-md" / "repodata")
            staged = read_metadata(scratch / "staged-md" / "repodata")
            in_channel = {}
            if "repodata" in (target.stat_dir(crel) or {}):
                target.fetch(crel / "repodata", scratch / "channel-md" / "repodata")
                in_channel = read_metadata(scratch / "channel-md" / "repodata").packages
            chosen: dict[str, str] = {}  # href -> the header digest that must be its
            for f in cfg.flavours:
                mine = {p.evr: href for href, p in staged.packages.items() if p.name == f.package}
                if not mine:
                    continue
                href = mine[newest_first(list(mine))[0]]
                digest = staged.index.get(staged.packages[href].pkgid, "")
                if href in in_channel:
                    log(f"{tag}: {href} is in the channel already")
                    continue
                if f.gate == Gate.OFF:
                    log(f"{tag}: {href}: flavours.{f.name}.gate = \"off\": promoted untested (not tested on hardware)")
                    untested.append(href)
                    chosen[href] = digest
                    continue
                record_name = gate_beside(href)
                if record_name not in listing:
                    refused.append(f"{href} has no gate record (run `doit gate:{f.name} --channel {ch.name}` on a"
                                   f" gpu-sm{f.compute_cap} runner)")
                    continue
                target.fetch_files(srel, [record_name], scratch / "records")
                record = GateRecord.from_json((scratch / "records" / record_name).read_text(errors="replace"),
                                              record_name)
                if not record.passed:
                    failed = next((s["name"] for s in record.steps if not s.get("passed")), "?")
                    refused.append(f"{href} failed its gate on {record.gpu} ({failed}, {record.finished})")
                elif record.header_sha256 != digest or not digest:
                    refused.append(f"{href} in staging is not the package that passed its gate (header SHA-256"
                                   f" {digest[:16] or 'unknown'}…, the gate ran {record.header_sha256[:16]}…)")
                else:
                    chosen[href] = digest
                    proven[href] = record.proven()
            got = scratch / "promote"
            rpms, wrong = _fetch_chosen(target, srel, chosen, listing, got)
            refused += wrong.values()
            untested = [u for u in untested if u not in wrong]
            for href in wrong:
                proven.pop(href, None)
            report = None
            if rpms:
                signing.verify_rpms(anchor.public_key, anchor.fingerprint, [r.path for r in rpms])
                report = publish_channel(Session(cfg, layout, target, key, anchor), ch, rpms, presigned=True)
                records = [gate_beside(r.path.name) for r in rpms if (got / gate_beside(r.path.name)).is_file()]
                if records:
                    target.upload(got, records, crel, what="gate", checksum=True)
                log(f"{tag}: index page")
                _upload_index(cfg, target, key, [report], datetime.now(timezone.utc))
    promoted = sorted(r.path.name for r in rpms)
    log(f"{tag}: promoted {len(promoted)}: " + (", ".join(
        f"{h} ({proven.get(h, 'not tested on hardware')})" for h in promoted) or "nothing"))
    if refused:
        raise Refused(f"{tag}: refused " + "; ".join(refused))
    return {"channel": ch.name, "promoted": promoted, "untested": [u for u in untested if u in promoted],
            "proven": proven, "kept": sorted(report.kept) if report else []}


