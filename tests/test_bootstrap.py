"""scripts/bootstrap's package step on Fedora 43 and Debian 12.

The system comes from an os-release file (MRPM_OS_RELEASE); rpm, dnf,
dpkg-query and apt-get are stand-ins on PATH that answer from a list of
"installed" packages and record every call.  Only --packages-only runs here,
so the checkout's own .venv is never touched.  The last test runs the real
package step on this Debian machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from buildlib import layout as paths

BOOTSTRAP = paths.PROJECT / "scripts" / "bootstrap"

FEDORA_PACKAGES = [
    "git", "gcc", "rpm", "rpm-build", "rpm-sign", "rpmdevtools", "rpmlint", "createrepo_c", "python3-createrepo_c", "dnf5", "python3-rpm",
    "gnupg2", "binutils", "file", "nginx", "openssh-server", "openssh-clients", "rsync",
    "devscripts-checkbashisms", "systemd", "chromium", "certbot", "python3-certbot-dns-cloudflare", "openssl",
    "policycoreutils-python-utils", "valkey",
]
DEBIAN_PACKAGES = [
    "git", "gcc", "rpm", "rpm2cpio", "createrepo-c", "python3-createrepo-c", "dnf", "python3-rpm", "gnupg", "binutils", "file",
    "nginx-light", "openssh-server", "openssh-client", "rsync", "devscripts", "systemd",
    "chromium", "certbot", "python3-certbot-dns-cloudflare", "openssl", "redis-server",
]
FEDORA_43 = 'NAME="Fedora Linux"\nVERSION="43 (Server Edition)"\nID=fedora\nVERSION_ID=43\nPLATFORM_ID="platform:f43"\n'
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n'

# Each stand-in appends "name arg arg ..." to $STANDIN_LOG; a package counts
# as installed when its name is a line of $STANDIN_INSTALLED.
STANDINS = {
    "rpm": """
        [ "$1 $2" = "-q --quiet" ] || { echo "rpm stand-in: unexpected $*" >&2; exit 2; }
        grep -qxF -- "$3" "$STANDIN_INSTALLED"
    """,
    "dnf": "",
    "dpkg-query": """
        [ "$1 $2" = '-W -f=${Status}' ] || { echo "dpkg-query stand-in: unexpected $*" >&2; exit 2; }
        if grep -qxF -- "$3" "$STANDIN_INSTALLED"; then printf 'install ok installed'
        else echo "dpkg-query: no packages found matching $3" >&2; exit 1; fi
    """,
    "apt-get": "",
    "id": '[ "$1" = -u ] && echo "${STANDIN_UID:-0}"',
}


@pytest.fixture
def host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    for name, body in STANDINS.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STANDIN_LOG"\n{body}\n')
        script.chmod(0o755)
    installed = tmp_path / "installed"
    installed.write_text("")
    os_release = tmp_path / "os-release"

    def bootstrap(os_text: str | None, have: list[str], *args: str, uid: int = 0):
        if os_text is not None:
            os_release.write_text(os_text)
        installed.write_text("".join(f"{p}\n" for p in have))
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STANDIN_LOG": str(log),
               "STANDIN_INSTALLED": str(installed), "STANDIN_UID": str(uid), "MRPM_OS_RELEASE": str(os_release)}
        result = subprocess.run([str(BOOTSTRAP), "--packages-only", *args], env=env, capture_output=True, text=True)
        calls = [line.split() for line in log.read_text().splitlines()]
        return result, calls

    return bootstrap


def installs(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[0] in ("dnf", "apt-get")]


def test_fedora_installs_the_missing_packages_by_fedora_names_with_dnf(host):
    result, calls = host(FEDORA_43, [])
    assert result.returncode == 0, result.stderr
    assert [c for c in calls if c[0] == "rpm"] == [["rpm", "-q", "--quiet", p] for p in FEDORA_PACKAGES]
    assert installs(calls) == [["dnf", "install", "-y", "-q", *FEDORA_PACKAGES]]
    assert not [c for c in calls if c[0] in ("dpkg-query", "apt-get")]
    assert result.stderr == f"bootstrap: installing {' '.join(FEDORA_PACKAGES)}\n"

    # Only what is missing ...
    result, calls = host(FEDORA_43, [p for p in FEDORA_PACKAGES if p not in ("rpm-sign", "nginx")])
    assert result.returncode == 0, result.stderr
    assert installs(calls) == [["dnf", "install", "-y", "-q", "rpm-sign", "nginx"]]

    # ... and nothing, silently, when everything is there.
    result, calls = host(FEDORA_43, FEDORA_PACKAGES)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert installs(calls) == []


def test_debian_installs_the_missing_packages_with_apt(host):
    result, calls = host(DEBIAN_12, ["git", "gcc"])
    assert result.returncode == 0, result.stderr
    assert [c[-1] for c in calls if c[0] == "dpkg-query"] == DEBIAN_PACKAGES
    assert installs(calls) == [["apt-get", "update", "-qq"],
                               ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_PACKAGES[2:]]]
    assert not [c for c in calls if c[0] in ("rpm", "dnf")]

    result, calls = host(DEBIAN_12, DEBIAN_PACKAGES)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert installs(calls) == []


def test_installing_needs_root(host):
    result, calls = host(FEDORA_43, FEDORA_PACKAGES[1:], uid=1000)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "bootstrap: need root to install system packages: git"
    assert installs(calls) == []


@pytest.mark.parametrize("os_text, line", [
    ('NAME="Arch Linux"\nID=arch\n', "bootstrap: unsupported system 'arch' (ID= in {}): this script knows"
                                     " fedora and debian; install the packages docs/maintainer.md lists by hand"),
    ('NAME="nothing"\n', "bootstrap: unsupported system 'unknown' (ID= in {}): this script knows"
                         " fedora and debian; install the packages docs/maintainer.md lists by hand"),
    (None, "bootstrap: cannot read {} to tell which system this is"),
])
def test_an_unknown_system_is_one_line_and_nothing_installed(host, tmp_path, os_text, line):
    result, calls = host(os_text, [])
    assert result.returncode == 1
    assert result.stderr == line.format(tmp_path / "os-release") + "\n"
    assert calls == []


def test_a_wrong_argument_is_one_line(host):
    result, calls = host(FEDORA_43, [], "--everything")
    assert (result.returncode, result.stderr) == (
        2, "bootstrap: unknown argument '--everything' (use --role ROLE, --packages-only or nothing)\n")
    assert calls == []
    result, calls = host(FEDORA_43, [], "--role", "gpu")
    assert (result.returncode, result.stderr) == (2, "bootstrap: --role takes build, publish, host or test, not 'gpu'\n")
    assert calls == []


# What each role needs, by what it runs (README, "Runners and roles").
ROLES = {
    "fedora": {
        "build": ["git", "rpm", "python3-rpm", "python3-createrepo_c", "gcc", "rpm-build", "binutils", "file", "nodejs"],
        # rpm-build: the publish builds mistralrs-release (Debian's rpm carries rpmbuild)
        "publish": ["git", "rpm", "python3-rpm", "python3-createrepo_c", "rpm-build", "rpm-sign", "createrepo_c", "gnupg2",
                    "openssh-clients", "rsync", "nodejs"],
        "host": ["git", "rpm", "python3-rpm", "python3-createrepo_c", "rpm-build", "gnupg2", "nginx", "openssh-server",
                 "rsync", "certbot", "python3-certbot-dns-cloudflare", "openssl", "systemd",
                 "policycoreutils-python-utils"],
    },
    "debian": {
        "build": ["git", "rpm", "python3-rpm", "python3-createrepo-c", "gcc", "binutils", "file", "nodejs"],
        "publish": ["git", "rpm", "python3-rpm", "python3-createrepo-c", "createrepo-c", "gnupg", "openssh-client",
                    "rsync", "nodejs"],
        "host": ["git", "rpm", "python3-rpm", "python3-createrepo-c", "gnupg", "nginx-light", "openssh-server", "rsync",
                 "certbot", "python3-certbot-dns-cloudflare", "openssl", "systemd"],
    },
}
TEST_ONLY = {"chromium", "dnf", "dnf5", "devscripts", "devscripts-checkbashisms", "rpmlint", "rpmdevtools", "rpm2cpio"}


@pytest.mark.parametrize("system", ["fedora", "debian"])
@pytest.mark.parametrize("role", ["build", "publish", "host"])
def test_each_role_installs_only_what_it_runs(host, system, role):
    """A GPU build host gets no nginx, certbot or chromium; a host-mode
    runner (build, publish) gets nodejs for the JavaScript actions."""
    result, calls = host(FEDORA_43 if system == "fedora" else DEBIAN_12, [], "--role", role)
    assert result.returncode == 0, result.stderr
    wanted = ROLES[system][role]
    asked = [c[-1] for c in calls if c[0] in ("rpm", "dpkg-query")]
    assert asked == wanted
    assert not TEST_ONLY & set(asked)
    assert ("nodejs" in asked) == (role in ("build", "publish"))
    if role == "build":
        assert "nginx" not in asked and "nginx-light" not in asked and "certbot" not in asked


def test_roles_combine_each_package_once(host):
    result, calls = host(FEDORA_43, [], "--role", "build", "--role", "publish")
    asked = [c[-1] for c in calls if c[0] == "rpm"]
    assert result.returncode == 0 and len(asked) == len(set(asked))
    assert set(asked) == set(ROLES["fedora"]["build"]) | set(ROLES["fedora"]["publish"])


def full_run_env(tmp_path, installed: list[str]) -> dict[str, str]:
    """The environment of a full bootstrap run (not --packages-only) on a
    stand-in Fedora 43 where `installed` are there: PATH holds the
    package-manager stand-ins and only the shell tools the script needs, so
    no cargo, no nvcc and no sha256sum."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "sed", "head", "tr", "grep", "dirname", "cat"):
        (tools / name).symlink_to(subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True,
                                                 text=True, check=True).stdout.strip())
    (tmp_path / "os-release").write_text(FEDORA_43)
    (tmp_path / "installed").write_text("".join(f"{p}\n" for p in installed))
    return {"PATH": f"{tmp_path / 'bin'}:{tools}", "STANDIN_LOG": str(tmp_path / "calls.log"),
            "STANDIN_INSTALLED": str(tmp_path / "installed"), "MRPM_OS_RELEASE": str(tmp_path / "os-release")}


def test_a_publish_runner_needs_no_cargo_or_nvcc(host, tmp_path):
    """Only build and test check for the host's Rust and CUDA: a runner
    that signs and uploads has neither, and its bootstrap gets past that
    check (it stops later, at the stand-in's missing sha256sum)."""
    env = full_run_env(tmp_path, ROLES["fedora"]["publish"])
    result = subprocess.run(["bash", str(BOOTSTRAP), "--role", "publish"], env=env, capture_output=True, text=True)
    assert "cargo is not on PATH" not in result.stderr and "sha256sum" in result.stderr, result.stderr
    result = subprocess.run(["bash", str(BOOTSTRAP), "--role", "build"], env=env, capture_output=True, text=True)
    assert "cargo is not on PATH" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/dpkg-query").exists(), reason="not a Debian machine")
def test_the_real_package_step_on_this_debian_machine_is_quiet(tmp_path):
    """This machine's own /etc/os-release and dpkg-query: every package is
    there (the suite runs after bootstrap), so nothing is said or installed;
    apt-get is a stand-in that would record a call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\nexit 1\n')
    (bin_dir / "apt-get").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "MRPM_OS_RELEASE"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    for _ in range(2):
        result = subprocess.run([str(BOOTSTRAP), "--packages-only"], env=env, capture_output=True, text=True)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not log.exists()


def test_cargo_and_nvcc_are_the_hosts_own_and_checked_with_a_line(host, tmp_path):
    """A full run (no --packages-only) with every package there but no cargo
    on PATH stops with one line before it reaches .venv; it installs no Rust
    or CUDA package either."""
    env = full_run_env(tmp_path, FEDORA_PACKAGES)
    result = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == ("bootstrap: cargo is not on PATH (the build host needs its own Rust and CUDA toolkit;"
                             " neither comes from fedora's packages here)\n")
    assert installs([line.split() for line in (tmp_path / "calls.log").read_text().splitlines()]) == []
