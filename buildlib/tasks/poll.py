"""Task creators for CI's side: the upstream poll and the flavour matrix."""

from __future__ import annotations

from ..ci.matrix import write_matrix
from ..ci.poll import poll_upstream
from . import context
from .context import action


def _poll(cfg, layout) -> None:
    poll_upstream(cfg, layout)


def task_poll():
    """Ask GitHub and the published repositories what is missing; write the decision."""
    cfg, layout = context.current()
    # Upstream changes without any local file changing: always runs.
    return {"actions": [action(_poll, cfg, layout)], "uptodate": [False], "verbosity": 2}


def task_matrix():
    """Print the flavours a CI build fans out over ($MRPM_FLAVOURS narrows them) to $GITHUB_OUTPUT."""
    cfg, _ = context.current()
    return {"actions": [action(write_matrix, cfg)], "uptodate": [False], "verbosity": 2}
