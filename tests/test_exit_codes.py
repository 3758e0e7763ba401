"""doit's exit status by class of failure (README, "Exit codes"), and
nothing after our one line: CI tells "refused" from "unreachable" from
"build failed" by the status alone."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from buildlib.publish.cleanup import Cancelled
from buildlib.publish.signing import SigningError
from buildlib.run import CommandFailed, Exit, HostNotReady, UserError
from buildlib.tasks.context import STAGE_EXIT, Reporter, action
from pipeline import PROJECT, demo_config, write_config


def run_tasks(tmp_path, tasks: dict, *argv: str) -> tuple[int, str]:
    """doit on the given {name: task} with the project's reporter; returns
    (exit status, everything doit wrote)."""
    namespace = {f"task_{name.replace('-', '_')}": (lambda t=task: t) for name, task in tasks.items()}
    namespace["DOIT_CONFIG"] = {"reporter": Reporter, "verbosity": 2, "backend": "sqlite3",
                                "dep_file": str(tmp_path / "doit.db")}
    # doit's reporter writes to the stdout of its import time: to a file here
    report = tmp_path / "report.txt"
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        try:
            code = DoitMain(ModuleTaskLoader(namespace), config_filenames=()).run(
                ["run", "--output-file", str(report), *argv])
        except SystemExit as e:
            code = e.code
    finally:
        sys.stderr = old
    return code, report.read_text() + err.getvalue()


def raising(error: BaseException):
    def fail():
        raise error
    return fail


@pytest.mark.parametrize("task, error, expected", [
    ("publish", SigningError("publish: the key is not the repository's"), Exit.REFUSED),
    ("publish", UserError("rsync to the host failed"), Exit.PUBLISH),
    ("publish", Cancelled("stopped by SIGTERM"), Exit.CANCELLED),
    ("build", CommandFailed(["cargo", "build"], 101, "error[E0425]"), Exit.BUILD),
    ("fetch", UserError("git fetch failed"), Exit.UNREACHABLE),
    ("doctor", UserError("2 problems"), Exit.HOST),
    ("spec", HostNotReady("required tool 'rpmbuild' not found on PATH"), Exit.HOST),
    ("workflows", UserError("a workflow is out of date"), Exit.FAILED),
])
def test_a_user_error_exits_with_its_class_and_one_line(tmp_path, task, error, expected):
    code, out = run_tasks(tmp_path, {task: {"actions": [action(raising(error))], "verbosity": 2}}, task)
    assert code == expected, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert sorted(lines) == sorted([f".  {task}", f"error: {error}"]), out  # doit's "Python Task failed ... taskid" is gone


def test_each_stage_has_a_documented_class():
    readme = (PROJECT / "docs" / "maintainer.md").read_text()
    for code in Exit:
        assert f"| {int(code)} |" in readme, code
    assert set(STAGE_EXIT) <= {line.split()[0] for line in
                               subprocess.run([sys.executable, "-m", "doit", "list"], cwd=PROJECT, check=True,
                                              capture_output=True, text=True).stdout.splitlines()}


def test_a_bug_keeps_its_traceback_and_exits_internal(tmp_path):
    code, out = run_tasks(tmp_path, {"spec": {"actions": [action(raising(KeyError("oops")))]}}, "spec")
    assert code == Exit.INTERNAL
    assert "Traceback" in out and "KeyError" in out


def test_a_task_skipped_after_a_failure_is_one_line(tmp_path):
    tasks = {"fetch": {"actions": [action(raising(UserError("git fetch failed")))]},
             "build": {"actions": [action(lambda: None)], "task_dep": ["fetch"]},
             "verify": {"actions": [action(lambda: None)], "task_dep": ["build"]}}
    code, out = run_tasks(tmp_path, tasks, "--continue", "verify")
    assert code == Exit.UNREACHABLE, out
    assert "-- build: not run, a task it needs failed" in out
    assert "taskid" not in out and "Dependent task" not in out, out


def test_real_doit_on_an_unreachable_upstream(tmp_path):
    """As CI runs it: `doit rpm` with an upstream that is not there ends
    with our line, nothing after it, and the unreachable class."""
    config = write_config(tmp_path, demo_config(tmp_path, tmp_path / "no-upstream", tmp_path / "cache",
                                                flavours=("ampere",), upstream__ref="v0.9.2"))
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), "rpm"], cwd=PROJECT,
                          env={"MRPM_CONFIG": str(config), "PATH": "/usr/bin:/bin:" + str(PROJECT / ".venv/bin")},
                          capture_output=True, text=True)
    assert proc.returncode == Exit.UNREACHABLE, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: git clone"), proc.stderr
    assert "Traceback" not in proc.stderr and "taskid" not in proc.stdout + proc.stderr


def test_a_bad_config_exits_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[upstream\n")
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), "list"], cwd=PROJECT,
                          env={"MRPM_CONFIG": str(config), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == Exit.CONFIG and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
