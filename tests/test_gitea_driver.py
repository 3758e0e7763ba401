"""The simulated Gitea of tests/workflow_driver.py: which runs a version
cancels, on a virtual clock (nothing sleeps), and the stand-in dispatch API
of tests/fake_gitea.py in its documented shape."""

from __future__ import annotations

import subprocess

import pytest
import requests

from fake_gitea import FakeGitea
from workflow_driver import TICK_S, Gitea

LONG = 40 * 60  # a step longer than two cron ticks

WORKFLOWS = {
    "scheduled.yml": """\
on: {schedule: [{cron: "*/15 * * * *"}]}
jobs:
  long: {runs-on: cuda-13.0, steps: [{name: long, run: "true"}]}
""",
    "pushed.yml": """\
on: {push: {branches: ["*"]}}
jobs:
  long: {runs-on: cuda-13.0, steps: [{name: long, run: "true"}]}
""",
    "dispatched.yml": """\
on: {workflow_dispatch: {inputs: {ref: {type: string, required: true}}}}
jobs:
  long:
    runs-on: cuda-13.0
    steps:
      - name: long
        run: echo "$REF" > "$OUT/$REF"
        env: {REF: "${{ inputs.ref }}", OUT: "${{ env.OUT }}"}
""",
}


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / ".gitea" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def gitea(project, tmp_path, version, *names, runners=None):
    for name in names:
        (project / ".gitea" / "workflows" / name).write_text(WORKFLOWS[name])
    return Gitea(version, tmp_path / f"gitea-{version}", project=project, runners=runners or {"cuda-13.0": 3},
                 durations=lambda job, step: LONG if step.get("name") == "long" else 60)


@pytest.mark.parametrize("version, survives", [("1.24.0", False), ("1.25.3", False), ("1.26.0", True)])
def test_a_tick_cancels_earlier_scheduled_runs_before_1_26(project, tmp_path, version, survives):
    g = gitea(project, tmp_path, version, "scheduled.yml")
    g.run_until(TICK_S + LONG + 1)
    first, second, third, *_ = g.runs_of("scheduled.yml")
    assert first.created == TICK_S and second.created == 2 * TICK_S
    if survives:
        assert first.conclusion == "success" and first.run.jobs["long"][0].steps[0].returncode == 0
    else:
        # started at the first tick, cancelled at the second: its step never ended
        assert first.conclusion == second.conclusion == "cancelled"
        assert [j.conclusion for j in first.run.jobs["long"]] == ["cancelled"]
        assert any("cancelled run 1 scheduled.yml job long" in line for line in g.log)


@pytest.mark.parametrize("version, survives", [("1.25.0", False), ("1.26.1", True)])
def test_a_push_run_cancels_earlier_push_runs_on_the_same_ref(project, tmp_path, version, survives):
    g = gitea(project, tmp_path, version, "pushed.yml")
    first = g.push("pushed.yml", "main")
    other = g.push("pushed.yml", "feature")
    g.run_until(60)
    second = g.push("pushed.yml", "main")
    g.run_until(2 * LONG)
    assert other.conclusion == "success" and second.conclusion == "success"
    assert first.conclusion == ("success" if survives else "cancelled")


@pytest.mark.parametrize("version", ["1.24.0", "1.25.0", "1.26.0"])
def test_dispatched_runs_are_never_cancelled(project, tmp_path, version, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    (project / ".gitea" / "workflows" / "dispatched.yml").write_text(
        WORKFLOWS["dispatched.yml"].replace('OUT: "${{ env.OUT }}"', f'OUT: "{out}"'))
    g = gitea(project, tmp_path, version, "scheduled.yml", runners={"cuda-13.0": 1})
    g.run_until(TICK_S - 1)
    runs = [g.dispatch("dispatched.yml", "main", {"ref": ref}) for ref in ("a", "b")]
    g.run_until(5 * LONG)
    # one runner: b waits for a, through several ticks, and both end
    assert [r.conclusion for r in runs] == ["success", "success"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert runs[1].run.jobs["long"][0].conclusion == "success"


@pytest.mark.slow
def test_the_dispatch_api_answers_in_its_documented_shape(project, tmp_path):
    for version, expected in (("1.23.6", 404), ("1.24.0", 204)):
        g = gitea(project, tmp_path, version, "dispatched.yml")
        api = FakeGitea(g, "good", read_only_token="weak").start()
        try:
            url = f"{api.api_url}/repos/{g.repository}/actions/workflows/dispatched.yml/dispatches"
            body = {"ref": "main", "inputs": {"ref": "x"}}
            r = requests.post(url, json=body, headers={"Authorization": "token good"}, timeout=10)
            assert r.status_code == expected and (r.content == b"" if expected == 204 else r.json()["message"])
            if expected == 404:
                assert g.runs == []
                continue
            (run,) = g.runs
            assert run.event == "workflow_dispatch" and run.driver.inputs == {"ref": "x"}
            assert requests.post(url, json=body, timeout=10).status_code == 401
            assert requests.post(url, json=body, headers={"Authorization": "token bad"}, timeout=10).status_code == 401
            assert requests.post(url, json=body, headers={"Authorization": "token weak"}, timeout=10).status_code == 403
            missing = url.replace("dispatched.yml", "nothing.yml")
            assert requests.post(missing, json=body, headers={"Authorization": "token good"}, timeout=10).status_code == 404
            unknown_input = {"ref": "main", "inputs": {"ref": "x", "other": "y"}}
            assert requests.post(url, json=unknown_input, headers={"Authorization": "token good"},
                                 timeout=10).status_code == 422
            assert len(g.runs) == 1
        finally:
            api.stop()
