"""Signing and publishing, with the real tools: rpmsign, createrepo_c, rsync,
sshd and nginx on 127.0.0.1, and Debian's dnf installing into a scratch root
with gpgcheck=1 and repo_gpgcheck=1."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import services  # noqa: E402
import pipeline  # noqa: E402
from fixtures import fakerpm  # noqa: E402
from pipeline import project_config  # noqa: E402

from buildlib import config  # noqa: E402
from buildlib.publish import channels, publisher, repodata, rpms, signing, transport
from buildlib.layout import PUBLISH_LOCK_NAME, REPO_SHELL, Layout  # noqa: E402
from buildlib.run import UserError  # noqa: E402

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("rpmbuild", "rpmsign", "createrepo_c", "rsync", "gpg", "dnf")),
    reason="needs rpm-build, rpmsign, createrepo_c, rsync, gpg and dnf (scripts/bootstrap installs them)",
)

SNAPSHOT = "0.9.2^20261124.3gitabc1234"


# --- helpers (the fixtures are conftest's) -------------------------------------


def write_config(work: Path, target: str, base_url: str, keys, retention: int = 3, host_key: str = "",
                 ssh_key: str = "") -> config.Config:
    """A config.toml like the project's (its tables up to [publish]), publishing to target."""
    data = project_config()
    for table in ("poll", "host"):
        del data[table]
    data["publish"] = {"target": target, "host_key": host_key, "ssh_key": ssh_key, "base_url": base_url,
                       "retention": retention, "key_file": str(keys["main"][0]),
                       "passphrase_file": str(keys["passphrase"]), "metadata_expire": "1h"}
    data["paths"] = {"cache": "cache", "build": "build", "artifacts": "artifacts", "dist": "dist"}
    (work / "dist").mkdir(parents=True, exist_ok=True)
    return config.load(pipeline.write_config(work, data))


def publish(cfg, channel=None):
    return publisher.publish_dist(cfg, Layout.of(cfg), channel)


def install_and_run(tmp: Path, cfg, base_repo: Path, *specs: str, extra: tuple[str, ...] = ()) -> str:
    root = services.make_dnf_root(tmp, channels.render_repo_file(cfg), base_repo)
    root.dnf(*extra, "install", *specs, check=True)
    return root.run_installed()


def stable_dir(target: Path) -> Path:
    return target / "fedora" / "43" / "x86_64"


def published(target: Path, subdir: str = "") -> list[str]:
    md = repodata.read_metadata(stable_dir(target) / subdir / "repodata")
    return sorted(md.packages)


class _IndexVersions(HTMLParser):
    """flavour -> channel -> versions shown on the index page's flavour cards."""

    def __init__(self):
        super().__init__()
        self.versions: dict[str, dict[str, list[str]]] = {}
        self._flavour = self._channel = None
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article" and (a.get("id") or "").startswith("flavour-"):
            self._flavour = a["id"].removeprefix("flavour-")
            self.versions[self._flavour] = {}
        elif self._flavour and tag == "dt":
            self._in, self._channel = "dt", ""
        elif self._flavour and tag == "span" and a.get("class") == "v":
            self._in = "v"
            self.versions[self._flavour][self._channel].append("")

    def handle_endtag(self, tag):
        if tag == "article":
            self._flavour = None
        if tag == "dt" and self._in == "dt":
            self._channel = self._channel.strip()
            self.versions[self._flavour][self._channel] = []
        if tag in ("dt", "span"):
            self._in = None

    def handle_data(self, data):
        if self._in == "dt":
            self._channel += data
        elif self._in == "v":
            self.versions[self._flavour][self._channel][-1] += data


def index_versions(url: str) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """The index page at the repository's root as the web server serves it."""
    with urllib.request.urlopen(f"{url}/", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    parser = _IndexVersions()
    parser.feed(page)
    return page, parser.versions


# --- signatures --------------------------------------------------------------


@pytest.mark.slow
def test_our_checks_refuse_bad_signatures(tmp_path, keys):
    main_key, main_fpr = keys["main"]
    good = fakerpm.build(tmp_path / "good")
    unsigned = fakerpm.build(tmp_path / "unsigned")
    other = fakerpm.build(tmp_path / "other")
    pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
    with signing.signing_key(pub(str(keys["other"][0]), "", "", "")) as key:
        signing.sign_rpms(key, [other])
    # a short parent: signing_key puts its private GNUPGHOME there (long paths fall back to /tmp)
    gnupg_parent = Path(tempfile.mkdtemp(prefix="mrpm-g"))
    with signing.signing_key(pub(str(main_key), "", str(keys["passphrase"]), ""), gnupg_parent) as key:
        assert len(list(gnupg_parent.iterdir())) == 1  # the key lives in a home of its own there
        public = key.public_key
        signing.sign_rpms(key, [good])
        signing.verify_rpms(public, main_fpr, [good])
        with pytest.raises(UserError, match="not signed by key"):
            signing.verify_rpms(public, main_fpr, [unsigned])
        with pytest.raises(UserError, match="signature check failed|not signed"):
            signing.verify_rpms(public, main_fpr, [other])
        tampered = tmp_path / "tampered.rpm"
        data = bytearray(good.read_bytes())
        data[-100] ^= 0xFF  # inside the payload
        tampered.write_bytes(bytes(data))
        with pytest.raises(UserError, match="signature check failed"):
            signing.verify_rpms(public, main_fpr, [tampered])

        repodata = tmp_path / "repodata"
        repodata.mkdir()
        (repodata / "repomd.xml").write_text("<repomd>one</repomd>\n")
        signing.sign_repomd(key, repodata)
        signing.verify_repomd(public, main_fpr, repodata)
        (repodata / "repomd.xml").write_text("<repomd>two</repomd>\n")  # createrepo_c's carried-over .asc
        with pytest.raises(UserError, match="not a good signature"):
            signing.verify_repomd(public, main_fpr, repodata)
        (repodata / "repomd.xml.asc").unlink()
        with pytest.raises(UserError, match="missing"):
            signing.verify_repomd(public, main_fpr, repodata)

    # a wrong passphrase is caught when the key is loaded, not halfway through
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    with pytest.raises(UserError, match="passphrase"):
        with signing.signing_key(pub(str(main_key), "", str(wrong), ""), gnupg_parent):
            pass
    # the private GNUPGHOMEs are gone, after a good and after a failed import
    assert gnupg_parent.is_dir() and not list(gnupg_parent.iterdir())
    gnupg_parent.rmdir()


# --- a local directory, served by nginx, installed by dnf ---------------------


@pytest.mark.services
def test_local_publish_installs_with_dnf(tmp_path, keys, base_repo):
    target = tmp_path / "srv"
    target.mkdir()
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys)
        dist = cfg.paths.dist
        fakerpm.build(dist, "ampere")
        fakerpm.build(dist, "ada")
        fakerpm.build(dist, "hopper", version=SNAPSHOT)
        originals = {p.name: p.read_bytes() for p in dist.iterdir()}

        report = publish(cfg)
        assert sorted(report["channels"]["stable"]["added"]) == [
            "mistralrs-ada-0.9.2-1.fc43.x86_64.rpm", "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
        assert report["channels"]["unstable"]["added"] == [f"mistralrs-hopper-{SNAPSHOT}-1.fc43.x86_64.rpm"]
        # dist/ keeps the unsigned originals; the stable metadata leaves unstable/ out
        assert {p.name: p.read_bytes() for p in dist.iterdir()} == originals
        assert published(target, "unstable") == [f"mistralrs-hopper-{SNAPSHOT}-1.fc43.x86_64.rpm"]
        repo_file = (target / "mistralrs.repo").read_text()
        assert "repo_gpgcheck=1" in repo_file and "gpgcheck=1" in repo_file and "$releasever/$basearch" in repo_file

        assert "flavour=ampere" in install_and_run(tmp_path / "dnf1", cfg, base_repo, "mistralrs-ampere")
        assert "flavour=hopper" in install_and_run(tmp_path / "dnf2", cfg, base_repo, "mistralrs-hopper",
                                                   extra=("--enablerepo=mistralrs-unstable",))
        # the unstable channel is off unless asked for
        root = services.make_dnf_root(tmp_path / "dnf3", channels.render_repo_file(cfg), base_repo)
        assert root.dnf("install", "mistralrs-hopper").returncode != 0

        # the index page at the root lists what each channel holds
        page, versions = index_versions(url)
        assert (target / "style.css").exists() and 'href="style.css"' in page
        assert versions["ampere"] == {"stable": ["0.9.2-1.fc43"], "unstable": []}
        assert versions["ada"] == {"stable": ["0.9.2-1.fc43"], "unstable": []}
        assert versions["hopper"] == {"stable": [], "unstable": [f"{SNAPSHOT}-1.fc43"]}
        assert versions["blackwell"] == {"stable": [], "unstable": []}
        fingerprint = keys["main"][1].upper()
        assert " ".join(fingerprint[i:i + 4] for i in range(0, 40, 4)) in page
        assert report["index"] == {"stable": published(target), "unstable": published(target, "unstable")}

        # publishing again with nothing new sends no package bytes
        again = publish(cfg)
        assert again["bytes_sent"].get("packages", 0) == 0
        assert not again["channels"]["stable"]["metadata_rebuilt"]

        # --channel restricts; signing happened in staging only
        fakerpm.build(dist, "blackwell", version="0.9.3^20261201.1gitdef5678")
        fakerpm.build(dist, "blackwell", version="0.9.3")
        report = publish(cfg, "unstable")
        assert list(report["channels"]) == ["unstable"]
        assert "mistralrs-blackwell-0.9.3-1.fc43.x86_64.rpm" not in published(target)
        # the index still shows the stable channel this publish did not touch (read from its metadata)
        _, versions = index_versions(url)
        assert versions["ampere"]["stable"] == ["0.9.2-1.fc43"]
        assert versions["blackwell"] == {"stable": [], "unstable": ["0.9.3^20261201.1gitdef5678-1.fc43"]}
        assert versions["hopper"]["unstable"] == [f"{SNAPSHOT}-1.fc43"]
        # and the stable release lands with the next full publish, newest first on the page
        fakerpm.build(dist, "ampere", version="0.9.10")
        publish(cfg)
        _, versions = index_versions(url)
        assert versions["ampere"]["stable"] == ["0.9.10-1.fc43", "0.9.2-1.fc43"]
        assert versions["blackwell"]["stable"] == ["0.9.3-1.fc43"]


@pytest.mark.services
def test_dnf_refuses_bad_signatures(tmp_path, keys, base_repo):
    """Repositories broken on purpose, past our own checks: dnf must refuse each."""
    target = tmp_path / "srv"
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys)
        fakerpm.build(cfg.paths.dist, "ampere")
        publish(cfg)
        assert "flavour=ampere" in install_and_run(tmp_path / "ok", cfg, base_repo, "mistralrs-ampere")
        channel = stable_dir(target)
        rpm_path = channel / "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
        pristine = tmp_path / "pristine"
        shutil.copytree(target, pristine)
        pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
        main = pub(str(keys["main"][0]), "", str(keys["passphrase"]), "")

        def rebuild_metadata():
            subprocess.run(["createrepo_c", "-q", "--no-database", "--update", str(channel)], check=True)
            with signing.signing_key(main) as key:
                signing.sign_repomd(key, channel / "repodata")

        def refused(name: str) -> str:
            root = services.make_dnf_root(tmp_path / name, channels.render_repo_file(cfg), base_repo)
            proc = root.dnf("install", "mistralrs-ampere")
            assert proc.returncode != 0, f"{name}: dnf installed from a bad repository"
            assert not (root.root / "usr/bin/mistralrs").exists()
            return proc.stdout + proc.stderr

        def reset():
            shutil.rmtree(target)
            shutil.copytree(pristine, target)

        # a package signed by another key, in valid signed metadata
        other = fakerpm.build(tmp_path / "other", "ampere")
        with signing.signing_key(pub(str(keys["other"][0]), "", "", "")) as key:
            signing.sign_rpms(key, [other])
        shutil.copyfile(other, rpm_path)
        rebuild_metadata()
        out = refused("other-key")
        assert re.search(r"(?i)gpg|signature|key", out)

        # a tampered package, metadata regenerated to match it
        reset()
        data = bytearray(rpm_path.read_bytes())
        data[-100] ^= 0xFF
        rpm_path.write_bytes(bytes(data))
        rebuild_metadata()
        refused("tampered")

        # a stale repomd.xml.asc (createrepo_c carries the old one over)
        reset()
        before = (channel / "repodata" / "repomd.xml").read_bytes()
        time.sleep(1.1)  # a new revision/timestamp, so repomd.xml changes
        subprocess.run(["createrepo_c", "-q", "--no-database", "--update", str(channel)], check=True)
        assert (channel / "repodata" / "repomd.xml").read_bytes() != before
        assert (channel / "repodata" / "repomd.xml.asc").exists()
        out = refused("stale-asc")
        assert re.search(r"(?i)gpg|signature", out)

        # no repomd.xml.asc at all
        reset()
        (channel / "repodata" / "repomd.xml.asc").unlink()
        refused("missing-asc")


def test_channels_by_name_then_version():
    both = ["stable", "unstable"]
    assert channels.channels_for("mistralrs-ampere", "0.9.2", both) == ["stable"]
    # a release candidate stays out of the channel dnf enables by default, as Fedora keeps pre-releases
    assert channels.channels_for("mistralrs-ampere", "0.10.0~rc1", both) == ["unstable"]
    assert channels.channels_for("mistralrs-ampere", SNAPSHOT, both) == ["unstable"]
    # the release package is in every channel, whatever its version
    assert channels.channels_for("mistralrs-release", "1", both) == both
    assert channels.channels_for("mistralrs-release", "2^x", both) == both


def test_only_our_noarch_package_is_accepted(tmp_path):
    # mrpm-test-base is noarch, and not ours
    other = fakerpm.build_base(tmp_path / "noarch")
    with pytest.raises(UserError, match="noarch, but the repository is x86_64-only"):
        rpms.read_rpms([other])
    assert [r.arch for r in rpms.read_rpms([fakerpm.build(tmp_path / "x86")])] == ["x86_64"]


@pytest.mark.slow
def test_repo_file_gpgkey(tmp_path, keys):
    cfg = write_config(tmp_path, str(tmp_path / "srv"), "https://repo.example.org/mistralrs-rpm/", keys)
    text = channels.render_repo_file(cfg)
    sections = re.findall(r"(?m)^\[(.+)\]$", text)
    assert sections == [channels.repo_id("stable"), channels.repo_id("unstable")] == ["mistralrs", "mistralrs-unstable"]
    assert text.count("gpgkey=https://repo.example.org/mistralrs-rpm/RPM-GPG-KEY-mistralrs\n") == 2
    packaged = channels.render_repo_file(cfg, gpgkey="file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs")
    assert packaged.count("gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-mistralrs\n") == 2
    assert packaged.replace("file:///etc/pki/rpm-gpg/", "https://repo.example.org/mistralrs-rpm/") == text
    with pytest.raises(UserError, match="gpgkey"):
        channels.render_repo_file(cfg, gpgkey="file:///x\nenabled=0")


@pytest.mark.slow
def test_same_nvr_with_other_content_is_refused(tmp_path, keys):
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere", marker="first")
    publish(cfg)
    before = (stable_dir(target) / "repodata" / "repomd.xml").read_bytes()
    fakerpm.build(cfg.paths.dist, "ampere", marker="second")  # same file name, other content
    with pytest.raises(UserError, match="raise the release"):
        publish(cfg)
    assert (stable_dir(target) / "repodata" / "repomd.xml").read_bytes() == before


@pytest.mark.services
def test_retention_keeps_n_and_downgrade_works(tmp_path, keys, base_repo):
    target = tmp_path / "srv"
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys, retention=2)
        for version in ("0.9.0", "0.9.1~rc1", "0.9.1", "0.9.2"):
            fakerpm.build(cfg.paths.dist, "ampere", version=version)
            publish(cfg)
        names = published(target)
        assert names == ["mistralrs-ampere-0.9.1-1.fc43.x86_64.rpm", "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
        on_disk = sorted(p.name for p in stable_dir(target).glob("*.rpm"))
        assert on_disk == names  # pruned files are deleted, after the swap
        root = services.make_dnf_root(tmp_path / "dnf", channels.render_repo_file(cfg), base_repo)
        root.dnf("install", "mistralrs-ampere", check=True)
        assert "version=0.9.2-1" in root.run_installed()
        root.dnf("downgrade", "mistralrs-ampere", check=True)
        assert "version=0.9.1-1" in root.run_installed()


# --- over SSH ----------------------------------------------------------------


def remote_config(tmp_path, keys, remote, url, name="work"):
    sshd, root = remote
    return write_config(tmp_path / name, sshd.target(root), url, keys, host_key=sshd.host_key_line,
                        ssh_key=str(sshd.client_key))


@pytest.mark.services
def test_remote_publish_over_ssh(tmp_path, keys, base_repo, remote):
    sshd, root = remote
    with services.nginx(root) as url:
        cfg = remote_config(tmp_path, keys, remote, url)
        fakerpm.build(cfg.paths.dist, "ampere")
        publish(cfg)
        assert "flavour=ampere" in install_and_run(tmp_path / "dnf", cfg, base_repo, "mistralrs-ampere")
        assert publish(cfg)["bytes_sent"].get("packages", 0) == 0
        # retention prunes on the host too, over the same restricted key
        cfg1 = dataclasses.replace(cfg, publish=dataclasses.replace(cfg.publish, retention=1))
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.3")
        assert publish(cfg1)["channels"]["stable"]["pruned"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
        assert sorted(p.name for p in stable_dir(root).glob("*.rpm")) == ["mistralrs-ampere-0.9.3-1.fc43.x86_64.rpm"]
        # each package's SBOM went up with it and was pruned with it
        assert sorted(p.name for p in stable_dir(root).glob("*.cdx.json")) == ["mistralrs-ampere-0.9.3-1.fc43.x86_64.cdx.json"]
        assert "version=0.9.3-1" in install_and_run(tmp_path / "dnf2", cfg, base_repo, "mistralrs-ampere")

    ssh = ["ssh", "-p", str(sshd.port), "-i", str(sshd.client_key), "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={tmp_path / 'kh'}", "-o", "StrictHostKeyChecking=yes", f"{sshd.user}@127.0.0.1"]
    (tmp_path / "kh").write_text(sshd.host_key_line + "\n")
    # the key can do nothing but lock and rsync inside the repository
    for command in (["cat", "/etc/passwd"], ["rsync", "--server", "--sender", "-r", ".", "/etc/"],
                    ["rsync", "--server", "-r", ".", f"{root}/../x/"], ["rsync", "--server", "--log-file=/tmp/x", ".", str(root)]):
        proc = subprocess.run([*ssh, *command], capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and "repo-shell" in proc.stderr, command
    # a wrong host key is refused
    bad = dataclasses.replace(cfg.publish, host_key=keys and f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderReplaceWithTheRealHostKeyOfTheRepo")
    with pytest.raises(UserError) as e:
        publish(dataclasses.replace(cfg, publish=bad))
    message = str(e.value)
    assert "publish.host_key" in message and "\n" not in message, message


def start_publish(cfg, env_extra: dict | None = None) -> subprocess.Popen:
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from buildlib import config\nfrom buildlib.publish import channels, publisher, repodata, rpms, transport\nfrom buildlib.layout import Layout\n"
        "cfg = config.load(); publisher.publish_dist(cfg, Layout.of(cfg))\n" % str(ROOT)
    )
    env = dict(os.environ, MRPM_CONFIG=str(cfg.source), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)


def wait_for_line(proc: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"publish ended before {marker!r}:\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} within {timeout} s")


@pytest.mark.services
@pytest.mark.parametrize("step,limit", [("uploading 1 package", "packages:200"), ("uploading 3 metadata", "metadata:1")])
def test_killed_publish_leaves_a_working_repository(tmp_path, keys, base_repo, remote, step, limit):
    sshd, root = remote
    with services.nginx(root) as url:
        cfg = remote_config(tmp_path, keys, remote, url)
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
        publish(cfg)
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.2", size_kib=1024)
        proc = start_publish(cfg, {transport.BWLIMIT_ENV: limit})
        wait_for_line(proc, step)
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # still the old repository, validly signed; dnf installs from it
        channel = stable_dir(root)
        signing.verify_repomd(signing_public(keys), keys["main"][1], channel / "repodata")
        assert published(root) == ["mistralrs-ampere-0.9.1-1.fc43.x86_64.rpm"]
        assert "version=0.9.1-1" in install_and_run(tmp_path / "dnf1", cfg, base_repo, "mistralrs-ampere")
        # the lock went with the killed publish; the next one completes the job
        report = publish(cfg)
        assert report["channels"]["stable"]["added"] == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
        assert "version=0.9.2-1" in install_and_run(tmp_path / "dnf2", cfg, base_repo, "mistralrs-ampere")
        leftovers = [p.name for p in channel.rglob("*") if p.name.startswith(".") and p.name != PUBLISH_LOCK_NAME]
        assert not [n for n in leftovers if n.endswith(".rpm")], leftovers


def signing_public(keys) -> str:
    pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
    with signing.signing_key(pub(str(keys["main"][0]), "", str(keys["passphrase"]), "")) as key:
        return key.public_key


@pytest.mark.services
def test_two_publishes_at_once_both_land(tmp_path, keys, remote):
    sshd, root = remote
    one = remote_config(tmp_path, keys, remote, "http://127.0.0.1:9/", name="one")
    two = remote_config(tmp_path, keys, remote, "http://127.0.0.1:9/", name="two")
    fakerpm.build(one.paths.dist, "ampere", size_kib=256)
    fakerpm.build(two.paths.dist, "ada", size_kib=256)
    fakerpm.build(two.paths.dist, "hopper", version=SNAPSHOT)
    procs = [start_publish(c, {transport.BWLIMIT_ENV: "packages:200"}) for c in (one, two)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("waiting for the publish lock" in o for o in outputs), outputs
    assert published(root) == ["mistralrs-ada-0.9.2-1.fc43.x86_64.rpm", "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
    assert published(root, "unstable") == [f"mistralrs-hopper-{SNAPSHOT}-1.fc43.x86_64.rpm"]


# --- doit --------------------------------------------------------------------


@pytest.mark.slow
def test_doit_publish_runs_no_build_task(tmp_path, keys, monkeypatch):
    """CI: packages handed over into dist/ of a fresh checkout, empty doit state."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere")
    monkeypatch.setenv("MRPM_CONFIG", str(cfg.source))
    from buildlib.tasks import publish as publish_tasks

    built = tmp_path / "built"

    def task_build():
        return {"actions": [lambda: built.write_text("ran") and None], "targets": [str(tmp_path / "artifact")]}

    report = tmp_path / "report.json"
    code = DoitMain(ModuleTaskLoader({"task_build": task_build, "task_publish": publish_tasks.task_publish}),
                    config_filenames=(),
                    extra_config={"GLOBAL": {"dep_file": str(tmp_path / "state.sqlite3"), "backend": "sqlite3"}}
                    ).run(["run", "--reporter", "json", "--output-file", str(report), "publish"])
    assert code == 0, report.read_text() if report.exists() else ""
    assert not built.exists()
    assert [t["name"] for t in __import__("json").loads(report.read_text())["tasks"]] == ["publish"]
    # `doit publish` stages a flavour package for its gate (`doit promote` adds it to the channel)
    assert published(target) == [] and published(target, "staging") == ["mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]


def test_repo_shell_locks_the_file_the_publish_locks():
    """scripts/repo-shell runs alone on the host (no buildlib there), so it
    spells the lock's name itself; it must be the name layout.py gives."""
    names = re.findall(r'^LOCK_NAME = "([^"]+)"$', REPO_SHELL.read_text(), re.M)
    assert names == [PUBLISH_LOCK_NAME], names


# --- SBOMs beside the packages -------------------------------------------------


@pytest.mark.services
def test_sbom_published_beside_its_package_linked_and_pruned_with_it(tmp_path, keys):
    target = tmp_path / "srv"
    with services.nginx(target) as url:
        cfg = write_config(tmp_path / "work", str(target), url, keys, retention=1)
        dist = cfg.paths.dist
        fakerpm.build(dist, "ampere", version="0.9.1")
        fakerpm.build(dist, "hopper", version=SNAPSHOT)
        publish(cfg)
        sbom = "mistralrs-ampere-0.9.1-1.fc43.x86_64.cdx.json"
        assert (stable_dir(target) / sbom).read_bytes() == (dist / sbom).read_bytes()
        snapshot_sbom = f"mistralrs-hopper-{SNAPSHOT}-1.fc43.x86_64.cdx.json"
        assert (stable_dir(target) / "unstable" / snapshot_sbom).read_bytes() == (dist / snapshot_sbom).read_bytes()
        # the index page links each package's SBOM, and the web server serves it
        page, _ = index_versions(url)
        links = re.findall(r'<a class="sbom" href="([^"]+)"', page)
        assert f"{url}/fedora/43/x86_64/{sbom}" in links and len(links) == 2
        with urllib.request.urlopen(f"{url}/fedora/43/x86_64/{sbom}", timeout=10) as response:
            assert response.read() == (dist / sbom).read_bytes()

        # retention 1: the next version replaces the package and its SBOM
        for old in dist.iterdir():
            old.unlink()
        fakerpm.build(dist, "ampere", version="0.9.2")
        publish(cfg)
        names = sorted(p.name for p in stable_dir(target).iterdir() if p.is_file())
        assert "mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json" in names and sbom not in names
        assert [n for n in names if n.startswith("mistralrs-ampere")] == [
            "mistralrs-ampere-0.9.2-1.fc43.x86_64.cdx.json", "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]
        # an SBOM left behind without its package goes at the next publish
        (stable_dir(target) / sbom).write_text("{}")
        publish(cfg)
        assert not (stable_dir(target) / sbom).exists()


@pytest.mark.slow
def test_package_without_its_sbom_is_refused_before_any_upload(tmp_path, keys):
    target = tmp_path / "srv"
    cfg = write_config(tmp_path / "work", str(target), "http://127.0.0.1:9/", keys)
    fakerpm.build(cfg.paths.dist, "ampere", sbom=False)
    with pytest.raises(UserError, match=r"mistralrs-ampere-0\.9\.2-1\.fc43\.x86_64\.rpm: its SBOM "
                                        r"mistralrs-ampere-0\.9\.2-1\.fc43\.x86_64\.cdx\.json is not beside it"):
        publish(cfg)
    assert not list(stable_dir(target).glob("*.rpm")) and not (stable_dir(target) / "repodata").exists()
    # checked for every channel before the first is published: stable's package, with its SBOM,
    # does not go up while unstable's lacks one
    for old in cfg.paths.dist.iterdir():
        old.unlink()
    fakerpm.build(cfg.paths.dist, "ampere", version="0.9.1")
    fakerpm.build(cfg.paths.dist, "hopper", version=SNAPSHOT, sbom=False)
    with pytest.raises(UserError, match=r"mistralrs-hopper-0\.9\.2\^20261124.*\.rpm: its SBOM .* is not beside it"):
        publish(cfg)
    assert not list(stable_dir(target).rglob("*.rpm")) and not (stable_dir(target) / "repodata").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "missing"])
def test_a_key_file_that_is_not_a_small_regular_file_is_one_line(tmp_path, kind):
    """publish.key_file naming a FIFO waited forever, /dev/zero read until
    memory ran out: both are refused before the key is used."""
    path = tmp_path / "key.asc"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path = Path("/dev/zero")
    pub = dataclasses.make_dataclass("P", ["key_file", "key_env", "passphrase_file", "passphrase_env"])
    with pytest.raises(signing.SigningError) as e:
        with signing.signing_key(pub(str(path), "", "", "")):
            pass
    message = str(e.value)
    assert message.startswith("publish: ") and "\n" not in message
    assert ("No such file" if kind == "missing" else "not a regular file") in message
