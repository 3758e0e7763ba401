"""What one cargo run says about itself: its JSON messages and its errors.

`cargo build --message-format=json-render-diagnostics` writes one JSON object
a line on stdout.  A ``compiler-artifact`` message names the files each unit
of *this* run produced (fresh or rebuilt), and for a bin target the
executable's path: that path, not a guess under target/release/, is what the
pipeline packages.  Diagnostics stay rendered on stderr, as people read them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..run import UserError

# cargo's metadata hash in unit file names: libfoo-0123456789abcdef.rlib,
# build/foo-0123456789abcdef/out, .fingerprint/foo-0123456789abcdef
UNIT_HASH = re.compile(r"-([0-9a-f]{16})(?=$|[./])")


@dataclass(frozen=True)
class Artifact:
    """One compiler-artifact message."""

    package_id: str
    package: str
    version: str
    target_name: str
    kinds: tuple[str, ...]
    filenames: tuple[str, ...]
    executable: str | None
    fresh: bool


@dataclass(frozen=True)
class CargoRun:
    artifacts: tuple[Artifact, ...]
    out_dirs: tuple[str, ...]
    """OUT_DIRs of the build scripts this run used."""
    succeeded: bool | None
    """The build-finished message's verdict; None when cargo sent none."""


def package_name_version(package_id: str) -> tuple[str, str]:
    """(name, version) of a cargo package id, in either of cargo's forms:
    ``name 1.2.3 (source)`` (before 1.77) and ``source#name@1.2.3`` /
    ``path+file:///…/name#1.2.3`` (package id spec, since 1.77)."""
    old = re.fullmatch(r"(\S+) (\S+) \((.+)\)", package_id)
    if old:
        return old.group(1), old.group(2)
    url, hash_, fragment = package_id.rpartition("#")
    if hash_:
        if "@" in fragment:
            name, _, version = fragment.rpartition("@")
            return name, version
        return url.rstrip("/").rsplit("/", 1)[-1], fragment
    raise UserError(f"cargo reported a package id of an unknown form: {package_id[:200]!r}")


def parse_messages(lines: Iterable[str]) -> CargoRun:
    """The messages of one cargo run; lines that are not JSON objects (a
    build script may print to stdout in old cargo versions) are skipped."""
    artifacts, out_dirs, succeeded = [], [], None
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        reason = msg.get("reason") if isinstance(msg, dict) else None
        if reason == "compiler-artifact":
            target = msg.get("target") or {}
            name, version = package_name_version(str(msg.get("package_id", "")))
            artifacts.append(Artifact(
                package_id=str(msg.get("package_id")),
                package=name,
                version=version,
                target_name=str(target.get("name", "")),
                kinds=tuple(str(k) for k in target.get("kind", ())),
                filenames=tuple(str(f) for f in msg.get("filenames") or ()),
                executable=msg.get("executable") if isinstance(msg.get("executable"), str) else None,
                fresh=bool(msg.get("fresh")),
            ))
        elif reason == "build-script-executed" and isinstance(msg.get("out_dir"), str):
            out_dirs.append(msg["out_dir"])
        elif reason == "build-finished":
            succeeded = bool(msg.get("success"))
    return CargoRun(artifacts=tuple(artifacts), out_dirs=tuple(out_dirs), succeeded=succeeded)


def read_messages(path: Path) -> CargoRun:
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse_messages(f)


def executable_of(run: CargoRun, package: str, binary: str) -> Artifact:
    """The artifact of bin target `binary` of `package` that this run made;
    a clear error naming what it did build otherwise."""
    bins = [a for a in run.artifacts if a.package == package and "bin" in a.kinds and a.executable]
    for artifact in bins:
        if artifact.target_name == binary:
            return artifact
    if bins:
        names = ", ".join(sorted({a.target_name for a in bins}))
        raise UserError(f"cargo built package {package} {bins[0].version} with binary {names}, not {binary!r}:"
                        f" fix the row for this version in upstream.programs")
    built = ", ".join(sorted({a.package for a in run.artifacts})) or "nothing"
    raise UserError(f"cargo reported no binary of package {package} (it built: {built[:300]}):"
                    f" check upstream.programs for this version")


def unit_hashes(run: CargoRun, executable: Path | None = None) -> set[str]:
    """cargo's metadata hashes of every unit this run used: the names under
    target/<profile>/{deps,build,.fingerprint} that belong to this build.

    A bin's uplifted executable (target/release/<name>) carries no hash; it is
    a hard link of deps/<name>-<hash>, found by its inode."""
    hashes = set()
    for artifact in run.artifacts:
        for filename in artifact.filenames:
            hashes.update(UNIT_HASH.findall(Path(filename).name))
            hashes.update(UNIT_HASH.findall(Path(filename).parent.name))
    for out_dir in run.out_dirs:
        hashes.update(UNIT_HASH.findall(Path(out_dir).parent.name))
    if executable is not None and executable.exists():
        inode = executable.stat().st_ino
        deps = executable.parent / "deps"
        for candidate in deps.glob(f"{executable.name.replace('-', '_')}-*"):
            if candidate.stat().st_ino == inode:
                hashes.update(UNIT_HASH.findall(candidate.name))
        for candidate in deps.glob(f"{executable.name}-*"):
            if candidate.stat().st_ino == inode:
                hashes.update(UNIT_HASH.findall(candidate.name))
    return hashes


# --- a failed build in one line -----------------------------------------------

_PANIC = re.compile(r"panicked at ")
_SPECIFIC_ERROR = re.compile(r"^error(\[E\d+\])?: (?!could not compile|failed to run custom build command"
                             r"|aborting due to)")
_GENERIC_ERROR = re.compile(r"^error(\[E\d+\])?: ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def failure_line(stderr: str) -> str:
    """The line of cargo's stderr that says why the build failed: a panic
    (with its message), else the first compiler error (with its location),
    else cargo's own error; never backtrace frames."""
    lines = [_ANSI.sub("", line).rstrip() for line in stderr.replace("\r", "\n").splitlines()]
    stripped = [line.strip() for line in lines]
    for i, line in enumerate(stripped):
        if _PANIC.search(line):
            message = line
            # Since Rust 1.73 the message follows on the next line(s).
            following = next((s for s in stripped[i + 1:i + 3] if s), "")
            if line.endswith(":") and following and not following.startswith(("note:", "stack backtrace")):
                message = f"{line} {following}"
            return message
    for pattern in (_SPECIFIC_ERROR, _GENERIC_ERROR):
        for i, line in enumerate(stripped):
            if pattern.match(line):
                where = next((s for s in stripped[i + 1:i + 3] if s.startswith("-->")), "")
                return f"{line} {where}".strip()
    tail = [s for s in stripped if s]
    return " | ".join(tail[-3:])
