"""Make a local git repository that looks like mistral.rs upstream.

The pipeline fetches, builds and packages "upstream" by git URL and tag. For
tests and demos that must run offline, :func:`create_demo_repo` turns the
small workspace in ``examples/demo-upstream/`` into such a repository:

    v0.9.0 -- v0.9.1 -- v0.9.2-rc1 -- v0.9.2 -- two more commits (master)

Each release commit sets the workspace version in ``Cargo.toml`` and the
workspace crates' entries in ``Cargo.lock``, so ``cargo build --locked``
works at every tag. Like upstream, master keeps the last release's version.

The history is deterministic (fixed names, e-mails and dates; the user's git
configuration is ignored), so the same sources always give the same commit
ids. Usage: ``python -m buildlib.demo.upstream DEST``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..layout import DEMO_UPSTREAM_SOURCES
from ..run import CommandFailed, UserError

EXAMPLE = DEMO_UPSTREAM_SOURCES

# (tag, version) in history order.
RELEASES: tuple[tuple[str, str], ...] = (
    ("v0.9.0", "0.9.0"),
    ("v0.9.1", "0.9.1"),
    ("v0.9.2-rc1", "0.9.2-rc1"),
    ("v0.9.2", "0.9.2"),
)
BRANCH = "master"
# Commits on master after the last tag.
COMMITS_AFTER_LAST_TAG = 2

# Bump when the recipe below changes, so old repositories are not reused.
_RECIPE = 1
# Kept inside .git so it is not part of any commit.
_MARKER = "demo-upstream.json"
_AUTHOR = ("Demo Upstream", "demo-upstream@example.invalid")
# One day apart, starting here.
_FIRST_DAY = (2025, 3, 1)


@dataclass(frozen=True)
class DemoRepo:
    path: Path
    tags: tuple[str, ...]
    head: str  # commit id of master


def create_demo_repo(dest: Path) -> DemoRepo:
    """Make ``dest`` the demo upstream repository, or reuse it if it is one.

    ``dest`` must not exist, be an empty directory, or be a repository this
    function made earlier from the same sources (returned as is). Anything
    else is refused with a UserError, never overwritten.
    """
    dest = Path(dest).absolute()
    fingerprint = _fingerprint(EXAMPLE)
    existing = _reuse(dest, fingerprint)
    if existing is not None:
        return existing

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Build next to dest, then rename: dest is complete or absent, never half
    # made, also when two processes race.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        repo = _build(tmp, fingerprint)
        try:
            # rename(2) replaces an empty directory, fails on a non-empty one.
            os.rename(tmp, dest)
        except OSError:
            existing = _reuse(dest, fingerprint)
            if existing is not None:  # another process won the race
                return existing
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoRepo(path=dest, tags=repo.tags, head=repo.head)


def _reuse(dest: Path, fingerprint: str) -> DemoRepo | None:
    """The demo repository at dest, None if dest is free; else UserError."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory")
    if not any(dest.iterdir()):
        return None
    marker = dest / ".git" / _MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{dest} is not empty and is not a demo upstream repository; "
            "choose another destination or remove it"
        ) from None
    if record.get("fingerprint") != fingerprint:
        raise UserError(
            f"{dest} is a demo upstream repository made from other sources "
            f"than {EXAMPLE.name}/ (or by another version of this script); remove it to remake it"
        )
    # Check the refs too: someone may have committed or moved tags since.
    refs = {BRANCH: record["head"], **record["tags"]}
    for ref, commit in refs.items():
        actual = _git(dest, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if actual != commit:
            raise UserError(
                f"{dest} is a demo upstream repository whose {ref} has changed "
                f"(expected {commit[:12]}, found {actual[:12] or 'nothing'}); remove it to remake it"
            )
    return DemoRepo(path=dest, tags=tuple(record["tags"]), head=record["head"])


def _build(repo: Path, fingerprint: str) -> DemoRepo:
    shutil.copytree(EXAMPLE, repo, dirs_exist_ok=True, ignore=_ignore_top_level_target)
    _git(repo, "init", "--quiet", f"--initial-branch={BRANCH}")

    tags: dict[str, str] = {}
    changelog = repo / "CHANGELOG.md"
    for n, (tag, version) in enumerate(RELEASES):
        set_version(repo, version)
        # Release notes, as real releases have; newest first.
        old = changelog.read_text() if changelog.exists() else "# Changelog\n"
        head, _, rest = old.partition("\n")
        changelog.write_text(f"{head}\n\n## {version}\n\n- Release {version}.\n{rest}")
        tags[tag] = _commit(repo, n, f"Release {tag}")
        # Lightweight tags, like upstream's.
        _git(repo, "tag", tag)

    # Work after the last release; versions stay as released.
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "\n`serve` listens on 0.0.0.0:1234 unless told otherwise.\n")
    _commit(repo, len(RELEASES), "README: document serve's defaults")
    lib = repo / "mistralrs-core" / "src" / "lib.rs"
    anchor = "/// Quote `s` as a JSON string"
    text = lib.read_text()
    if anchor not in text:
        raise UserError(f"{lib} changed: cannot find {anchor!r} to add the post-release comment")
    lib.write_text(text.replace(anchor, "// Hand-written JSON: the demo has no external crates.\n" + anchor, 1))
    head = _commit(repo, len(RELEASES) + 1, "core: say why JSON is hand-written")

    # Leave a clean checkout and the record that makes the repository reusable.
    _git(repo, "gc", "--quiet")
    record = {"recipe": _RECIPE, "fingerprint": fingerprint, "head": head, "tags": tags}
    (repo / ".git" / _MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return DemoRepo(path=repo, tags=tuple(tags), head=head)


def set_version(repo: Path, version: str) -> None:
    """Set the workspace version in Cargo.toml and the workspace crates' Cargo.lock entries."""
    toml = repo / "Cargo.toml"
    text = toml.read_text()
    # The version line inside [workspace.package], up to the next table.
    section = re.compile(r"(^\[workspace\.package\]\n(?:(?!\[).*\n)*?)version = \"[^\"]*\"", re.M)
    text, count = section.subn(lambda m: f'{m.group(1)}version = "{version}"', text)
    if count != 1:
        raise UserError(f"{toml}: no version line in [workspace.package]")
    toml.write_text(text)

    lock = repo / "Cargo.lock"
    blocks = lock.read_text().split("\n[[package]]\n")
    changed = 0
    for i, block in enumerate(blocks[1:], start=1):
        # Workspace members are the packages without a source (registry/git).
        if "\nsource = " not in f"\n{block}":
            blocks[i], n = re.subn(r'^version = "[^"]*"$', f'version = "{version}"', block, count=1, flags=re.M)
            changed += n
    if changed == 0:
        raise UserError(f"{lock}: no workspace package entries found")
    lock.write_text("\n[[package]]\n".join(blocks))


def _commit(repo: Path, n: int, message: str) -> str:
    """Commit everything as the n-th commit (its date follows from n); return its id."""
    year, month, day = _FIRST_DAY
    date = f"{year:04d}-{month:02d}-{day + n:02d}T12:00:00+00:00"
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "--no-verify", "-m", message, date=date)
    return _git(repo, "rev-parse", "HEAD")


def _git(repo: Path, *args: str, check: bool = True, date: str | None = None) -> str:
    """Run git in repo, isolated from the user's configuration; return stdout."""
    # Drop inherited GIT_* variables (GIT_DIR from a hook, say) and any
    # global/system configuration (hooks, signing, templates, autocrlf).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=_AUTHOR[0],
        GIT_AUTHOR_EMAIL=_AUTHOR[1],
        GIT_COMMITTER_NAME=_AUTHOR[0],
        GIT_COMMITTER_EMAIL=_AUTHOR[1],
        LC_ALL="C",
    )
    if date is not None:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    config = [
        f"user.name={_AUTHOR[0]}",
        f"user.email={_AUTHOR[1]}",
        "commit.gpgsign=false",
        "tag.gpgsign=false",
        f"init.defaultBranch={BRANCH}",
        "core.autocrlf=false",
        "gc.auto=0",
    ]
    argv = ["git"]
    for item in config:
        argv += ["-c", item]
    argv += ["-C", str(repo), *args]
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("git is needed to make the demo upstream repository but is not on PATH") from None
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.strip())
    return proc.stdout.strip()


def _ignore_top_level_target(directory: str, names: list[str]) -> list[str]:
    # A cargo build inside examples/demo-upstream leaves target/ there.
    return ["target"] if Path(directory) == EXAMPLE and "target" in names else []


def _fingerprint(root: Path) -> str:
    """Hash of the example sources (paths, modes, contents) and the recipe."""
    digest = hashlib.sha256(f"recipe {_RECIPE}\n".encode())
    if not (root / "Cargo.toml").is_file():
        raise UserError(f"demo upstream sources not found at {root}")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "target" or not path.is_file():
            continue
        executable = bool(path.stat().st_mode & 0o111)
        digest.update(f"{rel.as_posix()}\0{int(executable)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m buildlib.demo.upstream",
        description="Make a local git repository shaped like mistral.rs upstream, with release tags.",
    )
    parser.add_argument("dest", type=Path, help="directory to create (absent or empty)")
    args = parser.parse_args(argv)
    try:
        repo = create_demo_repo(args.dest)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"demo upstream repository: {repo.path}")
    print(f"tags: {' '.join(repo.tags)}")
    print(f"{BRANCH}: {repo.head}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
