"""Checks an artifact must pass before anything may package it.

An x86-64 ELF executable with the binary name its version should have, and,
where CUDA code is in it, code for exactly the flavour's GPU architecture.
The architectures are read with cuobjdump where the host has it, and
otherwise from the embedded CUDA images themselves: fatbinary entry headers
and PTX `.target` lines.
"""

from __future__ import annotations

import mmap
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, Flavour
from ..layout import Layout
from ..run import Stopwatch, UserError, output, sha256_of
from .records import BuildRecord, VerifyRecord

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
FATBIN_KINDS = {1: "ptx", 2: "elf"}
PTX_TARGET = re.compile(rb"\.target\s+sm_(\d{2,3})[af]?\b")
CUOBJDUMP_ARCH = re.compile(r"\bsm_(\d{2,3})[af]?\b")


class VerifyError(UserError):
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


def fatbin_images(data: bytes | mmap.mmap) -> list[CudaImage]:
    """Entries of every fatbinary embedded anywhere in data."""
    images = []
    pos = data.find(FATBIN_MAGIC)
    while pos != -1:
        images.extend(_parse_fatbin(data, pos))
        pos = data.find(FATBIN_MAGIC, pos + 4)
    return images


def _parse_fatbin(data, start: int) -> list[CudaImage]:
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
        images.append(CudaImage(FATBIN_KINDS[kind], arch, f"fatbinary at {start:#x}"))
        pos += entry_header + payload
    return images


def ptx_targets(data) -> list[CudaImage]:
    return [CudaImage("ptx", int(m.group(1)), f"PTX text at {m.start():#x}") for m in PTX_TARGET.finditer(data)]


def embedded_images(path: Path) -> list[CudaImage]:
    if path.stat().st_size == 0:
        return []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return fatbin_images(data) + ptx_targets(data)


def cuobjdump_images(path: Path, cuobjdump: str) -> list[CudaImage]:
    listing = output([cuobjdump, "--list-elf", "--list-ptx", path], quiet=True, check=False)
    images = []
    for line in listing.splitlines():
        m = CUOBJDUMP_ARCH.search(line)
        if m and ("ELF file" in line or "PTX file" in line):
            images.append(CudaImage("elf" if "ELF" in line else "ptx", int(m.group(1)), "cuobjdump"))
    return images


def cuda_images(path: Path) -> tuple[list[CudaImage], str]:
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:
        images = cuobjdump_images(path, cuobjdump)
        if images:
            return images, "cuobjdump"
    return embedded_images(path), "embedded images"


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
