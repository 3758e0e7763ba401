"""publish.target (a local directory or user@host:/path) and durations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import patterns as P
from .schema import ConfigError, show


@dataclass(frozen=True)
class LocalTarget:
    """publish.target as a local directory (absolute)."""

    path: Path

    @property
    def is_remote(self) -> bool:
        return False

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class SshTarget:
    """publish.target as user@host:/path, reached with rsync over SSH."""

    user: str
    host: str
    path: PurePosixPath

    @property
    def is_remote(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.path}"


Target = LocalTarget | SshTarget


def parse_target(text: str, key: str = "publish.target") -> Target:
    """A clean absolute local directory, or user@host:/absolute/path;
    anything else (a relative path, '..', a shell or ssh option, an rsync
    host:path in disguise) is refused, never taken for a local name."""
    m = P.SSH_TARGET.match(text)
    path = m.group("path") if m else text
    if not (m or P.LOCAL_TARGET.match(text)) or any(part in (".", "..") for part in path.split("/")):
        raise ConfigError(f"publish.target = {show(text)}: expected {TARGET_FORM}")
    clean = PurePosixPath(path)  # collapses "//" and drops a trailing "/"
    if m:
        return SshTarget(m.group("user"), m.group("host"), clean)
    return LocalTarget(Path(clean))


TARGET_FORM = "an absolute directory such as /srv/mistralrs-rpm, or user@host:/absolute/path"
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, key: str = "") -> int:
    """"90", "90s", "15m", "1h", "2d" -> seconds."""
    m = P.DURATION.match(text)
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: int) -> str:
    """Seconds in dnf's (and config.toml's) shortest form: 3600 -> "1h"."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return str(seconds)
