"""End to end on the demo upstream: the whole pipeline as users run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import services
from buildlib.demo import localrepo
from pipeline import PROJECT, demo_config, ran, run_doit, write_config
from services import free_port


def copy_project(dest: Path) -> Path:
    """The project's code and templates in dest, so a test may edit a
    template without touching the checkout."""
    for name in ("dodo.py", "config.toml"):
        shutil.copy2(PROJECT / name, dest / name)
    for name in ("buildlib", "rpm", "examples"):
        shutil.copytree(PROJECT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "target"))
    return dest / "dodo.py"


@pytest.mark.slow
def test_template_change_repackages_without_cargo(tmp_path, demo_upstream, shared_cache):
    project = tmp_path / "project"
    project.mkdir()
    dodo = copy_project(project)
    config = write_config(tmp_path / "w", demo_config(tmp_path / "w", demo_upstream.path, shared_cache))

    def doit(*args):
        env = dict(os.environ, MRPM_CONFIG=str(config))
        env.pop("MRPM_REF", None)
        proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(dodo), "--reporter", "json", *args],
                              cwd=project, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
        return {t["name"]: t["result"] for t in json.loads(proc.stdout)["tasks"]}

    first = doit()
    assert {"build:ampere", "rpm:ampere", "spec:hopper", "rpm:hopper"} <= ran(first)
    assert ran(doit()) == set()

    template = project / "rpm" / "mistralrs.spec.j2"
    template.write_text(template.read_text().replace("%description", "# a packager's note\n%description", 1))
    results = doit()
    assert ran(results) == {"spec:ampere", "spec:hopper", "rpm:ampere", "rpm:hopper"}, results
    dist = sorted(p.name for p in (tmp_path / "w" / "dist").glob("*.rpm"))
    # same version, changed spec, nothing published: the channel decides the Release, still 1
    assert "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm" in dist and "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm" not in dist


@pytest.mark.slow
def test_rpms_handed_over_publish_without_building(tmp_path, demo_upstream, shared_cache, demo_key):
    """CI's publish job: RPMs from earlier jobs downloaded into dist/ of a
    fresh checkout with an empty doit state; publish runs no build task."""
    build = write_config(tmp_path / "builder", demo_config(tmp_path / "builder", demo_upstream.path, shared_cache))
    rc, _, err = run_doit(build)
    assert rc == 0, err
    key, _ = demo_key
    fresh = tmp_path / "publisher"
    data = demo_config(fresh, tmp_path / "no-upstream", fresh / "cache", publish__key_file=str(key))
    config = write_config(fresh, data)
    shutil.copytree(tmp_path / "builder" / "dist", fresh / "dist")
    rc, results, err = run_doit(config, "publish")
    assert rc == 0, err
    assert set(results) == {"publish"}
    published = sorted(p.name for p in (fresh / "repo").rglob("*.rpm"))
    assert published == sorted(p.name for p in (fresh / "dist").glob("*.rpm"))


def run_demo(demo: Path, port: int, script: bool = False, cache: Path | None = None) -> subprocess.CompletedProcess:
    """The demo, everything it makes in demo: `scripts/demo` itself run from
    demo's parent (its bootstrap finds everything installed by the test
    command's), or the driver the way the tests run it; with cache, its
    cache (mirror, cargo target dirs) is that one, as MRPM_CACHE sets it."""
    env = dict(os.environ, MRPM_DEMO_PORT=str(port), MRPM_DEMO_DIR=demo.name if script else str(demo))
    env.pop("MRPM_REF", None)
    env.pop("MRPM_CONFIG", None)
    env.pop("MRPM_CACHE", None)
    if cache is not None:
        env["MRPM_CACHE"] = str(cache)
    argv = [str(PROJECT / "scripts" / "demo")] if script else [sys.executable, "-m", "buildlib.demo"]
    return subprocess.run(argv, cwd=demo.parent if script else PROJECT, env=env,
                          capture_output=True, text=True, timeout=1200)


def stop_demo_nginx(demo: Path) -> None:
    nginx_dir = demo / "nginx"
    if (nginx_dir / "nginx.pid").exists():
        subprocess.run([localrepo.nginx_binary(), "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-s", "stop"],
                       capture_output=True)


def checkout_demo_state() -> dict[str, object]:
    """What of the checkout's own .demo/ a test could disturb: its entries,
    its config (the port it serves on) and its nginx."""
    demo = PROJECT / ".demo"
    if not demo.exists():
        return {}
    state: dict[str, object] = {p.name: p.stat().st_mtime_ns for p in demo.iterdir()}
    for name in ("config.toml", "nginx/nginx.conf", "nginx/nginx.pid"):
        state[name] = (demo / name).read_bytes() if (demo / name).exists() else None
    return state


FRONT_DOOR = (("8.6", "ampere"), ("8.9", "ada"), ("9.0", "hopper"), ("12.0", "blackwell"))


@pytest.mark.slow
def test_demo_command_walks_the_front_door_and_leaves_other_demos_alone(tmp_path):
    """The README's first command: build, package, sign, publish, serve,
    then the front door: mistralrs-release from its URL, mistralrs-flavour,
    the flavour through the release package's .repo file.  A second demo
    elsewhere (as the test suite runs one) leaves the first one serving,
    the install command it printed working, and the checkout's .demo/ as
    it was."""
    before = checkout_demo_state()
    user, suite = tmp_path / "user-demo", tmp_path / "suite-demo"
    port = free_port()
    other_port = free_port()
    while other_port == port:
        other_port = free_port()
    try:
        # a relative MRPM_DEMO_DIR, from where scripts/demo was started
        proc = run_demo(user, port, script=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = proc.stdout
        for flavour in ("ampere", "ada", "blackwell", "hopper"):
            assert f"mistralrs-{flavour}-0.9.2-" in out
        assert "EdDSA/SHA256" in out and "unsigned" not in out
        release_url = f"http://127.0.0.1:{port}/fedora/43/x86_64/mistralrs-release-1-1.fc43.noarch.rpm"
        assert f"\n  sudo dnf install {release_url}\n  sudo dnf install \"mistralrs-$(mistralrs-flavour)\"\n" in out
        # the front door, one GPU of each flavour: what nvidia-smi said, what mistralrs-flavour
        # chose, what dnf installed through the release package's .repo, what the binary reports
        fingerprint = re.search(r"\(signing key ([0-9A-F]{40})\)", out)[1]
        assert f"dnf install {release_url}\n    -> mistralrs-release, signed by EdDSA/SHA256 {fingerprint[-16:].lower()}\n" in out
        assert "dnf installed through /etc/yum.repos.d/mistralrs.repo" in out
        for cap, flavour in FRONT_DOOR:
            row = rf"^ +{re.escape(cap)} +{flavour} +mistralrs-{flavour}-0\.9\.2-1\.fc43 +sm_{cap.replace('.', '')}$"
            assert re.search(row, out, re.M), (cap, flavour, out)
            root = user / "dnf" / flavour / "root"
            # no .repo file of ours but what mistralrs-release installed
            assert sorted(p.name for p in (user / "dnf" / flavour / "repos.d").iterdir()) == ["base.repo"]
            assert (root / "etc/yum.repos.d/mistralrs.repo").exists()
            assert (root / "etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs").exists()
        assert services.gpg_agents_under(user) == []

        # another demo in another directory, as the test suite runs it; the first one's
        # builds were cold, so this one reuses its cargo cache (its own coldness tests nothing)
        try:
            other = run_demo(suite, other_port, cache=user / "cache")
            assert other.returncode == 0, other.stderr[-4000:]
            assert services.gpg_agents_under(suite) == []
        finally:
            stop_demo_nginx(suite)

        # the first demo still serves, and the command it printed still installs, in a fresh root
        assert requests.get(release_url, timeout=10).status_code == 200
        root = services.make_dnf_root(tmp_path / "user-machine", None, user / "standin" / "repo")
        root.dnf("install", release_url, "--setopt=localpkg_gpgcheck=0", check=True, timeout=300)
        root.with_installed_repos().dnf("install", "mistralrs-ampere", check=True, timeout=300)
        info = json.loads(subprocess.run([str(root.root / "usr/bin/mistralrs"), "info"], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["compute_cap"] == "86"
        assert services.gpg_agents_under(tmp_path) == []
    finally:
        stop_demo_nginx(user)
    assert checkout_demo_state() == before
