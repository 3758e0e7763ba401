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
from pipeline import PROJECT, demo_config, write_config
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
        data = demo_config(tmp_path, demo_upstream.path, shared_cache, flavours=FLAVOURS, gate="off",
                           publish__target=str(target), publish__base_url=url)
        cfg = load(write_config(tmp_path / "config", data))  # checked as doit will read it
        assert cfg.publish.key_file == "" and cfg.publish.key_env == "MRPM_SIGNING_KEY"
        driver = Driver(WORKFLOW, tmp_path / "runner", inputs={"ref": "v0.9.2"}, secrets=secrets,
                        checkout_overrides={"config.toml": tomli_w.dumps(data)},
                        runner_labels=("cuda-13.0", "mistralrs-publish"))
        run = driver.execute()
        run.check()
        assert run.leaks == [], f"secrets in the logs: {run.leaks}"

        # the jobs, in order: the workflow as `doit workflows` renders it for this
        # config (its two flavours in the static matrix; no gate job, gate = "off")
        assert list(run.jobs) == ["matrix", "build", "publish", "promote"]  # no gate jobs: gate = "off" here
        (matrix,) = run.jobs["matrix"]
        assert json.loads(matrix.outputs["flavours"]) == list(FLAVOURS)
        static = list(data["flavours"])
        assert set(FLAVOURS) == set(static)
        assert [job.matrix for job in run.jobs["build"]] == [{"flavour": f} for f in static]
        assert [job.name for job in run.jobs["build"]] == [f"build and package {f}" for f in static]
        for job in run.jobs["build"]:
            flavour = job.matrix["flavour"]
            assert job.conclusion == "success"
            commands = [s.command for s in job.steps if s.kind == "run" and not s.skipped]
            if flavour not in FLAVOURS:
                assert all(s.skipped for s in job.steps), flavour
                continue
            assert job.roles == ("build",)
            assert commands == ["scripts/bootstrap --role build", ".venv/bin/doit doctor", ".venv/bin/doit fetch",
                                *(f".venv/bin/doit {t}:{flavour}" for t in ("build", "verify", "rpm"))]
        # every runner's workspace is gone: only the artifact store was handed on
        assert not any((tmp_path / "runner" / "runners").glob("*/workspace"))
        # one artifact per build job that built
        assert sorted(p.name for p in run.artifacts.iterdir()) == [f"rpm-stable-{f}" for f in sorted(FLAVOURS)]
        for f in FLAVOURS:  # each package with its SBOM
            assert sorted(p.name for p in (run.artifacts / f"rpm-stable-{f}").iterdir()) == [
                f"mistralrs-{f}-0.9.2-1.fc43.x86_64.cdx.json", f"mistralrs-{f}-0.9.2-1.fc43.x86_64.rpm"]
        release = sorted(f"mistralrs-{f}-0.9.2-1.fc43.x86_64.rpm" for f in FLAVOURS)

        # the publish job built nothing: it got the two packages and published them
        (publish,) = run.jobs["publish"]
        assert [s.kind for s in publish.steps] == ["actions/checkout@v4", "run",
                                                   *["actions/download-artifact@v3"] * len(static), "run"]
        downloads, sign = publish.steps[2:-1], publish.steps[-1]
        assert [s.name for s in downloads if not s.skipped] == [f"collect rpm-stable-{f}" for f in static
                                                                 if f in FLAVOURS]
        assert sorted(re.findall(r"dist/(\S+\.rpm)", "".join(s.log for s in downloads))) == release
        assert sign.command == '.venv/bin/doit publish --channel "$MRPM_TARGET_CHANNEL" --release-package'
        assert matrix.outputs["channel"] == "stable"  # a final release tag
        assert not re.search(r"^\.  (fetch|build|verify|spec|rpm)", sign.log, re.M), sign.log

        # stable holds the release and mistralrs-release (the publish built it), signed; unstable nothing
        stable = repodata.read_metadata(channel_dir(target) / "repodata")
        assert sorted(stable.packages) == sorted([*release, "mistralrs-release-1-1.fc43.noarch.rpm"])
        assert repodata.read_metadata(channel_dir(target, "unstable") / "repodata").packages == {}
        public = (target / signing.KEY_FILE_NAME).read_text()
        signing.verify_repomd(public, fingerprint, channel_dir(target) / "repodata")
        signing.verify_rpms(public, fingerprint, [channel_dir(target) / name for name in release])
        for name in release:  # the build job's SBOM, published beside its package
            sbom = name.removesuffix(".rpm") + ".cdx.json"
            flavour_of = name.split("-")[1]
            assert (channel_dir(target) / sbom).read_bytes() == (run.artifacts / f"rpm-stable-{flavour_of}" / sbom).read_bytes()

        # dnf installs a flavour from the served repository; the binary says what it was built for
        flavour = "hopper"
        rpm = run.artifacts / f"rpm-stable-{flavour}" / f"mistralrs-{flavour}-0.9.2-1.fc43.x86_64.rpm"
        standin = standin_repo(tmp_path, data, rpm, flavour)
        repo_file = requests.get(f"{url}/mistralrs.repo", timeout=10)
        repo_file.raise_for_status()
        root = services.make_dnf_root(tmp_path / "dnf", repo_file.text, standin)
        root.dnf("install", f"mistralrs-{flavour}", check=True, timeout=300)
        info = json.loads(subprocess.run([str(root.root / "usr" / "bin" / "mistralrs"), "info"], check=True,
                                         capture_output=True, text=True).stdout)
        assert info["compute_cap"] == CAPS[flavour] and info["version"] == "0.9.2"




BUILD_S = 40 * 60
"""A build step longer than two poll ticks (virtual time)."""


def standin_repo(tmp_path, data: dict, rpm, flavour: str):
    """A repository standing in for Fedora's and NVIDIA's packages: what
    the flavour's package requires of them (its base requirements and the
    CUDA packages config.toml names for its features)."""
    requires = subprocess.run(["rpm", "-qp", "--requires", str(rpm)], check=True, capture_output=True,
                              text=True).stdout.splitlines()
    cfg = load(write_config(tmp_path / "config", data))
    nvidia = cfg.package.requires_for(cfg.flavour(flavour).features(cfg.build))
    return build_standin_repo(tmp_path / "standin", sorted({r for r in requires if FEDORA_BASE.match(r)} | set(nvidia)))


def ci_world(tmp_path, demo_upstream, shared_cache):
    """What a CI test starts from: the signing key and dispatch token as
    secrets, an empty repository directory, a stand-in GitHub whose latest
    release is v0.9.2 and whose head is the demo's, and the runners'
    MRPM_CACHE (the mirror and cargo's work shared, the poll state not).
    Returns (key file, fingerprint, token, secrets, target, github, cache)."""
    key_file, fingerprint = signing.make_demo_key(tmp_path / "key", passphrase=PASSPHRASE)
    token = "dispatch-t0ken-for-the-test"
    secrets = {"MRPM_SIGNING_KEY": key_file.read_text(), "MRPM_SIGNING_PASSPHRASE": PASSPHRASE,
               "MRPM_DISPATCH_TOKEN": token}
    target = tmp_path / "srv"
    target.mkdir()
    github = FakeGitHub().start()
    github.release = release_object("v0.9.2")
    github.head = demo_upstream.head
    cache = tmp_path / "cache"
    cache.mkdir()
    for part in ("upstream.git", "target", "cudaforge"):
        if (shared_cache / part).exists():
            (cache / part).symlink_to(shared_cache / part)
    return key_file, fingerprint, token, secrets, target, github, cache


@pytest.mark.parametrize("gitea_version", ["1.24.0", "1.25.4", "1.26.0"])
def test_a_build_longer_than_two_poll_ticks_is_published_and_installs(tmp_path, demo_upstream, shared_cache,
                                                                       gitea_version):
    """The poll workflow on its cron, on a simulated Gitea of each supported
    version boundary (a virtual clock: nothing sleeps): the poll finds the
    release and master's head missing for the one configured flavour and
    dispatches the build workflows; each build step lasts 40 minutes, so
    several ticks pass while it runs (up to 1.25 each tick cancels the
    scheduled runs before it: a build that was a job of the poll's run never
    ended).  The dispatched runs build, publish, and dnf installs the
    release; the polls during the builds start nothing again."""
    from fake_gitea import FakeGitea
    from workflow_driver import TICK_S, Gitea

    key_file, fingerprint, token, secrets, target, github, cache = ci_world(tmp_path, demo_upstream, shared_cache)
    gitea = Gitea(gitea_version, tmp_path / "gitea",
                  runners={"mistralrs-poll": 1, "mistralrs-publish": 1, "cuda-13.0": 1},
                  secrets=secrets, durations=lambda job, step: BUILD_S if step.get("name") == "build" else 60)
    api = FakeGitea(gitea, token).start()
    try:
        with services.nginx(target) as url:
            data = demo_config(tmp_path, demo_upstream.path, cache, flavours=("hopper",), gate="off",
                               publish__target=str(target), publish__base_url=url, poll__api_url=github.url,
                               poll__repository="EricLBuehler/mistral.rs", poll__snapshot_interval=0)
            gitea.overrides = {"config.toml": tomli_w.dumps(data)}
            gitea.run_until(4 * 3600)
            transcript = "\n".join(gitea.log)
            polls = gitea.runs_of("poll-upstream.yml")
            assert len(polls) == 4 * 3600 // TICK_S and all(p.conclusion == "success" for p in polls[:-1]), \
                transcript + "".join(p.run.transcript() for p in polls if p.conclusion == "failure")
            (release,) = gitea.runs_of("build-release.yml")
            (snapshot,) = gitea.runs_of("build-prerelease.yml")
            for run in (release, snapshot):
                assert run.event == "workflow_dispatch" and run.conclusion == "success", \
                    transcript + run.run.transcript()
                assert run.run.leaks == []
            assert release.driver.inputs == {"ref": "v0.9.2", "flavours": '["hopper"]'}
            # the builds outlived several ticks
            assert sum(1 for p in polls if release.created < p.created) >= 3
            (build,) = [j for j in release.run.jobs["build"] if j.matrix["flavour"] == "hopper"]
            assert [s.name for s in build.steps if not s.skipped and s.name == "build"] == ["build"]

            stable = repodata.read_metadata(channel_dir(target) / "repodata").packages
            unstable = repodata.read_metadata(channel_dir(target, "unstable") / "repodata").packages
            assert "mistralrs-hopper-0.9.2-1.fc43.x86_64.rpm" in stable
            assert any(n.startswith("mistralrs-hopper-") and f"git{demo_upstream.head[:7]}-" in n for n in unstable)
            public = (target / signing.KEY_FILE_NAME).read_text()
            signing.verify_repomd(public, fingerprint, channel_dir(target) / "repodata")

            # dnf installs the release from the served repository
            rpm = release.run.artifacts / "rpm-stable-hopper" / "mistralrs-hopper-0.9.2-1.fc43.x86_64.rpm"
            standin = standin_repo(tmp_path, data, rpm, "hopper")
            repo_file = requests.get(f"{url}/mistralrs.repo", timeout=10)
            repo_file.raise_for_status()
            root = services.make_dnf_root(tmp_path / "dnf", repo_file.text, standin)
            root.dnf("install", "mistralrs-hopper", check=True, timeout=300)
            info = json.loads(subprocess.run([str(root.root / "usr" / "bin" / "mistralrs"), "info"], check=True,
                                             capture_output=True, text=True).stdout)
            assert info["compute_cap"] == CAPS["hopper"] and info["version"] == "0.9.2"
    finally:
        api.stop()
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
        "      - run: echo hi\n        if: always()\n": "status function always() is not emulated here",
        "      - run: echo hi\n        timeout-minutes: 5\n": "does not do ['timeout-minutes']",
        "      - run: scripts/bootstrap --role gpu\n": "scripts/bootstrap --role gpu: the script takes build|publish|host|test",
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


def test_driver_status_functions_needs_results_and_continue_on_error(tmp_path):
    """A job whose if: calls a status function runs whatever its needs
    concluded, as Gitea hands it to the runner (#29464); without one, the
    implied success() skips it.  A step with continue-on-error fails and
    the job goes on."""
    wf = tmp_path / "wf.yml"
    wf.write_text("""\
on: {workflow_dispatch: {inputs: {fail: {type: string, required: true}}}}
jobs:
  plan:
    runs-on: cuda-13.0
    outputs: {go: "${{ steps.p.outputs.go }}"}
    steps:
      - id: p
        run: echo "go=yes" >> "$GITHUB_OUTPUT"
  work:
    needs: plan
    runs-on: cuda-13.0
    strategy: {matrix: {x: ["a", "b"]}}
    steps:
      - run: test "$X" != "$FAIL"
        env: {X: "${{ matrix.x }}", FAIL: "${{ inputs.fail }}"}
  plain:
    needs: [plan, work]
    runs-on: cuda-13.0
    steps:
      - run: 'true'
  anyway:
    needs: [plan, work]
    if: ${{ !cancelled() && needs.plan.outputs.go == 'yes' }}
    runs-on: cuda-13.0
    steps:
      - run: 'false'
        continue-on-error: true
      - run: echo "work ${{ needs.work.result }}"
  on-failure:
    needs: work
    if: failure()
    runs-on: cuda-13.0
    steps:
      - run: 'true'
  never:
    needs: work
    if: cancelled()
    runs-on: cuda-13.0
    steps:
      - run: 'true'
""")
    run = Driver(wf, tmp_path / "r1", inputs={"fail": "b"}).execute()
    conclusions = {k: [j.conclusion for j in v] for k, v in run.jobs.items()}
    assert conclusions == {"plan": ["success"], "work": ["success", "failure"], "plain": ["skipped"],
                           "anyway": ["success"], "on-failure": ["success"], "never": ["skipped"]}, run.transcript()
    assert not run.ok  # the run ends failed: one job of the matrix failed
    (anyway,) = run.jobs["anyway"]
    assert anyway.steps[0].returncode == 1 and anyway.steps[0].continued and anyway.failed_step is None
    assert anyway.steps[1].log.strip() == "work failure"
    # with every need succeeded, the implied success() runs plain; failure() is false
    run = Driver(wf, tmp_path / "r2", inputs={"fail": "none"}).execute()
    assert [run.jobs[k][0].conclusion for k in ("plain", "anyway", "on-failure", "never")] == [
        "success", "success", "skipped", "skipped"]
    assert run.jobs["anyway"][0].steps[1].log.strip() == "work success"


def test_driver_records_the_bootstrap_roles(tmp_path):
    wf = tmp_path / "wf.yml"
    wf.write_text("""\
on: {workflow_dispatch: {}}
jobs:
  one:
    runs-on: cuda-13.0
    steps:
      - uses: actions/checkout@v4
      - run: scripts/bootstrap --role build --role publish
""")
    run = Driver(wf, tmp_path / "r").execute()
    (one,) = run.jobs["one"]
    assert one.conclusion == "success", run.transcript()
    assert one.roles == ("build", "publish") and one.steps[1].command == "scripts/bootstrap --role build --role publish"


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


def test_one_broken_flavour_holds_back_no_other_and_ci_publishes_the_release_package(tmp_path, demo_upstream,
                                                                                      shared_cache):
    """Issue 21, item 1 and issue 18, item 3, on a simulated Gitea 1.26 (a
    virtual clock), from an empty repository: hopper's build fails (a cargo
    feature upstream lacks), ampere's succeeds.  The publish job publishes
    ampere and mistralrs-release (built by the publish itself: nothing put
    it in dist/), the run ends failed, and the next poll starts a build of
    hopper only.  The index page's first command installs mistralrs-release
    with gpgcheck=1 and repo_gpgcheck=1, and its .repo file and key alone
    install ampere.  Matrix, publish and poll jobs run on their own labels,
    bootstrapped by role."""
    from fake_gitea import FakeGitea
    from workflow_driver import Gitea

    key_file, fingerprint, token, secrets, target, github, cache = ci_world(tmp_path, demo_upstream, shared_cache)
    gitea = Gitea("1.26.0", tmp_path / "gitea", secrets=secrets,
                  runners={"mistralrs-poll": 1, "mistralrs-publish": 1, "cuda-13.0": 1})
    api = FakeGitea(gitea, token).start()
    try:
        with services.nginx(target) as url:
            data = demo_config(tmp_path, demo_upstream.path, cache, flavours=FLAVOURS, gate="off",
                               publish__target=str(target), publish__base_url=url, poll__api_url=github.url,
                               poll__repository="EricLBuehler/mistral.rs", poll__snapshot_interval=0,
                               flavours__hopper__extra_features=["no-such-feature"])
            gitea.overrides = {"config.toml": tomli_w.dumps(data)}
            gitea.run_until(3600)
            transcript = "\n".join(gitea.log)
            first, again = gitea.runs_of("build-release.yml")
            assert first.driver.inputs["flavours"] == '["ampere","hopper"]', transcript
            assert first.conclusion == "failure", transcript  # the failure stays visible
            builds = {j.matrix["flavour"]: j.conclusion for j in first.run.jobs["build"]}
            assert builds["ampere"] == "success" and builds["hopper"] == "failure", first.run.transcript()
            (publish,) = first.run.jobs["publish"]
            assert publish.conclusion == "success", first.run.transcript()
            collected = {s.name: s for s in publish.steps if s.kind.startswith("actions/download")}
            assert collected["collect rpm-stable-hopper"].continued
            # the next poll asks for the failed flavour only
            assert again.driver.inputs == {"ref": "v0.9.2", "flavours": '["hopper"]'}, transcript
            # jobs on their labels, each bootstrapped by its role
            for run in (first, *gitea.runs_of("poll-upstream.yml")[:1]):
                for job_id, jobs in run.run.jobs.items():
                    for job in jobs:
                        if job.conclusion != "skipped" and job.roles:
                            assert job.roles == (("build",) if job_id == "build" else ("publish",)), job_id
            assert publish.roles == ("publish",)

            stable = repodata.read_metadata(channel_dir(target) / "repodata").packages
            assert sorted(stable) == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm",
                                      "mistralrs-release-1-1.fc43.noarch.rpm"]
            public = (target / signing.KEY_FILE_NAME).read_text()
            signing.verify_rpms(public, fingerprint, [channel_dir(target) / n for n in stable])

            # the index page's first command, as a user runs it
            page = requests.get(f"{url}/", timeout=10).text
            release_url = re.search(r"sudo dnf install (\S+mistralrs-release-\S+\.noarch\.rpm)", page).group(1)
            rpm = first.run.artifacts / "rpm-stable-ampere" / "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
            standin = standin_repo(tmp_path, data, rpm, "ampere")
            root = services.make_dnf_root(tmp_path / "dnf", None, standin)
            # the key comes with this first package: dnf cannot check it (Fedora's dnf does not check a
            # package given by URL unless localpkg_gpgcheck is set); everything after is checked
            root.dnf("--setopt=localpkg_gpgcheck=0", "install", release_url, check=True, timeout=300)
            root.with_installed_repos().dnf("install", "mistralrs-ampere", check=True, timeout=300)
            info = json.loads(subprocess.run([str(root.root / "usr" / "bin" / "mistralrs"), "info"], check=True,
                                             capture_output=True, text=True).stdout)
            assert info["compute_cap"] == CAPS["ampere"] and info["version"] == "0.9.2"
    finally:
        api.stop()
        github.stop()
