"""The one way to run a program, and the one user-facing error type.

Every subprocess goes through :func:`run`: argv lists only, the command is
logged before it runs, and a failure raises :class:`CommandFailed` naming the
command, its exit code and the tail of its stderr.  A user's mistake raises
:class:`UserError`, which the task layer turns into one line, not a traceback.
"""

from __future__ import annotations

import codecs
import enum
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class Exit(enum.IntEnum):
    """doit's exit status, one per class of failure, so that CI can tell
    them apart without reading text (docs/maintainer.md, "Exit codes").  A UserError
    subclass names its class; any other UserError takes its task's
    (:data:`buildlib.tasks.context.STAGE_EXIT`)."""

    OK = 0
    FAILED = 1
    """A failure of no class below (the line above says what)."""
    CONFIG = 2
    """config.toml or an MRPM_* variable (doit's own usage errors exit 3)."""
    HOST = 10
    """The host is not ready: a tool, a package or disk space is missing."""
    UNREACHABLE = 11
    """Upstream (git, the GitHub API) did not answer after the retries."""
    REFUSED = 12
    """Refused by policy or integrity: a tag, a key, a signature, a digest."""
    BUILD = 13
    """cargo, nvcc or rpmbuild failed, or the package could not be made."""
    PUBLISH = 14
    """The repository host could not be updated (upload, lock, metadata)."""
    CANCELLED = 15
    """Stopped by a signal (a cancelled CI job); nothing was left half-done."""
    INTERNAL = 70
    """A bug: doit prints the traceback; please report it."""


class UserError(Exception):
    """Something the user can fix; the message says what to change."""

    exit_code: Exit | None = None
    """The class of failure; None: the task's stage decides."""


class HostNotReady(UserError):
    """A tool, a package or disk space the task needs is missing."""

    exit_code = Exit.HOST


class Refused(UserError):
    """Refused by policy or integrity (a tag, a key, a signature, a file
    that escapes where it must stay)."""

    exit_code = Exit.REFUSED


class Unreachable(UserError):
    """Something from outside did not answer after its retries."""

    exit_code = Exit.UNREACHABLE


class CommandFailed(UserError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str, stderr: bytes = b""):
        self.argv = list(argv)
        self.stderr = stderr
        """All of the command's stderr, for callers that pick their own line."""
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"{shlex.join(self.argv)} failed with exit code {returncode}{tail}")


class CommandTimedOut(UserError, subprocess.TimeoutExpired):
    """A command ran past its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr_tail: str):
        subprocess.TimeoutExpired.__init__(self, list(argv), timeout)
        self.argv = list(argv)
        self.stderr_tail = stderr_tail
        self.message = f"{shlex.join(self.argv)} gave no result within {timeout:g} s and was stopped" + (
            f": {stderr_tail}" if stderr_tail else "")
        UserError.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require_tool(name: str, hint: str = "") -> str:
    """Path of a program on PATH, or a UserError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise HostNotReady(f"required tool {name!r} not found on PATH" + (f" ({hint})" if hint else ""))
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    input: bytes | None = None,
    check: bool = True,
    quiet: bool = False,
    timeout: float | None = None,
    inherit_env: bool = True,
    stdout_file: Path | None = None,
    progress: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; stream its output unless capture is set.

    stderr is always kept (and also shown when not capturing) so that a
    failure can quote its tail.  env, when given, is added to os.environ,
    or replaces it with inherit_env=False.
    stdout_file, when given, receives stdout (a tool's machine-readable
    output, e.g. cargo's JSON messages) while stderr is still shown live.
    Where stderr is no terminal (CI), a shown command that runs long says
    so every HEARTBEAT_S seconds (:class:`Heartbeat`), with ``progress()``'s
    words when given.
    """
    args = [os.fspath(a) for a in argv]
    if not quiet:
        log(f"+ {shlex.join(args)}")
    full_env = None
    if env is not None:
        full_env = dict(os.environ) if inherit_env else {}
        full_env.update(env)
    out_file = open(stdout_file, "wb") if stdout_file is not None else None
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            # A tool's chatter goes to stderr: stdout belongs to doit's reporter.
            stdout=subprocess.PIPE if capture else out_file if out_file is not None else 2,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise UserError(f"required tool {args[0]!r} not found on PATH") from None
    finally:
        if out_file is not None:
            out_file.close()  # the child holds its own copy
    try:
        beat = None if quiet or capture or _terminal() else Heartbeat(shlex.join(args[:3]), HEARTBEAT_S, progress)
        stdout, stderr = _communicate(proc, input, echo_stderr=not capture, timeout=timeout, heartbeat=beat)
    except subprocess.TimeoutExpired as e:
        _stop(proc)
        raise CommandTimedOut(args, timeout or 0, _tail(e.stderr)) from None
    except BaseException:
        # a signal turned into an exception (buildlib.publish.cleanup): the
        # child (an rsync, say) does not outlive the call
        _stop(proc)
        raise
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, _tail(stderr), stderr or b"")
    return result


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


HEARTBEAT_S = 60.0
"""How often a long command says it is still running where no terminal shows progress."""


def _terminal() -> bool:
    return sys.__stderr__ is not None and sys.__stderr__.isatty()


class Heartbeat:
    """One line every ``interval`` seconds while a command runs: in CI no
    terminal shows git's or cargo's progress, and an hour of compiling
    kernels inside build scripts would otherwise print nothing.  ``tick()``
    is driven by a thread in :func:`run` and, in the tests, by a fake clock."""

    def __init__(self, what: str, interval: float, progress: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.monotonic, emit: Callable[[str], None] | None = None):
        self.what, self.interval, self.progress, self.clock = what, interval, progress, clock
        self.emit = emit or log
        self.started = clock()
        self.next = self.started + interval

    def tick(self) -> None:
        now = self.clock()
        if now < self.next:
            return
        minutes, seconds = divmod(int(now - self.started), 60)
        detail = ""
        if self.progress is not None:
            try:
                detail = self.progress()
            except Exception as e:  # a progress report must never stop the command
                detail = f"progress unknown ({e.__class__.__name__})"
        self.emit(f"... {self.what}: still running after {minutes} min {seconds:02d} s" + (f"; {detail}" if detail else ""))
        while self.next <= now:
            self.next += self.interval


def _communicate(proc, input, *, echo_stderr, timeout, heartbeat: Heartbeat | None = None):
    if not echo_stderr:
        try:
            return proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            _, e.stderr = proc.communicate()
            raise
    # Show stderr live (cargo's progress lives there) and keep a copy.
    import threading

    chunks: list[bytes] = []

    def pump():
        # Chunks, not lines: cargo's progress bar redraws with \r.
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            # doit may have swapped sys.stderr for a text-only writer
            sys.stderr.write(decoder.decode(chunk))
            sys.stderr.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    beating = threading.Event()
    if heartbeat is not None:
        def beat():
            while not beating.wait(min(5.0, heartbeat.interval)):
                heartbeat.tick()
        threading.Thread(target=beat, daemon=True).start()
    if input is not None:
        assert proc.stdin is not None
        proc.stdin.write(input)
        proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.wait()
        t.join(5)
        e.stderr = b"".join(chunks)
        raise
    finally:
        beating.set()
    t.join()
    return None, b"".join(chunks)


def _tail(stderr: bytes | None, lines: int = 5) -> str:
    if not stderr:
        return ""
    text = stderr.decode(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def output(argv: Sequence[str | os.PathLike[str]], **kwargs) -> str:
    """stdout of argv as text, stripped."""
    return run(argv, capture=True, **kwargs).stdout.decode().strip()


class Stopwatch:
    """Times a stage and prints its one-line summary."""

    def __init__(self, stage: str):
        self.stage = stage
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def done(self, summary: str) -> float:
        elapsed = self.seconds
        log(f"==> {self.stage}: {summary} ({elapsed:.1f} s)")
        return elapsed


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(data, str):
        data = data.encode()
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_copy(source: Path, path: Path) -> None:
    """Copy a file so that readers of path see the old or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_regular_file(path: Path, limit: int, what: str, error: type[UserError] = UserError) -> bytes:
    """The bytes of a small file given from outside (a configuration, a key
    file): a regular file of at most ``limit`` bytes, else ``error`` in one
    line.  Opened without blocking, so a FIFO is refused instead of waited
    on, and checked as what was opened, so a rename in between changes
    nothing; /dev/zero is refused before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"cannot read the {what} {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{path} is a directory; give the {what} file itself")
        if not stat.S_ISREG(mode):
            raise error(f"{path} is not a regular file (a device, FIFO or socket); give the {what} file itself")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read the {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{path} is larger than {limit // 1024} KiB: not a {what} file")
    return data
