"""The repository on another machine, ``user@host:/path``: rsync over SSH
with the pinned host key only, and the lock held by one SSH session.

The upload key's forced command on the host (scripts/repo-shell) runs
nothing but ``rsync --server`` inside the repository and ``lock``: it takes
``flock`` on the lock file and holds it until its standard input closes.  A
publish killed in any way closes its SSH connection, which releases the
lock: no stale lock files, no timeouts to guess.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import Publish, SshTarget
from ..run import CommandFailed, log, require_tool
from .channels import PublishError
from .transport import LOCK_TIMEOUT_S, RsyncTransport


class SshTransport(RsyncTransport):
    def __init__(self, publish: Publish, target: SshTarget, scratch: Path):
        self.user, self.host = target.user, target.host
        super().__init__(scratch, str(target.path), prefix=f"{self.user}@{self.host}:")
        self.ssh = self._ssh_argv(publish)
        self.rsh = self.ssh

    def _check_host_key(self, ssh_stderr: str) -> None:
        """ssh's many-line host key complaint as one line naming publish.host_key."""
        if any(s in ssh_stderr for s in ("Host key verification failed", "HOST IDENTIFICATION HAS CHANGED", "host key is known")):
            raise PublishError(f"{self.host} did not show the host key pinned in publish.host_key: check that line against"
                               f" the host's key (ssh-keyscan {self.host}) before trusting a new one")

    def rsync(self, args, **kwargs) -> subprocess.CompletedProcess:
        try:
            proc = super().rsync(args, **kwargs)
        except CommandFailed as e:
            self._check_host_key(e.stderr_tail)
            raise
        if proc.returncode != 0 and proc.stderr:
            self._check_host_key(proc.stderr.decode(errors="replace"))
        return proc

    def _ssh_argv(self, publish: Publish) -> list[str]:
        """ssh with the pinned host key only; the port comes from the pinned
        line's ``[host]:port`` form (known_hosts pins a key per port)."""
        fields = publish.host_key.split()
        if len(fields) < 2:
            raise PublishError(f'publish.host_key = "{publish.host_key}": expected a known_hosts line "host ssh-ed25519 AAAA..."')
        port = "22"
        if fields[0].startswith(("ssh-", "ecdsa-", "sk-")):  # a bare key: pin it for the target host
            line = f"{self.host} {publish.host_key}"
        else:
            line = publish.host_key
            pm = re.fullmatch(r"\[(.+)\]:([0-9]+)", fields[0])
            if pm:
                port = pm.group(2)
        known_hosts = self.scratch / "known_hosts"
        known_hosts.write_text(line + "\n")
        argv = [require_tool("ssh", "install openssh-client"), "-p", port,
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3"]
        identity = self._identity(publish)
        if identity:
            argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        return argv

    def _identity(self, publish: Publish) -> str:
        """The SSH key: a file (publish.ssh_key), or the key itself in the
        environment variable publish.ssh_key_env (a CI secret), written to a
        private file in the scratch directory for this publish only."""
        if publish.ssh_key:
            return str(Path(publish.ssh_key).expanduser())
        secret = os.environ.get(publish.ssh_key_env, "") if publish.ssh_key_env else ""
        if not secret.strip():
            return ""
        path = self.scratch / "id_upload"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.strip() + "\n")
        return str(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # A long-lived session cannot go through run(): it is the lock.
        argv = [*self.ssh, f"{self.user}@{self.host}", "lock"]
        log(f"+ {shlex.join(argv)}")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            buf = b""
            while not buf.endswith(b"locked\n"):
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise PublishError(f"no publish lock on {self.host} after {LOCK_TIMEOUT_S} s; another publish holds it")
                chunk = os.read(proc.stdout.fileno(), 64)
                if not chunk:
                    proc.wait()
                    err = proc.stderr.read().decode(errors="replace").strip()
                    self._check_host_key(err)
                    raise PublishError(f"cannot take the publish lock on {self.host} (ssh exit {proc.returncode}): {err[-300:]}")
                buf += chunk
                if buf.endswith(b"waiting\n"):
                    log(f"waiting for the publish lock on {self.host}")
                    buf = b""
            yield
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
