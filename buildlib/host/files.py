"""Writing a file only when it differs, and saying which it was."""

from __future__ import annotations

import os
from pathlib import Path

from ..run import log


def ensure_file(path: Path, content: str | bytes, mode: int, uid: int | None = None, gid: int | None = None) -> bool:
    """path holds content with mode (and owner); True if anything changed.

    A new file is created with its final mode, so a secret is never readable
    by others even for a moment; a replaced one goes through a rename.
    """
    data = content.encode() if isinstance(content, str) else content
    changed = False
    try:
        same = path.read_bytes() == data
    except FileNotFoundError:
        same = False
    if not same:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        if uid is not None:
            os.chown(tmp, uid, gid if gid is not None else -1)
        os.replace(tmp, path)
        changed = True
    st = path.stat()
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
        changed = True
    if uid is not None and (st.st_uid != uid or (gid is not None and st.st_gid != gid)):
        os.chown(path, uid, gid if gid is not None else -1)
        changed = True
    return changed


def report(path: Path, changed: bool, what: str) -> str:
    line = f"{'wrote' if changed else 'unchanged'}: {what} ({path})"
    log(line)
    return line
