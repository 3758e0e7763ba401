"""The repository as a directory on this machine (tests, the demo, a
publish run on the host itself): rsync without a remote shell, and
``fcntl.flock`` on the lock file."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from ..config import LocalTarget
from ..layout import PUBLISH_LOCK_NAME
from ..run import log, sha256_of
from .transport import RsyncTransport


class LocalTransport(RsyncTransport):
    def __init__(self, target: LocalTarget, scratch: Path):
        super().__init__(scratch, str(target.path))

    def digests(self, rel: PurePosixPath, names: Sequence[str]) -> dict[str, str]:
        found = {}
        for name in names:
            path = Path(self.root) / rel / name
            if path.is_file() and not path.is_symlink():
                found[name] = sha256_of(path)
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
