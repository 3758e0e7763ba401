"""The nvcc the kernel build scripts run when the compile cache is on
(compile_cache.write_nvcc_wrapper execs this file): nvcc through sccache,
from a directory whose absolute path does not depend on the runner or the
version being built.

Why: sccache 0.16 splits an nvcc call into its steps and keys cicc and
cudafe++ on their arguments, among them --orig_src_path_name, which nvcc
fills with the real absolute path of the .cu file (symbolic links and $PWD
are resolved away; tried).  A build script runs nvcc in its crate's
directory inside the source tree, cache/src/<commit>/<crate>, so that path
changes with every version and every runner's cache directory, and those
steps were compiled again although the kernels had not changed.

What: the directory holding the input (kernels/ in `nvcc ... kernels/x.cu`,
with what is below it) is copied once to
<stable>/<digest of its files>/<crate>/kernels/, and nvcc runs there with the same relative arguments.  The copy is named by its
content, so the next version and another runner find the same path (and
the same cache keys) while the kernels are unchanged, and two builds never
write into one copy.  nvcc sees the same relative file names as before, so
__FILE__ and the object are the same bytes as from the crate directory.

Anything this cannot place (no single relative .cu input, a directory
outside the source roots, a copy that fails, or a compilation that fails
from the copy, e.g. a quoted #include reaching above the copied directory)
runs nvcc as it was called, through sccache: correct, only less reused.

Only the standard library: it runs once per nvcc call, under cargo."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

QUERIES = {"--dryrun", "-dryrun", "--version", "-V", "--list-gpu-code", "--list-gpu-arch"}
"""Calls whose output is what is asked for: straight to nvcc, no cache."""

OUTPUT_OPTIONS = {"-o", "--output-file", "-odir", "--output-directory", "-MF", "--dependency-output",
                  "-keep-dir", "--keep-dir"}
"""Options naming a file or directory nvcc writes: made absolute, so the
result lands where the build script expects it, never in the copy."""

SOURCE_SUFFIX = ".cu"


def digest_of(directory: Path) -> str:
    """sha256 over the relative names and contents of the files under directory."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix().encode()
        h.update(len(rel).to_bytes(8, "little") + rel)
        data = path.read_bytes()
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:24]


def single_input(args: list[str], cwd: Path) -> str | None:
    """The one .cu file argument, if it is relative and stays below cwd."""
    inputs = [a for a in args if a.endswith(SOURCE_SUFFIX) and not a.startswith("-") and (cwd / a).is_file()]
    if len(inputs) != 1:
        return None
    rel = Path(inputs[0])
    if rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2:
        # a file directly in cwd would mean copying the whole crate
        return None
    return inputs[0]


def absolute_outputs(args: list[str], cwd: Path) -> list[str]:
    out, i = [], 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if a in OUTPUT_OPTIONS and i + 1 < len(args):
            out += [a, str(cwd / args[i + 1])]
            i += 2
            continue
        if eq and name in OUTPUT_OPTIONS:
            a = f"{name}={cwd / value}"
        out.append(a)
        i += 1
    return out


def stable_copy(stable: Path, crate: Path, source_dir: Path) -> Path:
    """<stable>/<digest>/<crate>/<source_dir>, made once (renamed into place
    whole, so a reader sees all of it or none); returns the crate's copy."""
    digest = digest_of(source_dir)
    rel = source_dir.relative_to(crate.parent)
    home = stable / digest
    copy = home / rel
    if copy.is_dir() and digest_of(copy) == digest:
        return home / crate.name
    tmp = stable / f".tmp-{os.getpid()}-{digest}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source_dir, tmp / rel, symlinks=False)
    if home.exists():  # incomplete or altered (a /tmp cleaner): set it aside
        shutil.rmtree(home, ignore_errors=True)
    try:
        tmp.rename(home)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another build made it first
        if not (copy.is_dir() and digest_of(copy) == digest):
            raise
    return home / crate.name


def private_dir(stable: Path) -> bool:
    """Whether stable is a directory of this user's that nobody else may
    write into (made so when missing).  It lies in /tmp, the same path on
    every runner: another local user could otherwise plant a copy named by
    the digest of public kernels, or a header beside it, or change a file
    between the digest check and nvcc reading it.  Anything else: False, and
    nvcc runs as called."""
    try:
        stable.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(stable)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            return False
        if info.st_mode & 0o077:  # ours, readable by others (an earlier, looser mkdir): tighten it
            os.chmod(stable, 0o700)
    except OSError:
        return False
    return True


def relocated(args: list[str], cwd: Path, roots: list[Path], stable: Path) -> tuple[Path, list[str]] | None:
    """(directory, arguments) to run nvcc with from the stable copy, or None."""
    if not any(cwd.is_relative_to(r) for r in roots):
        return None
    if not private_dir(stable):
        return None
    source = single_input(args, cwd)
    if source is None:
        return None
    source_dir = cwd / Path(source).parent
    try:
        crate_copy = stable_copy(stable, cwd, source_dir)
    except OSError:
        return None
    return crate_copy, absolute_outputs(args, cwd)


def main(argv: list[str]) -> int:
    # argv: sccache nvcc stable root... -- nvcc's arguments
    split = argv.index("--")
    sccache, nvcc, stable, *roots = argv[:split]
    args = argv[split + 1:]
    if any(a in QUERIES for a in args):
        os.execv(nvcc, [nvcc, *args])
    cwd = Path(os.getcwd())
    plan = relocated(args, cwd, [Path(r) for r in roots], Path(stable))
    if plan is not None:
        where, moved = plan
        done = subprocess.run([sccache, nvcc, *moved], cwd=where, capture_output=True)
        if done.returncode == 0:
            sys.stdout.buffer.write(done.stdout)
            sys.stderr.buffer.write(done.stderr)
            return 0
        # e.g. an #include above the copied directory: as called, below
    os.execv(sccache, [sccache, nvcc, *args])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
