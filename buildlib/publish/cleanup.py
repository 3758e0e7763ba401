"""Nothing secret outlives a publish: cancellation, a watchdog, a sweep.

A publish holds three secrets on disk or in memory: the imported signing key
(a private ``GNUPGHOME``), the gpg-agent that holds its passphrase, and the
SSH upload key (a file in the scratch directory ``/tmp/mrpm-publish-*``).

- **Signals** (:func:`cancellable`): SIGTERM (what CI sends to a cancelled
  job), SIGHUP and SIGINT raise :class:`Cancelled`, a user error, so every
  ``with`` block on the way out removes what it made (the keyring and its
  agent, the scratch directory, the lock) and the task fails with one line.
  rsync and the other children are stopped by :func:`buildlib.run.run`.
- **SIGKILL** runs no code, so each private place is also handed to a
  watchdog (:func:`watch`): a small process in a session of its own that
  waits for the publish's end of a pipe to close, which happens however the
  publish ends, and then stops the agent and removes the directories.  It
  holds nothing secret itself.
- **The sweep** (:func:`sweep`): each such directory records its owner
  (pid and the pid's start time, :data:`OWNER_FILE`); the next publish
  removes every one whose owner is gone, and stops gpg-agents whose home
  is gone or orphaned, in case the watchdog was killed as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..run import Exit, UserError, log, run

OWNER_FILE = ".mrpm-owner"
SCRATCH_PREFIX = "mrpm-publish-"
GNUPG_PREFIX = "mrpm-gnupg-"
"""Private GNUPGHOMEs made in the temporary directory (a long parent falls back there)."""
SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP", signal.SIGINT: "SIGINT"}


class Cancelled(UserError):
    """A signal asked the publish to stop; raised where the program was."""

    exit_code = Exit.CANCELLED


# --- signals -----------------------------------------------------------------

_depth = 0
_saved: dict[int, object] = {}
_what = ""
_fired = False


def _handler(signum, _frame):
    global _fired
    if _fired:
        return  # cleanup after the first signal runs to its end
    _fired = True
    raise Cancelled(f"{_what} cancelled by {SIGNALS.get(signum, signum)}: stopped, signing key, agent, upload key"
                    " and scratch files removed; the repository is as the last complete step left it")


@contextlib.contextmanager
def cancellable(what: str) -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT raise :class:`Cancelled` inside the block
    (nested blocks share the outermost one; outside the main thread,
    where Python cannot take signals, nothing changes)."""
    global _depth, _what, _fired
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _what, _fired = what, False
        for signum in SIGNALS:
            _saved[signum] = signal.signal(signum, _handler)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for signum, old in _saved.items():
                signal.signal(signum, old)
            _saved.clear()


# --- owners ------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def mark_owner(directory: Path) -> None:
    """Record this process as the directory's owner."""
    pid = os.getpid()
    (directory / OWNER_FILE).write_text(f"{pid} {_start_time(pid) or '?'}\n")


def owner_alive(directory: Path) -> bool:
    """False once the recorded owner has ended (or the record is unreadable
    and the directory older than a day, so a half-made one is not taken)."""
    try:
        pid, started = (directory / OWNER_FILE).read_text().split()
        return _start_time(int(pid)) == started
    except (OSError, ValueError):
        try:
            import time

            return time.time() - directory.stat().st_mtime < 86400
        except OSError:
            return False


# --- agents ------------------------------------------------------------------


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent of a GNUPGHOME (quietly; there may be none)."""
    gpgconf = shutil.which("gpgconf")
    if gpgconf and home.is_dir():
        run([gpgconf, "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)}, check=False, quiet=True, capture=True,
            timeout=30)


def _agents() -> Iterator[tuple[int, Path]]:
    """(pid, homedir) of every gpg-agent started with --homedir."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"gpg-agent") or b"--homedir" not in argv:
            continue
        i = argv.index(b"--homedir")
        if i + 1 < len(argv):
            yield int(entry.name), Path(os.fsdecode(argv[i + 1]))


def _ours(path: Path, parents: Iterable[Path]) -> bool:
    return path.parent in parents or path.name.startswith(GNUPG_PREFIX)


def sweep(gnupg_parents: Iterable[Path]) -> list[str]:
    """Remove what earlier, killed publishes left: private GNUPGHOMEs in
    ``gnupg_parents`` and the temporary directory, scratch directories,
    and gpg-agents serving a home that is gone or whose owner is gone.
    Returns what it removed, for one log line."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    parents = [p for p in {*gnupg_parents, tmp} if p.is_dir()]
    removed = []
    for pid, home in list(_agents()):
        if _ours(home, parents) and (not home.is_dir() or not owner_alive(home)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
                removed.append(f"gpg-agent {pid}")
    homes = [d for p in parents for d in p.iterdir()
             if d.is_dir() and (p != tmp or d.name.startswith(GNUPG_PREFIX))]
    scratch = [d for d in tmp.iterdir() if d.is_dir() and d.name.startswith(SCRATCH_PREFIX)]
    for d in homes + scratch:
        if not owner_alive(d):
            if d in homes:
                kill_agent(d)
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    if removed:
        log(f"publish: removed what a killed publish left: {', '.join(removed)}")
    return removed


# --- the watchdog ------------------------------------------------------------

_WATCHDOG = r"""
import os, shutil, signal, subprocess, sys
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
homes, dirs = [], []
for line in sys.stdin.buffer:
    kind, _, path = line.decode().rstrip("\n").partition(" ")
    (homes if kind == "home" else dirs).append(path)
for home in homes:
    if os.path.isdir(home):
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": home},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
for path in homes + dirs:
    shutil.rmtree(path, ignore_errors=True)
"""

_watchdog: subprocess.Popen | None = None
_watch_lock = threading.Lock()


def watch(path: Path, *, gnupghome: bool = False) -> None:
    """Have the watchdog remove path (stopping its agent first, for a
    GNUPGHOME) once this process ends, however it ends."""
    global _watchdog
    with _watch_lock:
        if _watchdog is None or _watchdog.poll() is not None:
            # Popen, not run.run: it must outlive this call (run.run waits for its command).
            # its own session: a signal to the publish's process group does not reach it;
            # the pipe's write end is ours alone (not inherited by other children)
            _watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, close_fds=True)
        assert _watchdog.stdin is not None
        _watchdog.stdin.write(f"{'home' if gnupghome else 'dir'} {path}\n".encode())
        _watchdog.stdin.flush()
