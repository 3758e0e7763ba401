"""Task creators for CI's side: the upstream poll and the flavour matrix."""

from __future__ import annotations

from . import context
from .context import action, lazy

# ci.poll, ci.matrix (and through them http.client, ssl) are imported on
# first use so a no-op doit starts fast.


_poll = lazy("buildlib.ci.poll:poll_upstream")


_write_matrix = lazy("buildlib.ci.matrix:write_matrix")


def task_poll():
    """Ask GitHub and the published repositories what is missing; write the decision."""
    cfg, layout = context.current()
    # Upstream changes without any local file changing: always runs.
    return {"actions": [action(_poll, cfg, layout)], "uptodate": [False], "verbosity": 2}


def task_matrix():
    """Print the flavours a CI build fans out over ($MRPM_FLAVOURS narrows them) to $GITHUB_OUTPUT."""
    cfg, _ = context.current()
    return {"actions": [action(_write_matrix, cfg)], "uptodate": [False], "verbosity": 2}
