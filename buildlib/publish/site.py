"""The index page at the repository's root, rendered at each publish.

Plain HTML and one stylesheet, no JavaScript: what the repository offers
(channels, flavours and the GPUs they serve, the versions present, each
with a link to its SBOM published beside the package), how to
install it, the signing key's fingerprint and when it was last published.

``repo.publish_dist`` calls :func:`render_index` at the end of each publish,
under the publish lock, with what each channel holds then (the package file
names: ``ChannelReport.kept`` for a channel it published to, :func:`packages_in`
of the fetched ``repodata/`` for the others), the signing key's fingerprint
and the time of the publish, and uploads the two files it returns beside
``mistralrs.repo``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


from . import signing
from ..config import STABLE, Config
from ..layout import SITE_INDEX_TEMPLATE, SITE_STYLESHEET, sbom_beside
from .channels import RELEASE_PACKAGE, REPO_FILE_NAME, channel_dir, default_gpgkey, repo_id
from .repodata import read_metadata
from .rpms import newest_first
from ..run import UserError, atomic_write
from ..templates import render

INDEX_TEMPLATE = SITE_INDEX_TEMPLATE
STYLESHEET = SITE_STYLESHEET
INDEX_NAME = "index.html"
STYLE_NAME = "style.css"
RPM_FILE = re.compile(r"^(?P<name>[A-Za-z0-9._+-]+)-(?P<version>[^-]+)-(?P<release>[^-]+)\.(?P<arch>[a-z0-9_]+)\.rpm\Z")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    release: str
    arch: str
    file: str

    @property
    def version_release(self) -> str:
        return f"{self.version}-{self.release}"


def parse_file_name(name: str) -> Package:
    m = RPM_FILE.match(name)
    if not m:
        raise UserError(f"{name!r} is not an RPM file name of the form name-version-release.arch.rpm")
    return Package(m["name"], m["version"], m["release"], m["arch"], name)


def packages_in(repodata: Path) -> list[str]:
    """The package file names a channel's repodata/ lists."""
    return sorted(Path(href).name for href in read_metadata(repodata).packages)


def _newest_first(packages: Sequence[Package]) -> list[Package]:
    by_evr = {f"0:{p.version}-{p.release}": p for p in packages}
    return [by_evr[e] for e in newest_first(list(by_evr))]


def group_fingerprint(fingerprint: str) -> str:
    fp = fingerprint.upper().replace(" ", "")
    return " ".join(fp[i:i + 4] for i in range(0, len(fp), 4))


NOT_TESTED = "not tested on hardware"


def index_context(cfg: Config, published: Mapping[str, Sequence[str]], fingerprint: str,
                  when: datetime, tested: Mapping[str, str] | None = None) -> dict:
    """tested: package file name -> where and when it passed its gate
    (:meth:`buildlib.gate.record.GateRecord.proven`); any other: NOT_TESTED."""
    tested = tested or {}
    base_url = cfg.publish.base_url.rstrip("/")
    parsed = {ch: [parse_file_name(Path(f).name) for f in files] for ch, files in published.items()}
    channels = []
    for channel in cfg.channels:
        files = parsed.get(channel.name, [])
        release_packages = _newest_first([p for p in files if p.name == RELEASE_PACKAGE])
        channels.append({
            "name": channel.name,
            "id": repo_id(channel.name),
            "url": f"{base_url}/{channel_dir(cfg, channel)}/",
            "is_default": channel.is_stable,
            "release_package_url": (f"{base_url}/{channel_dir(cfg, channel)}/{release_packages[0].file}"
                                    if release_packages else ""),
        })
    flavours = []
    for flavour in cfg.flavours:
        name = flavour.package
        versions = {}
        for channel in cfg.channels:
            # each version with its SBOM, published beside the package
            versions[channel.name] = [
                {"version_release": p.version_release, "file": p.file,
                 "sbom_url": f"{base_url}/{channel_dir(cfg, channel)}/{sbom_beside(p.file)}",
                 "tested": tested.get(p.file, NOT_TESTED)}
                for p in _newest_first([p for p in parsed.get(channel.name, []) if p.name == name])
            ]
        flavours.append({
            "name": flavour.name,
            "package": name,
            "compute_cap": f"{flavour.compute_cap // 10}.{flavour.compute_cap % 10}",
            "gpus": list(flavour.gpus),
            "versions": versions,
        })
    stable = next(c for c in channels if c["name"] == STABLE)
    return {
        "base_url": base_url,
        "repo_file_url": f"{base_url}/{REPO_FILE_NAME}",
        "key_url": default_gpgkey(cfg),
        "key_name": signing.KEY_FILE_NAME,
        "release_package_url": stable["release_package_url"],
        "releasever": cfg.package.releasever,
        "cuda_version": cfg.build.cuda_version,
        "channels": channels,
        "flavours": flavours,
        "example": flavours[0]["package"],
        "fingerprint": group_fingerprint(fingerprint),
        "published_at": when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "published_iso": when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def render_index_html(context: dict) -> str:
    return render(INDEX_TEMPLATE, html=True, trim=True, **context)


def render_index(cfg: Config, out_dir: Path, published: Mapping[str, Sequence[str]], fingerprint: str,
                 when: datetime | None = None, tested: Mapping[str, str] | None = None) -> list[Path]:
    """Write index.html and style.css into out_dir; returns both paths.

    published: channel name -> file names of the packages it holds after
    this publish (all of them, not only the new ones).
    """
    if not re.fullmatch(r"[0-9A-Fa-f ]{32,}", fingerprint or ""):
        raise UserError(f"render_index: {fingerprint!r} is not a key fingerprint")
    context = index_context(cfg, published, fingerprint, when or datetime.now(timezone.utc), tested)
    index = out_dir / INDEX_NAME
    style = out_dir / STYLE_NAME
    atomic_write(index, render_index_html(context))
    atomic_write(style, STYLESHEET.read_bytes())
    return [index, style]
