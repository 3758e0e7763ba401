"""What every task creator shares: the loaded config and layout, and the
wrapper that turns a user's mistake into one clear line instead of a
traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ..config import Config, load
from ..layout import Layout
from ..run import UserError


@functools.lru_cache(maxsize=None)
def _current(_key: str) -> tuple[Config, Layout]:
    cfg = load()
    return cfg, Layout.of(cfg)


def current() -> tuple[Config, Layout]:
    """The configuration named by MRPM_CONFIG (or config.toml), read once."""
    from ..config import default_path
    import os

    return _current(f"{default_path()}|{os.environ.get('MRPM_REF', '')}")


def action(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple:
    """A doit python-action calling fn(*args); a UserError fails the task
    with one line on stderr."""

    def run_action() -> bool | dict | None:
        try:
            result = fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return False
        return result if isinstance(result, dict) else None

    run_action.__name__ = getattr(fn, "__name__", "action")
    return (run_action, [], {})


def doit_config() -> dict:
    """DOIT_CONFIG's settings shared by every run (dodo.py adds the default
    tasks); a bad configuration ends here in one line."""
    try:
        _, layout = current()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    layout.build.mkdir(parents=True, exist_ok=True)
    return {
        # sqlite3: a second doit run beside this one keeps its records
        "backend": "sqlite3",
        "dep_file": str(layout.dep_file),
        # actions mostly wait on subprocesses; processes changed under 3.14
        "par_type": "thread",
        "verbosity": 2,
    }
