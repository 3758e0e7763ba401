"""Reading rpm-md repository metadata (``repodata/``), for the publish (a
channel's fetched metadata) and the poll (a channel's metadata over HTTP)
alike, with createrepo_c's own parser (the ``createrepo_c`` Python module).

Only ``repomd.xml`` and the primary metadata are read: which packages (name,
epoch, version, release, file, package id, and the spec digest our packages
provide) a channel lists.  Our own
``repodata/mrpm-index.json`` (header digests by package id, see
:mod:`.publisher`) is read beside them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..run import Refused

INDEX_NAME = "mrpm-index.json"
"""Our package index in each channel's repodata/: header digest by package id."""
SPEC_PROVIDE = "mistralrs-rpm(spec-sha256)"
"""The provide that carries, as its version, the SHA-256 of the spec a
package was built from with its Release left out (buildlib/pipeline/spec.py):
how the spec stage tells, from a channel's metadata alone, whether the
channel already holds the package it is about to make."""
MAX_PACKAGES = 100_000
"""More packages than any channel of ours holds: the parse stops there."""
_COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".xml")


class MetadataError(Refused):
    pass


def _one_line(e: Exception) -> str:
    """createrepo_c's message in one line: its parse errors carry libxml2's
    line break inside, as in ``(Document is empty\\n)``."""
    return " ".join(str(e).split())


def _cr():
    # Imported on first use: a no-op doit run never reads metadata.
    try:
        import createrepo_c
    except ImportError:
        raise MetadataError("the createrepo_c Python module is missing: run scripts/bootstrap"
                            " (Debian: python3-createrepo-c)") from None
    return createrepo_c


@dataclass(frozen=True)
class Published:
    """One package a channel's primary metadata lists."""

    name: str
    epoch: str
    version: str
    release: str
    href: str
    """The file's location below the channel directory."""
    pkgid: str
    """The package file's checksum (of ``checksum_type``)."""
    checksum_type: str = "sha256"
    size: int = -1
    """The package file's size in bytes."""
    mtime: int = -1
    """The package file's modification time when the metadata was made
    (rsync keeps it on the host)."""
    spec_sha256: str = ""
    """The version of its ``SPEC_PROVIDE`` provide ("" if it has none: not
    ours, or made before packages carried it)."""

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}"


@dataclass
class Metadata:
    packages: dict[str, Published] = field(default_factory=dict)
    """by href (file name in the channel directory)"""
    index: dict[str, str] = field(default_factory=dict)
    """pkgid -> SHA-256 of the main header"""
    files: set[str] = field(default_factory=set)
    """every file name in repodata/"""


@dataclass(frozen=True)
class Location:
    """Where repomd.xml says a metadata file is, and its checksum."""

    href: str
    checksum_type: str
    checksum: str


def primary_location(repomd: Path) -> Location:
    """The primary metadata's entry in repomd.xml."""
    cr = _cr()
    try:
        records = cr.Repomd(str(repomd)).records
    except cr.CreaterepoCError as e:
        raise MetadataError(f"repomd.xml: {_one_line(e)}") from None
    for record in records:
        if record.type == "primary":
            href = record.location_href or ""
            name = href.rsplit("/", 1)[-1]
            if (not href.startswith("repodata/") or "/" in href[len("repodata/"):] or name.startswith(".")
                    or not name.endswith(_COMPRESSED)):
                raise MetadataError(f"repomd.xml: refusing primary location {href!r}")
            return Location(href, record.checksum_type or "", record.checksum or "")
    raise MetadataError("repomd.xml has no primary metadata")


def referenced_files(repomd: Path) -> set[str]:
    """The file names in repodata/ that repomd.xml lists."""
    cr = _cr()
    try:
        records = cr.Repomd(str(repomd)).records
    except cr.CreaterepoCError as e:
        raise MetadataError(f"repomd.xml: {str(e).strip()}") from None
    return {(r.location_href or "").rsplit("/", 1)[-1] for r in records}


def read_primary(path: Path) -> dict[str, Published]:
    """The packages of a primary metadata file (plain or compressed), by href."""
    cr = _cr()
    packages: dict[str, Published] = {}
    too_many = False

    def take(pkg) -> bool:
        nonlocal too_many
        if len(packages) >= MAX_PACKAGES:
            too_many = True
            return False
        # provides are (name, flags, epoch, version, release, pre)
        spec = next((p[3] or "" for p in pkg.provides if p[0] == SPEC_PROVIDE), "")
        packages[pkg.location_href] = Published(pkg.name, pkg.epoch or "0", pkg.version, pkg.release,
                                                pkg.location_href, pkg.pkgId, (pkg.checksum_type or "").lower(),
                                                int(pkg.size_package or -1), int(pkg.time_file or -1), spec)
        return True

    with tempfile.TemporaryDirectory(prefix="mrpm-primary-") as tmp:
        source = path
        if path.name.endswith(".zst"):
            # createrepo_c 0.17 (Debian 12) reads gz, xz and bz2 but not
            # zstd, which Fedora's createrepo_c 1.x writes by default.
            source = _unzstd(path, Path(tmp) / "primary.xml")
        try:
            cr.xml_parse_primary(str(source), pkgcb=take, do_files=False, warningcb=None)
        except cr.CreaterepoCError as e:
            raise MetadataError(f"{path.name}: {_one_line(e)}") from None
    if too_many:
        raise MetadataError(f"{path.name}: more than {MAX_PACKAGES} packages; refusing to read on")
    return packages


def _unzstd(path: Path, dest: Path) -> Path:
    import zstandard

    try:
        with path.open("rb") as src, dest.open("wb") as out:
            zstandard.ZstdDecompressor().copy_stream(src, out)
    except zstandard.ZstdError as e:
        raise MetadataError(f"{path.name}: cannot decompress: {e}") from None
    return dest


def read_metadata(repodata: Path) -> Metadata:
    """A channel's metadata fetched into ``repodata`` (empty if there is none)."""
    md = Metadata()
    if not (repodata / "repomd.xml").exists():
        return md
    md.files = {p.name for p in repodata.iterdir() if p.is_file()}
    md.packages = read_primary(repodata.parent / primary_location(repodata / "repomd.xml").href)
    index = repodata / INDEX_NAME
    if index.exists():
        md.index = json.loads(index.read_text()).get("header_sha256", {})
    return md


def versions_of(packages: dict[str, Published]) -> dict[str, frozenset[str]]:
    """package name -> the versions (without release) listed."""
    versions: dict[str, set[str]] = {}
    for pkg in packages.values():
        versions.setdefault(pkg.name, set()).add(pkg.version)
    return {name: frozenset(v) for name, v in versions.items()}
