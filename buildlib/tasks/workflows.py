"""Task creator: the flavour lists in .gitea/workflows/ from config.toml."""

from __future__ import annotations

from ..ci.workflows import drifted, write_workflows
from . import context
from .context import action


def task_workflows():
    """Write the flavour matrices and per-flavour artifact steps in .gitea/workflows/ from config."""
    cfg, _ = context.current()
    return {"actions": [action(write_workflows, cfg)], "uptodate": [lambda: not drifted(cfg)],
            "verbosity": 2}
