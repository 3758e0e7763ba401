"""build-release.yml run on this machine, step by step, by a small driver
that reads the YAML (tests/workflow_driver.py; no Gitea): the matrix job,
one build job per flavour and the publish job, each on a fresh runner (an
empty workspace, removed when the job ends), the packages handed over
through the artifact store only.  The result must be a published, signed
repository that dnf installs from nginx.

The checkout each job gets is this tree with config.toml replaced by the
project's own pointed at the demo upstream (two flavours, fast payload, the
session's cache, a local publish target); the signing key and its
passphrase arrive as secrets, as in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import requests
import tomli_w

import services
from buildlib.publish import repodata, signing
from buildlib.config import load
from buildlib.demo.driver import FEDORA_BASE
from buildlib.demo.localrepo import build_standin_repo
from fake_github import FakeGitHub, release_object
from pipeline import PROJECT, demo_config, project_config, write_config
from workflow_driver import Driver, WorkflowError, parse_outputs, secret_fragments

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("git", "bash", "cargo", "nvcc", "rpmbuild", "rpmsign", "createrepo_c",
                                          "rsync", "gpg", "dnf", "dpkg-query"))
    or services.skip_reason_nginx() is not None,
    reason="needs git, bash, cargo, nvcc, rpm-build, rpmsign, createrepo_c, rsync, gpg, dnf, dpkg and nginx",
)

WORKFLOW = PROJECT / ".gitea" / "workflows" / "build-release.yml"
FLAVOURS = ("ampere", "hopper")
CAPS = {"ampere": "86", "hopper": "90"}
PASSPHRASE = "ci passphrase"


def channel_dir(target, subdir=""):
    return target / "fedora" / "43" / "x86_64" / subdir


def test_build_release_workflow_publishes_an_installable_repository(tmp_path, demo_upstream, shared_cache):
    key_file, fingerprint = signing.make_demo_key(tmp_path / "key", passphrase=PASSPHRASE)
    secrets = {"MRPM_SIGNING_KEY": key_file.read_text(), "MRPM_SIGNING_PASSPHRASE": PASSPHRASE}
    target = tmp_path / "srv"
    target.mkdir()
    with services.nginx(target) as url:
        # key_file stays "" (as in config.toml): the key comes from the secret
        data = demo_config(tmp_path, demo_upstream.path, shared_cache, flavours=FLAVOURS,
                           publish__target=str(target), publish__base_url=url)
        cfg = load(write_config(tmp_path / "config", data))  # checked as doit will read it
        assert cfg.publish.key_file == "" and cfg.publish.key_env == "MRPM_SIGNING_KEY"
        driver = Driver(WORKFLOW, tmp_path / "runner", inputs={"ref": "v0.9.2"}, secrets=secrets,
                        checkout_overrides={"config.toml": tomli_w.dumps(data)})
        run = driver.execute()
        run.check()
        assert run.leaks == [], f"secrets in the logs: {run.leaks}"

        # the jobs, in order: the workflow's static matrix is the project's
        # flavours; this config has two of them, so the others skip their steps
        assert list(run.jobs) == ["matrix", "build", "publish"]
        (matrix,) = run.jobs["matrix"]
        assert json.loads(matrix.outputs["flavours"]) == list(FLAVOURS)
        static = list(project_config()["flavours"])
        assert set(FLAVOURS) < set(static)
        assert [job.matrix for job in run.jobs["build"]] == [{"flavour": f} for f in static]
        assert [job.name for job in run.jobs["build"]] == [f"build and package {f}" for f in static]
        for job in run.jobs["build"]:
            flavour = job.matrix["flavour"]
            assert job.conclusion == "success"
            commands = [s.command for s in job.steps if s.kind == "run" and not s.skipped]
            if flavour not in FLAVOURS:
                assert all(s.skipped for s in job.steps), flavour
                continue
            assert commands == ["scripts/bootstrap", ".venv/bin/doit doctor", ".venv/bin/doit fetch",
                                *(f".venv/bin/doit {t}:{flavour}" for t in ("build", "verify", "rpm"))]
        # every runner's workspace is gone: only the artifact store was handed on
        assert not any((tmp_path / "runner" / "runners").glob("*/workspace"))
        # one artifact per build job that built
        assert sorted(p.name for p in run.artifacts.iterdir()) == [f"rpm-stable-{f}" for f in sorted(FLAVOURS)]
        for f in FLAVOURS:
            assert [p.name for p in (run.artifacts / f"rpm-stable-{f}").iterdir()] == [
                f"mistralrs-{f}-0.9.2-1.fc43.x86_64.rpm"]
        release = sorted(f"mistralrs-{f}-0.9.2-1.fc43.x86_64.rpm" for f in FLAVOURS)

        # the publish job built nothing: it got the two packages and published them
        (publish,) = run.jobs["publish"]
        assert [s.kind for s in publish.steps] == ["actions/checkout@v4", "run",
                                                   *["actions/download-artifact@v3"] * len(static), "run"]
        downloads, sign = publish.steps[2:-1], publish.steps[-1]
        assert [s.name for s in downloads if not s.skipped] == [f"collect rpm-stable-{f}" for f in static
                                                                 if f in FLAVOURS]
        assert sorted(re.findall(r"dist/(\S+\.rpm)", "".join(s.log for s in downloads))) == release
        assert sign.command == ".venv/bin/doit publish --channel stable"
        assert not re.search(r"^\.  (fetch|build|verify|spec|rpm)", sign.log, re.M), sign.log

        # stable holds the release, signed; unstable nothing
        stable = repodata.read_metadata(channel_dir(target) / "repodata")
        assert sorted(stable.packages) == release
        assert repodata.read_metadata(channel_dir(target, "unstable") / "repodata").packages == {}
        public = (target / signing.KEY_FILE_NAME).read_text()
        signing.verify_repomd(public, fingerprint, channel_dir(target) / "repodata")
        signing.verify_rpms(public, fingerprint, [channel_dir(target) / name for name in release])

        # dnf installs a flavour from the served repository; the binary says what it was built for
        flavour = "hopper"
        rpm = run.artifacts / f"rpm-stable-{flavour}" / f"mistralrs-{flavour}-0.9.2-1.fc43.x86_64.rpm"
        requires = subprocess.run(["rpm", "-qp", "--requires", str(rpm)], check=True, capture_output=True,
                                  text=True).stdout.splitlines()
        nvidia = cfg.package.requires_for(cfg.flavour(flavour).features(cfg.build))
        standin = build_standin_repo(tmp_path / "standin",
                                     sorted({r for r in requires if FEDORA_BASE.match(r)} | set(nvidia)))
        repo_file = requests.get(f"{url}/mistralrs.repo", timeout=10)
        repo_file.raise_for_status()
        root = services.make_dnf_root(tmp_path / "dnf", repo_file.text, standin)
        root.dnf("install", f"mistralrs-{flavour}", check=True, timeout=300)
        info = json.loads(subprocess.run([str(root.root / "usr" / "bin" / "mistralrs"), "info"], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["compute_cap"] == CAPS[flavour] and info["version"] == "0.9.2"


POLL_WORKFLOW = PROJECT / ".gitea" / "workflows" / "poll-upstream.yml"


def test_poll_workflow_builds_and_publishes_what_is_missing_then_nothing(tmp_path, demo_upstream, shared_cache):
    """poll-upstream.yml as a Gitea 1.23 runner runs it on a schedule: the
    poll finds the release and master's head missing for the one configured
    flavour, the gated build jobs build it for both channels (the other
    flavours of the static matrix skip their steps) and publish it.  The next
    poll finds everything published and runs no build job; with its state
    (ETags) lost it decides the same, at the cost of full API answers."""
    key_file, fingerprint = signing.make_demo_key(tmp_path / "key", passphrase=PASSPHRASE)
    secrets = {"MRPM_SIGNING_KEY": key_file.read_text(), "MRPM_SIGNING_PASSPHRASE": PASSPHRASE}
    target = tmp_path / "srv"
    target.mkdir()
    github = FakeGitHub().start()
    github.release = release_object("v0.9.2")
    github.head = demo_upstream.head
    cache = tmp_path / "cache"  # the poll runner's MRPM_CACHE: the mirror and cargo's work shared, the poll state not
    cache.mkdir()
    for part in ("upstream.git", "target", "cudaforge"):
        if (shared_cache / part).exists():
            (cache / part).symlink_to(shared_cache / part)
    labels = ("cuda-13.0", "mistralrs-poll")
    try:
        with services.nginx(target) as url:
            data = demo_config(tmp_path, demo_upstream.path, cache, flavours=("hopper",),
                               publish__target=str(target), publish__base_url=url, poll__api_url=github.url,
                               poll__repository="EricLBuehler/mistral.rs")
            overrides = {"config.toml": tomli_w.dumps(data)}

            run = Driver(POLL_WORKFLOW, tmp_path / "run1", event="schedule", secrets=secrets,
                         checkout_overrides=overrides, runner_labels=labels).execute()
            run.check()
            assert run.leaks == []
            (poll_job,) = run.jobs["poll"]
            out = poll_job.outputs
            assert (out["build_release"], out["release_ref"], out["release_flavours"]) == ("true", "v0.9.2", '["hopper"]')
            assert (out["build_prerelease"], out["prerelease_ref"]) == ("true", demo_upstream.head)
            static = list(project_config()["flavours"])
            for kind, channel in (("release", "stable"), ("prerelease", "unstable")):
                jobs = run.jobs[f"build-{kind}"]
                assert [j.matrix["flavour"] for j in jobs] == static
                for job in jobs:
                    ran = [s for s in job.steps if not s.skipped]
                    assert job.conclusion == "success" and len(ran) == (len(job.steps) if job.matrix["flavour"] == "hopper" else 0)
                assert [p.name for p in (run.artifacts / f"rpm-{channel}-hopper").iterdir()]
                (publish,) = run.jobs[f"publish-{kind}"]
                assert publish.conclusion == "success"
            assert sorted(p.name for p in run.artifacts.iterdir()) == ["rpm-stable-hopper", "rpm-unstable-hopper"]
            stable = repodata.read_metadata(channel_dir(target) / "repodata").packages
            unstable = repodata.read_metadata(channel_dir(target, "unstable") / "repodata").packages
            assert sorted(stable) == ["mistralrs-hopper-0.9.2-1.fc43.x86_64.rpm"]
            (snapshot,) = unstable
            assert snapshot.startswith("mistralrs-hopper-") and f".g{demo_upstream.head[:7]}-" in snapshot
            public = (target / signing.KEY_FILE_NAME).read_text()
            signing.verify_repomd(public, fingerprint, channel_dir(target) / "repodata")

            # the next poll: everything published, no build job runs; its
            # ETags came from the state in the cache
            github.requests.clear()
            run = Driver(POLL_WORKFLOW, tmp_path / "run2", event="schedule", secrets=secrets,
                         checkout_overrides=overrides, runner_labels=labels).execute()
            run.check()
            assert run.jobs["poll"][0].outputs["build_release"] == "false"
            assert run.jobs["poll"][0].outputs["build_prerelease"] == "false"
            skipped = [j.conclusion for k in run.jobs if k != "poll" for j in run.jobs[k]]
            assert skipped and set(skipped) == {"skipped"}
            assert {r.status for r in github.requests} == {304}

            # the state lost (another runner, a wiped disk): the same decision, full answers
            (cache / "poll" / "state.json").unlink()
            github.requests.clear()
            run = Driver(POLL_WORKFLOW, tmp_path / "run3", event="schedule", secrets=secrets,
                         checkout_overrides=overrides, runner_labels=labels).execute()
            run.check()
            assert {k: run.jobs["poll"][0].outputs[k] for k in ("build_release", "build_prerelease")} == {
                "build_release": "false", "build_prerelease": "false"}
            assert {j.conclusion for k in run.jobs if k != "poll" for j in run.jobs[k]} == {"skipped"}
            assert {r.status for r in github.requests} == {200}
    finally:
        github.stop()


# --- the driver itself: what it refuses and parses, without building -----------


def test_driver_refuses_what_it_does_not_emulate(tmp_path):
    wf = tmp_path / "wf.yml"
    base = ("on:\n  workflow_dispatch:\n    inputs:\n      ref: {type: string, required: true}\n"
            "jobs:\n  one:\n    runs-on: cuda-13.0\n    steps:\n")
    cases = {
        "      - uses: actions/setup-python@v5\n": "not emulated",
        "      - run: echo ${{ github.event.inputs[0] }}\n": "cannot read '[0]'",
        "      - run: echo ${{ startsWith(inputs.ref, 'v') }}\n": "function startsWith() with 2 argument(s) is not emulated",
        "      - run: echo hi\n        if: always()\n": "status function always() is not emulated",
        "      - run: echo hi\n        continue-on-error: true\n": "does not do ['continue-on-error']",
        "      - uses: actions/upload-artifact@v4\n        with: {name: x, path: dist}\n": "v3 artifact protocol",
    }
    for step, message in cases.items():
        wf.write_text(base + step)
        with pytest.raises(WorkflowError, match=re.escape(message)):
            Driver(wf, tmp_path / "r", inputs={"ref": "v1.0.0"}).execute()
    wf.write_text(base + "      - run: 'true'\n")
    with pytest.raises(WorkflowError, match="input 'ref' is required"):
        Driver(wf, tmp_path / "r")
    wf.write_text((base + "      - run: 'true'\n").replace("cuda-13.0", "ubuntu-latest"))
    with pytest.raises(WorkflowError, match="runs-on 'ubuntu-latest'"):
        Driver(wf, tmp_path / "r", inputs={"ref": "v1.0.0"}).execute()
    # Gitea before 1.27: a called workflow would run inside the calling job
    wf.write_text(base.split("    runs-on")[0] + "    uses: ./.gitea/workflows/build-release.yml\n")
    with pytest.raises(WorkflowError, match=r"runs inside the calling job on one runner.*#34986"):
        Driver(wf, tmp_path / "r", inputs={"ref": "v1.0.0"}).execute()


def test_driver_outputs_env_and_masking(tmp_path):
    wf = tmp_path / "wf.yml"
    wf.write_text("""\
on: {workflow_dispatch: {inputs: {ref: {type: string, required: true}}}}
env: {REF: "${{ inputs.ref }}"}
jobs:
  first:
    runs-on: cuda-13.0
    outputs: {list: "${{ steps.s.outputs.list }}"}
    steps:
      - id: s
        run: |
          echo 'list=["a","b"]' >> "$GITHUB_OUTPUT"
          echo "LATER=from-env-file" >> "$GITHUB_ENV"
      - run: test "$LATER" = from-env-file && test "$REF" = v1.2.3 && test "$PWD" = "$GITHUB_WORKSPACE"
      - run: echo "the token is $TOKEN"
        env: {TOKEN: "${{ secrets.TOKEN }}"}
  second:
    needs: first
    runs-on: cuda-13.0
    strategy: {matrix: {x: "${{ fromJSON(needs.first.outputs.list) }}"}}
    steps:
      - run: test "$X" = a && test -z "$MISSING"
        env: {X: "${{ matrix.x }}", MISSING: "${{ secrets.NOT_SET }}"}
      - run: 'false'
      - run: echo never
""")
    run = Driver(wf, tmp_path / "r", inputs={"ref": "v1.2.3"}, secrets={"TOKEN": "s3cr3t-t0ken"}).execute()
    first = run.jobs["first"][0]
    assert first.conclusion == "success", run.transcript()
    assert first.outputs == {"list": '["a","b"]'}
    assert "s3cr3t-t0ken" not in first.steps[2].log and "***" in first.steps[2].log and run.leaks == ["TOKEN"]
    # Gitea up to 1.26 (#25179): a matrix from fromJSON(needs...) is ONE job,
    # its matrix value the whole list
    (second,) = run.jobs["second"]
    assert second.matrix == {"x": ["a", "b"]}
    assert second.conclusion == "failure" and [s.returncode for s in second.steps] == [1]
    assert not run.ok
    assert parse_outputs("a=1\nb<<EOF\nx\ny\nEOF\n") == {"a": "1", "b": "x\ny"}
    assert secret_fragments("one-line") == ["one-line"]


def test_driver_conditions_and_static_matrix(tmp_path):
    """if: on jobs and steps as a Gitea 1.23 runner does, over a static matrix
    gated by a job's JSON output: the way the workflows start builds."""
    wf = tmp_path / "wf.yml"
    wf.write_text("""\
on: {workflow_dispatch: {inputs: {go: {type: string, required: true}}}}
jobs:
  plan:
    runs-on: mistralrs-poll
    outputs: {want: "${{ steps.p.outputs.want }}", go: "${{ steps.p.outputs.go }}"}
    steps:
      - id: p
        run: echo 'want=["b"]' >> "$GITHUB_OUTPUT" && echo "go=$GO" >> "$GITHUB_OUTPUT"
        env: {GO: "${{ inputs.go }}"}
  work:
    needs: plan
    if: needs.plan.outputs.go == 'true'
    runs-on: cuda-13.0
    strategy: {matrix: {x: ["a", "b", "c"]}}
    steps:
      - if: contains(fromJSON(needs.plan.outputs.want), matrix.x)
        run: echo "built ${{ matrix.x }}"
      - if: ${{ !contains(fromJSON(needs.plan.outputs.want), matrix.x) && matrix.x != 'C' }}
        run: echo "only a"
  after:
    needs: [plan, work]
    if: needs.plan.outputs.go == 'true'
    runs-on: cuda-13.0
    steps:
      - run: 'true'
""")
    labels = ("cuda-13.0", "mistralrs-poll")
    run = Driver(wf, tmp_path / "r1", inputs={"go": "true"}, runner_labels=labels).execute()
    assert run.ok, run.transcript()
    ran = {job.matrix["x"]: [s.log.strip() for s in job.steps if not s.skipped] for job in run.jobs["work"]}
    assert ran == {"a": ["only a"], "b": ["built b"], "c": []}
    assert [j.conclusion for j in run.jobs["work"]] == ["success"] * 3
    assert run.jobs["after"][0].conclusion == "success"

    run = Driver(wf, tmp_path / "r2", inputs={"go": "false"}, runner_labels=labels).execute()
    assert run.ok and [j.conclusion for j in run.jobs["plan"]] == ["success"]
    assert [j.conclusion for k in ("work", "after") for j in run.jobs[k]] == ["skipped", "skipped"]


def test_driver_ignores_timeout_minutes_and_stops_at_the_runner_timeout(tmp_path):
    """Before Gitea 1.27 timeout-minutes is not honoured: act_runner's
    runner.timeout is what stops a job."""
    wf = tmp_path / "wf.yml"
    wf.write_text("""\
on: {workflow_dispatch: {}}
jobs:
  one:
    runs-on: cuda-13.0
    timeout-minutes: 0.001
    steps:
      - run: sleep 2 && echo done
""")
    run = Driver(wf, tmp_path / "r1").execute()
    assert run.ok and run.jobs["one"][0].steps[0].log.strip() == "done"
    run = Driver(wf, tmp_path / "r2", runner_timeout=0.5).execute()
    (step,) = run.jobs["one"][0].steps
    assert step.returncode == 124 and "runner's timeout" in step.log
