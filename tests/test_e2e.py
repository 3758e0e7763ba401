"""End to end on the demo upstream: the whole pipeline as users run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert "mistralrs-ampere-0.9.2-2.fc43.x86_64.rpm" in dist  # same version, changed spec: release raised


def test_rpms_handed_over_publish_without_building(tmp_path, demo_upstream, shared_cache):
    """CI's publish job: RPMs from earlier jobs downloaded into dist/ of a
    fresh checkout with an empty doit state; publish runs no build task."""
    from buildlib.publish.signing import make_demo_key

    build = write_config(tmp_path / "builder", demo_config(tmp_path / "builder", demo_upstream.path, shared_cache))
    rc, _, err = run_doit(build)
    assert rc == 0, err
    key, _ = make_demo_key(tmp_path / "key")
    fresh = tmp_path / "publisher"
    data = demo_config(fresh, tmp_path / "no-upstream", fresh / "cache", publish__key_file=str(key))
    config = write_config(fresh, data)
    shutil.copytree(tmp_path / "builder" / "dist", fresh / "dist")
    rc, results, err = run_doit(config, "publish")
    assert rc == 0, err
    assert set(results) == {"publish"}
    published = sorted(p.name for p in (fresh / "repo").rglob("*.rpm"))
    assert published == sorted(p.name for p in (fresh / "dist").glob("*.rpm"))


def test_demo_command_runs_end_to_end():
    """The README's first command, minus the bootstrap the test command has
    already run: build, package, sign, publish, serve, dnf install."""
    port = free_port()
    env = dict(os.environ, MRPM_DEMO_PORT=str(port))
    env.pop("MRPM_REF", None)
    env.pop("MRPM_CONFIG", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "buildlib.demo"], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = proc.stdout
        for flavour in ("ampere", "ada", "blackwell", "hopper"):
            assert f"mistralrs-{flavour}-0.9.2-" in out
        assert "EdDSA/SHA256" in out and "unsigned" not in out
        assert f"dnf config-manager addrepo --from-repofile=http://127.0.0.1:{port}/mistralrs.repo" in out
        assert '"compute_cap": "86"' in proc.stderr  # the installed binary reported its flavour
    finally:
        nginx_dir = PROJECT / ".demo" / "nginx"
        if (nginx_dir / "nginx.pid").exists():
            subprocess.run(["nginx", "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-s", "stop"],
                           capture_output=True)
