"""What a channel already holds of a package version, read as the publish
reads it (a local target's directory) or as users read it (``publish.base_url``
over HTTP, where a build job needs no upload key): the Release numbers used,
and the spec digest each of those packages carries (``repodata.SPEC_PROVIDE``).

The spec stage decides a Release from this alone (:func:`buildlib.pipeline.spec.choose_release`),
so that every machine, whatever its build directory holds, decides the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Config, LocalTarget
from ..run import UserError
from . import repodata
from .channels import channel_dir, channels_for, staging_dir

RELEASE_NUMBER = re.compile(r"^(\d+)")


class ChannelUnreadable(UserError):
    """The channel's metadata could not be read (over HTTP)."""


@dataclass(frozen=True)
class HeldRelease:
    """One published package of a name-version."""

    release: int
    """The leading number of its Release."""
    spec_sha256: str
    """The spec digest it carries ("" if none)."""


def release_number(release: str) -> int:
    """The leading number of a Release ("3.fc43" -> 3; 0 if there is none)."""
    m = RELEASE_NUMBER.match(release)
    return int(m.group(1)) if m else 0


def releases_in(packages: dict[str, repodata.Published], name: str, version: str) -> list[HeldRelease]:
    """The packages of name-version among packages, lowest Release first."""
    return sorted((HeldRelease(release_number(p.release), p.spec_sha256)
                   for p in packages.values() if p.name == name and p.version == version),
                  key=lambda h: (h.release, h.spec_sha256))


def held_releases(cfg: Config, name: str, version: str) -> list[HeldRelease]:
    """The packages of name-version the package's channel holds (none, if
    the channel has none or does not exist yet); ChannelUnreadable where
    the channel cannot be read."""
    configured = [c.name for c in cfg.channels]
    held: list[HeldRelease] = []
    for channel_name in channels_for(name, version, configured):
        if channel_name not in configured:
            continue
        channel = cfg.channel(channel_name)
        # staging too: a package staged and not (yet) promoted holds its Release
        for rel in (channel_dir(cfg, channel), staging_dir(cfg, channel)):
            held += releases_in(_packages_at(cfg, channel_name, rel, name, version), name, version)
    return sorted(set(held), key=lambda h: (h.release, h.spec_sha256))


def _packages_at(cfg: Config, channel_name: str, rel, name: str, version: str) -> dict[str, repodata.Published]:
    if isinstance(cfg.publish.target, LocalTarget):
        return repodata.read_metadata(cfg.publish.target.path / str(rel) / "repodata").packages
    from ..ci.http import Http
    from ..ci.poll import read_repository

    url = f"{cfg.publish.base_url.rstrip('/')}/{rel}/"
    repo = read_repository(Http(cfg.poll), url)
    if repo.state == "unreachable":
        raise ChannelUnreadable(
            f"cannot read channel {channel_name} at {url} ({repo.problem}): the Release of {name} {version}"
            " follows what the channel holds; try again once the repository answers")
    return repo.packages
