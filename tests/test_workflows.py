"""The Gitea Actions workflows: valid for actionlint and the workflow schema,
every step a doit task that exists, nothing that needs a Gitea newer than the
stated minimum, the static matrices and artifact names written from
config.toml."""

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

from pipeline import PROJECT, project_config, write_config

WORKFLOWS = sorted((PROJECT / ".gitea" / "workflows").glob("*.yml"))
ACTIONLINT_CONFIG = PROJECT / ".github" / "actionlint.yaml"
VENV_BIN = Path(sys.executable).parent
RUNNER_LABEL = "cuda-13.0"
ALLOWED_ACTIONS = re.compile(r"^actions/(checkout|upload-artifact|download-artifact)@v\d+\Z")
POLL_LABEL = "mistralrs-poll"
PUBLISH_LABEL = "mistralrs-publish"
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
    labels = load(ACTIONLINT_CONFIG)["self-hosted-runner"]["labels"]
    assert labels[:3] == [RUNNER_LABEL, POLL_LABEL, PUBLISH_LABEL]
    # the gate runners: one label per GPU generation of config.toml
    import tomllib
    flavours = tomllib.loads((PROJECT / "config.toml").read_text())["flavours"].values()
    assert set(labels[3:]) == {f"gpu-sm{f['compute_cap']}" for f in flavours}
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
        assert re.fullmatch(r"scripts/bootstrap --role (build|publish)", run) or run.startswith(".venv/bin/doit "), \
            f"{where}: {run!r}"
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
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert sorted(outputs) == ["channel", "flavours", "ref"] and json.loads(outputs["flavours"]) == FLAVOURS
    assert outputs["ref"] == project_config()["upstream"]["ref"]
    # where the ref's packages go: a final release tag to stable, a release candidate to unstable
    assert outputs["channel"] == ("unstable" if "-rc" in outputs["ref"] else "stable")
    proc = doit("matrix", GITHUB_OUTPUT=str(output), MRPM_REF="v0.9.3-rc1", MRPM_CHANNEL="stable")
    assert proc.returncode == 0, proc.stderr
    assert "channel=unstable" in output.read_text().splitlines()


def test_matrix_narrowed_to_the_missing_flavours(tmp_path):
    output = tmp_path / "github_output"
    proc = doit("matrix", GITHUB_OUTPUT=str(output), MRPM_FLAVOURS=json.dumps(FLAVOURS[:0:-1]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(output.read_text().splitlines()[0].split("=", 1)[1]) == FLAVOURS[1:]


@pytest.mark.parametrize("env, message", [
    ({"MRPM_FLAVOURS": '["volta"]'}, "unknown flavour 'volta'"),
    # a workflow_dispatch input nested deeper than Python's parser recurses
    ({"MRPM_FLAVOURS": "[" * 50_000}, "MRPM_FLAVOURS = '[[[["),
    ({"MRPM_CHANNEL": "stable", "MRPM_REF": "a" * 40}, "the stable channel takes release tags"),
    ({"MRPM_CHANNEL": "unstable", "MRPM_REF": "v0.9.2"}, "the unstable channel takes 40-hex commit ids"),
])
def test_matrix_refuses(tmp_path, env, message):
    output = tmp_path / "github_output"
    proc = doit("matrix", GITHUB_OUTPUT=str(output), **env)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not output.exists()


def test_build_workflows_fan_out_over_a_static_matrix():
    for name, channel in (("build-release.yml", "stable"), ("build-prerelease.yml", "unstable")):
        wf = workflow(name)
        assert set(wf["on"]) == {"workflow_dispatch"}
        assert wf["on"]["workflow_dispatch"]["inputs"]["ref"]["required"] is True
        assert wf["env"]["MRPM_REF"] == "${{ inputs.ref }}" and wf["env"]["MRPM_CHANNEL"] == channel
        jobs = wf["jobs"]
        assert jobs["matrix"]["outputs"] == {"flavours": "${{ steps.matrix.outputs.flavours }}",
                                             "ref": "${{ steps.matrix.outputs.ref }}",
                                             "channel": "${{ steps.matrix.outputs.channel }}"}
        # build and publish take the ref the matrix job checked (a snapshot: maybe a newer head)
        for job in ("build", "publish"):
            assert jobs[job]["env"] == {"MRPM_REF": "${{ needs.matrix.outputs.ref }}"}
        build = jobs["build"]
        assert build["runs-on"] == RUNNER_LABEL and build["needs"] == "matrix"
        assert build["strategy"]["matrix"] == {"flavour": FLAVOURS}
        gate = "contains(fromJSON(needs.matrix.outputs.flavours), matrix.flavour)"
        assert [s.get("if") for s in build["steps"]] == [gate] * len(build["steps"])
        runs = [s.get("run") for s in build["steps"]]
        for task in ("build", "verify", "rpm"):
            assert f".venv/bin/doit {task}:${{{{ matrix.flavour }}}}" in runs
        publish = jobs["publish"]
        assert publish["needs"] == ["matrix", "build"] and publish["runs-on"] == PUBLISH_LABEL
        # the flavours that built are published when another one failed; a
        # failed or cancelled matrix job, or a cancelled run, publishes nothing
        assert publish["if"] == "${{ !cancelled() && needs.matrix.outputs.flavours != '' }}"
        assert jobs["matrix"]["runs-on"] == PUBLISH_LABEL
        (step,) = [s for s in publish["steps"] if s.get("run", "").startswith(".venv/bin/doit publish")]
        # the channel's mistralrs-release comes with the publish (issue 18, item 3)
        if channel == "stable":  # a release tag: its final version to stable, an rc to unstable (the matrix says)
            assert step["run"] == '.venv/bin/doit publish --channel "$MRPM_TARGET_CHANNEL" --release-package'
            assert step["env"].pop("MRPM_TARGET_CHANNEL") == "${{ needs.matrix.outputs.channel }}"
        else:
            assert step["run"] == f".venv/bin/doit publish --channel {channel} --release-package"
        assert all(v == f"${{{{ secrets.{k} }}}}" for k, v in step["env"].items())
        assert_collects_every_flavour(publish, channel, "needs.matrix.outputs.flavours")


def assert_collects_every_flavour(publish: dict, channel: str, wanted: str) -> None:
    downloads = [s for s in publish["steps"] if s.get("uses", "").startswith("actions/download-artifact")]
    assert [(s["with"]["name"], s["if"], s["continue-on-error"]) for s in downloads] == [
        (f"rpm-{channel}-{f}", f"contains(fromJSON({wanted}), '{f}')", True) for f in FLAVOURS]
    assert all(s["with"]["path"] == "dist" for s in downloads)


def test_poll_workflow_starts_the_builds_through_the_dispatch_api():
    """The scheduled workflow has the poll job only: up to Gitea 1.25 each
    cron tick cancels the unfinished jobs of earlier scheduled runs, so a
    build job there would not outlive the next tick.  The poll starts the
    build workflows through Gitea's API, with a token from a secret."""
    from buildlib.ci import dispatch

    wf = workflow("poll-upstream.yml")
    assert wf["on"]["schedule"] == [{"cron": "*/15 * * * *"}] and "workflow_dispatch" in wf["on"]
    jobs = wf["jobs"]
    assert list(jobs) == ["poll"]
    assert jobs["poll"]["runs-on"] == POLL_LABEL
    # the poll state is not handed through actions/cache (per runner): it
    # lives in the poll runner's MRPM_CACHE
    assert all("actions/cache" not in s.get("uses", "") for s in jobs["poll"]["steps"])
    (step,) = [s for s in jobs["poll"]["steps"] if s.get("run") == ".venv/bin/doit poll"]
    cfg_poll = project_config()["poll"]
    assert step["env"] == {
        cfg_poll["token_env"]: f"${{{{ secrets.{cfg_poll['token_env']} }}}}",
        cfg_poll["dispatch_token_env"]: f"${{{{ secrets.{cfg_poll['dispatch_token_env']} }}}}",
        dispatch.API_ENV: "${{ github.api_url }}",
        dispatch.REPOSITORY_ENV: "${{ github.repository }}",
        dispatch.REF_ENV: "${{ github.ref_name }}",
    }
    for channel, name in dispatch.WORKFLOWS.items():
        inputs = workflow(name)["on"]["workflow_dispatch"]["inputs"]
        assert {"ref", "flavours"} <= set(inputs) and workflow(name)["env"]["MRPM_CHANNEL"] == channel
    assert "newest" in workflow(dispatch.WORKFLOWS["unstable"])["on"]["workflow_dispatch"]["inputs"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_a_scheduled_workflow_has_no_long_job(path):
    """Up to Gitea 1.25 a job of a scheduled run is cancelled at the next
    tick: a scheduled workflow may hold the poll and nothing that builds."""
    wf = load(path)
    if "schedule" in (wf.get("on") or {}):
        assert list(wf["jobs"]) == ["poll"], path.name


# --- what the Gitea people run can do ------------------------------------------

MINIMUM_GITEA = (1, 24)
"""The oldest Gitea the workflows are written for: the poll starts the
builds through the workflow dispatch REST API (go-gitea/gitea#32059), first
in 1.24 (1.23 answers 404); workflow_dispatch with inputs (1.23) and cron in
UTC (1.23) come with it.  README's CI section says the same."""

# Actions features and the Gitea version from which they do what a workflow
# means by them (/shared brief: go-gitea/gitea pull requests and issues);
# None: no release is known to (or they never work with the official actions).
FEATURES = {
    "schedule": ((1, 21), "#26655; cron in UTC from 1.23 (#31742)"),
    "workflow_dispatch": ((1, 23), "#28163"),
    "concurrency": ((1, 26), "#32751; ignored before"),
    "reusable workflow (jobs.<id>.uses)": ((1, 27), "#37478; before, it runs inside the calling job (#34986)"),
    "workflow_call": ((1, 27), "#37478: what calls it runs it as separate jobs only from 1.27"),
    "secrets: inherit": (None, "not confirmed by any source"),
    "matrix from an expression": (None, "#25179: one job up to at least 1.26; #36564 release not confirmed"),
    "timeout-minutes": ((1, 27), "ignored before 1.27"),
    "artifact actions v4": (None, "the official v4 actions refuse servers other than github.com"),
    "job without runs-on": (None, "#32348: goes to any runner"),
}


def features_used(wf: dict) -> set[str]:
    """The features of FEATURES a parsed workflow uses."""
    used = set()
    on = wf.get("on") or {}
    on = {on: None} if isinstance(on, str) else {k: None for k in on} if isinstance(on, list) else on
    for event in ("schedule", "workflow_dispatch", "workflow_call"):
        if event in on:
            used.add(event)
    if "concurrency" in wf:
        used.add("concurrency")
    for job in (wf.get("jobs") or {}).values():
        if "concurrency" in job:
            used.add("concurrency")
        if "uses" in job:
            used.add("reusable workflow (jobs.<id>.uses)")
        elif "runs-on" not in job:
            used.add("job without runs-on")
        if job.get("secrets") == "inherit":
            used.add("secrets: inherit")
        matrix = (job.get("strategy") or {}).get("matrix")
        if isinstance(matrix, str) or (isinstance(matrix, dict) and any("${{" in str(v) for v in matrix.values())):
            used.add("matrix from an expression")
        if "timeout-minutes" in job:
            used.add("timeout-minutes")
        for step in job.get("steps") or []:
            if "timeout-minutes" in step:
                used.add("timeout-minutes")
            m = re.match(r"^actions/(upload|download)-artifact@v(\d+)", step.get("uses", ""))
            if m and int(m.group(2)) >= 4:
                used.add("artifact actions v4")
    return used


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_feature_newer_than_the_minimum_gitea(path):
    too_new = {f: FEATURES[f] for f in features_used(load(path)) if FEATURES[f][0] is None
               or FEATURES[f][0] > MINIMUM_GITEA}
    assert not too_new, f"{path.name} needs more than Gitea {'.'.join(map(str, MINIMUM_GITEA))}: {too_new}"


def test_feature_detection_sees_each_feature():
    """Each feature of the table is found where a workflow uses it (so the
    check above can fail), e.g. in the workflows as they were before."""
    probe = """\
on:
  schedule: [{cron: "0 * * * *"}]
  workflow_dispatch: {}
  workflow_call: {}
concurrency: {group: g}
jobs:
  plan: {runs-on: cuda-13.0, timeout-minutes: 5, steps: [{run: "true"}]}
  build:
    runs-on: cuda-13.0
    concurrency: {group: g}
    strategy: {matrix: {flavour: "${{ fromJSON(needs.plan.outputs.flavours) }}"}}
    steps:
      - {uses: actions/upload-artifact@v4, with: {name: x, path: dist}}
  call: {uses: ./.gitea/workflows/x.yml, secrets: inherit}
  anywhere: {steps: [{run: "true"}]}
"""
    assert features_used(YAML(typ="safe").load(probe)) == set(FEATURES)
    # the poll's call of a build as it was written before
    old = """\
on: {schedule: [{cron: "*/15 * * * *"}]}
concurrency: {group: poll-upstream, cancel-in-progress: false}
jobs:
  release:
    needs: poll
    if: needs.poll.outputs.build_release == 'true'
    uses: ./.gitea/workflows/build-release.yml
    with: {ref: "${{ needs.poll.outputs.release_ref }}"}
    secrets: inherit
"""
    assert features_used(YAML(typ="safe").load(old)) == {
        "schedule", "concurrency", "reusable workflow (jobs.<id>.uses)", "secrets: inherit"}


def test_readme_states_the_minimum_gitea():
    readme = (PROJECT / "docs" / "ci.md").read_text()
    assert f"Gitea {'.'.join(map(str, MINIMUM_GITEA))}" in readme
    assert "runner.timeout" in readme and "ENDLESS_TASK_TIMEOUT" in readme and POLL_LABEL in readme
    assert PUBLISH_LABEL in readme


def test_only_build_jobs_occupy_a_build_host():
    """A GPU build host (runner.capacity 1) runs builds only: checking the
    matrix, polling, signing and uploading run on the publish and poll
    labels, and each job bootstraps the role it needs (issue 21, item 2;
    issue 18, item 6)."""
    seen = set()
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            builds = job_id == "build"
            if job_id.startswith("gate-"):  # a gate runner: its GPU generation's label, no build host
                assert job["runs-on"].startswith("gpu-sm"), f"{path.name}: {job_id}"
            else:
                assert job["runs-on"] == (RUNNER_LABEL if builds else POLL_LABEL if job_id == "poll" else PUBLISH_LABEL), \
                    f"{path.name}: {job_id}"
            (bootstrap,) = [s["run"] for s in job["steps"] if s.get("run", "").startswith("scripts/bootstrap")]
            assert bootstrap == f"scripts/bootstrap --role {'build' if builds else 'publish'}", f"{path.name}: {job_id}"
            seen.add(job_id)
    assert {j for j in seen if not j.startswith("gate-")} == {"poll", "matrix", "build", "publish", "promote"}


def test_every_job_runs_on_a_label_the_runners_carry():
    labels = set(load(ACTIONLINT_CONFIG)["self-hosted-runner"]["labels"])
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            assert job.get("runs-on") in labels, f"{path.name}: {job_id}"


# --- the flavour lists, from config.toml ------------------------------------------


def matrix_jobs(wf: dict):
    """(job id, static matrix combination) for every job the workflow can start."""
    for job_id, job in wf["jobs"].items():
        matrix = (job.get("strategy") or {}).get("matrix")
        if not matrix:
            yield job_id, job, {}
            continue
        for flavour in matrix["flavour"]:
            yield job_id, job, {"flavour": flavour}


BUILD_WORKFLOWS = [p for p in WORKFLOWS if p.name.startswith("build-")]


@pytest.mark.parametrize("path", BUILD_WORKFLOWS, ids=lambda p: p.name)
def test_one_artifact_name_per_build_job(path):
    """Gitea has discarded a second upload under a name already used in the
    run (#28549): every job that can upload in one run has its own name, and
    the publish jobs collect exactly those."""
    uploads = []
    downloads = []
    for job_id, job, combo in matrix_jobs(load(path)):
        for step in job.get("steps") or []:
            uses = step.get("uses", "")
            if uses.startswith("actions/upload-artifact"):
                name = step["with"]["name"].replace("${{ matrix.flavour }}", combo.get("flavour", "?"))
                assert "${{" not in name, name
                uploads.append(name)
            elif uses.startswith("actions/download-artifact"):
                assert step["with"].get("name"), f"{path.name}: {job_id}: a download names its artifact"
                downloads.append(step["with"]["name"])
    assert uploads and len(uploads) == len(set(uploads)), uploads
    assert sorted(downloads) == sorted(uploads)


def test_static_matrices_are_the_configured_flavours():
    found = 0
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            if "strategy" in job:
                assert job["strategy"]["matrix"] == {"flavour": FLAVOURS}, f"{path.name}: {job_id}"
                found += 1
    assert found == 2


def test_workflows_are_as_config_writes_them(tmp_path):
    from buildlib.ci import workflows
    from buildlib.config import load as load_config

    cfg = load_config(PROJECT / "config.toml")
    assert workflows.drifted(cfg) == [], "run `doit workflows` after changing [flavours] in config.toml"
    # and the check sees a config with another flavour
    data = project_config()
    data["flavours"]["turing"] = {"compute_cap": 75, "gpus": ["T4"]}
    more = load_config(write_config(tmp_path / "more", data))
    assert workflows.drifted(more) == BUILD_WORKFLOWS
    copies = tmp_path / "wf"
    copies.mkdir()
    for p in WORKFLOWS:
        (copies / p.name).write_text(p.read_text())
    assert workflows.write_workflows(more, copies) == [copies / p.name for p in BUILD_WORKFLOWS]
    assert workflows.drifted(more, copies) == []
    release = load(copies / "build-release.yml")["jobs"]
    assert release["build"]["strategy"]["matrix"]["flavour"] == [*FLAVOURS, "turing"]
    prerelease = load(copies / "build-prerelease.yml")["jobs"]
    assert [s["with"]["name"] for s in prerelease["publish"]["steps"] if "with" in s][-1] == "rpm-unstable-turing"


def test_doit_workflows_task_is_up_to_date():
    proc = doit("workflows")
    assert proc.returncode == 0, proc.stderr
    assert "-- workflows" in proc.stdout, proc.stdout


@pytest.mark.parametrize("block, message", [
    ("# >>> doit workflows: flavours\n", "no '# <<< doit workflows' closing the block"),
    ("# >>> doit workflows: downloads nightly needs.a.outputs.b\n# <<< doit workflows\n", "unknown channel 'nightly'"),
    ("# >>> doit workflows: downloads stable $(id)\n# <<< doit workflows\n", "is not a context path"),
    ("# >>> doit workflows: everything\n# <<< doit workflows\n", "unknown block 'everything'"),
])
def test_workflow_blocks_refuse(block, message):
    from buildlib.ci import workflows
    from buildlib.config import load as load_config
    from buildlib.run import UserError

    with pytest.raises(UserError, match=re.escape(message)):
        workflows.render(load_config(PROJECT / "config.toml"), "jobs:\n" + block, "x.yml")
