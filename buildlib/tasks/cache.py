"""Task creator for cache upkeep: `doit clean-cache`."""

from __future__ import annotations

from . import context
from .context import action, lazy

KEEP_DEFAULT = 2


_clean_cache = lazy("buildlib.pipeline.cache:clean_cache")


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
