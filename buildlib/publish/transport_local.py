"""The repository as a directory on this machine (tests, the demo, a
publish run on the host itself): rsync without a remote shell, and
``fcntl.flock`` on the lock file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from ..config import LocalTarget
from ..layout import PUBLISH_LOCK_NAME
from ..run import atomic_write, log, sha256_of
from .transport import RsyncTransport

MEMO_LIMIT = 20000
"""Entries a digest memo keeps (the newest publish's first)."""
RACY_S = 2.0
"""A file changed this recently is hashed but not remembered: a write in the
same tick of a coarse filesystem clock could leave its ctime as it was."""


class DigestMemo:
    """SHA-256 of files by (device, inode, size, mtime, ctime): every publish
    checks every published package against the signed metadata, and hashing
    a channel of real packages (tens of GB) each time would cost minutes that
    grow with retention and flavours.  No write to a file keeps its ctime
    (writing, truncating, renaming onto it or setting its times all set it
    to now), so a file whose five values are unchanged holds the bytes that
    were hashed.  The memo lives in the build directory, which the upload
    key cannot reach; a damaged memo is only a slower publish."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, str] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    self.entries = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
            except (OSError, ValueError, RecursionError):
                self.entries = {}
        self.used: dict[str, str] = {}

    @staticmethod
    def identity(info: os.stat_result) -> str:
        return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"

    def digest(self, path: Path) -> str:
        before = os.stat(path, follow_symlinks=False)
        key = self.identity(before)
        known = self.entries.get(key)
        if known is None:
            known = sha256_of(path)
            if self.identity(os.stat(path, follow_symlinks=False)) != key:
                return known  # changed while it was read: not remembered
            if time.time() - before.st_ctime < RACY_S:
                return known  # too recent to tell a later write in the same tick
        self.used[key] = known
        return known

    def save(self) -> None:
        if self.path is None:
            return
        kept = dict(self.used)
        for key, value in self.entries.items():
            if len(kept) >= MEMO_LIMIT:
                break
            kept.setdefault(key, value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(kept, sort_keys=True) + "\n")


class LocalTransport(RsyncTransport):
    def __init__(self, target: LocalTarget, scratch: Path, memo: Path | None = None):
        super().__init__(scratch, str(target.path))
        self.memo = DigestMemo(memo)

    def digests(self, rel: PurePosixPath, names: Sequence[str]) -> dict[str, str]:
        found = {}
        for name in names:
            path = Path(self.root) / rel / name
            if path.is_file() and not path.is_symlink():
                found[name] = self.memo.digest(path)
        self.memo.save()
        return found

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        Path(self.root).mkdir(parents=True, exist_ok=True)
        with open(Path(self.root) / PUBLISH_LOCK_NAME, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for the publish lock on {self.root}")
                fcntl.flock(f, fcntl.LOCK_EX)
            yield
