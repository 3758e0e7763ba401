"""Bit-for-bit rpm builds with the host's real rpmbuild: a tiny package built
twice, from two directories, at two times, with sources written under two
umasks and at two times; and the comparison that names what differs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from buildlib import repro

SDE = 1767225600  # 2026-01-01, as the upstream commit's time would be

SPEC = """\
{macros}%global debug_package %{{nil}}
%global _build_id_links none
%global _binary_payload {payload}
Name:           tiny
Version:        1.0
Release:        1
Summary:        Reproducibility probe
License:        MIT
BuildArch:      x86_64
Source0:        tiny-bin
Source1:        LICENSE

%description
A probe.

%prep
cp -p %{{SOURCE1}} LICENSE

%install
install -D -p -m 0755 %{{SOURCE0}} %{{buildroot}}%{{_bindir}}/tiny
mkdir -p %{{buildroot}}%{{_datadir}}/tiny
echo written-by-the-build > %{{buildroot}}%{{_datadir}}/tiny/generated.txt

%files
%license LICENSE
%{{_bindir}}/tiny
%{{_datadir}}/tiny

%changelog
* Thu Jan 01 2026 Someone <someone@example.org> - 1.0-1
- probe
"""


def build(root: Path, *, macros=True, normalize=True, payload="w3T0.zstdio", umask=0o022, source_time=None, hostname=None):
    """Build the probe under root (sources written there first); its path."""
    top = root / "rpmbuild"
    (top / "SOURCES").mkdir(parents=True)
    old = os.umask(umask)
    try:
        (top / "SOURCES" / "tiny-bin").write_bytes(b"\x7fELF not really\n" * 1000)
        (top / "SOURCES" / "tiny-bin").chmod(0o777 & ~umask)
        (top / "SOURCES" / "LICENSE").write_text("MIT license text\n")
    finally:
        os.umask(old)
    sources = list((top / "SOURCES").iterdir())
    if source_time is not None:
        for path in sources:
            os.utime(path, (source_time, source_time))
    if normalize:
        repro.normalize_sources(sources, SDE)
    spec = top / "tiny.spec"
    spec.write_text(SPEC.format(macros=repro.spec_lines() if macros else "", payload=payload))
    argv = ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", f"_tmppath {top}/tmp",
            "--define", f"_dbpath {top}/rpmdb", str(spec)]
    if hostname:
        argv = ["unshare", "-u", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
    env = dict(os.environ, **repro.rpmbuild_env(SDE)) if macros else {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    subprocess.run(argv, check=True, env=env, capture_output=True)
    return top / "RPMS" / "x86_64" / "tiny-1.0-1.x86_64.rpm"


@pytest.fixture
def two(tmp_path):
    return tmp_path / "a", tmp_path / "second" / "checkout" / "b"


def can_set_hostname() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-u", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_two_builds_are_identical_with_the_settings(two):
    a, b = two
    first = build(a, umask=0o022, source_time=SDE + 5000)
    time.sleep(1.1)  # another second: BUILDTIME and fresh file times would differ
    hostname = "another-host" if can_set_hostname() else None
    second = build(b, umask=0o077, source_time=SDE - 86400 * 400, hostname=hostname)
    assert repro.first_difference(first, second) is None
    assert first.read_bytes() == second.read_bytes()
    info = subprocess.run(["rpm", "-qp", "--qf", "%{BUILDTIME} %{BUILDHOST}", str(first)], capture_output=True, text=True, check=True)
    assert info.stdout == f"{SDE} {repro.BUILDHOST}"


@pytest.mark.slow
def test_without_the_macros_the_build_time_differs(two):
    a, b = two
    first = build(a, macros=False)
    time.sleep(1.1)
    second = build(b, macros=False)
    assert repro.first_difference(first, second).startswith("header BUILDTIME: ")


@pytest.mark.skipif(not can_set_hostname(), reason="needs root and unshare to build under another hostname")
def test_without_buildhost_the_host_differs(two, monkeypatch):
    a, b = two
    monkeypatch.setattr(repro, "SPEC_MACROS", tuple(m for m in repro.SPEC_MACROS if m[0] != "_buildhost"))
    first = build(a, hostname="host-one")
    second = build(b, hostname="host-two")
    assert repro.first_difference(first, second) == "header BUILDHOST: 'host-one' != 'host-two'"


def test_old_source_times_are_not_clamped(two):
    # rpm clamps times newer than SOURCE_DATE_EPOCH only: a source older
    # than the commit keeps its time unless normalize_sources sets it.
    a, b = two
    first = build(a, normalize=False, source_time=SDE - 86400)
    second = build(b, normalize=False, source_time=SDE - 2 * 86400)
    difference = repro.first_difference(first, second)
    assert difference == f"file /usr/bin/tiny: mtime {SDE - 86400} != {SDE - 2 * 86400}"


def test_source_modes_follow_the_umask_unless_normalized(two):
    a, b = two
    first = build(a, normalize=False, umask=0o022, source_time=SDE)
    second = build(b, normalize=False, umask=0o077, source_time=SDE)
    # (the binary is installed with an explicit mode; the license is copied)
    assert repro.first_difference(first, second) == "file /usr/share/licenses/tiny-1.0/LICENSE: mode 100644 != 100600"


def test_payload_threads_setting_is_recorded(two):
    a, b = two
    first = build(a, payload="w3T0.zstdio")
    second = build(b, payload="w3T2.zstdio")
    assert repro.first_difference(first, second) == "header PAYLOADFLAGS: '3T0' != '3T2'"


def compile_c(root: Path, source: str, *flags: str) -> Path:
    src = root / "main.c"
    src.parent.mkdir(parents=True)
    src.write_text(source)
    out = root / "prog"
    subprocess.run(["gcc", "-O1", *flags, "-o", str(out), str(src)], check=True)
    return out


GREETING = '#include <stdio.h>\n__attribute__((used)) const char greeting[] = "{}";\nint main(void) {{ puts(greeting); puts(__FILE__); return 0; }}\n'


def test_elf_difference_names_the_section(tmp_path):
    a, b = (compile_c(tmp_path / f"p{n}", GREETING.format(message), "-Wl,--build-id=none")
            for n, message in enumerate(("built here", "built there")))
    assert repro.first_binary_difference(a, a) is None
    assert repro.first_binary_difference(a, b).startswith("section .rodata at offset ")
    assert repro.leaked_paths(a, [str(tmp_path / "p0"), str(tmp_path / "p1"), "/nowhere"]) == [str(tmp_path / "p0")]


def test_a_rodata_change_is_named_not_the_build_id(tmp_path):
    """With a build-id note (as every real build has), the note is the first
    byte that differs, yet it is a hash of the rest: the difference named is
    the string constant in .rodata, with its offsets and its symbol."""
    # one string of the same length, and one directory, so nothing else moves
    a = compile_c(tmp_path / "a", GREETING.format("built here"), "-Wl,--build-id=sha1")
    shutil.copy(a, tmp_path / "reference")
    a.parent.joinpath("main.c").write_text(GREETING.format("built hXre"))
    subprocess.run(["gcc", "-O1", "-Wl,--build-id=sha1", "-o", str(a), str(a.parent / "main.c")], check=True,
                   cwd=a.parent)
    reference, rebuilt = tmp_path / "reference", a
    sections = {s.name: s for s in repro.elf_sections(reference)}
    rodata = sections[".rodata"]
    greeting = next(s for s in repro.elf_symbols(reference) if s.name == "greeting")
    changed = greeting.address + len("built h") - rodata.address  # the "X"
    difference = repro.first_binary_difference(reference, rebuilt)
    assert difference == (f"section .rodata at offset {changed:#x} (file offset {rodata.offset + changed:#x}),"
                          f" in symbol greeting+{len('built h'):#x}")
    assert "build-id" not in difference
    # the build-id note did change, and comes first in the file
    note = sections[".note.gnu.build-id"]
    assert note.offset < rodata.offset
    assert reference.read_bytes()[note.offset:note.offset + note.size] != rebuilt.read_bytes()[note.offset:note.offset + note.size]


def test_only_the_build_id_differs(tmp_path):
    binary = compile_c(tmp_path / "a", GREETING.format("built here"), "-Wl,--build-id=sha1")
    note = next(s for s in repro.elf_sections(binary) if s.name == ".note.gnu.build-id")
    edited = bytearray(binary.read_bytes())
    edited[note.offset + note.size - 1] ^= 0xFF  # the last byte of the hash
    other = tmp_path / "edited"
    other.write_bytes(bytes(edited))
    assert repro.first_binary_difference(binary, other) == (
        "only .note.gnu.build-id differs, every other byte agrees (a note derived from the content cannot"
        " differ alone: a binary edited after the build?)")
    # a byte of the headers outside any section is named as such
    edited[0x30] ^= 0xFF
    other.write_bytes(bytes(edited))
    assert repro.first_binary_difference(binary, other).startswith("outside every section at file offset 0x30 ")
