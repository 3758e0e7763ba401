"""The account CI uploads as: unprivileged, reachable with one SSH key that
can do nothing but take the publish lock and run rsync inside the
repository (the forced command ``scripts/repo-shell``, installed as
``host.repo_shell``).

``~/.ssh`` and ``authorized_keys`` belong to root: the account can read its
key's restrictions but not change them.  The repository directory and the
lock file belong to the account; nginx only reads them.
"""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

from ..config import ConfigError
from ..layout import PUBLISH_LOCK_NAME, REPO_SHELL
from ..run import UserError, log, require_tool, run
from .files import ensure_file, report
from ..config import Host

REPO_SHELL_SOURCE = REPO_SHELL


def authorized_keys_line(host: Host) -> str:
    if not host.upload_key:
        raise ConfigError('host.upload_key is not set: give CI\'s SSH public key, e.g. "ssh-ed25519 AAAA... ci"')
    command = shlex.join([str(host.repo_shell), str(host.repo_root)])
    if '"' in command or "\\" in command:
        raise ConfigError(f"host.repo_shell / publish.target: {command!r} cannot be quoted in authorized_keys")
    return f'command="{command}",restrict {host.upload_key}\n'


def install_repo_shell(host: Host) -> bool:
    if not REPO_SHELL_SOURCE.exists():
        raise UserError(f"{REPO_SHELL_SOURCE} is missing from this checkout")
    changed = ensure_file(host.repo_shell, REPO_SHELL_SOURCE.read_bytes(), 0o755, 0, 0)
    report(host.repo_shell, changed, "forced command for the upload key")
    return changed


def ensure_account(user: str, home: Path | None = None) -> tuple[pwd.struct_passwd, bool]:
    try:
        return pwd.getpwnam(user), False
    except KeyError:
        pass
    argv = [require_tool("useradd", "install passwd"), "--system", "--user-group", "--create-home",
            "--shell", "/bin/sh", "--comment", "mistralrs-rpm uploads"]
    if home is not None:
        argv += ["--home-dir", str(home)]
    run([*argv, user])
    # '*': no password, but not locked ('!'): sshd refuses keys of a locked account without PAM
    run([require_tool("usermod", "install passwd"), "-p", "*", user])
    log(f"created: user {user}")
    return pwd.getpwnam(user), True


def setup_upload_user(host: Host, home: Path | None = None) -> list[str]:
    """Account, forced command, key, repository directory and lock file."""
    if os.geteuid() != 0:
        raise UserError("setting up the upload user needs root (run `doit setup:upload-user` with sudo)")
    line = authorized_keys_line(host)
    changes = []
    account, created = ensure_account(host.upload_user, home)
    if created:
        changes.append("user")
    if install_repo_shell(host):
        changes.append("repo-shell")
    ssh_dir = Path(account.pw_dir) / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chown(ssh_dir, 0, 0)
    os.chmod(ssh_dir, 0o755)
    keys = ssh_dir / "authorized_keys"
    if report(keys, ensure_file(keys, line, 0o644, 0, 0), "upload key, forced to repo-shell").startswith("wrote"):
        changes.append("authorized_keys")
    root_created = not host.repo_root.exists()
    host.repo_root.mkdir(parents=True, exist_ok=True)
    st = host.repo_root.stat()
    if root_created or st.st_uid != account.pw_uid or st.st_mode & 0o7777 != 0o755:
        os.chown(host.repo_root, account.pw_uid, account.pw_gid)
        os.chmod(host.repo_root, 0o755)
        changes.append("repository directory")
    report(host.repo_root, "repository directory" in changes, f"repository directory, owned by {host.upload_user}")
    # never replaced (a publish may hold a lock on it right now): created, or its owner fixed
    lock = host.repo_root / PUBLISH_LOCK_NAME
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        st = os.fstat(fd)
        lock_changed = (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (account.pw_uid, account.pw_gid, 0o644)
        os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    if report(lock, lock_changed, "publish lock file").startswith("wrote"):
        changes.append("lock")
    return changes
