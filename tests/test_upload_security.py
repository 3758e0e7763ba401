"""The upload key and the web server, attacked the way issue 10 did: the real
sshd on 127.0.0.1 with ``scripts/repo-shell`` as the key's forced command,
the real rsync client, and real nginx running the site template.

The upload user can write to a directory outside the repository (``outside``)
in these tests, so only the forced command stands between the key and it.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import services  # noqa: E402
from fixtures import fakerpm  # noqa: E402
from test_publish import install_and_run, publish, stable_dir, write_config  # noqa: E402
from test_setup import HASHED, needs_nginx, needs_openssl, sample_tree, serve_site  # noqa: E402

needs_sshd = pytest.mark.skipif(services.skip_reason_sshd() is not None or shutil.which("rsync") is None,
                                reason=services.skip_reason_sshd() or "rsync is not installed")


# --- the host: sshd with the forced command ------------------------------------


@dataclasses.dataclass
class Host:
    sshd: services.Sshd
    root: Path
    """the repository, the upload user's"""
    outside: Path
    """a directory beside it that the upload user may write to, holding victim.txt"""
    known_hosts: Path

    @property
    def login(self) -> str:
        return f"{self.sshd.user}@127.0.0.1"

    def remote(self, path: Path | str, slash: bool = False) -> str:
        return f"{self.login}:{path}" + ("/" if slash else "")

    def ssh(self) -> list[str]:
        return ["ssh", "-p", str(self.sshd.port), "-i", str(self.sshd.client_key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes"]

    def rsync(self, *args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run(["rsync", "-e", shlex.join(self.ssh()), *map(str, args)],
                              capture_output=True, text=True, timeout=60)

    def outside_untouched(self) -> None:
        assert sorted(os.listdir(self.outside)) == ["victim.txt"]
        assert (self.outside / "victim.txt").read_text() == "keep me\n"


@pytest.fixture
def host(tmp_path, repo_host):
    sshd, top = repo_host
    outside = top / "outside"
    services.give_to(outside)
    (outside / "victim.txt").write_text("keep me\n")
    os.chown(outside / "victim.txt", services.ensure_user().pw_uid, services.ensure_user().pw_gid)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.host_key_line + "\n")
    yield Host(sshd=sshd, root=top / "srv", outside=outside, known_hosts=known_hosts)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "repo-shell:" in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def local_dir(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


# --- symbolic links --------------------------------------------------------------


@pytest.mark.services
@needs_sshd
def test_uploading_a_symlink_is_refused_and_nothing_goes_through_it(host, tmp_path):
    src = local_dir(tmp_path / "src", {"ok.txt": "ok\n"})
    os.symlink("/", src / "esc")
    refused(host.rsync("-rl", f"{src}/", host.remote(host.root, slash=True)), "-l")
    assert not os.path.lexists(host.root / "esc")

    # what the attack did next: write into, read from and --delete through esc/
    through = host.root / "esc" / host.outside.relative_to("/")
    payload = local_dir(tmp_path / "payload", {"planted.txt": "owned\n"})
    assert host.rsync("-r", f"{payload}/", host.remote(through, slash=True)).returncode != 0
    got = local_dir(tmp_path / "got")
    assert host.rsync("-r", host.remote(host.root / "esc" / "etc" / "passwd"), f"{got}/").returncode != 0
    assert not (got / "passwd").exists()
    empty = local_dir(tmp_path / "empty")
    assert host.rsync("-r", "--delete", f"{empty}/", host.remote(through, slash=True)).returncode != 0
    host.outside_untouched()


@pytest.mark.services
@needs_sshd
def test_a_symlink_planted_in_the_repository_stops_the_key(host, tmp_path):
    """A link someone else left (or an older repo-shell let in): rsync's own
    path resolution inside a transfer would follow it, so nothing runs."""
    local_dir(host.root / "fedora")
    os.symlink("/", host.root / "esc")
    through = host.root / "esc" / host.outside.relative_to("/")
    payload = local_dir(tmp_path / "payload", {"planted.txt": "owned\n"})
    got = local_dir(tmp_path / "got")
    empty = local_dir(tmp_path / "empty")
    attempts = {
        "write": ["-r", f"{payload}/", host.remote(through, slash=True)],
        "read": ["-r", host.remote(host.root / "esc" / "etc" / "passwd"), f"{got}/"],
        "delete": ["-r", "--delete", f"{empty}/", host.remote(through, slash=True)],
        # a transfer that names no link, but whose tree holds one
        "write below": ["-r", f"{payload}/", host.remote(host.root, slash=True)],
        "read below": ["-r", host.remote(host.root, slash=True), f"{got}/"],
    }
    for what, args in attempts.items():
        proc = host.rsync(*args)
        assert proc.returncode != 0, what
        assert "repo-shell:" in proc.stderr and "esc" in proc.stderr, (what, proc.stderr)
    assert os.listdir(got) == []
    assert not (host.root / "planted.txt").exists()
    host.outside_untouched()

    # the lock file itself, replaced by a link: never followed (no file made outside)
    (host.root / "esc").unlink()
    (host.root / ".publish.lock").unlink(missing_ok=True)
    os.symlink(host.outside / "made-by-lock", host.root / ".publish.lock")
    proc = subprocess.run([*host.ssh(), host.login, "lock"], input="", capture_output=True, text=True, timeout=30)
    refused(proc, ".publish.lock")
    host.outside_untouched()


@needs_sshd
def test_a_path_argument_is_checked_by_its_real_path(host, tmp_path):
    """The path on the command line goes through a link that points outside."""
    payload = local_dir(tmp_path / "payload", {"planted.txt": "owned\n"})
    os.symlink(host.outside, host.root / "out")
    proc = host.rsync("-r", f"{payload}/", host.remote(host.root / "out", slash=True))
    refused(proc, "outside")
    host.outside_untouched()


# --- options publishing never sends ---------------------------------------------


@needs_sshd
@pytest.mark.parametrize("option, direction", [
    ("-l", "push"), ("-D", "push"), ("-H", "push"), ("-o", "push"), ("-g", "push"),
    ("-L", "pull"), ("-l", "pull"), ("-D", "pull"),
])
def test_links_devices_hard_links_and_owners_are_refused(host, tmp_path, option, direction):
    src = local_dir(tmp_path / "src", {"f.txt": "x\n"})
    if direction == "push":
        proc = host.rsync("-r", option, f"{src}/", host.remote(host.root, slash=True))
        assert not (host.root / "f.txt").exists()
    else:
        (host.root / "f.txt").write_text("x\n")
        got = local_dir(tmp_path / "got")
        proc = host.rsync("-r", option, host.remote(host.root, slash=True), f"{got}/")
        assert not (got / "f.txt").exists()
    refused(proc, option)


@needs_sshd
def test_a_fifo_is_not_created(host, tmp_path):
    src = local_dir(tmp_path / "src", {"f.txt": "x\n"})
    os.mkfifo(src / "fifo")
    refused(host.rsync("-rD", f"{src}/", host.remote(host.root, slash=True)), "-D")
    # without -D rsync skips it; either way no FIFO below the repository
    assert host.rsync("-r", f"{src}/", host.remote(host.root, slash=True)).returncode == 0
    assert (host.root / "f.txt").is_file() and not os.path.lexists(host.root / "fifo")


@needs_sshd
def test_permission_bits_from_the_client_are_neutralised(host, tmp_path):
    src = local_dir(tmp_path / "src", {"suid": "x\n", "plain": "y\n"})
    local_dir(src / "d")
    os.chmod(src / "plain", 0o6777)
    os.chmod(src / "d", 0o3777)
    # -p with --chmod: what the attack sent; publishing sends -p too, so it passes, without effect
    proc = host.rsync("-rtp", "--chmod=u+s,g+s,o+w", f"{src}/", host.remote(host.root, slash=True))
    assert proc.returncode == 0, proc.stderr
    modes = {name: stat.S_IMODE((host.root / name).lstat().st_mode) for name in ("suid", "plain", "d")}
    assert modes == {"suid": 0o644, "plain": 0o644, "d": 0o755}
    assert stat.S_IMODE(host.root.stat().st_mode) == 0o755


# --- nginx -------------------------------------------------------------------------


def _session(cert: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(cert)
    return s


@needs_nginx
@needs_openssl
def test_nginx_does_not_follow_a_planted_symlink(tmp_path):
    root = sample_tree(tmp_path / "srv" / "mistralrs-rpm")
    arch = root / "fedora" / "43" / "x86_64"
    os.symlink("/", root / "esc")
    os.symlink("/etc/passwd", arch / "passwd.rpm")
    os.symlink("/etc", arch / "repodata" / "etc")
    # the root itself reached through a link is fine (disable_symlinks from= the root)
    os.symlink(tmp_path / "srv", tmp_path / "srv-link")
    with serve_site(tmp_path, tmp_path / "srv-link" / "mistralrs-rpm") as srv:
        s = _session(srv.cert)
        real = s.get(f"{srv.https}/fedora/43/x86_64/mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm", timeout=10)
        assert real.status_code == 200
        for path in ("esc/etc/passwd", "fedora/43/x86_64/passwd.rpm", "fedora/43/x86_64/repodata/etc/passwd"):
            r = s.get(f"{srv.https}/{path}", allow_redirects=False, timeout=10)
            assert r.status_code in (403, 404), (path, r.status_code)
            assert "root:" not in r.text, path


@needs_nginx
@needs_openssl
def test_nginx_caches_only_successful_answers_for_long(tmp_path):
    root = sample_tree(tmp_path / "srv" / "mistralrs-rpm")
    os.symlink("/etc/passwd", root / "link.rpm")
    with serve_site(tmp_path, root) as srv:
        s = _session(srv.cert)
        arch = f"{srv.https}/fedora/43/x86_64"
        rpm = f"{arch}/mistralrs-ampere-0.9.2-1.fc43.x86_64.rpm"
        ok = s.get(rpm, timeout=10)
        assert ok.status_code == 200 and ok.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        part = s.get(rpm, headers={"Range": "bytes=0-3"}, timeout=10)
        assert part.status_code == 206 and "immutable" in part.headers["Cache-Control"]
        again = s.get(rpm, headers={"If-Modified-Since": ok.headers["Last-Modified"]}, timeout=10)
        assert again.status_code == 304 and "immutable" in again.headers["Cache-Control"]
        for url in (f"{arch}/mistralrs-ampere-9.9.9-1.fc43.x86_64.rpm",           # not published yet
                    f"{arch}/repodata/{HASHED[::-1]}-primary.xml.gz",              # next publish's metadata
                    f"{arch}/repodata/repomd.xml.missing", f"{srv.https}/link.rpm"):
            r = s.get(url, allow_redirects=False, timeout=10)
            assert r.status_code in (403, 404), url
            assert r.headers.get("Cache-Control") == "no-store", (url, r.headers.get("Cache-Control"))


# --- publishing through the hardened forced command ------------------------------


@pytest.mark.services
@needs_sshd
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("rpmbuild", "rpmsign", "createrepo_c", "gpg", "dnf")),
                    reason="needs rpm-build, rpmsign, createrepo_c, gpg and dnf (scripts/bootstrap installs them)")
def test_publishing_works_through_the_forced_command_and_the_key_gets_no_more(tmp_path, keys, base_repo, host):
    """A real publish (lock, list, fetch, upload, swap, prune) still passes
    the allowlist; the same key, used by hand in between, leaves no link,
    FIFO or loose mode in the published tree."""
    with services.nginx(host.root) as url:
        cfg = write_config(tmp_path / "work", host.sshd.target(host.root), url, keys,
                           host_key=host.sshd.host_key_line, ssh_key=str(host.sshd.client_key))
        fakerpm.build(cfg.paths.dist, "ampere")
        publish(cfg)
        channel = stable_dir(host.root)
        evil = local_dir(tmp_path / "evil", {"x.txt": "x\n"})
        os.symlink("/etc/passwd", evil / "passwd.rpm")
        os.mkfifo(evil / "fifo")
        os.chmod(evil / "x.txt", 0o4777)
        refused(host.rsync("-rlptD", f"{evil}/", host.remote(channel, slash=True)))
        (evil / "passwd.rpm").unlink()
        (evil / "fifo").unlink()
        assert host.rsync("-rtp", f"{evil}/", host.remote(channel, slash=True)).returncode == 0
        fakerpm.build(cfg.paths.dist, "ampere", version="0.9.3")
        report = publish(cfg)
        assert report["channels"]["stable"]["added"] == ["mistralrs-ampere-0.9.3-1.fc43.x86_64.rpm"]
        assert "version=0.9.3-1" in install_and_run(tmp_path / "dnf", cfg, base_repo, "mistralrs-ampere")
    for path in host.root.rglob("*"):
        mode = path.lstat().st_mode
        assert stat.S_ISDIR(mode) or stat.S_ISREG(mode), path
        assert stat.S_IMODE(mode) in (0o755, 0o644), (path, oct(mode))
