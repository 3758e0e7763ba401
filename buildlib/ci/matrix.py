"""The flavour matrix a CI build fans out over (``doit matrix``)."""

from __future__ import annotations

import json
import os

from ..config import STABLE, UNSTABLE, Config
from ..run import UserError, log
from .http import shown
from .poll import write_outputs

FLAVOURS_ENV = "MRPM_FLAVOURS"
"""For `doit matrix`: a JSON list of flavours to build (default: all)."""
CHANNEL_ENV = "MRPM_CHANNEL"
"""For `doit matrix`: the channel a CI workflow builds for; its ref must fit
(stable: a release tag, unstable: a commit)."""


# --- the flavour matrix ----------------------------------------------------


def flavour_matrix(cfg: Config, selection: str | None = None) -> list[str]:
    """The flavours a CI build fans out over: all configured ones, or the
    JSON list given (the poll's *_flavours output), checked against config."""
    configured = [f.name for f in cfg.flavours]
    if selection is None or not selection.strip():
        return configured
    try:
        wanted = json.loads(selection)
    except (ValueError, RecursionError):  # nested deeper than the parser recurses
        wanted = None
    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise UserError(f"{FLAVOURS_ENV} = {shown(selection)}: expected a JSON list of flavour names")
    unknown = [w for w in wanted if w not in configured]
    if unknown:
        raise UserError(f"{FLAVOURS_ENV}: unknown flavour {shown(unknown[0])}; configured: {', '.join(configured)}")
    if not wanted:
        raise UserError(f"{FLAVOURS_ENV} is an empty list: nothing to build")
    return [f for f in configured if f in wanted]


def check_ref_fits_channel(cfg: Config, channel: str | None) -> None:
    """A release workflow given a commit (or the reverse) stops here, before
    any runner starts a build for the wrong channel."""
    if not channel:
        return
    cfg.channel(channel)
    ref = cfg.upstream.ref
    if channel == STABLE and not ref.is_tag:
        raise UserError(f"ref {ref.text}: the stable channel takes release tags vX.Y.Z[-rcN]; use build-prerelease for commits")
    if channel == UNSTABLE and not ref.is_commit:
        raise UserError(f"ref {ref.text}: the unstable channel takes 40-hex commit ids; use build-release for tags")


def write_matrix(cfg: Config) -> None:
    check_ref_fits_channel(cfg, os.environ.get(CHANNEL_ENV))
    flavours = flavour_matrix(cfg, os.environ.get(FLAVOURS_ENV))
    text = json.dumps(flavours, separators=(",", ":"))
    write_outputs({"flavours": text})
    log(f"==> matrix: {text}")
