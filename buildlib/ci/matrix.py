"""The flavour matrix a CI build fans out over (``doit matrix``)."""

from __future__ import annotations

import json
import os

from ..config import STABLE, UNSTABLE, Config
from ..publish.channels import channel_for_version
from ..refs import rpm_version_of_tag
from ..run import UserError, log
from .http import shown
from .poll import write_outputs

FLAVOURS_ENV = "MRPM_FLAVOURS"
"""For `doit matrix`: a JSON list of flavours to build (default: all)."""
NEWEST_ENV = "MRPM_NEWEST"
"""For `doit matrix` on the unstable channel: "true" builds the branch's
head as it is now instead of the commit given (the poll starts snapshot
builds so: one that waited in the queue builds the newest head)."""
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


def channel_of_ref(ref) -> str:
    """The channel a ref's packages belong to (publish.channels' rule)."""
    return channel_for_version(rpm_version_of_tag(ref.text)) if ref.is_tag else UNSTABLE


def newest_head(cfg: Config) -> str | None:
    """The head of upstream's branch now, validated; None when GitHub gives
    no usable answer (the build then takes the commit it was given)."""
    from .github import github_repository, head_commit
    from .http import Http, RateLimited, Unreachable

    settings = cfg.poll
    token = os.environ.get(settings.token_env) or None
    http = Http(settings, token)
    try:
        head, problem = head_commit(http, settings.api_url.rstrip("/"), github_repository(cfg, settings),
                                    cfg.upstream.branch)
    except (RateLimited, Unreachable) as e:
        head, problem = None, str(e)
    finally:
        http.close()
    if head is None:
        log(f"==> matrix: the head of {cfg.upstream.branch} is not known ({problem}); building the commit given")
    return head


def write_matrix(cfg: Config) -> None:
    channel = os.environ.get(CHANNEL_ENV)
    check_ref_fits_channel(cfg, channel)
    flavours = flavour_matrix(cfg, os.environ.get(FLAVOURS_ENV))
    ref = cfg.upstream.ref.text
    if channel == UNSTABLE and os.environ.get(NEWEST_ENV, "").strip().lower() == "true":
        head = newest_head(cfg)
        if head and head != ref:
            log(f"==> matrix: {cfg.upstream.branch} moved from {ref[:12]} to {head[:12]} before this build"
                " started: building the newest")
            ref = head
    text = json.dumps(flavours, separators=(",", ":"))
    # where the packages go: a release tag's final version to stable, an rc (and a commit) to unstable
    write_outputs({"flavours": text, "ref": ref, "channel": channel_of_ref(cfg.upstream.ref)})
    log(f"==> matrix: {text} at {ref}")
