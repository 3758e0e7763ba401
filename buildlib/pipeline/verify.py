"""Checks an artifact must pass before anything may package it.

An x86-64 ELF executable with the binary name its version should have, and,
where CUDA code is in it, code for exactly the flavour's GPU architecture.
The architectures are read from the embedded CUDA images themselves
(fatbinary entry headers, in `.nv_fatbin` where nvcc-compiled static
libraries put them, and PTX `.target` lines of PTX text embedded as strings)
and, where cuobjdump is installed, with cuobjdump too: it sees the
`.nv_fatbin` fatbinaries only, and must list exactly what the project's
reader found there, or the binary is refused.
"""

from __future__ import annotations

import mmap
import re
import shutil
import struct
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, Flavour
from ..layout import Layout
from ..run import Refused, Stopwatch, output, sha256_of
from .records import BuildRecord, VerifyRecord

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
FATBIN_KINDS = {1: "ptx", 2: "elf"}
PTX_TARGET = re.compile(rb"\.target\s+sm_(\d{2,3})[af]?\b")
CUOBJDUMP_ARCH = re.compile(r"\bsm_([0-9]{2,3})[af]?\b")


class VerifyError(Refused):
    pass


@dataclass(frozen=True)
class CudaImage:
    kind: str  # "elf" or "ptx"
    arch: int
    where: str


def check_elf(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise VerifyError(f"{path.name} is not an ELF file")
    if head[4] != 2 or head[5] != 1:
        raise VerifyError(f"{path.name} is not a 64-bit little-endian ELF file")
    e_type, e_machine = struct.unpack_from("<HH", head, 16)
    if e_machine != 0x3E:
        raise VerifyError(f"{path.name} is an ELF file for machine {e_machine:#x}, not x86-64")
    if e_type not in (2, 3):  # ET_EXEC, or ET_DYN for a position-independent executable
        raise VerifyError(f"{path.name} is an ELF file of type {e_type}, not an executable")
    if not path.stat().st_mode & 0o111:
        raise VerifyError(f"{path.name} is not executable (mode {path.stat().st_mode & 0o7777:o})")


def elf_sections(data) -> dict[str, tuple[int, int]]:
    """{name: (file offset, size)} of a 64-bit little-endian ELF file's
    sections that have contents in the file; {} if the headers are unreadable."""
    try:
        e_shoff, = struct.unpack_from("<Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        headers = []
        for i in range(e_shnum):
            name, kind, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize)
            headers.append((name, kind, offset, size))
        strtab = headers[e_shstrndx][2]
        sections = {}
        for name, kind, offset, size in headers:
            if kind == 8 or offset + size > len(data):  # SHT_NOBITS (.bss): nothing in the file
                continue
            end = data.find(b"\0", strtab + name)
            sections[bytes(data[strtab + name:end]).decode("ascii", "replace")] = (offset, size)
        return sections
    except (struct.error, IndexError, ValueError):
        return {}


def section_name(sections: dict[str, tuple[int, int]], pos: int) -> str:
    for name, (offset, size) in sections.items():
        if offset <= pos < offset + size and name:
            return name
    return "no section"


def fatbin_images(data: bytes | mmap.mmap, sections: dict[str, tuple[int, int]] | None = None) -> list[CudaImage]:
    """Entries of every fatbinary embedded anywhere in data; each says its
    section (`.nv_fatbin` for nvcc-compiled objects) where ELF headers tell."""
    sections = sections or {}
    images = []
    pos = data.find(FATBIN_MAGIC)
    while pos != -1:
        images.extend(_parse_fatbin(data, pos, section_name(sections, pos) if sections else ""))
        pos = data.find(FATBIN_MAGIC, pos + 4)
    return images


def _parse_fatbin(data, start: int, section: str = "") -> list[CudaImage]:
    if start + 16 > len(data):
        return []
    _, version, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
    if version != 1 or header_size != 16 or not 0 < fat_size <= len(data) - start - 16:
        return []  # four bytes that only look like the magic
    images = []
    pos, end = start + header_size, start + header_size + fat_size
    while pos + 32 <= end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, pos)
        arch = struct.unpack_from("<I", data, pos + 28)[0]
        if kind not in FATBIN_KINDS or entry_header < 32 or payload > end - pos:
            break
        where = f"fatbinary in {section} at {start:#x}" if section else f"fatbinary at {start:#x}"
        images.append(CudaImage(FATBIN_KINDS[kind], arch, where))
        pos += entry_header + payload
    return images


def ptx_targets(data, sections: dict[str, tuple[int, int]] | None = None) -> list[CudaImage]:
    """PTX text embedded as strings (in .rodata for include_str!), by its
    `.target` lines; the whole file is searched so none is missed."""
    sections = sections or {}
    return [CudaImage("ptx", int(m.group(1)),
                      f"PTX text in {section_name(sections, m.start())} at {m.start():#x}" if sections
                      else f"PTX text at {m.start():#x}")
            for m in PTX_TARGET.finditer(data)]


def embedded_images(path: Path) -> list[CudaImage]:
    """The project's own reader: fatbinaries and PTX text anywhere in the file."""
    if path.stat().st_size == 0:
        return []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        sections = elf_sections(data) if data[:4] == b"\x7fELF" else {}
        return fatbin_images(data, sections) + ptx_targets(data, sections)


def find_cuobjdump() -> str | None:
    """cuobjdump on PATH, else the one PyPI's nvidia-cuda-cuobjdump installed
    into this Python environment (nvidia/cu13/bin/, not put on PATH)."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for candidate in sorted(Path(base).glob("nvidia/cu*/bin/cuobjdump")):
            if candidate.is_file() and candidate.stat().st_mode & 0o111:
                return str(candidate)
    return None


def cuobjdump_images(path: Path, cuobjdump: str) -> list[CudaImage]:
    # Exit status 255 and "does not contain device code" when there is none.
    listing = output([cuobjdump, "--list-elf", "--list-ptx", path], quiet=True, check=False)
    images = []
    for line in listing.splitlines():
        m = CUOBJDUMP_ARCH.search(line)
        if m and ("ELF file" in line or "PTX file" in line):
            images.append(CudaImage("elf" if "ELF" in line else "ptx", int(m.group(1)), "cuobjdump"))
    return images


def cuda_images(path: Path) -> tuple[list[CudaImage], str]:
    """The binary's CUDA images by the project's reader, cross-checked with
    cuobjdump where installed: cuobjdump reads the `.nv_fatbin` section
    only, and must list the same (kind, arch) entries the reader found there."""
    images = embedded_images(path)
    cuobjdump = find_cuobjdump()
    if not cuobjdump:
        return images, "embedded images"
    ours = sorted((i.kind, i.arch) for i in images if "in .nv_fatbin " in i.where)
    theirs = sorted((i.kind, i.arch) for i in cuobjdump_images(path, cuobjdump))
    if ours != theirs:
        show = lambda found: ", ".join(f"{k} sm_{a}" for k, a in found) or "nothing"  # noqa: E731
        raise VerifyError(f"{path.name}: cuobjdump lists {show(theirs)} in .nv_fatbin but the embedded-image "
                          f"reader finds {show(ours)}: refusing a binary whose CUDA code two readers disagree on")
    return images, "embedded images + cuobjdump"


def verify_artifact(cfg: Config, layout: Layout, flavour: Flavour) -> dict:
    name = flavour.name
    watch = Stopwatch(f"verify {name}")
    artifact = layout.artifact(name)
    record = BuildRecord.load(layout, flavour)
    layout.verify_record(name).unlink(missing_ok=True)
    if not artifact.is_file():
        raise VerifyError(f"{artifact} is missing")
    check_elf(artifact)
    record.check_fits(cfg, layout, flavour)
    record.check_provenance(cfg, layout, flavour)

    digest = sha256_of(artifact)
    if digest != record.sha256:
        raise VerifyError(f"{artifact.name} does not match its build record (sha256 {digest[:12]} != "
                          f"{record.sha256[:12]}): rebuild it or adopt it again")

    images, method = cuda_images(artifact)
    archs = sorted({i.arch for i in images})
    wants_cuda = "cuda" in record.features
    if wants_cuda and not images:
        raise VerifyError(f"{artifact.name}: built with CUDA features but no CUDA code found ({method})")
    wrong = [i for i in images if i.arch != flavour.compute_cap]
    if wrong:
        first = wrong[0]
        raise VerifyError(
            f"{artifact.name}: contains {first.kind} code for sm_{first.arch} ({first.where}); flavour {name} "
            f"must contain only sm_{flavour.compute_cap} — refusing to package a binary built for the wrong GPU"
        )
    VerifyRecord(sha256=digest, ok=True, binary_name=record.binary_name, method=method,
                 archs=tuple(archs), images=len(images)).write(layout, flavour)
    shown = ", ".join(f"sm_{a}" for a in archs) or "no CUDA code"
    watch.done(f"{artifact.name} ok: x86-64 ELF, {shown} ({len(images)} images, {method})")
    return {}
