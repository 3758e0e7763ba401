"""The packages in dist/: what rpm says they are, and rpm's version order."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..refs import EVR, compare_evr
from ..run import run
from .channels import BASEARCH, NOARCH, PublishError, channels_for

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~^-]*$")
SIGNATURE_TAGS = ("RSAHEADER", "DSAHEADER", "SIGPGP", "SIGGPG")
"""Where rpm 4.x keeps a package's OpenPGP signatures."""


@dataclass(frozen=True)
class LocalRpm:
    path: Path
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    header_sha256: str
    signers: tuple[str, ...] = ()
    """Key IDs (16 hex digits, lower case) of the signatures the package
    already carries; dist/ normally holds unsigned packages."""

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}"

    def channels(self, configured: Sequence[str]) -> list[str]:
        return channels_for(self.name, self.version, configured)


def read_rpms(paths: Sequence[Path]) -> list[LocalRpm]:
    """Name, EVR and main-header digest of each package (one rpm call)."""
    if not paths:
        return []
    signatures = "".join(f"\\t%|{tag}?{{%{{{tag}:pgpsig}}}}:{{-}}|" for tag in SIGNATURE_TAGS)
    qf = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SHA256HEADER}" + signatures + "\\n"
    proc = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, *paths], capture=True, check=False, quiet=True)
    lines = proc.stdout.decode().splitlines()
    if proc.returncode != 0 or len(lines) != len(paths):
        raise PublishError(f"rpm could not read the packages in {paths[0].parent}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    rpms = []
    for path, line in zip(paths, lines):
        name, epoch, version, release, arch, digest, *sigs = line.split("\t")
        signers = tuple(sorted({k.lower() for sig in sigs for k in re.findall(r"Key ID ([0-9a-fA-F]{16})", sig)}))
        if any(sig != "-" for sig in sigs) and not signers:
            raise PublishError(f"{path.name}: carries a signature rpm cannot name the key of ({'; '.join(sigs)}); "
                               "dist/ takes unsigned packages")
        if not FILE_NAME.match(path.name):
            raise PublishError(f"{path.name}: unexpected characters in a package file name")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PublishError(f"{path.name}: has no SHA-256 header digest; rebuild it with rpm 4.14 or newer")
        if arch == "noarch" and name not in NOARCH:
            raise PublishError(f"{path.name}: noarch, but the repository is {BASEARCH}-only; the only noarch "
                               f"package it takes is ours ({', '.join(sorted(NOARCH))})")
        if arch not in (BASEARCH, "noarch"):
            raise PublishError(f"{path.name}: architecture {arch}, but the repository is {BASEARCH}-only")
        rpms.append(LocalRpm(path, name, epoch, version, release, arch, digest, signers))
    return rpms


def newest_first(evrs: Sequence[str]) -> list[str]:
    """EVR strings ("E:V-R") newest first, in rpm's own order."""
    if len(evrs) < 2:
        return list(evrs)
    for evr in evrs:
        if not EVR.match(evr):
            raise PublishError(f"unexpected version {evr!r}")
    return sorted(evrs, key=functools.cmp_to_key(compare_evr), reverse=True)


SHA256_ALGO = "8"
"""rpm's FILEDIGESTALGO for SHA-256 (PGPHASHALGO_SHA256)."""


def file_list(rpm: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """(rpm's FILEDIGESTALGO, [(path, octal mode, digest)]) of what the
    package installs, from its header, without unpacking it."""
    qf = "%{FILEDIGESTALGO}\\n[%{FILENAMES}\\t%{FILEMODES:octal}\\t%{FILEDIGESTS}\\n]"
    proc = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, rpm], capture=True, check=False, quiet=True)
    lines = proc.stdout.decode(errors="replace").splitlines()
    if proc.returncode != 0 or not lines:
        raise PublishError(f"rpm could not read the file list of {rpm.name}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    files = []
    for line in lines[1:]:
        name, mode, digest = line.split("\t")
        files.append((name, mode, digest))
    return lines[0], files


def installed_file_sha256(rpm: Path, installed: str) -> str | None:
    """The SHA-256 rpm records for the file the package installs at
    ``installed``; None where the package has no such file.  A package whose
    file digests are not SHA-256 is refused (rpm 4.14+ writes SHA-256)."""
    algo, files = file_list(rpm)
    if algo != SHA256_ALGO:
        raise PublishError(f"{rpm.name}: its file digests are not SHA-256 (algorithm {algo}); rebuild it")
    return next((digest for name, _, digest in files if name == installed), None)

