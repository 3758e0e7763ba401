"""Services on 127.0.0.1 for tests: nginx serving a directory, sshd with a
key made for the test, and dnf in a scratch root.  Each is stopped when its
user is done with it (a test, or the run for conftest's shared sshd);
nothing outside a temporary directory is touched except the unprivileged
user that sshd logs in as.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildlib.demo import localrepo

UPLOAD_USER = "mrpm-upload"
PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 10, log: Path | None = None) -> None:
    """Wait until proc listens on port; log, when given, is where its output goes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if log is not None:
                out = log.read_text(errors="replace")
            else:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {out[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_server() -> str | None:
    """Debian's redis-server, or Fedora's Valkey (its fork, same protocol)."""
    return shutil.which("redis-server") or shutil.which("valkey-server")


@contextlib.contextmanager
def redis(directory: Path) -> Iterator[str]:
    """A real redis-server on a free local port, keeping nothing on disk
    but its directory; its URL."""
    server = redis_server()
    if server is None:
        raise RuntimeError("redis-server is not installed (scripts/bootstrap installs it for the test role)")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def skip_reason_nginx() -> str | None:
    return None if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx") else "nginx is not installed"


@contextlib.contextmanager
def nginx(root: Path) -> Iterator[str]:
    """Serve root read-only on http://127.0.0.1:<port>; yields the base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mrpm-nginx-") as tmp:
        conf = localrepo.write_nginx_conf(Path(tmp), root, port)
        proc = subprocess.Popen([localrepo.nginx_binary(), "-p", tmp, "-c", str(conf), "-g", "daemon off;"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc, "nginx")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


# --- sshd ------------------------------------------------------------------


def skip_reason_sshd() -> str | None:
    if not os.path.exists("/usr/sbin/sshd"):
        return "openssh-server is not installed"
    if os.geteuid() != 0:
        return "sshd needs root here (it logs in as an unprivileged user made for the test)"
    return None


def ensure_user(name: str = UPLOAD_USER) -> pwd.struct_passwd:
    """An unprivileged login user with no password (key logins only)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh", name], check=True)
        # '*' instead of useradd's '!': sshd refuses any login to a locked account
        subprocess.run(["usermod", "-p", "*", name], check=True)
        return pwd.getpwnam(name)


def _authorized_line(client_pub: str, forced_command: Sequence[str] | None) -> str:
    options = "restrict"
    if forced_command:
        command = " ".join(forced_command).replace('"', '\\"')
        options = f'command="{command}",restrict'
    return f"{options} {client_pub}\n"


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip() if path.suffix else Path(str(path) + ".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    host_key_line: str
    """known_hosts line for [127.0.0.1]:port"""
    home: Path
    authorized_keys: Path

    def target(self, path: Path) -> str:
        return f"{self.user}@127.0.0.1:{path}"


@contextlib.contextmanager
def sshd(forced_command: Sequence[str] | None = None, user: str = UPLOAD_USER) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 accepting one key made for the test, for ``user``.

    forced_command, when given, goes into authorized_keys as
    ``command="...",restrict``, the way a repository host installs it.
    """
    account = ensure_user(user)
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="mrpm-sshd-"))
    os.chmod(tmp, 0o755)
    proc = None
    try:
        host_key = tmp / "ssh_host_ed25519_key"
        _keygen(host_key, "test-host")
        client_key = tmp / "client_key"
        client_pub = _keygen(client_key, "test-client")
        auth = tmp / "authorized_keys"
        auth.write_text(_authorized_line(client_pub, forced_command))
        os.chmod(auth, 0o644)
        conf = tmp / "sshd_config"
        conf.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {auth}
AllowUsers {user}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin no
LogLevel VERBOSE
""")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        # a file, not a pipe: a shared sshd logs more than a pipe holds, and
        # blocks its logins once the pipe is full
        log = tmp / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(port, proc, "sshd", log=log)
        host_pub = Path(str(host_key) + ".pub").read_text().split()
        yield Sshd(port=port, user=user, client_key=client_key,
                   host_key_line=f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}", home=Path(account.pw_dir),
                   authorized_keys=auth)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def login_for(server: Sshd, directory: Path, forced_command: Sequence[str] | None = None) -> Iterator[Sshd]:
    """A running sshd for one test: a new client key in directory is the
    only one sshd accepts (it reads authorized_keys at every login), with
    forced_command as for :func:`sshd`; afterwards no key is accepted."""
    client_key = directory / "client_key"
    client_pub = _keygen(client_key, "test-client")
    server.authorized_keys.write_text(_authorized_line(client_pub, forced_command))
    try:
        yield dataclasses.replace(server, client_key=client_key)
    finally:
        server.authorized_keys.write_text("")


def give_to(path: Path, user: str = UPLOAD_USER) -> None:
    """Make path (a new directory) the user's, reachable through its parents."""
    account = ensure_user(user)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, account.pw_uid, account.pw_gid)
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o011)


# --- dnf in a scratch root ---------------------------------------------------


class DnfRoot(localrepo.DnfRoot):
    def dnf(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """As the demo's, with dnf's own output kept for assertions; no
        gpg-agent is left running afterwards."""
        try:
            proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env())
        finally:
            self.stop_agents()
        if check and proc.returncode != 0:
            raise AssertionError(f"dnf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def run_installed(self, path: str = "/usr/bin/mistralrs") -> str:
        """Run an installed script with the host's /bin/sh (the scratch root has no base system)."""
        return subprocess.run([str(self.root / path.lstrip("/"))], capture_output=True, text=True, check=True).stdout.strip()


def gpg_agents_under(directory: Path, wait: float = 5) -> list[str]:
    """The command lines of running gpg-agents whose home lies under
    directory, after waiting up to ``wait`` seconds for stopped ones to exit
    (`gpgconf --kill` returns before the agent is gone)."""
    prefix = str(directory.resolve()) + os.sep
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue  # exited meanwhile
            if argv and Path(argv[0]).name == "gpg-agent" and "--homedir" in argv[:-1]:
                home = argv[argv.index("--homedir") + 1]
                if (home.rstrip(os.sep) + os.sep).startswith(prefix):
                    found.append(" ".join(a for a in argv if a))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def make_dnf_root(tmp: Path, repo_file_text: str | None, base_repo_dir: Path | None = None) -> DnfRoot:
    made = localrepo.make_dnf_root(tmp, repo_file_text, base_repo_dir)
    return DnfRoot(root=made.root, reposdir=made.reposdir, conf=made.conf)
