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
        data = demo_config(tmp_path, demo_upstream.path, shared_cache, flavours=FLAVOURS,
                           publish__target=str(target), publish__base_url=url)
        cfg = load(write_config(tmp_path / "config", data))  # checked as doit will read it
        assert cfg.publish.key_file == "" and cfg.publish.key_env == "MRPM_SIGNING_KEY"
        driver = Driver(WORKFLOW, tmp_path / "runner", inputs={"ref": "v0.9.2"}, secrets=secrets,
                        checkout_overrides={"config.toml": tomli_w.dumps(data)})
        run = driver.execute()
        run.check()
        assert run.leaks == [], f"secrets in the logs: {run.leaks}"

        # the jobs, in order, one build per configured flavour
        assert list(run.jobs) == ["matrix", "build", "publish"]
        (matrix,) = run.jobs["matrix"]
        assert json.loads(matrix.outputs["flavours"]) == list(FLAVOURS)
        assert [job.matrix for job in run.jobs["build"]] == [{"flavour": f} for f in FLAVOURS]
        assert [job.name for job in run.jobs["build"]] == [f"build and package {f}" for f in FLAVOURS]
        for job in run.jobs["build"]:
            commands = [s.command for s in job.steps if s.kind == "run"]
            assert commands == ["scripts/bootstrap", ".venv/bin/doit doctor", ".venv/bin/doit fetch",
                                *(f".venv/bin/doit {t}:{job.matrix['flavour']}" for t in ("build", "verify", "rpm"))]
        # every runner's workspace is gone: only the artifact store was handed on
        assert not any((tmp_path / "runner" / "runners").glob("*/workspace"))
        release = sorted(f"mistralrs-{f}-0.9.2-1.fc43.x86_64.rpm" for f in FLAVOURS)
        assert sorted(p.name for p in (run.artifacts / "rpms").iterdir()) == release

        # the publish job built nothing: it got the two packages and published them
        (publish,) = run.jobs["publish"]
        assert [s.kind for s in publish.steps] == ["actions/checkout@v4", "run", "actions/download-artifact@v3", "run"]
        download, sign = publish.steps[2], publish.steps[3]
        assert sorted(re.findall(r"dist/(\S+\.rpm)", download.log)) == release
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
        rpm = run.artifacts / "rpms" / f"mistralrs-{flavour}-0.9.2-1.fc43.x86_64.rpm"
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


# --- the driver itself: what it refuses and parses, without building -----------


def test_driver_refuses_what_it_does_not_emulate(tmp_path):
    wf = tmp_path / "wf.yml"
    base = ("on:\n  workflow_dispatch:\n    inputs:\n      ref: {type: string, required: true}\n"
            "jobs:\n  one:\n    runs-on: cuda-13.0\n    steps:\n")
    cases = {
        "      - uses: actions/setup-python@v5\n": "not emulated",
        "      - run: echo ${{ github.event.inputs.ref == 'x' }}\n": "context look-ups and fromJSON",
        "      - run: echo hi\n        if: always()\n": "does not do ['if']",
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
      - run: test "${{ matrix.x }}" = "$X" && test -z "$MISSING"
        env: {X: "${{ matrix.x }}", MISSING: "${{ secrets.NOT_SET }}"}
      - run: 'false'
      - run: echo never
""")
    run = Driver(wf, tmp_path / "r", inputs={"ref": "v1.2.3"}, secrets={"TOKEN": "s3cr3t-t0ken"}).execute()
    first = run.jobs["first"][0]
    assert first.conclusion == "success", run.transcript()
    assert first.outputs == {"list": '["a","b"]'}
    assert "s3cr3t-t0ken" not in first.steps[2].log and "***" in first.steps[2].log and run.leaks == ["TOKEN"]
    assert [j.matrix for j in run.jobs["second"]] == [{"x": "a"}, {"x": "b"}]
    for job in run.jobs["second"]:
        assert job.conclusion == "failure" and [s.returncode for s in job.steps] == [0, 1]  # stops at the failure
    assert not run.ok
    assert parse_outputs("a=1\nb<<EOF\nx\ny\nEOF\n") == {"a": "1", "b": "x\ny"}
    assert secret_fragments("one-line") == ["one-line"]
