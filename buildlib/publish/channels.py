"""Which channel a package goes to, where a channel lives on the host, and
the users' ``mistralrs.repo`` that names the channels.

A package named in ``EVERY_CHANNEL`` (``mistralrs-release``, the
repository's own configuration) goes to every configured channel, like
distributions' ``*-release`` packages, whatever its version; any other
package by its version: final releases to stable; release candidates
(``~rc``) and snapshots (``^``) to unstable, which mistralrs.repo leaves
disabled, as Fedora keeps pre-releases out of the repositories it enables
by default (updates-testing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from ..config import STABLE, UNSTABLE, Channel, Config, format_duration
from ..layout import RELEASE_PACKAGE, REPO_FILE_TEMPLATE, STAGING_SUBDIR
from ..run import UserError
from ..templates import render
from .signing import KEY_FILE_NAME

BASEARCH = "x86_64"
REPO_FILE_NAME = "mistralrs.repo"
EVERY_CHANNEL = frozenset({RELEASE_PACKAGE})
"""Packages published in every channel, whatever their version."""
NOARCH = frozenset({RELEASE_PACKAGE})
"""The only packages accepted as noarch (ours); everything else is x86_64."""


class PublishError(UserError):
    pass


def channel_dir(cfg: Config, channel: Channel) -> PurePosixPath:
    """A channel's directory below the target, as on the host."""
    path = PurePosixPath("fedora", cfg.package.releasever, BASEARCH)
    return path / channel.subdir if channel.subdir else path


def staging_dir(cfg: Config, channel: Channel) -> PurePosixPath:
    """A channel's staging area on the host: where `doit publish` puts new
    flavour packages, `doit gate` installs them from and `doit promote`
    takes them (the bytes that passed) into the channel.  No .repo file
    names it."""
    return channel_dir(cfg, channel) / STAGING_SUBDIR


def channel_for_version(version: str) -> str:
    """final release -> stable; release candidate (``~``) or snapshot (``^``) -> unstable."""
    return UNSTABLE if "^" in version or "~" in version else STABLE


def channels_for(name: str, version: str, configured: Sequence[str]) -> list[str]:
    """The channels a package goes to, decided by its name first: a package
    in ``EVERY_CHANNEL`` (``mistralrs-release``) goes to every configured
    channel, so that whichever channel a user enables carries the package
    that configures it (as Fedora's ``fedora-repos`` is in every repository);
    any other package to the one channel of its version
    (:func:`channel_for_version`)."""
    if name in EVERY_CHANNEL:
        return list(configured)
    return [channel_for_version(version)]


def repo_id(channel: str) -> str:
    """A channel's section name in mistralrs.repo: ``mistralrs`` for stable,
    ``mistralrs-<channel>`` for the others (``dnf --enablerepo=...``)."""
    return "mistralrs" if channel == STABLE else f"mistralrs-{channel}"


def default_gpgkey(cfg: Config) -> str:
    """The public key on the repository host, beside mistralrs.repo."""
    return f"{cfg.publish.base_url.rstrip('/')}/{KEY_FILE_NAME}"


def render_repo_file(cfg: Config, gpgkey: str | None = None) -> str:
    """The users' mistralrs.repo.  ``gpgkey``: where dnf finds the public
    key; by default the key file on the repository host
    (:func:`default_gpgkey`); the release package passes the packaged key's
    ``file:///etc/pki/rpm-gpg/...``."""
    channels = [
        {"id": repo_id(c.name), "name": c.name,
         "path": f"fedora/$releasever/$basearch/{c.subdir + '/' if c.subdir else ''}",
         "enabled": c.is_stable}
        for c in cfg.channels
    ]
    key = gpgkey or default_gpgkey(cfg)
    if not re.fullmatch(r"(https?|file)://\S+", key):
        raise PublishError(f"gpgkey {key!r}: expected an https://, http:// or file:// URL")
    return render(REPO_FILE_TEMPLATE, base_url=cfg.publish.base_url.rstrip("/"), channels=channels,
                  gpgkey=key, metadata_expire=format_duration(cfg.publish.metadata_expire))
