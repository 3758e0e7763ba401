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
import re
from collections.abc import Iterable
from dataclasses import dataclass
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


# Sections whose bytes are computed from the rest of the file: they differ
# whenever anything else does, so they are never the difference to name.
# .note.gnu.build-id is a hash of the linked output; .gnu_debuglink holds the
# CRC of the separate debug file.
DERIVED_SECTIONS = frozenset({".note.gnu.build-id", ".gnu_debuglink"})
_SECTION_LINE = re.compile(r"^\s*\[\s*(\d+)\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s")
_SYMBOL_LINE = re.compile(r"^\s*\d+:\s+([0-9a-f]+)\s+(0x[0-9a-f]+|\d+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)\s+(.+?)\s*$")


@dataclass(frozen=True)
class Section:
    name: str
    kind: str
    """readelf's type: PROGBITS, NOBITS (no bytes in the file), NOTE, ..."""
    address: int
    offset: int
    size: int

    @property
    def file_size(self) -> int:
        return 0 if self.kind == "NOBITS" else self.size


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int


def elf_sections(path: Path) -> list[Section]:
    """The sections of an ELF file as readelf lists them (any class and byte
    order), in file order; [] for a file that is not ELF."""
    listing = output(["readelf", "--section-headers", "--wide", str(path)], quiet=True, check=False,
                     env={"LC_ALL": "C"})
    sections = []
    for line in listing.splitlines():
        m = _SECTION_LINE.match(line)
        if m and m.group(3) != "NULL":
            sections.append(Section(m.group(2), m.group(3), int(m.group(4), 16), int(m.group(5), 16),
                                    int(m.group(6), 16)))
    return sorted(sections, key=lambda s: s.offset)


def elf_symbols(path: Path) -> list[Symbol]:
    """The sized symbols of .symtab and .dynsym (demangled); [] where the
    binary has none (stripped)."""
    listing = output(["readelf", "--syms", "--wide", "--demangle", str(path)], quiet=True, check=False,
                     env={"LC_ALL": "C"})
    symbols = []
    for line in listing.splitlines():
        m = _SYMBOL_LINE.match(line)
        if m and m.group(3) in ("OBJECT", "FUNC", "TLS", "COMMON") and m.group(4) not in ("UND", "ABS"):
            size = int(m.group(2), 0)
            if size:
                symbols.append(Symbol(m.group(5), int(m.group(1), 16), size))
    return symbols


def symbol_at(symbols: Iterable[Symbol], address: int) -> str:
    """'name+0xN' of the symbol whose extent holds address, or ''."""
    for symbol in symbols:
        if symbol.address <= address < symbol.address + symbol.size:
            return f"{symbol.name}+{address - symbol.address:#x}"
    return ""


def _first_differing_range(fa, fb, offset_a: int, offset_b: int, size_a: int, size_b: int) -> int | None:
    """Index of the first differing byte of two ranges of two open files
    (the shorter one's length where one is a prefix of the other), or None."""
    done = 0
    size = min(size_a, size_b)
    fa.seek(offset_a)
    fb.seek(offset_b)
    while done < size:
        n = min(1 << 20, size - done)
        ca, cb = fa.read(n), fb.read(n)
        if ca != cb:
            return done + next((i for i in range(min(len(ca), len(cb))) if ca[i] != cb[i]), min(len(ca), len(cb)))
        done += n
    return None if size_a == size_b else size


def first_binary_difference(a: Path, b: Path) -> str | None:
    """None if equal, else where two builds of a binary first differ: the
    first ELF section in file order whose bytes differ, leaving out
    :data:`DERIVED_SECTIONS`, with the offset in the section and in the file
    and the symbol there where the symbol table has one; else the ELF
    headers; else that only a derived section (the build id) differs."""
    if filecmp.cmp(a, b, shallow=False):
        return None
    size_a, size_b = a.stat().st_size, b.stat().st_size
    sizes = f"; sizes {size_a} and {size_b}" if size_a != size_b else ""
    sections_a, sections_b = elf_sections(a), elf_sections(b)
    if not sections_a or not sections_b:
        return f"first difference at byte {_first_differing_byte(a, b)} (not ELF){sizes}"
    by_name = {s.name: s for s in sections_b}
    with a.open("rb") as fa, b.open("rb") as fb:
        for section in sections_a:
            if section.name in DERIVED_SECTIONS:
                continue
            other = by_name.get(section.name)
            if other is None:
                return f"section {section.name} only in the reference{sizes}"
            at = _first_differing_range(fa, fb, section.offset, other.offset, section.file_size, other.file_size)
            if at is None and section.size == other.size:
                continue
            if at is None:  # NOBITS of another size
                return f"section {section.name}: size {section.size:#x} != {other.size:#x}{sizes}"
            where = f"section {section.name} at offset {at:#x} (file offset {section.offset + at:#x})"
            symbol = symbol_at(elf_symbols(a), section.address + at) if section.address else ""
            if symbol:
                where += f", in symbol {symbol}"
            if section.size != other.size:
                where += f"; section sizes {section.size:#x} and {other.size:#x}"
            return where + sizes
        missing = sorted({s.name for s in sections_b} - {s.name for s in sections_a})
        if missing:
            return f"section {missing[0]} only in the rebuild{sizes}"
        # every section agrees: what differs is in the headers, or only in a derived section
        derived = sorted((s.offset, s.offset + s.file_size) for s in sections_a if s.name in DERIVED_SECTIONS)
        common = min(size_a, size_b)
        start = 0
        for lo, hi in [*derived, (common, common)]:
            end = min(lo, common)
            if start < end:
                at = _first_differing_range(fa, fb, start, start, end - start, end - start)
                if at is not None:
                    return (f"outside every section at file offset {start + at:#x} (ELF, program or section headers,"
                                f" padding); every section agrees{sizes}")
            start = max(start, hi)
    if size_a != size_b:
        return f"every section agrees; the files' sizes differ{sizes}"
    names = ", ".join(s.name for s in sections_a if s.name in DERIVED_SECTIONS)
    return (f"only {names} differs, every other byte agrees (a note derived from the content"
            " cannot differ alone: a binary edited after the build?)")


def leaked_paths(binary: Path, prefixes: Iterable[str]) -> list[str]:
    """Which of the given build paths (checkout, cache, CARGO_HOME) appear in
    the binary: each one makes the bytes depend on where it was built."""
    data = binary.read_bytes()
    return [p for p in prefixes if p and p.encode() in data]
