"""Bit-for-bit rebuilds: the rpm settings that make a package's bytes depend
on its inputs only, and comparisons that name the first difference.

What varies between two rpmbuild runs of the same spec and sources, on
rpm 4.18 (Debian) as on rpm 6 (Fedora 43), and what pins it:

* the build time (BUILDTIME tag): ``%use_source_date_epoch_as_buildtime``
  with SOURCE_DATE_EPOCH in the environment (the upstream commit's time);
  ``%source_date_epoch_from_changelog`` is the fallback where it is unset;
* the build host (BUILDHOST tag): ``%_buildhost``;
* file times newer than SOURCE_DATE_EPOCH (files the build writes):
  ``%clamp_mtime_to_source_date_epoch`` (rpm 4.18) and
  ``%build_mtime_policy clamp_to_source_date_epoch`` (its rpm 6 name);
* file times *older* than it are kept as they are, and modes copied from a
  source follow the umask it was written with: :func:`normalize_sources`
  sets both before rpmbuild runs;
* the payload: zstd with threads (``T``) gives the same bytes for any number
  of threads but other bytes than without, and rpm records the setting
  (PAYLOADFLAGS), so the setting is part of the configuration.

Debian's rpm defines the first three as 0, so they cannot come from a
macros file that only fills in what the host lacks: the spec sets them
(:func:`spec_lines`).
"""

from __future__ import annotations

import filecmp
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from .run import output

BUILDHOST = "reproducible"

SPEC_MACROS: tuple[tuple[str, str], ...] = (
    ("source_date_epoch_from_changelog", "1"),
    ("use_source_date_epoch_as_buildtime", "1"),
    ("clamp_mtime_to_source_date_epoch", "1"),
    ("build_mtime_policy", "clamp_to_source_date_epoch"),
    ("_buildhost", BUILDHOST),
)


def spec_lines() -> str:
    """``%global`` lines for the top of a spec."""
    return "".join(f"%global {name} {value}\n" for name, value in SPEC_MACROS)


def rpmbuild_env(source_date_epoch: int) -> dict[str, str]:
    return {"SOURCE_DATE_EPOCH": str(int(source_date_epoch))}


def normalize_sources(paths: Iterable[Path], source_date_epoch: int) -> None:
    """Give every source a fixed time and a mode that does not depend on the
    umask it was written with (0755 if anyone may execute it, else 0644)."""
    for path in paths:
        mode = path.stat().st_mode
        path.chmod(0o755 if mode & 0o111 else 0o644)
        os.utime(path, (source_date_epoch, source_date_epoch), follow_symlinks=False)


# --- comparisons ---------------------------------------------------------------

HEADER_TAGS = (
    "NAME", "EPOCH", "VERSION", "RELEASE", "ARCH", "LICENSE", "SUMMARY", "BUILDTIME", "BUILDHOST",
    "SOURCERPM", "RPMVERSION", "PLATFORM", "OPTFLAGS", "VENDOR", "PACKAGER", "URL", "COOKIE",
    "PAYLOADFORMAT", "PAYLOADCOMPRESSOR", "PAYLOADFLAGS",
)
LIST_QUERIES = {
    "provides": "[%{PROVIDENEVRS}\n]",
    "requires": "[%{REQUIRENEVRS}\n]",
    "conflicts": "[%{CONFLICTNEVRS}\n]",
    "changelog": "[%{CHANGELOGTIME} %{CHANGELOGNAME}\n%{CHANGELOGTEXT}\n]",
    "scriptlets": "%{PREIN}\n--\n%{POSTIN}\n--\n%{PREUN}\n--\n%{POSTUN}\n",
}
FILE_FIELDS = ("size", "mtime", "digest", "mode", "user", "group", "link", "flags")
FILE_QUERY = "[%{FILENAMES}\t%{FILESIZES}\t%{FILEMTIMES}\t%{FILEDIGESTS}\t%{FILEMODES:octal}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\t%{FILELINKTOS}\t%{FILEFLAGS}\n]"
SEP = "\x1f"


def _query(rpm: Path, fmt: str) -> str:
    return output(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, str(rpm)], quiet=True)


def first_difference(a: Path, b: Path) -> str | None:
    """None if the two files are the same bytes, else one line naming the
    first thing that differs: a header tag, a dependency or changelog list,
    a file's attribute, or else where in the bytes."""
    if filecmp.cmp(a, b, shallow=False):
        return None
    fmt = SEP.join(f"%{{{tag}}}" for tag in HEADER_TAGS)
    for tag, va, vb in zip(HEADER_TAGS, _query(a, fmt).split(SEP), _query(b, fmt).split(SEP)):
        if va != vb:
            return f"header {tag}: {va!r} != {vb!r}"
    for what, fmt in LIST_QUERIES.items():
        la, lb = _query(a, fmt), _query(b, fmt)
        if la != lb:
            first = next((x, y) for x, y in zip(la.splitlines() + [""], lb.splitlines() + [""]) if x != y)
            return f"{what}: {first[0]!r} != {first[1]!r}"
    fa, fb = _files(a), _files(b)
    for path in sorted(fa.keys() | fb.keys()):
        if path not in fb:
            return f"file {path} only in {a.name} ({a.parent})"
        if path not in fa:
            return f"file {path} only in {b.name} ({b.parent})"
        for field, va, vb in zip(FILE_FIELDS, fa[path], fb[path]):
            if va != vb:
                return f"file {path}: {field} {va} != {vb}"
    offset = _first_differing_byte(a, b)
    return f"headers and files agree, the bytes differ from offset {offset} (signature, or the payload's compression)"


def _files(rpm: Path) -> dict[str, list[str]]:
    files = {}
    for line in _query(rpm, FILE_QUERY).splitlines():
        path, *fields = line.split("\t")
        files[path] = fields
    return files


def _first_differing_byte(a: Path, b: Path) -> int:
    offset = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                n = min(len(ca), len(cb))
                return offset + next((i for i in range(n) if ca[i] != cb[i]), n)
            if not ca:
                return offset
            offset += len(ca)


def first_binary_difference(a: Path, b: Path) -> str | None:
    """None if equal, else where two builds of a binary first differ,
    with the ELF section that holds that byte."""
    if filecmp.cmp(a, b, shallow=False):
        return None
    offset = _first_differing_byte(a, b)
    size_a, size_b = a.stat().st_size, b.stat().st_size
    section = _elf_section_at(a, offset)
    where = f" (section {section})" if section else ""
    sizes = f"; sizes {size_a} and {size_b}" if size_a != size_b else ""
    return f"first difference at byte {offset}{where}{sizes}"


def _elf_section_at(path: Path, offset: int) -> str:
    """Name of the ELF64 little-endian section containing offset, or ''."""
    with path.open("rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return ""
        shoff, = struct.unpack_from("<Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
        if not sections or shstrndx >= len(sections):
            return ""
        f.seek(sections[shstrndx][4])
        names = f.read(sections[shstrndx][5])
    for name, kind, _flags, _addr, sh_offset, sh_size in sections:
        if kind != 8 and sh_offset <= offset < sh_offset + sh_size:  # 8: SHT_NOBITS
            return names[name: names.index(b"\0", name)].decode(errors="replace")
    if offset < 64:
        return "ELF header"
    return "section header table" if offset >= shoff else ""


def leaked_paths(binary: Path, prefixes: Iterable[str]) -> list[str]:
    """Which of the given build paths (checkout, cache, CARGO_HOME) appear in
    the binary: each one makes the bytes depend on where it was built."""
    data = binary.read_bytes()
    return [p for p in prefixes if p and p.encode() in data]
