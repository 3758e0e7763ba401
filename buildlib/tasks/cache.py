"""Task creator for cache upkeep: `doit clean-cache`."""

from __future__ import annotations

from . import context
from .context import action

KEEP_DEFAULT = 2


def _clean_cache(cfg, layout, keep):
    from ..pipeline.cache import clean_cache  # imported on first use so a no-op doit starts fast

    return clean_cache(cfg, layout, keep)


def task_clean_cache():
    """Free the cache: keep source trees and compiled units of the newest N versions per flavour."""
    cfg, layout = context.current()
    return {
        "basename": "clean-cache",
        "actions": [(lambda keep: action(_clean_cache, cfg, layout, keep)[0]())],
        "params": [{"name": "keep", "long": "keep", "type": int, "default": KEEP_DEFAULT,
                    "help": f"versions to keep per flavour, newest by version (default {KEEP_DEFAULT})"}],
        "uptodate": [False],
        "verbosity": 2,
    }
