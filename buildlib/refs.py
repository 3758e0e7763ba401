"""Refs of upstream (release tags, commit ids) and their RPM versions.

A ref from anywhere (config, environment, the network) passes through
:func:`parse_ref` before any command or spec sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from .run import Refused

# [0-9], never \d: \d also matches full-width and Arabic-Indic digits.
TAG = re.compile(r"^v(?P<base>(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3}))(-rc(?P<rc>[1-9][0-9]{0,3}))?\Z")
COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
EVR = re.compile(r"^(?P<epoch>[0-9]+):(?P<version>[A-Za-z0-9._+~^]+)-(?P<release>[A-Za-z0-9._+~^]+)\Z")


class RefError(Refused):
    pass


@dataclass(frozen=True)
class Ref:
    """A validated ref: a release tag or a full commit id."""

    text: str

    @property
    def is_tag(self) -> bool:
        return TAG.match(self.text) is not None

    @property
    def is_commit(self) -> bool:
        return COMMIT.match(self.text) is not None


def parse_ref(text: str) -> Ref:
    if not isinstance(text, str):
        raise RefError(f"ref {text!r} is not a string")
    if text.isascii() and (TAG.match(text) or COMMIT.match(text)):
        return Ref(text)
    raise RefError(
        f"refusing ref {ascii(text[:60])}: expected a release tag vX.Y.Z or vX.Y.Z-rcN, or a full 40-hex commit id"
    )


def tag_version(tag: str) -> str:
    """Upstream version of a tag: v0.9.2 -> 0.9.2, v0.9.2-rc1 -> 0.9.2-rc1."""
    m = TAG.match(tag)
    if not m:
        raise RefError(f"refusing tag {tag!r}: expected vX.Y.Z or vX.Y.Z-rcN")
    return tag[1:]


def rpm_version_of_tag(tag: str) -> str:
    """v0.9.2 -> 0.9.2; v0.9.2-rc1 -> 0.9.2~rc1 (sorts before the release)."""
    m = TAG.match(tag)
    if not m:
        raise RefError(f"refusing tag {tag!r}: expected vX.Y.Z or vX.Y.Z-rcN")
    return m.group("base") + (f"~rc{m.group('rc')}" if m.group("rc") else "")


def snapshot_version(last_tag: str, day: date, commits_since: int, commit: str) -> str:
    """<base>^<YYYYMMDD>.<n>git<sha7>: after the last tag, before the next one.

    Fedora's snapshot form (Versioning Guidelines: ``^<date>git<short
    hash>``, the date the commit's), with n, the commits since the last tag,
    between them: it orders two snapshots of one day, which the date and a
    hash cannot (rpm compares 20250306.2git… and 20250306.10git… by 2 < 10).
    The base is the last tag's version with any rc kept as ~rcN, so a
    snapshot after v0.9.3-rc1 still sorts before 0.9.3.  An earlier form,
    ``.<n>.g<sha7>``, sorts below this one for the same commit.
    """
    if not COMMIT.match(commit):
        raise RefError(f"refusing commit {commit!r}: expected 40 hex digits")
    if commits_since < 0:
        raise RefError(f"commits since {last_tag} must not be negative")
    return f"{rpm_version_of_tag(last_tag)}^{day:%Y%m%d}.{commits_since}git{commit[:7]}"


RPM_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(~rc[0-9]+)?(\^[0-9]{8}\.[0-9]+git[0-9a-f]{7})?\Z")


def check_rpm_version(version: str) -> str:
    if not RPM_VERSION.match(version):
        raise RefError(f"refusing RPM version {version!r}: expected X.Y.Z, X.Y.Z~rcN or X.Y.Z^YYYYMMDD.NgitSHA7")
    return version


def compare_evr(a: str, b: str) -> int:
    """rpm's own order of two EVR strings ("E:V-R"): <0, 0 or >0; the
    project's one version comparison."""
    import rpm  # Debian's python3-rpm (through the rpm shim in .venv); imported on first use

    def label(evr: str) -> tuple[str, str, str]:
        m = EVR.match(evr)
        if not m:
            raise RefError(f"unexpected version {evr!r}")
        return m.group("epoch"), m.group("version"), m.group("release")

    return rpm.labelCompare(label(a), label(b))
