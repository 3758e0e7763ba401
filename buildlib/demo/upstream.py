"""Make a local git repository that looks like mistral.rs upstream.

The pipeline fetches, builds and packages "upstream" by git URL and tag. For
tests and demos that must run offline, :func:`create_demo_repo` turns the
small workspace in ``examples/demo-upstream/`` into such a repository:

    v0.6.0 -- v0.7.0 -- v0.8.4 -- v0.8.5 -- v0.9.0 -- v0.9.1 -- v0.9.2-rc1
           -- v0.9.2 -- two more commits (master)

Each release commit sets the workspace version in ``Cargo.toml`` and the
workspace crates' entries in ``Cargo.lock``, so ``cargo build --locked``
works at every tag. Like upstream, master keeps the last release's version.
The server packages follow upstream's renames (:func:`server_packages`):
``mistralrs-server`` alone up to 0.6.x (its files come from
``examples/demo-upstream-history/``), beside ``mistralrs-cli`` from 0.7.0,
gone from 0.8.5.

Third-party crates come from ``vendor/`` (a directory source, as ``cargo
vendor`` makes); the one git dependency's repository is made too
(:func:`make_git_dependency`), inside the demo's ``.git`` directory.

The history is deterministic (fixed names, e-mails and dates; the user's git
configuration is ignored), so the same sources always give the same commit
ids. Usage: ``python -m buildlib.demo.upstream DEST``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..layout import DEMO_UPSTREAM_HISTORY, DEMO_UPSTREAM_SOURCES
from ..run import UserError, run

EXAMPLE = DEMO_UPSTREAM_SOURCES
HISTORY = DEMO_UPSTREAM_HISTORY

# (tag, version) in history order.
RELEASES: tuple[tuple[str, str], ...] = (
    ("v0.6.0", "0.6.0"),
    ("v0.7.0", "0.7.0"),
    ("v0.8.4", "0.8.4"),
    ("v0.8.5", "0.8.5"),
    ("v0.9.0", "0.9.0"),
    ("v0.9.1", "0.9.1"),
    ("v0.9.2-rc1", "0.9.2-rc1"),
    ("v0.9.2", "0.9.2"),
)
BRANCH = "master"
# Commits on master after the last tag.
COMMITS_AFTER_LAST_TAG = 2

# Bump when the recipe below changes, so old repositories are not reused.
_RECIPE = 2
# Kept inside .git so it is not part of any commit.
_MARKER = "demo-upstream.json"
_AUTHOR = ("Demo Upstream", "demo-upstream@example.invalid")
# One day apart, starting here (so that master's last commit is on 2025-03-06).
_FIRST_DAY = datetime.date(2025, 2, 25)


# Server packages and their binaries, as upstream's Cargo.toml had them.
SERVER_PACKAGES = {"mistralrs-server": "mistralrs-server", "mistralrs-cli": "mistralrs"}


def server_packages(version: str) -> dict[str, str]:
    """{package: binary} of the demo's server packages at a version:
    mistralrs-server alone before 0.7.0, both up to 0.8.4, mistralrs-cli
    alone from 0.8.5 (upstream's history)."""
    release = tuple(int(x) for x in version.split("-")[0].split("."))
    packages = {}
    if release < (0, 8, 5):
        packages["mistralrs-server"] = SERVER_PACKAGES["mistralrs-server"]
    if release >= (0, 7, 0):
        packages["mistralrs-cli"] = SERVER_PACKAGES["mistralrs-cli"]
    return packages


@dataclass(frozen=True)
class DemoRepo:
    path: Path
    tags: tuple[str, ...]
    head: str  # commit id of master

    @property
    def git_dependency(self) -> Path:
        """The repository the git dependency's URL stands for."""
        return self.path / ".git" / "demo-git-dependency"


def create_demo_repo(dest: Path) -> DemoRepo:
    """Make ``dest`` the demo upstream repository, or reuse it if it is one.

    ``dest`` must not exist, be an empty directory, or be a repository this
    function made earlier from the same sources (returned as is). Anything
    else is refused with a UserError, never overwritten.
    """
    dest = Path(dest).absolute()
    fingerprint = _fingerprint(EXAMPLE) + _fingerprint(HISTORY)
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

    rev = make_git_dependency(repo / ".git" / "demo-git-dependency")
    locked = f"git+{GIT_DEPENDENCY_URL}?rev={rev}#{rev}"
    if locked not in (repo / "Cargo.lock").read_text():
        raise UserError(f"{EXAMPLE.name}/Cargo.lock does not lock {GIT_DEPENDENCY_CRATE} at {rev}, the commit "
                        f"its vendored files make: update the rev in Cargo.toml, .cargo/config.toml and Cargo.lock")

    tags: dict[str, str] = {}
    changelog = repo / "CHANGELOG.md"
    for n, (tag, version) in enumerate(RELEASES):
        set_members(repo, server_packages(version))
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
    anchor = "pub use demo_escape::json_string;"
    text = lib.read_text()
    if anchor not in text:
        raise UserError(f"{lib} changed: cannot find {anchor!r} to add the post-release comment")
    lib.write_text(text.replace(anchor, "// JSON escaping comes from demo-escape.\n" + anchor, 1))
    head = _commit(repo, len(RELEASES) + 1, "core: say where JSON escaping comes from")

    # Leave a clean checkout and the record that makes the repository reusable.
    _git(repo, "gc", "--quiet")
    record = {"recipe": _RECIPE, "fingerprint": fingerprint, "head": head, "tags": tags}
    (repo / ".git" / _MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return DemoRepo(path=repo, tags=tuple(tags), head=head)


# The demo's one git dependency, as mistral.rs takes candle from git: the
# URL its Cargo.toml names (served offline from vendor/ by source
# replacement, so nothing is ever fetched from it) and the crate in vendor/.
GIT_DEPENDENCY_URL = "https://git.example.invalid/demo/demo-tensor.git"
GIT_DEPENDENCY_CRATE = "demo-tensor"
_CHECKSUM_FILE = ".cargo-checksum.json"


def make_git_dependency(dest: Path, example: Path = EXAMPLE) -> str:
    """Make at dest the git repository the demo's git dependency comes from.

    Its one commit holds the vendored crate's files (less the checksum file),
    made deterministically, so its id is the rev that Cargo.toml and
    Cargo.lock name; returns that id. A build that does not use vendor/
    reaches it with git's url.<dest>.insteadOf=GIT_DEPENDENCY_URL.
    """
    crate = example / "vendor" / GIT_DEPENDENCY_CRATE
    if not crate.is_dir():
        raise UserError(f"vendored git dependency not found at {crate}")
    shutil.copytree(crate, dest, ignore=shutil.ignore_patterns(_CHECKSUM_FILE))
    _git(dest, "init", "--quiet", f"--initial-branch={BRANCH}")
    return _commit(dest, 0, f"{GIT_DEPENDENCY_CRATE}: first release")


def _crate_files(crate: Path) -> list[Path]:
    return [p for p in sorted(crate.rglob("*")) if p.is_file() and p.name != _CHECKSUM_FILE]


def package_checksum(crate: Path) -> str | None:
    """What Cargo.lock records for a vendored crate: the SHA-256 of its .crate
    file, here a reproducible one (gzip'd tar of NAME-VERSION/..., times 0);
    None for the git dependency, as cargo has none for git sources."""
    if crate.name == GIT_DEPENDENCY_CRATE:
        return None
    version = tomllib.loads((crate / "Cargo.toml").read_text())["package"]["version"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _crate_files(crate):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{crate.name}-{version}/{path.relative_to(crate).as_posix()}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(gzip.compress(buf.getvalue(), mtime=0)).hexdigest()


def vendor_checksums(crate: Path) -> dict:
    """The .cargo-checksum.json cargo wants for a vendored crate: each file's
    SHA-256 and the package checksum Cargo.lock records (None for git)."""
    files = {p.relative_to(crate).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _crate_files(crate)}
    return {"files": files, "package": package_checksum(crate)}


def refresh_vendor(example: Path = EXAMPLE) -> None:
    """After editing a vendored crate: rewrite every .cargo-checksum.json, the
    checksums in Cargo.lock and the git dependency's rev (Cargo.toml files,
    .cargo/config.toml, Cargo.lock). For maintainers of the demo."""
    lock = example / "Cargo.lock"
    text = lock.read_text()
    for crate in sorted((example / "vendor").iterdir()):
        record = vendor_checksums(crate)
        (crate / _CHECKSUM_FILE).write_text(json.dumps(record, separators=(",", ":")))
        if record["package"]:
            text, n = re.subn(rf'(\nname = "{re.escape(crate.name)}"\n(?:(?!\n\n).)*?\nchecksum = ")[0-9a-f]+"',
                              lambda m: f'{m.group(1)}{record["package"]}"', text, flags=re.S)
            if n != 1:
                raise UserError(f"{lock}: no checksum entry for {crate.name}")
    old = re.search(rf"git\+{re.escape(GIT_DEPENDENCY_URL)}\?rev=([0-9a-f]{{40}})#", text)
    if old is None:
        raise UserError(f"{lock}: {GIT_DEPENDENCY_CRATE} is not locked from {GIT_DEPENDENCY_URL}")
    with tempfile.TemporaryDirectory() as tmp:
        rev = make_git_dependency(Path(tmp) / "repo", example)
    lock.write_text(text.replace(old.group(1), rev))
    for path in [example / ".cargo" / "config.toml", *example.glob("*/Cargo.toml")]:
        path.write_text(path.read_text().replace(old.group(1), rev))


def set_members(repo: Path, servers: dict[str, str]) -> None:
    """Make the workspace hold mistralrs-core and exactly the server packages
    named: their directories, the members list and their Cargo.lock entries."""
    sources = {"mistralrs-cli": EXAMPLE / "mistralrs-cli", "mistralrs-server": HISTORY / "mistralrs-server"}
    lock = repo / "Cargo.lock"
    blocks = lock.read_text().split("\n[[package]]\n")
    head, packages = blocks[0], {re.search(r'^name = "([^"]+)"', b, re.M).group(1): b for b in blocks[1:]}
    for name, source in sources.items():
        target = repo / name
        if name in servers and not target.exists():
            shutil.copytree(source, target)
        elif name not in servers and target.exists():
            shutil.rmtree(target)
        if name in servers:
            # Both depend on mistralrs-core and build-depend on demo-buildinfo.
            packages.setdefault(name, f'name = "{name}"\nversion = "0.0.0"\ndependencies = [\n'
                                      f' "demo-buildinfo",\n "mistralrs-core",\n]\n')
        else:
            packages.pop(name, None)
    if not packages[sorted(packages)[-1]].endswith("\n"):
        packages[sorted(packages)[-1]] += "\n"
    lock.write_text("\n[[package]]\n".join([head, *(packages[n].rstrip("\n") + "\n" for n in sorted(packages))]))

    toml = repo / "Cargo.toml"
    members = ", ".join(f'"{m}"' for m in ["mistralrs-core", *sorted(servers)])
    text, count = re.subn(r"^members = \[[^\]]*\]$", f"members = [{members}]", toml.read_text(), flags=re.M)
    if count != 1:
        raise UserError(f"{toml}: no members line in [workspace]")
    toml.write_text(text)


def add_rust_only_release(repo: Path, tag: str, version: str) -> str:
    """Commit and tag the next release in a clone of the demo repository
    (a work tree): the version bump and a change to Rust code only, no
    kernel or build script touched, as most of upstream's releases are.
    Returns the commit id."""
    main = repo / "mistralrs-cli" / "src" / "main.rs"
    text = main.read_text()
    if "fn main" not in text:
        raise UserError(f"{main} changed: cannot find fn main to add the release's Rust change")
    main.write_text(text + f"\n/// Added in {version}: a Rust-only change.\npub const RELEASE_NOTE: &str = \"{version}\";\n")
    set_version(repo, version)
    commit = _commit(repo, len(RELEASES) + COMMITS_AFTER_LAST_TAG, f"Release {tag}")
    _git(repo, "tag", tag)
    return commit


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
    date = f"{_FIRST_DAY + datetime.timedelta(days=n)}T12:00:00+00:00"
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
    return run(argv, env=env, inherit_env=False, capture=True, quiet=True, check=check).stdout.decode().strip()


def _ignore_top_level_target(directory: str, names: list[str]) -> list[str]:
    # A cargo build inside examples/demo-upstream leaves target/ there.
    return ["target"] if Path(directory) == EXAMPLE and "target" in names else []


def _fingerprint(root: Path) -> str:
    """Hash of the example sources (paths, modes, contents) and the recipe."""
    digest = hashlib.sha256(f"recipe {_RECIPE}\n".encode())
    if not root.is_dir():
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
    parser.add_argument("dest", type=Path, nargs="?", help="directory to create (absent or empty)")
    parser.add_argument("--refresh-vendor", action="store_true",
                        help=f"after editing {EXAMPLE.name}/vendor/: rewrite its checksums, Cargo.lock's and the git rev")
    args = parser.parse_args(argv)
    if args.refresh_vendor == (args.dest is not None):
        parser.error("give either DEST or --refresh-vendor")
    try:
        if args.refresh_vendor:
            refresh_vendor()
            print(f"{EXAMPLE.name}/vendor/ checksums, Cargo.lock and the git dependency's rev rewritten")
            return 0
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
