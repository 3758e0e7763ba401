"""The Gitea Actions workflows: valid for actionlint and the workflow schema,
every step a doit task that exists, the matrix taken from config.toml."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline import PROJECT, project_config

WORKFLOWS = sorted((PROJECT / ".gitea" / "workflows").glob("*.yml"))
ACTIONLINT_CONFIG = PROJECT / ".github" / "actionlint.yaml"
VENV_BIN = Path(sys.executable).parent
RUNNER_LABEL = "cuda-13.0"
ALLOWED_ACTIONS = re.compile(r"^actions/(checkout|cache|upload-artifact|download-artifact)@v\d+\Z")
FLAVOURS = list(project_config()["flavours"])


def load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def workflow(name: str) -> dict:
    return load(PROJECT / ".gitea" / "workflows" / name)


def steps():
    for path in WORKFLOWS:
        for job_name, job in load(path)["jobs"].items():
            for step in job.get("steps", []):
                yield path.name, job_name, job, step


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the venv (requirements.txt pins it)")
    return str(path)


def doit_env(**extra: str) -> dict:
    env = dict(os.environ, MRPM_CONFIG=str(PROJECT / "config.toml"), **extra)
    for name in ("MRPM_REF", "MRPM_FLAVOURS", "MRPM_CHANNEL", "GITHUB_OUTPUT"):
        if name not in extra:
            env.pop(name, None)
    return env


def doit(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doit", "-f", str(PROJECT / "dodo.py"), *args],
                          cwd=PROJECT, env=doit_env(**extra), capture_output=True, text=True)


def test_there_are_the_three_workflows():
    assert [p.name for p in WORKFLOWS] == ["build-prerelease.yml", "build-release.yml", "poll-upstream.yml"]


def test_actionlint():
    proc = subprocess.run([tool("actionlint"), "-config-file", str(ACTIONLINT_CONFIG), *map(str, WORKFLOWS)],
                          cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_knows_the_runner_label_from_its_config(tmp_path):
    assert load(ACTIONLINT_CONFIG)["self-hosted-runner"]["labels"] == [RUNNER_LABEL]
    # and it does check labels: one it was not told about fails
    probe = tmp_path / "probe.yml"
    probe.write_text(WORKFLOWS[0].read_text().replace(f"runs-on: {RUNNER_LABEL}", "runs-on: cuda-12.9", 1))
    proc = subprocess.run([tool("actionlint"), "-config-file", str(ACTIONLINT_CONFIG), str(probe)],
                          cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'label "cuda-12.9" is unknown' in proc.stdout


def test_workflow_schema():
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_step_is_a_doit_task_or_plumbing():
    for name, job_name, _, step in steps():
        where = f"{name}: {job_name}: {step.get('name') or step.get('uses')}"
        if "uses" in step:
            assert ALLOWED_ACTIONS.match(step["uses"]), where
            continue
        run = step["run"]
        assert "\n" not in run.strip(), f"{where}: one command per step"
        assert run == "scripts/bootstrap" or run.startswith(".venv/bin/doit "), f"{where}: {run!r}"
        # data from inputs and secrets reaches commands through env, never the script text
        assert "inputs." not in run and "secrets." not in run and "needs." not in run, where


def doit_commands():
    for name, job_name, job, step in steps():
        run = step.get("run", "")
        if not run.startswith(".venv/bin/doit "):
            continue
        variants = FLAVOURS if "${{ matrix.flavour }}" in run else [None]
        assert "${{" not in run.replace("${{ matrix.flavour }}", ""), f"{name}: {run}"
        for flavour in variants:
            yield name, run.replace("${{ matrix.flavour }}", flavour or "")


def test_every_doit_command_exists():
    proc = doit("list", "--all", "--quiet")
    assert proc.returncode == 0, proc.stderr
    tasks = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    commands = list(doit_commands())
    assert commands
    for name, command in commands:
        args = shlex.split(command)[1:]
        names = [a for i, a in enumerate(args) if not a.startswith("-") and not (i and args[i - 1].startswith("--"))]
        assert names, command
        for task in names:
            assert task in tasks, f"{name}: `{command}`: no task {task!r} in doit list"


def test_matrix_task_gives_the_configured_flavours(tmp_path):
    output = tmp_path / "github_output"
    proc = doit("matrix", GITHUB_OUTPUT=str(output))
    assert proc.returncode == 0, proc.stderr
    (line,) = output.read_text().splitlines()
    key, value = line.split("=", 1)
    assert key == "flavours" and json.loads(value) == FLAVOURS


def test_matrix_narrowed_to_the_missing_flavours(tmp_path):
    output = tmp_path / "github_output"
    proc = doit("matrix", GITHUB_OUTPUT=str(output), MRPM_FLAVOURS=json.dumps(FLAVOURS[:0:-1]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(output.read_text().split("=", 1)[1]) == FLAVOURS[1:]


@pytest.mark.parametrize("env, message", [
    ({"MRPM_FLAVOURS": '["volta"]'}, "unknown flavour 'volta'"),
    ({"MRPM_CHANNEL": "stable", "MRPM_REF": "a" * 40}, "the stable channel takes release tags"),
    ({"MRPM_CHANNEL": "unstable", "MRPM_REF": "v0.9.2"}, "the unstable channel takes 40-hex commit ids"),
])
def test_matrix_refuses(tmp_path, env, message):
    output = tmp_path / "github_output"
    proc = doit("matrix", GITHUB_OUTPUT=str(output), **env)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not output.exists()


def test_build_workflows_fan_out_over_the_matrix_job():
    for name, channel in (("build-release.yml", "stable"), ("build-prerelease.yml", "unstable")):
        wf = workflow(name)
        assert set(wf["on"]) == {"workflow_call", "workflow_dispatch"}
        for trigger in ("workflow_call", "workflow_dispatch"):
            assert wf["on"][trigger]["inputs"]["ref"]["required"] is True
        assert wf["env"]["MRPM_REF"] == "${{ inputs.ref }}" and wf["env"]["MRPM_CHANNEL"] == channel
        jobs = wf["jobs"]
        assert jobs["matrix"]["outputs"]["flavours"] == "${{ steps.matrix.outputs.flavours }}"
        build = jobs["build"]
        assert build["runs-on"] == RUNNER_LABEL and build["needs"] == "matrix"
        assert build["strategy"]["matrix"]["flavour"] == "${{ fromJSON(needs.matrix.outputs.flavours) }}"
        runs = [s.get("run") for s in build["steps"]]
        for task in ("build", "verify", "rpm"):
            assert f".venv/bin/doit {task}:${{{{ matrix.flavour }}}}" in runs
        publish = jobs["publish"]
        assert publish["needs"] == "build" and publish["runs-on"] == RUNNER_LABEL
        assert publish["concurrency"] == {"group": "rpm-publish", "cancel-in-progress": False}
        (step,) = [s for s in publish["steps"] if s.get("run", "").startswith(".venv/bin/doit publish")]
        assert step["run"] == f".venv/bin/doit publish --channel {channel}"
        assert all(v == f"${{{{ secrets.{k} }}}}" for k, v in step["env"].items())


def test_poll_workflow_starts_the_builds_with_what_it_found():
    from buildlib.ci import poll

    wf = workflow("poll-upstream.yml")
    assert wf["on"]["schedule"] == [{"cron": "*/15 * * * *"}] and "workflow_dispatch" in wf["on"]
    jobs = wf["jobs"]
    produced = set(poll.outputs_of(poll.undecided("rate-limited", "x")))
    for key, value in jobs["poll"]["outputs"].items():
        assert key in produced and value == f"${{{{ steps.poll.outputs.{key} }}}}"
    for kind in ("release", "prerelease"):
        call = jobs[kind]
        assert call["uses"] == f"./.gitea/workflows/build-{kind}.yml"
        assert call["if"] == f"needs.poll.outputs.build_{kind} == 'true'"
        assert call["with"] == {"ref": f"${{{{ needs.poll.outputs.{kind}_ref }}}}",
                                "flavours": f"${{{{ needs.poll.outputs.{kind}_flavours }}}}"}
        assert call["secrets"] == "inherit"
