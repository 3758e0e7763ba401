"""The repository's key, which every signature is checked against.

Under the lock and before anything is uploaded, the host's
``RPM-GPG-KEY-mistralrs`` (or the key ``publish.key_fingerprint`` pins) is
compared with the signing key, and another key is refused
(:func:`repository_key`); a package in dist/ already signed by another key
is refused too (:func:`refuse_foreign_signed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..config import Config
from ..run import log
from . import signing
from .channels import PublishError
from .rpms import LocalRpm
from .transport import Transport

MAX_KEY_FILE = 1 << 20
"""More than any public key file needs: a bigger RPM-GPG-KEY-mistralrs is not read."""


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

