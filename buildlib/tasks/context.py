"""What every task creator shares: the loaded config and layout, and the
wrapper that turns a user's mistake into one clear line instead of a
traceback."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

from doit.exceptions import TaskError, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from ..config import Config, load
from ..layout import Layout
from ..run import Exit, UserError


@functools.lru_cache(maxsize=None)
def _current(_key: str) -> tuple[Config, Layout]:
    cfg = load()
    return cfg, Layout.of(cfg)


def current() -> tuple[Config, Layout]:
    """The configuration named by MRPM_CONFIG (or config.toml), read once."""
    from ..config import default_path
    import os

    return _current(f"{default_path()}|{os.environ.get('MRPM_REF', '')}")


STAGE_EXIT: dict[str, Exit] = {
    "doctor": Exit.HOST,
    "fetch": Exit.UNREACHABLE,
    "build": Exit.BUILD,
    "verify": Exit.REFUSED,
    "licenses": Exit.REFUSED,
    "spec": Exit.BUILD,
    "rpm": Exit.BUILD,
    "rebuild-check": Exit.REFUSED,
    "release-package": Exit.BUILD,
    "publish": Exit.PUBLISH,
    "poll": Exit.UNREACHABLE,
}
"""The class of a UserError that names none, by the task it failed in
(the task's name before ':')."""


class UserFailure(TaskFailed):
    """A task's UserError: its one line is already on stderr, so doit
    reports nothing more (report=False), and the run exits with its class."""

    def __init__(self, error: UserError):
        super().__init__(str(error), report=False)
        self.exit_code = error.exit_code


def lazy(target: str) -> Callable[..., Any]:
    """The function ``"module:name"`` (e.g. ``"buildlib.pipeline.doctor:doctor"``),
    imported when the action first runs: creating tasks (every `doit`, a
    no-op one too) then loads none of the stage modules.  The one way task
    creators delay an import; tests/test_architecture.py imports every
    target named so."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"lazy({target})"
    return call


def action(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple:
    """A doit python-action calling fn(*args); a UserError fails the task
    with one line on stderr (and :class:`UserFailure` for the reporter)."""

    def run_action() -> UserFailure | dict | None:
        try:
            result = fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return UserFailure(e)
        return result if isinstance(result, dict) else None

    run_action.__name__ = getattr(fn, "__name__", "action")
    return (run_action, [], {})


class Reporter(ConsoleReporter):
    """doit's console reporter, less its noise after our one line: a task
    that failed with a UserError reports nothing more, a task skipped
    because one failed says so in one line, and the run exits with the
    first failure's class (:class:`buildlib.run.Exit`) instead of doit's 1.
    A failure that is not a UserError (a bug) keeps doit's full report and
    exits Exit.INTERNAL."""

    desc = "console output, one line per failure, exit status by class"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.exit_code: Exit | None = None

    def add_failure(self, task, fail) -> None:
        if isinstance(fail, UserFailure):
            stage = task.name.split(":", 1)[0]
            self._first(fail.exit_code or STAGE_EXIT.get(stage, Exit.FAILED))
        elif isinstance(fail, UnmetDependency) and self.exit_code is not None:
            self.write(f"-- {task.name}: not run, a task it needs failed\n")
        elif isinstance(fail, UnmetDependency):
            self._first(Exit.FAILED)
            super().add_failure(task, fail)
        else:
            self._first(Exit.INTERNAL if isinstance(fail, TaskError) else Exit.FAILED)
            super().add_failure(task, fail)

    def _first(self, code: Exit) -> None:
        if self.exit_code is None:
            self.exit_code = code

    def complete_run(self) -> None:
        super().complete_run()
        if self.exit_code is not None:
            self.outstream.flush()
            sys.stderr.flush()
            # after doit saved its state (Runner.finish closes it first)
            raise SystemExit(int(self.exit_code))


def doit_config() -> dict:
    """DOIT_CONFIG's settings shared by every run (dodo.py adds the default
    tasks); a bad configuration ends here in one line."""
    try:
        _, layout = current()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(int(Exit.CONFIG)) from None
    layout.build.mkdir(parents=True, exist_ok=True)
    return {
        # sqlite3: a second doit run beside this one keeps its records
        "backend": "sqlite3",
        "dep_file": str(layout.dep_file),
        # actions mostly wait on subprocesses; processes changed under 3.14
        "par_type": "thread",
        "verbosity": 2,
        "reporter": Reporter,
    }
