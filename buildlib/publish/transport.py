"""How the publish reaches the repository host: list, fetch, upload, delete
and the lock.  :class:`Transport` is the interface; :mod:`.transport_local`
(a directory on this machine) and :mod:`.transport_ssh` (``user@host:/path``
through the host's forced command, scripts/repo-shell) implement it, both
with rsync (:class:`RsyncTransport`).  Another transport is one module more
and one line in :func:`buildlib.publish.publisher.open_transport`.

Writing never overwrites a package: the caller decides what to send.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..run import require_tool, run
from .channels import PublishError

BWLIMIT_ENV = "MRPM_PUBLISH_BWLIMIT"
"""Optional bandwidth limit in KiB/s (rsync --bwlimit): ``500`` for every
transfer, or ``packages:500,metadata:1`` per step; the tests use it to kill a
publish in the middle of an upload."""
LOCK_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Entry:
    """A file or directory on the host, as a listing shows it."""

    is_dir: bool
    size: int
    mtime: int
    """seconds since the epoch"""


class Transport(abc.ABC):
    """The repository host's files, below its root."""

    scratch: Path
    """A private directory for this publish's temporary files."""
    bytes_sent: dict[str, int]
    """Bytes moved per step ("packages", "metadata", "fetch", ...)."""

    @abc.abstractmethod
    def stat_dir(self, rel: PurePosixPath) -> dict[str, Entry] | None:
        """{name: entry} of a directory on the host, or None if it is missing."""

    def list_dir(self, rel: PurePosixPath) -> dict[str, bool] | None:
        """{name: is_dir} of a directory on the host, or None if it is missing."""
        entries = self.stat_dir(rel)
        return None if entries is None else {name: e.is_dir for name, e in entries.items()}

    @abc.abstractmethod
    def fetch(self, rel: PurePosixPath, dest: Path) -> None:
        """Copy a directory of the host into dest."""

    @abc.abstractmethod
    def fetch_files(self, rel: PurePosixPath, names: Sequence[str], dest: Path) -> None:
        """Copy these files of one directory on the host into dest."""

    def digests(self, rel: PurePosixPath, names: Sequence[str]) -> dict[str, str] | None:
        """SHA-256 of these files on the host, where that is cheap (a local
        directory); None where it would mean downloading them."""
        return None

    @abc.abstractmethod
    def upload(self, local_dir: Path, names: Sequence[str], rel: PurePosixPath, *, what: str,
               delay_updates: bool = False, checksum: bool = False) -> None:
        """Copy these files (or directories) of local_dir into rel; with
        delay_updates, all of them are renamed into place together at the end."""

    @abc.abstractmethod
    def delete(self, rel: PurePosixPath, names: Sequence[str]) -> None:
        """Delete these files of one directory on the host."""

    @abc.abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the host's publish lock (waiting for another publish)."""


def _bwlimit(what: str | None) -> int | None:
    value = os.environ.get(BWLIMIT_ENV, "").strip()
    if not value:
        return None
    try:
        if value.isdigit():
            return int(value)
        limits = dict(item.split(":") for item in value.split(","))
        return int(limits[what]) if what in limits else None
    except ValueError:
        raise PublishError(f"{BWLIMIT_ENV}={value!r}: expected KiB/s such as 500, or packages:500,metadata:1") from None


class RsyncTransport(Transport):
    """Everything but the lock, with rsync: ``prefix`` + ``root`` names the
    root for rsync, ``rsh`` (or nothing) is rsync's remote shell."""

    def __init__(self, scratch: Path, root: str, prefix: str = "", rsh: Sequence[str] = ()):
        self.scratch = scratch
        self.root = root
        self.prefix = prefix
        self.rsh = list(rsh)
        self.bytes_sent = {}

    def url(self, rel: PurePosixPath | str, trailing: bool = True) -> str:
        path = f"{self.root}/{rel}" if str(rel) not in ("", ".") else self.root
        return self.prefix + path + ("/" if trailing else "")

    def rsync(self, args: Sequence[str | os.PathLike], *, stats: str | None = None, check: bool = True,
              capture: bool = True) -> subprocess.CompletedProcess:
        argv = [require_tool("rsync", "install rsync")]
        if self.rsh:
            argv += ["-e", shlex.join(self.rsh)]
        limit = _bwlimit(stats)
        if limit:
            argv += [f"--bwlimit={limit}"]
        if stats:
            argv += ["--stats"]
        proc = run([*argv, *args], capture=capture, check=check)
        if stats and proc.stdout:
            field_name = rb"received" if stats == "fetch" else rb"sent"
            m = re.search(rb"Total bytes " + field_name + rb": ([\d,.]+)", proc.stdout)
            if m:
                self.bytes_sent[stats] = self.bytes_sent.get(stats, 0) + int(re.sub(rb"[,.]", b"", m.group(1)))
        return proc

    def stat_dir(self, rel: PurePosixPath) -> dict[str, Entry] | None:
        proc = self.rsync(["--list-only", "--no-h", self.url(rel)], check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            if "No such file or directory" in err and proc.returncode == 23:
                return None
            raise PublishError(f"cannot list {self.url(rel)}: rsync exit {proc.returncode}: {err.strip()[-300:]}")
        entries = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            parts = line.split(None, 4)
            if len(parts) == 5 and parts[4] != ".":
                try:
                    # rsync prints the time in this machine's time zone
                    mtime = int(time.mktime(time.strptime(f"{parts[2]} {parts[3]}", "%Y/%m/%d %H:%M:%S")))
                    size = int(parts[1].replace(",", "").replace(".", ""))
                except ValueError:
                    mtime = size = -1
                entries[parts[4]] = Entry(parts[0].startswith("d"), size, mtime)
        return entries

    def fetch_files(self, rel: PurePosixPath, names: Sequence[str], dest: Path) -> None:
        if not names:
            return
        dest.mkdir(parents=True, exist_ok=True)
        # several sources on one host: rsync sends them in one command
        self.rsync(["-t", *[self.url(rel / n, trailing=False) for n in names], f"{dest}/"], stats="fetch")

    def fetch(self, rel: PurePosixPath, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.rsync(["-rt", self.url(rel), f"{dest}/"], stats="fetch")

    def upload(self, local_dir: Path, names: Sequence[str], rel: PurePosixPath, *, what: str,
               delay_updates: bool = False, checksum: bool = False) -> None:
        if not names:
            return
        listing = self.scratch / f"files-{what}.txt"
        listing.write_text("".join(f"{n}\n" for n in names))
        args = ["-rt", "--perms", "--chmod=D755,F644", f"--files-from={listing}"]
        if delay_updates:
            args.append("--delay-updates")
        if checksum:
            args.append("--checksum")
        self.rsync([*args, f"{local_dir}/", self.url(rel)], stats=what)

    def delete(self, rel: PurePosixPath, names: Sequence[str]) -> None:
        """rsync from an empty directory, so that rsync access is all the host grants."""
        if not names:
            return
        empty = self.scratch / "empty"
        empty.mkdir(exist_ok=True)
        rules = self.scratch / "delete-rules.txt"
        rules.write_text("".join(f"+ /{n}\n" for n in names) + "- *\n")
        self.rsync(["-r", "--delete", f"--filter=merge {rules}", f"{empty}/", self.url(rel)], stats="delete")
