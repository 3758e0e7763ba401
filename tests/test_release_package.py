"""mistralrs-release and mistralrs-flavour.

mistralrs-flavour runs under /bin/sh with a stand-in nvidia-smi first on a
PATH that holds nothing else of NVIDIA's.  The package is built with the
host's rpmbuild into dist/, published with the flavour packages to every
channel by the publish step, installed from the repository's URL with
Debian's dnf into a scratch root, and the flavour package is then installed
from the signed repository served over HTTP, through the .repo file and key
the release package installed alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from buildlib import config
from buildlib.publish import channels, publisher, repodata, signing
from buildlib.host import gpgkey, release_package
from buildlib.layout import Layout
from fixtures import fakerpm
from pipeline import project_config
from services import nginx as serve_http
from services import skip_reason_nginx
from test_setup import host_for

SH = shutil.which("sh")


def tool_dir(tmp: Path) -> Path:
    """A PATH directory with the few tools the script uses (and no nvidia-smi)."""
    bin_dir = tmp / "tools"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in ("sed", "head", "cat"):
            os.symlink(shutil.which(tool), bin_dir / tool)
    return bin_dir


def stand_in_nvidia_smi(directory: Path, output: str, status: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    smi = directory / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "--query-gpu=compute_cap --format=csv,noheader" ] || { echo "bad args: $*" >&2; exit 99; }\n'
        f"cat <<'EOF'\n{output}\nEOF\nexit {status}\n"
    )
    smi.chmod(0o755)
    return directory


def run_flavour(script: Path, tmp: Path, smi_output: str | None, status: int = 0, *args: str,
                shell: str | None = None) -> subprocess.CompletedProcess:
    path = [str(tool_dir(tmp))]
    if smi_output is not None:
        path.insert(0, str(stand_in_nvidia_smi(tmp / f"smi-{abs(hash((smi_output, status)))}", smi_output, status)))
    return subprocess.run([shell or SH, str(script), *args], capture_output=True, text=True, timeout=20,
                          env={"PATH": ":".join(path), "LC_ALL": "C"})


def make_cfg(tmp: Path, **publish) -> config.Config:
    data = project_config()
    data["publish"]["target"] = str(tmp / "srv")
    data["publish"]["base_url"] = "https://localhost/mistralrs-rpm"
    data["publish"].update(publish)
    data["paths"] = {"build": str(tmp / "build"), "dist": str(tmp / "dist"), "cache": str(tmp / "cache"),
                     "artifacts": str(tmp / "artifacts")}
    return config.parse(data, tmp / "config.toml")


@pytest.fixture
def flavour_script(tmp_path) -> Path:
    script = tmp_path / "mistralrs-flavour"
    script.write_text(release_package.render_flavour_script(make_cfg(tmp_path)))
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("cap, flavour", [
    ("8.6", "ampere"), ("8.9", "ada"), ("9.0", "hopper"), ("12.0", "blackwell"), ("10.0", "blackwell-dc"),
    ("8.0", "ampere-dc"),  # the default config's data-centre flavours
    # same major version, higher minor: the code of the lower minor runs there
    ("8.7", "ampere"), ("10.3", "blackwell-dc"), ("12.1", "blackwell"),
])
def test_flavour_for_each_gpu(flavour_script, tmp_path, cap, flavour):
    proc = run_flavour(flavour_script, tmp_path, cap)
    assert (proc.returncode, proc.stdout) == (0, f"{flavour}\n"), proc.stderr


def test_flavour_for_every_configured_flavour(flavour_script, tmp_path):
    for f in make_cfg(tmp_path).flavours:
        proc = run_flavour(flavour_script, tmp_path, f"{f.compute_cap // 10}.{f.compute_cap % 10}")
        assert proc.stdout == f"{f.name}\n"


def test_flavour_several_gpus(flavour_script, tmp_path):
    same = run_flavour(flavour_script, tmp_path, "8.6\n8.6")
    assert (same.returncode, same.stdout) == (0, "ampere\n")
    mixed = run_flavour(flavour_script, tmp_path, "8.6\n9.0")
    assert mixed.returncode == 3 and mixed.stdout == ""
    assert "GPU 1: compute capability 8.6 -> ampere" in mixed.stderr
    assert "GPU 2: compute capability 9.0 -> hopper" in mixed.stderr


@pytest.mark.parametrize("cap", ["7.5", "11.0", "6.1"])
def test_flavour_unknown_compute_capability(flavour_script, tmp_path, cap):
    proc = run_flavour(flavour_script, tmp_path, cap)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"no flavour fits GPU 1 (compute capability {cap})" in proc.stderr
    assert "ampere" in proc.stderr and "compute capability 8.6" in proc.stderr  # what there is


def test_flavour_without_gpu_or_driver(flavour_script, tmp_path):
    no_driver = run_flavour(flavour_script, tmp_path, None)
    assert no_driver.returncode == 1 and no_driver.stdout == ""
    assert "nvidia-smi not found: the NVIDIA driver is not installed" in no_driver.stderr

    not_loaded = run_flavour(flavour_script, tmp_path, "NVIDIA-SMI has failed because it couldn't communicate "
                             "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
                             status=9)
    assert not_loaded.returncode == 1 and "no usable NVIDIA GPU" in not_loaded.stderr
    assert "couldn't communicate" in not_loaded.stderr

    no_devices = run_flavour(flavour_script, tmp_path, "No devices were found", status=6)
    assert no_devices.returncode == 1 and "No devices were found" in no_devices.stderr

    empty = run_flavour(flavour_script, tmp_path, "")
    assert empty.returncode == 1 and "no NVIDIA GPU found" in empty.stderr

    old = run_flavour(flavour_script, tmp_path, 'Field "compute_cap" is not a valid field to query.', status=2)
    assert old.returncode == 1 and "not a valid field" in old.stderr


def test_flavour_usage(flavour_script, tmp_path):
    listing = run_flavour(flavour_script, tmp_path, None, 0, "--list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [
        "ampere-dc", "ampere", "ada", "hopper", "blackwell-dc", "blackwell"]
    assert "blackwell-dc   compute capability 10.0" in listing.stdout
    assert run_flavour(flavour_script, tmp_path, None, 0, "--help").returncode == 0
    assert run_flavour(flavour_script, tmp_path, None, 0, "--bogus").returncode == 64


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_flavour_under_bash_as_fedora_runs_it(flavour_script, tmp_path):
    # Fedora's /bin/sh is bash
    proc = run_flavour(flavour_script, tmp_path, "8.9", shell=shutil.which("bash"))
    assert (proc.returncode, proc.stdout) == (0, "ada\n"), proc.stderr


# --- the package ---------------------------------------------------------------


def make_key(tmp: Path):
    passfile = tmp / "passphrase"
    passfile.write_text("a passphrase for the test key\n")
    passfile.chmod(0o600)
    host = host_for(tmp, key_passphrase_file=str(passfile))
    keys = gpgkey.generate_signing_key(host)
    return host, keys, passfile


def rpm_query(rpm: Path, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--qf", fmt, str(rpm)], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_release_package_contents_and_reproducible_build(tmp_path):
    host, keys, _ = make_key(tmp_path)
    cfg = make_cfg(tmp_path)
    layout = Layout.of(cfg)
    rpm = release_package.build_release_package(cfg, layout, host)
    assert rpm == layout.dist / "mistralrs-release-1-1.fc43.noarch.rpm"
    listing = subprocess.run(["rpm", "-qplv", str(rpm)], capture_output=True, text=True, check=True).stdout
    assert "/etc/yum.repos.d/mistralrs.repo" in listing
    assert f"/etc/pki/rpm-gpg/{signing.KEY_FILE_NAME}" in listing
    assert "-rwxr-xr-x" in next(line for line in listing.splitlines() if line.endswith("/usr/bin/mistralrs-flavour"))
    assert rpm_query(rpm, "%{ARCH}") == "noarch"
    configs = subprocess.run(["rpm", "-qpc", str(rpm)], capture_output=True, text=True, check=True).stdout
    assert configs.strip() == "/etc/yum.repos.d/mistralrs.repo"
    # the same content builds to the same main header: publishing sees it as already there
    header = rpm_query(rpm, "%{SHA256HEADER}")
    again = release_package.build_release_package(cfg, layout, host)
    assert rpm_query(again, "%{SHA256HEADER}") == header
    # a new version is a new file
    bumped = release_package.build_release_package(cfg, layout, dataclasses.replace(host, release_package_version=2))
    assert bumped.name == "mistralrs-release-2-1.fc43.noarch.rpm"
    # without a public key: one clear line
    with pytest.raises(release_package.ReleasePackageError, match="setup:gpg-key"):
        release_package.build_release_package(cfg, layout, dataclasses.replace(host, key_dir=tmp_path / "none"))


def _dnf(root: Path, reposdirs: list[Path], *args: str) -> subprocess.CompletedProcess:
    argv = ["dnf", "-y", "-q", f"--installroot={root}", "--releasever=43",
            f"--setopt=reposdir={','.join(str(d) for d in reposdirs)}",
            f"--setopt=cachedir={root}/var/cache/dnf", "--setopt=install_weak_deps=False",
            "--setopt=keepcache=False", "--disableplugin=*", f"--config={root.parent / 'dnf.conf'}", *args]
    env = dict(os.environ, HOME=str(root.parent / "home"))
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)


def _stop_dnf_agents(root: Path) -> None:
    for pubring in root.glob("var/cache/dnf/*/pubring"):
        subprocess.run(["gpgconf", "--homedir", str(pubring), "--kill", "gpg-agent"], capture_output=True)


@pytest.mark.services
@pytest.mark.skipif(skip_reason_nginx() is not None, reason=str(skip_reason_nginx()))
@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf is not installed")
def test_release_package_installs_and_its_repo_file_alone_installs_a_flavour(tmp_path):
    host, keys, passfile = make_key(tmp_path)
    target = tmp_path / "srv"
    target.mkdir()
    base_repo = tmp_path / "base-repo"
    fakerpm.build_base(base_repo)
    subprocess.run(["createrepo_c", "--quiet", str(base_repo)], check=True)
    with serve_http(target) as url:
        cfg = make_cfg(tmp_path, base_url=url, key_file=str(keys.secret), passphrase_file=str(passfile))
        layout = Layout.of(cfg)
        fakerpm.build(layout.dist, "ampere", "0.9.2", "1.fc43")
        # what `doit release-package` does: the package lands in dist/, where `doit publish` takes it from
        release_rpm = release_package.build_release_package(cfg, layout, host)
        assert release_rpm.parent == layout.dist
        report = publisher.publish_dist(cfg, layout)

        # in every channel's metadata, the flavour package in stable only
        assert report["channels"]["stable"]["added"] == sorted([release_rpm.name,
                                                                "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"])
        assert report["channels"]["unstable"]["added"] == [release_rpm.name]
        for channel in cfg.channels:
            md = repodata.read_metadata(target / channels.channel_dir(cfg, channel) / "repodata")
            assert release_rpm.name in md.packages, channel.name
            assert md.packages[release_rpm.name].name == "mistralrs-release"
        # built again from the same content, it is already published: nothing is signed or uploaded again
        release_package.build_release_package(cfg, layout, host)
        again = publisher.publish_dist(cfg, layout)
        assert [again["channels"][c]["unchanged"] for c in ("stable", "unstable")] == [
            sorted([release_rpm.name, "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"]), [release_rpm.name]]
        assert again["bytes_sent"].get("packages", 0) == 0

        # the index page at the root tells users to install it from its published URL
        release_url = f"{url}/fedora/43/x86_64/{release_rpm.name}"
        with urllib.request.urlopen(f"{url}/", timeout=10) as response:
            page = response.read().decode()
        assert f"<code>sudo dnf install {release_url}</code>" in page

        root = tmp_path / "dnf" / "root"
        root.mkdir(parents=True)
        (tmp_path / "dnf" / "home").mkdir()
        (tmp_path / "dnf" / "dnf.conf").write_text("[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\n")
        extra = tmp_path / "dnf" / "base-repos"
        extra.mkdir()
        (extra / "base.repo").write_text(f"[test-base]\nname=stand-in for Fedora and NVIDIA\nbaseurl=file://{base_repo}\n"
                                         "enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n")
        try:
            # as the index page says; the key comes with it, so dnf cannot check this first package
            # (Fedora's dnf does not check a package given by URL unless localpkg_gpgcheck is set)
            first = _dnf(root, [extra], "--setopt=localpkg_gpgcheck=0", "install", release_url)
            assert first.returncode == 0, first.stdout + first.stderr
            # the published copy, signed by the repository's key (dist/ keeps the unsigned original)
            signature = subprocess.run(["rpm", f"--root={root}", "-q", "mistralrs-release", "--qf",
                                        "%{DSAHEADER:pgpsig}|%{RSAHEADER:pgpsig}"], capture_output=True, text=True,
                                       env=dict(os.environ, HOME=str(root.parent / "home"))).stdout
            assert keys.fingerprint[-16:].lower() in signature.lower(), signature
            repo_file = root / "etc/yum.repos.d/mistralrs.repo"
            assert f"baseurl={url}/fedora/$releasever/$basearch/" in repo_file.read_text()
            assert (root / "etc/pki/rpm-gpg" / signing.KEY_FILE_NAME).read_text() == keys.public.read_text()

            # the repositories dnf knows now: the release package's file, plus the stand-in base.
            # One translation: dnf 4 reads a file:// gpgkey from the host even with --installroot,
            # so the packaged key's path is given inside the scratch root (on Fedora it is /etc/...)
            key_in_root = f"file://{root}/etc/pki/rpm-gpg/{signing.KEY_FILE_NAME}"
            assert f"gpgkey=file:///etc/pki/rpm-gpg/{signing.KEY_FILE_NAME}" in repo_file.read_text()
            second = _dnf(root, [root / "etc/yum.repos.d", extra], f"--setopt=mistralrs.gpgkey={key_in_root}",
                          "install", "mistralrs-ampere")
            assert second.returncode == 0, second.stdout + second.stderr
            out = subprocess.run([str(root / "usr/bin/mistralrs")], capture_output=True, text=True, check=True).stdout
            assert "flavour=ampere version=0.9.2-1.fc43" in out
            # the flavour package is signed by the repository's key, which rpm imported from the packaged file
            # (Debian's rpm keeps its database under $HOME, as dnf above saw it)
            keys_in_db = subprocess.run(["rpm", f"--root={root}", "-q", "gpg-pubkey", "--qf", "%{VERSION}\n"],
                                        capture_output=True, text=True,
                                        env=dict(os.environ, HOME=str(root.parent / "home"))).stdout.split()
            assert keys.fingerprint[-8:].lower() in keys_in_db

            # and the packaged mistralrs-flavour picks ampere on an 8.6 GPU
            proc = run_flavour(root / "usr/bin/mistralrs-flavour", tmp_path, "8.6")
            assert proc.stdout == "ampere\n"

            # A re-key by whoever holds the upload key and another signing secret (README, Threat
            # model): with the key pinned in config.toml the publish refuses it ...
            (tmp_path / "other").mkdir()
            _, other, other_pass = make_key(tmp_path / "other")
            (target / signing.KEY_FILE_NAME).write_text(other.public.read_text())  # the upload key's part
            fakerpm.build(layout.dist, "ampere", "0.9.3", "1.fc43", marker="re-keyed")
            pinned = make_cfg(tmp_path, base_url=url, key_file=str(other.secret), passphrase_file=str(other_pass),
                              key_fingerprint=keys.fingerprint)
            with pytest.raises(signing.SigningError):
                publisher.publish_dist(pinned, layout)
            # ... without the pin it goes through (what does not hold), and every existing user's dnf
            # refuses the re-signed repository: their key is the one mistralrs-release brought
            rekeyed = make_cfg(tmp_path, base_url=url, key_file=str(other.secret), passphrase_file=str(other_pass))
            publisher.publish_dist(rekeyed, layout)
            upgrade = _dnf(root, [root / "etc/yum.repos.d", extra], f"--setopt=mistralrs.gpgkey={key_in_root}",
                           "--refresh", "upgrade", "mistralrs-ampere")
            assert upgrade.returncode != 0, upgrade.stdout + upgrade.stderr
            assert re.search(r"(?i)gpg|signature", upgrade.stdout + upgrade.stderr), upgrade.stdout + upgrade.stderr
            out = subprocess.run([str(root / "usr/bin/mistralrs")], capture_output=True, text=True, check=True).stdout
            assert "version=0.9.2-1.fc43" in out  # still the package the repository's own key signed
        finally:
            _stop_dnf_agents(root)


@pytest.mark.slow
def test_publish_keeps_each_channel_s_release_package_current(tmp_path):
    """Issue 18, item 3: a publish with no mistralrs-release in dist/ (CI's
    publish job has only the flavours' packages) builds it from the
    repository's key and the config, signed with the rest; publishing
    again adds nothing; a change of what it installs (the base URL) raises
    its version by itself; host.release_package_version is a floor."""
    host, keys, passfile = make_key(tmp_path)
    cfg = make_cfg(tmp_path, key_file=str(keys.secret), passphrase_file=str(passfile))
    layout = Layout.of(cfg)
    target = tmp_path / "srv"
    target.mkdir()
    ampere = "mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
    fakerpm.build(layout.dist, "ampere", "0.9.2", "1.fc43")
    assert not list(layout.dist.glob("mistralrs-release-*"))

    def release_in(c, report, name):
        md = repodata.read_metadata(target / channels.channel_dir(c, c.channel(name)) / "repodata")
        return sorted(h for h, p in md.packages.items() if p.name == "mistralrs-release")

    first = publisher.publish_dist(cfg, layout, release_package=True)
    one = "mistralrs-release-1-1.fc43.noarch.rpm"
    assert first["channels"]["stable"]["added"] == sorted([one, ampere])
    assert first["channels"]["unstable"]["added"] == [one]
    public = (target / signing.KEY_FILE_NAME).read_text()
    stable_dir = target / channels.channel_dir(cfg, cfg.channel("stable"))
    signing.verify_rpms(public, keys.fingerprint, [stable_dir / one])
    assert release_in(cfg, first, "unstable") == [one]
    # it packages the repository's key and names the configured base URL
    assert rpm_query(stable_dir / one, "%{URL}") == cfg.publish.base_url

    again = publisher.publish_dist(cfg, layout, release_package=True)
    for name in ("stable", "unstable"):
        assert again["channels"][name]["added"] == [] and one in again["channels"][name]["unchanged"]

    moved = make_cfg(tmp_path, base_url="https://mirror.example.org/mistralrs-rpm", key_file=str(keys.secret),
                     passphrase_file=str(passfile))
    third = publisher.publish_dist(moved, Layout.of(moved), release_package=True)
    two = "mistralrs-release-2-1.fc43.noarch.rpm"
    assert [third["channels"][c]["added"] for c in ("stable", "unstable")] == [[two], [two]]
    assert release_in(moved, third, "stable") == [one, two]
    assert rpm_query(stable_dir / two, "%{URL}") == "https://mirror.example.org/mistralrs-rpm"

    floor = dataclasses.replace(moved, host=dataclasses.replace(moved.host, release_package_version=5))
    fourth = publisher.publish_dist(floor, Layout.of(floor), release_package=True)
    assert fourth["channels"]["stable"]["added"] == ["mistralrs-release-5-1.fc43.noarch.rpm"]


@pytest.mark.slow
def test_release_package_lints_clean_with_its_license(tmp_path):
    """mistralrs-release declares License: MIT and ships that license
    (this project's LICENSE) as %license; Fedora's rpmlint profile plus the
    filters in rpm/release/rpmlint.toml (each with its reason) report
    nothing, and every filter still matches something."""
    import tomllib

    from buildlib import layout as paths
    from test_package import FEDORA_PROFILE, rpmlint

    if not (FEDORA_PROFILE / "fedora.toml").is_file():
        pytest.fail(f"no Fedora rpmlint profile at {FEDORA_PROFILE}: run scripts/bootstrap")
    host, _, _ = make_key(tmp_path)
    cfg = make_cfg(tmp_path, base_url="https://rpm.example.org/mistralrs-rpm")
    rpm = release_package.build_release_package(cfg, Layout.of(cfg), host)
    licenses = subprocess.run(["rpm", "-qpL", str(rpm)], capture_output=True, text=True, check=True).stdout.split()
    assert licenses == ["/usr/share/licenses/mistralrs-release/LICENSE"]
    assert rpm_query(rpm, "%{LICENSE}") == "MIT"
    fedora = tmp_path / "fedora"
    fedora.mkdir()
    for profile in [*FEDORA_PROFILE.glob("*.toml"), paths.RPMLINT_LICENSES]:
        shutil.copy(profile, fedora / f"zz-{profile.name}")
    messages = [line for line in rpmlint([rpm], fedora).stdout.splitlines() if re.search(r": [EW]: ", line)]
    filters = tomllib.loads(paths.RPMLINT_RELEASE_FILTERS.read_text())["Filters"]
    assert [m for m in messages if not any(re.search(f, m) for f in filters)] == []
    assert [f for f in filters if not any(re.search(f, m) for m in messages)] == []
    shutil.copy(paths.RPMLINT_RELEASE_FILTERS, fedora / "zz-release.toml")
    result = rpmlint([rpm], fedora)
    assert re.search(r"\b0 errors, 0 warnings\b", result.stdout), result.stdout
