"""What a channel already holds of a package version, read as the publish
reads it (a local target's directory) or as users read it (``publish.base_url``
over HTTP, where a build job needs no upload key): the Release numbers used.

The spec stage asks when its release ledger has no entry for a (flavour,
version), as after a fresh CI checkout: the next Release then follows the
highest one the channel holds, so a Release never goes back.
"""

from __future__ import annotations

import re

from ..config import Config, LocalTarget
from ..run import UserError
from . import repodata
from .channels import channel_dir, channels_for

RELEASE_NUMBER = re.compile(r"^(\d+)")


def release_number(release: str) -> int:
    """The leading number of a Release ("3.fc43" -> 3; 0 if there is none)."""
    m = RELEASE_NUMBER.match(release)
    return int(m.group(1)) if m else 0


def highest_release(packages: dict[str, repodata.Published], name: str, version: str) -> int:
    """The highest Release number of name-version among packages (0: none)."""
    return max((release_number(p.release) for p in packages.values() if p.name == name and p.version == version),
               default=0)


def held_release(cfg: Config, name: str, version: str) -> int:
    """The highest Release number of name-version the package's channel
    holds (0: none, or no channel yet); a UserError where the channel
    cannot be read."""
    configured = [c.name for c in cfg.channels]
    highest = 0
    for channel_name in channels_for(name, version, configured):
        if channel_name not in configured:
            continue
        channel = cfg.channel(channel_name)
        if isinstance(cfg.publish.target, LocalTarget):
            where = cfg.publish.target.path / str(channel_dir(cfg, channel)) / "repodata"
            packages = repodata.read_metadata(where).packages
        else:
            from ..ci.http import Http
            from ..ci.poll import channel_url, read_repository

            url = channel_url(cfg, channel_name)
            repo = read_repository(Http(cfg.poll), url)
            if repo.state == "unreachable":
                raise UserError(f"cannot read channel {channel_name} at {url} ({repo.problem}): the release ledger"
                                f" has no Release for {name} {version}, and the channel's highest decides it;"
                                " restore build/releases.json, or try again once the repository answers")
            packages = repo.packages
        highest = max(highest, highest_release(packages, name, version))
    return highest
