"""The demo's local repository helpers, which the tests use too: a dnf
install leaves no gpg-agent running, and the demo's directory is the
caller's to choose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import services
from buildlib import layout
from buildlib.demo import driver, localrepo
from buildlib.publish import channels
from buildlib.run import UserError
from fixtures import fakerpm
from test_publish import publish, write_config


@pytest.mark.services
@pytest.mark.skipif(services.skip_reason_nginx() is not None, reason=str(services.skip_reason_nginx()))
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("dnf", "gpgconf", "createrepo_c", "rpmsign")),
                    reason="needs dnf, gpg, createrepo_c and rpmsign (scripts/bootstrap installs them)")
@pytest.mark.parametrize("make_dnf_root", [services.make_dnf_root, localrepo.make_dnf_root], ids=["tests", "demo"])
def test_dnf_install_leaves_no_gpg_agent(tmp_path, make_dnf_root, keys, base_repo):
    target = tmp_path / "srv"
    target.mkdir()
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys)
        fakerpm.build(cfg.paths.dist, "ampere")
        publish(cfg)
        assert services.gpg_agents_under(tmp_path, wait=0) == []
        root = make_dnf_root(tmp_path / "dnf", channels.render_repo_file(cfg), base_repo)
        root.dnf("install", "mistralrs-ampere", check=True)
        assert (root.root / "usr/bin/mistralrs").exists()
        # repo_gpgcheck made dnf import the key into a keyring in its cache, which starts an agent there ...
        assert root.agent_homes() and all(h.is_relative_to(tmp_path) for h in root.agent_homes())
        # ... and the helper stopped it (and every other one under the test's directory)
        assert services.gpg_agents_under(tmp_path) == []
        # the same through the .repo files installed in the root
        (root.installed_reposdir).mkdir(parents=True, exist_ok=True)
        (root.installed_reposdir / "mistralrs.repo").write_text(channels.render_repo_file(cfg))
        root.reposdir.joinpath("mistralrs.repo").unlink()
        root.with_installed_repos().dnf("reinstall", "mistralrs-ampere", check=True)
        assert services.gpg_agents_under(tmp_path) == []


def test_installed_file_keys_are_read_inside_the_root(tmp_path):
    root = localrepo.make_dnf_root(tmp_path, None)
    assert not any("gpgkey" in a for a in root.with_installed_repos().argv("install", "x"))
    root.installed_reposdir.mkdir(parents=True)
    (root.installed_reposdir / "mistralrs.repo").write_text(
        "[mistralrs]\nbaseurl=http://127.0.0.1:1/\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs\n"
        "[mistralrs-unstable]\nbaseurl=http://127.0.0.1:1/u/\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs\n"
        "[web-key]\nbaseurl=http://127.0.0.1:1/w/\ngpgkey=https://example.org/key\n")
    argv = root.with_installed_repos().argv("install", "x")
    inside = f"file://{root.root}/etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs"
    assert f"--setopt=mistralrs.gpgkey={inside}" in argv
    assert f"--setopt=mistralrs-unstable.gpgkey={inside}" in argv
    assert not any(a.startswith("--setopt=web-key.") for a in argv)
    assert f"--setopt=reposdir={root.reposdir},{root.installed_reposdir}" in argv
    # without installed_repos dnf sees only the root's own repos.d
    assert f"--setopt=reposdir={root.reposdir}" in root.argv("install", "x")


def test_demo_dir_is_the_callers_choice(tmp_path, monkeypatch):
    monkeypatch.delenv(layout.DEMO_DIR_ENV, raising=False)
    assert layout.demo_dir() == layout.PROJECT / ".demo"
    monkeypatch.setenv(layout.DEMO_DIR_ENV, str(tmp_path / "demo"))
    assert layout.demo_dir() == tmp_path / "demo"
    monkeypatch.setenv(layout.DEMO_DIR_ENV, "relative/demo")
    assert layout.demo_dir() == Path.cwd() / "relative" / "demo"
    for bad in (str(tmp_path / "a b"), str(tmp_path / "x;y"), str(tmp_path / "x}") , "/tmp/x\nlisten 80"):
        monkeypatch.setenv(layout.DEMO_DIR_ENV, bad)
        with pytest.raises(UserError, match=layout.DEMO_DIR_ENV) as error:
            layout.demo_dir()
        assert "\n" not in str(error.value).replace("\\n", "")


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpm-build is not installed")
def test_demo_starts_a_repository_published_for_another_port_afresh(tmp_path):
    """mistralrs-release names the repository's address, and publishing never
    overwrites a package: after a demo on another MRPM_DEMO_PORT, the demo's
    repository is published again from scratch instead of failing."""
    from buildlib.rpmtools import rpmbuild

    spec = tmp_path / "release.spec"
    spec.write_text("Name: mistralrs-release\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n"
                    "URL: http://127.0.0.1:8043\nBuildArch: noarch\n%description\nd\n%files\n")
    rpmbuild(spec, tmp_path / "rpmbuild")
    repo = tmp_path / "repo"
    (repo / "fedora/43/x86_64").mkdir(parents=True)
    for rpm in (tmp_path / "rpmbuild/RPMS/noarch").glob("*.rpm"):
        shutil.copy(rpm, repo / "fedora/43/x86_64" / rpm.name)
    driver.forget_other_address(repo, "http://127.0.0.1:8043")
    assert [p.name for p in repo.rglob("*.rpm")] == ["mistralrs-release-1-1.noarch.rpm"]
    driver.forget_other_address(repo, "http://127.0.0.1:9000")
    assert not repo.exists()
    driver.forget_other_address(repo, "http://127.0.0.1:9000")  # nothing there: nothing to do


def test_the_demo_refuses_a_busy_port_before_it_builds(tmp_path, monkeypatch, capsys):
    """The port is checked first, not after a minute of building."""
    import socket

    from buildlib.demo import driver

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("MRPM_DEMO_DIR", str(tmp_path / "demo"))
        monkeypatch.setenv("MRPM_DEMO_PORT", str(port))
        assert driver.main() == 1
    err = capsys.readouterr().err
    assert err == f"error: 127.0.0.1:{port} is already in use: stop what listens there or set MRPM_DEMO_PORT\n"
    assert not (tmp_path / "demo" / "upstream").exists()  # nothing made, nothing built
