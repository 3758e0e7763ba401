"""A published repository on this machine, as the demo and the tests use it:
nginx serving it on 127.0.0.1, a stand-in for Fedora and NVIDIA's
repositories, and Debian's dnf installing into a scratch root."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..rpmtools import rpmbuild
from ..run import UserError, require_tool, run

NGINX_CONF = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/xml xml; application/x-rpm rpm; text/plain asc repo; text/html html; text/css css; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ autoindex on; index index.html; }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise UserError("nginx is not installed (scripts/bootstrap installs nginx-light)")
    return found


def write_nginx_conf(prefix: Path, root: Path, port: int) -> Path:
    """A minimal nginx serving root read-only on 127.0.0.1:port, all its
    state under prefix, runnable without touching /etc or /var."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, root=root, port=port))
    return conf


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def claim_port(prefix: Path, port: int) -> None:
    """Stop the demo's own nginx of an earlier run (prefix), then refuse a
    port something else listens on: the demo asks before it builds, not
    after a minute of building."""
    stop(prefix)
    if port_is_open(port):
        raise UserError(f"127.0.0.1:{port} is already in use: stop what listens there or set MRPM_DEMO_PORT")


def serve(root: Path, prefix: Path, port: int) -> str:
    """Start (or restart) a background nginx for root; returns its URL."""
    claim_port(prefix, port)
    conf = write_nginx_conf(prefix, root, port)
    run([nginx_binary(), "-p", prefix, "-c", conf])
    deadline = time.monotonic() + 10
    while not port_is_open(port):
        if time.monotonic() > deadline:
            raise UserError(f"nginx did not start on 127.0.0.1:{port}; see {prefix / 'logs' / 'error.log'}")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def stop(prefix: Path) -> None:
    conf = prefix / "nginx.conf"
    if (prefix / "nginx.pid").exists() and conf.exists():
        run([nginx_binary(), "-p", prefix, "-c", conf, "-s", "stop"], check=False, quiet=True)
        # the signal is sent, not yet obeyed: nginx removes its pid file as it exits
        deadline = time.monotonic() + 10
        while (prefix / "nginx.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


STANDIN_SPEC = """\
%define _binary_payload w3.zstdio
Name: {name}
Version: 1
Release: 1
Summary: Stands in for what Fedora and NVIDIA's repositories provide
License: MIT
BuildArch: noarch
{provides}

%description
A scratch root has no base system: this package provides, by name, what
Fedora's and NVIDIA's repositories would (the CUDA runtime, the driver's
libcuda, a shell), so that dnf can resolve the packages' own dependencies.

%files
"""


def provide_meeting(requirement: str) -> str:
    """What the stand-in provides for one requirement: itself, or for an rpm
    boolean "(a or b or ... or z)" (package.requires' NAME-{cuda}) its last
    name, as on a system whose CUDA runtime is newer than the one built with."""
    if requirement.startswith("(") and " or " in requirement:
        return requirement.strip("()").split(" or ")[-1]
    return requirement


def build_standin_repo(dest: Path, provides: list[str], name: str = "mrpm-standin-base") -> Path:
    """A local unsigned repository with one package providing provides
    (requirements: each one met, see provide_meeting)."""
    dest.mkdir(parents=True, exist_ok=True)
    top = dest / "rpmbuild"
    spec = dest / f"{name}.spec"
    lines = "\n".join(f"Provides: {provide_meeting(p)}" for p in provides)
    spec.write_text(STANDIN_SPEC.format(name=name, provides=lines))
    built = rpmbuild(spec, top, expect=1)
    repo = dest / "repo"
    repo.mkdir(exist_ok=True)
    for rpm in built:
        os.replace(rpm, repo / rpm.name)
    run([require_tool("createrepo_c", "install createrepo-c"), "--quiet", repo], capture=True)
    return repo


@dataclass
class DnfRoot:
    """A scratch root that Debian's dnf installs into, with gpgcheck=1 and
    repo_gpgcheck=1 for every repository except the stand-in.

    installed_repos: dnf also reads the .repo files installed in the root's
    /etc/yum.repos.d (what mistralrs-release put there), as dnf on the
    machine itself would.  One translation: Debian's dnf 4 reads a
    ``gpgkey=file://`` path on the host even with --installroot, so each
    such key is named inside the root (on Fedora it is the same file)."""

    root: Path
    reposdir: Path
    conf: Path
    installed_repos: bool = False

    @property
    def cachedir(self) -> Path:
        return self.root / "var" / "cache" / "dnf"

    @property
    def installed_reposdir(self) -> Path:
        return self.root / "etc" / "yum.repos.d"

    def installed_key_options(self) -> list[str]:
        """--setopt=<repo>.gpgkey=file://<root>/... for each installed
        repository whose keys are files."""
        options = []
        for repo_file in sorted(self.installed_reposdir.glob("*.repo")):
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(repo_file.read_text(), source=str(repo_file))
            for section in parser.sections():
                keys = re.split(r"[\s,]+", parser.get(section, "gpgkey", fallback="").strip())
                if keys != [""] and all(k.startswith("file:///") for k in keys):
                    inside = " ".join(f"file://{self.root}{k[len('file://'):]}" for k in keys)
                    options.append(f"--setopt={section}.gpgkey={inside}")
        return options

    def argv(self, *args: str) -> list[str]:
        reposdirs = [self.reposdir] + ([self.installed_reposdir] if self.installed_repos else [])
        return [
            "dnf", "-y", "-q", f"--installroot={self.root}", "--releasever=43",
            f"--setopt=reposdir={','.join(str(d) for d in reposdirs)}", f"--setopt=cachedir={self.cachedir}",
            "--setopt=install_weak_deps=False", "--setopt=gpgcheck=1", "--setopt=repo_gpgcheck=1",
            "--setopt=keepcache=False", "--disableplugin=*", f"--config={self.conf}",
            *(self.installed_key_options() if self.installed_repos else []), *args,
        ]

    def env(self) -> dict[str, str]:
        return dict(os.environ, HOME=str(self.root.parent / "home"))

    def with_installed_repos(self) -> "DnfRoot":
        """This root as dnf on the installed machine sees it: its own
        /etc/yum.repos.d besides the stand-in for Fedora and NVIDIA."""
        return dataclasses.replace(self, installed_repos=True)

    def agent_homes(self) -> list[Path]:
        """The keyrings dnf made in its cache: for repo_gpgcheck, librepo
        imports each repository's key into <cachedir>/<repo>-<hash>/pubring,
        and gpg starts a gpg-agent there that outlives dnf."""
        return sorted(self.cachedir.glob("*/pubring"))

    def stop_agents(self) -> None:
        for home in self.agent_homes():
            run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, quiet=True, capture=True)

    def dnf(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """dnf in this root; its output as text.  No gpg-agent is left
        running afterwards."""
        try:
            ran = run(self.argv(*args), env={"HOME": str(self.root.parent / "home")}, capture=True, check=False,
                      quiet=True, timeout=timeout)
        finally:
            self.stop_agents()
        proc = subprocess.CompletedProcess(ran.args, ran.returncode, ran.stdout.decode(errors="replace"),
                                           ran.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise UserError(f"dnf {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc


def make_dnf_root(tmp: Path, repo_file_text: str | None, base_repo_dir: Path | None = None) -> DnfRoot:
    """A scratch root whose repositories are the given .repo file (none:
    only what packages install later, see :meth:`DnfRoot.with_installed_repos`)
    plus, when given, an unsigned local repository standing in for Fedora
    and NVIDIA's."""
    root = tmp / "root"
    reposdir = tmp / "repos.d"
    for d in (root, reposdir, tmp / "home"):
        d.mkdir(parents=True, exist_ok=True)
    conf = tmp / "dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\nrepo_gpgcheck=1\nskip_if_unavailable=False\n")
    if repo_file_text is not None:
        (reposdir / "mistralrs.repo").write_text(repo_file_text)
    if base_repo_dir is not None:
        (reposdir / "base.repo").write_text(
            f"[standin-base]\nname=stand-in for Fedora and NVIDIA\nbaseurl=file://{base_repo_dir}\n"
            "enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n"
        )
    return DnfRoot(root=root, reposdir=reposdir, conf=conf)
