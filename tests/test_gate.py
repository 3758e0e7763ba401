"""The release gate on the demo upstream: staging, doit gate:<flavour>,
doit promote (issue 20).  This machine has no GPU: a stand-in nvidia-smi
answers for one where a test needs the gate to get past its first check."""

from __future__ import annotations

import configparser
import json
import os
import shutil
from pathlib import Path

import pytest

from buildlib.config import load
from buildlib.demo.driver import standin_base, stand_in_nvidia_smi
from buildlib.publish.repodata import read_metadata
from buildlib.publish.signing import make_demo_key
from pipeline import demo_config, run_doit, write_config

STABLE = Path("fedora/43/x86_64")
STAGING = STABLE / "staging"
HOPPER = "mistralrs-hopper-0.9.2-1.fc43.x86_64.rpm"
AMPERE = "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"


# every test here stages the demo's real packages (a build, a publish with gpg)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def staged(tmp_path_factory, demo_upstream, shared_cache):
    """Both demo flavours built, then `doit publish`ed into a local repository."""
    work = tmp_path_factory.mktemp("gate")
    key, _ = make_demo_key(work / "key")
    config = write_config(work, demo_config(work, demo_upstream.path, shared_cache, publish__key_file=str(key)))
    rc, _, err = run_doit(config)
    assert rc == 0, err
    rc, _, err = run_doit(config, "publish", "--release-package")
    assert rc == 0, err
    return work


def copy_of(staged: Path, dest: Path, smoke: str = "selftest") -> Path:
    """The built project and its published repository, copied for one test;
    its config's upstream runs the given smoke."""
    shutil.copytree(staged, dest, symlinks=True, ignore=shutil.ignore_patterns("repo"))
    shutil.copytree(staged / "repo", dest / "repo")
    data = demo_config(dest, Path(load(staged / "config.toml").upstream.url), load(staged / "config.toml").paths.cache,
                       publish__key_file=load(staged / "config.toml").publish.key_file)
    for row in data["upstream"]["programs"].values():
        row["smoke"] = smoke
    return write_config(dest, data)


def gpu_path(tmp: Path, compute_cap: int | None) -> dict:
    """PATH with a stand-in nvidia-smi (None: PATH without any nvidia-smi)."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()]
    if compute_cap is not None:
        path.insert(0, str(stand_in_nvidia_smi(tmp / "smi", compute_cap)))
    return {"PATH": os.pathsep.join(path)}


def error_lines(out: str) -> list[str]:
    """The distinct error lines (run_doit joins stderr and the reporter's copy)."""
    return sorted({line for line in out.splitlines() if line.startswith("error:")})


def base_reposdir(config: Path, dest: Path) -> Path:
    """A reposdir standing in for Fedora's and NVIDIA's repositories."""
    repo = standin_base(load(config), dest / "standin")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "base.repo").write_text(f"[standin-base]\nname=stand-in\nbaseurl=file://{repo}\ngpgcheck=0\nrepo_gpgcheck=0\n")
    return dest


def test_publish_stages_and_the_release_package_repo_never_names_staging(staged):
    repo = staged / "repo"
    assert (repo / STAGING / HOPPER).is_file()
    staged_md = {Path(h).name for h in read_metadata(repo / STAGING / "repodata").packages}
    assert {HOPPER, AMPERE} <= staged_md
    assert (repo / STAGING / "repodata" / "repomd.xml.asc").is_file()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string((repo / "mistralrs.repo").read_text())
    seen = set()
    for section in parser.sections():
        url = parser.get(section, "baseurl")
        assert "staging" not in url
        rel = url.split("/mistralrs-rpm/", 1)[1].replace("$releasever", "43").replace("$basearch", "x86_64")
        listed = {Path(h).name for h in read_metadata(repo / rel / "repodata").packages}
        seen |= listed
    assert not seen & {HOPPER, AMPERE}, seen


def test_demo_package_fails_its_gate_here_and_promote_refuses_it(staged, tmp_path):
    config = copy_of(staged, tmp_path / "p")
    rc, _, out = run_doit(config, "gate:hopper", env=gpu_path(tmp_path, None))
    assert rc != 0
    assert len(error_lines(out)) == 1 and "no NVIDIA GPU here" in error_lines(out)[0], out
    rc, _, out = run_doit(config, "promote", "--channel", "stable")
    assert rc != 0
    lines = error_lines(out)
    assert len(lines) == 1 and HOPPER in lines[0] and "no gate record" in lines[0], out
    assert not (tmp_path / "p" / "repo" / STABLE / HOPPER).exists()


def test_gate_refuses_a_gpu_of_another_generation(staged, tmp_path):
    config = copy_of(staged, tmp_path / "p")
    rc, _, out = run_doit(config, "gate:hopper", env=gpu_path(tmp_path, 86))
    assert rc != 0
    assert len(error_lines(out)) == 1 and "compute capability 8.6" in out and "gpu-sm90" in out, out


def test_a_gate_that_passes_is_promoted_byte_for_byte(staged, tmp_path):
    config = copy_of(staged, tmp_path / "p", smoke="version")
    reposdir = base_reposdir(config, tmp_path / "base")
    rc, _, out = run_doit(config, "gate:hopper", "--reposdir", str(reposdir), env=gpu_path(tmp_path, 90))
    assert rc == 0, out
    repo = tmp_path / "p" / "repo"
    record = json.loads((repo / STAGING / HOPPER.replace(".rpm", ".gate.json")).read_text())
    assert record["passed"] and record["nevra"] == HOPPER.removesuffix(".rpm") and record["compute_cap"] == "9.0"
    assert [s["name"] for s in record["steps"]] == ["version", "libraries"]
    rc, _, out = run_doit(config, "promote", "--channel", "stable")
    # ampere has no gate record: refused, and hopper goes in all the same
    assert rc != 0 and AMPERE in out and len(error_lines(out)) == 1, out
    assert (repo / STABLE / HOPPER).read_bytes() == (repo / STAGING / HOPPER).read_bytes()
    listed = {Path(h).name for h in read_metadata(repo / STABLE / "repodata").packages}
    assert HOPPER in listed and AMPERE not in listed
    index = (repo / "index.html").read_text()
    assert "tested on stand-in GPU (no driver), driver none" in index


def test_a_staged_package_changed_after_its_gate_is_refused(staged, tmp_path):
    config = copy_of(staged, tmp_path / "p", smoke="version")
    reposdir = base_reposdir(config, tmp_path / "base")
    rc, _, out = run_doit(config, "gate:hopper", "--reposdir", str(reposdir), env=gpu_path(tmp_path, 90))
    assert rc == 0, out
    repo = tmp_path / "p" / "repo"
    # other signed bytes under the gated name
    shutil.copyfile(repo / STAGING / AMPERE, repo / STAGING / HOPPER)
    rc, _, out = run_doit(config, "promote", "--channel", "stable")
    assert rc != 0 and len(error_lines(out)) == 1 and "not the package that passed its gate" in out, out
    assert not (repo / STABLE / HOPPER).exists()


def test_gate_off_is_promoted_untested(staged, tmp_path):
    config = copy_of(staged, tmp_path / "p")
    data = load(config)
    import tomllib
    import tomli_w
    raw = tomllib.loads(config.read_text())
    for f in raw["flavours"].values():
        f["gate"] = "off"
    config.write_text(tomli_w.dumps(raw))
    rc, _, out = run_doit(config, "promote", "--channel", "stable")
    assert rc == 0, out
    repo = tmp_path / "p" / "repo"
    for name in (HOPPER, AMPERE):
        assert (repo / STABLE / name).read_bytes() == (repo / STAGING / name).read_bytes()
    assert "not tested on hardware" in (repo / "index.html").read_text()
    assert data.flavours[0].gate == "required"
