"""Files named by upstream content, which the licenses stage copies into
the package: each crate's license files, upstream's own license texts, and
the evidence of the non-crate code declared in config.

Upstream's own license text is read from the tree: the file the packaged
crate's ``license-file`` names, else every ``LICENSE*``/``COPYING*`` file at
the workspace root; a tree with neither is refused.

Every file this stage copies into the package is named by upstream content
(a ``license-file`` key, a file name in a crate's directory, an evidence
path), so none is trusted: each must resolve, after every symlink, inside its
crate's source (a registry or git crate: its own directory; a workspace
member or path dependency: upstream's tree), be a regular file (a FIFO or
device is refused without blocking on it) and hold at most
:data:`UPSTREAM_FILE_LIMIT` bytes; otherwise the stage stops with one line
naming the crate and the path.  The crates' directories themselves (from
cargo metadata's manifest paths) must lie in upstream's tree or in cargo's
registry and git checkouts under CARGO_HOME (:mod:`buildlib.pipeline.bundled`).

Each ``[[bundled]]`` entry names its evidence (a path in upstream's tree,
and optionally a text that file must contain); an entry whose evidence the
tree at the packaged commit lacks is left out, with a log line naming it:
upstream dropping a component is legitimate, and a package must not claim
code (or a license term) its source does not have.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import BundledComponent
from ..run import UserError, log

LICENSE_FILE_NAME = re.compile(r"^(licen[cs]e|copying|copyright|notice|unlicense)", re.IGNORECASE)
SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
UPSTREAM_LICENSE_NAME = re.compile(r"^(licen[cs]e|copying)", re.IGNORECASE)
# The most a file named by upstream may hold.  The longest license texts
# (AGPL-3.0, ~34 KiB) and a crate's NOTICE files fit thirty times over; a
# file past this is no license text but a device, a core dump or an attempt
# to bloat every package, and reading it whole would cost memory.
UPSTREAM_FILE_LIMIT = 1 << 20


def contained(path: Path, root: Path, what: str) -> Path:
    """path's real location (every symlink of every component resolved),
    which must lie inside root's; otherwise a one-line UserError naming
    ``what`` (the crate) and the path."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(real_root):
        raise UserError(f"{what}: {path} resolves to {real}, outside {real_root}: refusing to package a file from"
                        " outside its source")
    return real


def read_contained(path: Path, root: Path, what: str, limit: int = UPSTREAM_FILE_LIMIT) -> bytes:
    """The bytes of path, a regular file inside root (after symlinks) of at
    most ``limit`` bytes.  The checked location is opened with O_NOFOLLOW
    (a symlink swapped in since is refused) and O_NONBLOCK (a FIFO does not
    block the open), and the type is checked on the open descriptor."""
    real = contained(path, root, what)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UserError(f"{what}: cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what}: {path} is not a regular file; refusing to read it")
        data = f.read(limit + 1)
    if len(data) > limit or info.st_size > limit:
        raise UserError(f"{what}: {path} is larger than {limit // 1024} KiB; refusing to package it")
    return data


def _regular_file(path: Path, root: Path, what: str) -> bool:
    """Whether path (inside root, after symlinks) is a file to copy: False
    for a missing path or a directory, a UserError for anything else that is
    not a regular file (a FIFO, a socket, a device)."""
    real = contained(path, root, what)
    try:
        mode = os.lstat(real).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UserError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        return False
    if not stat.S_ISREG(mode):
        raise UserError(f"{what}: {path} is not a regular file; refusing to package it")
    return True


@dataclass(frozen=True)
class LicenseText:
    """One license file to pack: where it is, the directory it must stay in,
    whose it is (for messages) and its path in the license archive."""

    source: Path
    root: Path
    owner: str
    dest: str

    def read(self) -> bytes:
        return read_contained(self.source, self.root, self.owner)


@dataclass(frozen=True)
class LicenseFiles:
    """What :func:`buildlib.pipeline.bundled.write_license_files` wrote, relative to its directory."""

    license_dependencies: str = "LICENSE.dependencies"
    vendor_manifest: str = "cargo-vendor.txt"
    texts: tuple[str, ...] = field(default_factory=tuple)


# Names the stage writes itself at the top of the license archive: an
# upstream license file of one of these names would overwrite ours.
RESERVED_NAMES = frozenset({LicenseFiles.license_dependencies, LicenseFiles.vendor_manifest, "crates"})


def crate_license_files(what: str, directory: Path, root: Path, license_file: str) -> tuple[Path, ...]:
    """The crate's license files: those named like one in its directory, and
    the one its license-file key names, each checked by _regular_file."""
    found = set()
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        entries = []
    for path in entries:
        if LICENSE_FILE_NAME.match(path.name) and SAFE_FILE_NAME.match(path.name) and _regular_file(path, root, what):
            found.add(path)
    if license_file:
        path = directory / license_file  # an absolute license_file replaces directory: contained() refuses it
        if _regular_file(path, root, what) and SAFE_FILE_NAME.match(path.name):
            found.add(path)
    names = [p.name for p in found]
    # Two files of one name (LICENSE and sub/LICENSE): keep the crate-root one.
    return tuple(sorted((p for p in found if names.count(p.name) == 1 or p.parent == directory), key=lambda p: p.name))


def upstream_licenses(workspace: Path, package: dict) -> tuple[Path, ...]:
    """Upstream's license texts at this commit: the packaged crate's
    license-file, else LICENSE*/COPYING* at the workspace root."""
    what = f"the packaged crate {package['name']}"
    if package.get("license_file"):
        path = Path(package["manifest_path"]).parent / package["license_file"]
        if not _regular_file(path, workspace, what):
            raise UserError(f"{what}: its license-file {package['license_file']} is not a file in upstream's tree")
        found = [path]
    else:
        try:
            entries = sorted(workspace.iterdir())
        except OSError as exc:
            raise UserError(f"cannot list upstream's tree {workspace}: {exc.strerror}") from None
        found = [p for p in entries if UPSTREAM_LICENSE_NAME.match(p.name)
                 and _regular_file(p, workspace, "upstream's license text")]
    if not found:
        raise UserError(f"upstream's tree has no license text: {package['name']} names no license-file and the"
                        f" workspace root ({workspace}) holds no LICENSE* or COPYING* file")
    for path in found:
        if not SAFE_FILE_NAME.match(path.name) or path.name in RESERVED_NAMES:
            raise UserError(f"upstream's license file {path.name!r}: expected a plain file name other than"
                            f" {', '.join(sorted(RESERVED_NAMES))}")
    return tuple(found)


def present_components(workspace: Path, components: Iterable[BundledComponent]) -> tuple[BundledComponent, ...]:
    """The [[bundled]] components whose evidence upstream's tree holds; each
    other one is left out with a log line.  Evidence paths are named by
    config, but resolve inside the tree, whose symlinks upstream controls:
    they go through the same checks as license files."""
    present = []
    for comp in components:
        evidence = comp.evidence
        if evidence is None:
            raise UserError(f"bundled component {comp.name}: no evidence configured")
        what = f"bundled component {comp.name}'s evidence"
        path = workspace / evidence.path
        real = contained(path, workspace, what)
        if not os.path.lexists(real):
            log(f"licenses: left out bundled component {comp.name}: upstream's tree has no {evidence.path}")
            continue
        if evidence.contains:
            text = read_contained(path, workspace, what)
            if evidence.contains.encode() not in text:
                log(f"licenses: left out bundled component {comp.name}: {evidence.path} does not contain"
                    f" {evidence.contains!r}")
                continue
        present.append(comp)
    return tuple(present)
