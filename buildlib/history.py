"""Upstream's history as the pipeline reads it: which release tags a commit
contains and in what order, whether a snapshot is on the configured branch,
whether a tag moved upstream, which versions a %changelog lists, and which
cached source trees and compiled units are still worth keeping.

Order is always version order as rpm compares versions, never tag dates:
release scripts make several tags in one second and tags are pushed late.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .layout import Layout
from .refs import COMMIT, TAG, parse_ref
from .run import UserError, atomic_write, log, output, run

GIT = "git"


# --- rpm's version order ------------------------------------------------------


def rpmvercmp(a: str, b: str) -> int:
    """rpm's comparison of two version strings (-1, 0, 1), with ~ (sorts
    before anything, even the end) and ^ (sorts after the end, before
    anything else) as rpm >= 4.15 has them."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        # separators other than ~ and ^ only split segments
        while i < len(a) and not (a[i].isalnum() or a[i] in "~^"):
            i += 1
        while j < len(b) and not (b[j].isalnum() or b[j] in "~^"):
            j += 1
        ca, cb = a[i:i + 1], b[j:j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ca or not cb:
            break
        numeric = ca.isdigit()
        ma = re.match(r"\d+" if numeric else r"[A-Za-z]+", a[i:])
        mb = re.match(r"\d+" if numeric else r"[A-Za-z]+", b[j:])
        if mb is None:  # a numeric segment is newer than an alphabetic one
            return 1 if numeric else -1
        sa, sb = ma.group(), mb.group()
        i, j = i + len(sa), j + len(sb)
        if numeric:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        if sa != sb:
            return 1 if sa > sb else -1
    rest_a, rest_b = a[i:], b[j:]
    if not rest_a and not rest_b:
        return 0
    return -1 if not rest_a else 1


class RpmVersion(str):
    """A version string ordered the way rpm orders it."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return rpmvercmp(self, other) < 0

    def __gt__(self, other: str) -> bool:  # type: ignore[override]
        return rpmvercmp(self, other) > 0


def tag_key(tag: str) -> tuple:
    """Sort key of a release tag in rpm's order: v0.9.2-rc1 < v0.9.2 < v0.9.10."""
    m = TAG.match(tag)
    if not m:
        raise UserError(f"refusing tag {tag!r}: expected vX.Y.Z or vX.Y.Z-rcN")
    base = tuple(int(p) for p in m.group("base").split("."))
    rc = m.group("rc")
    return (base, 0, int(rc)) if rc else (base, 1, 0)


# --- tags in a commit's history -----------------------------------------------


@dataclass(frozen=True)
class ReleaseTag:
    tag: str
    commit: str
    date: str
    """YYYY-MM-DD: the tag's date (a lightweight tag's: its commit's)."""


def release_tags(mirror: Path, commit: str) -> list[ReleaseTag]:
    """The release tags merged into commit (the commit itself included),
    highest version first.  Tags that do not match the strict release pattern
    are ignored."""
    lines = output([GIT, f"--git-dir={mirror}", "for-each-ref", "--merged", commit,
                    "--format=%(refname:strip=2) %(*objectname)%(objectname) %(creatordate:short)",
                    "refs/tags/"], quiet=True).splitlines()
    tags = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or not TAG.match(parts[0]):
            continue
        tag, objects, day = parts
        tags.append(ReleaseTag(tag, objects[:40], day))
    return sorted(tags, key=lambda t: tag_key(t.tag), reverse=True)


def snapshot_base(mirror: Path, commit: str) -> ReleaseTag | None:
    """The highest release version among the tags in commit's history: a
    snapshot's version starts from it, so it sorts above every release it
    contains, however the tags' dates fall."""
    tags = release_tags(mirror, commit)
    return tags[0] if tags else None


# --- the configured branch ----------------------------------------------------


def check_on_branch(cfg: Config, mirror: Path, commit: str) -> None:
    """A snapshot must be a commit of upstream.branch as the remote has it
    now: fetch that branch into the mirror and ask git."""
    branch = cfg.upstream.branch
    ref = f"refs/heads/{branch}"
    ok = run([GIT, "check-ref-format", ref], capture=True, check=False, quiet=True)
    if ok.returncode != 0:
        raise UserError(f"upstream.branch = {branch!r} is not a valid git branch name")
    fetched = run([GIT, f"--git-dir={mirror}", "fetch", "--quiet", "origin", f"+{ref}:{ref}"],
                  capture=True, check=False)
    if fetched.returncode != 0:
        why = (fetched.stderr.decode(errors="replace").strip().splitlines() or ["git fetch failed"])[-1]
        raise UserError(f"cannot fetch branch {branch} (upstream.branch) from {cfg.upstream.url}: {why}")
    reachable = run([GIT, f"--git-dir={mirror}", "merge-base", "--is-ancestor", commit, ref],
                    capture=True, check=False, quiet=True)
    if reachable.returncode == 1:
        raise UserError(f"commit {commit[:12]} is not on upstream's branch {branch} (upstream.branch): "
                        f"refusing to build it as a snapshot of {branch}")
    if reachable.returncode != 0:
        raise UserError(f"cannot tell whether commit {commit[:12]} is on {branch}: "
                        f"{reachable.stderr.decode(errors='replace').strip()}")


# --- moved tags -----------------------------------------------------------------


def remote_tag_commit(url: str, tag: str) -> str | None:
    """The commit tag names on the remote now (peeled), None if it has no such
    tag.  A UserError when the remote cannot be asked."""
    parse_ref(tag)
    if url.startswith("-"):
        raise UserError(f"upstream.url = {url!r}: expected a git URL or a local path")
    result = run([GIT, "ls-remote", "--tags", "--", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
                 capture=True, check=False, quiet=True)
    if result.returncode != 0:
        raise UserError(f"git ls-remote {url} failed: {result.stderr.decode(errors='replace').strip()[-200:]}")
    found: dict[str, str] = {}
    for line in result.stdout.decode().splitlines():
        sha, _, name = line.partition("\t")
        if COMMIT.match(sha):
            found[name] = sha
    return found.get(f"refs/tags/{tag}^{{}}") or found.get(f"refs/tags/{tag}")


def recorded_commit(layout: Layout, ref: str) -> str | None:
    """The commit the last fetch recorded for ref, if it fetched that ref."""
    try:
        data = json.loads(layout.source_record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("ref") != ref:
        return None
    commit = data.get("commit")
    return commit if isinstance(commit, str) and COMMIT.match(commit) else None


def tag_unchanged(cfg: Config, layout: Layout) -> bool:
    """doit uptodate check of the fetch task: asks the remote on every run
    whether the configured tag still names the commit fetched last time.
    A commit id cannot move; an unreachable remote (working offline) keeps
    what was fetched, with a warning."""
    try:
        ref = parse_ref(cfg.upstream.ref)
    except UserError:
        return False  # fetch reports it
    recorded = recorded_commit(layout, ref.text)
    if recorded is None:
        return False
    if not ref.is_tag:
        return True
    try:
        now = remote_tag_commit(cfg.upstream.url, ref.text)
    except UserError as e:
        log(f"warning: cannot ask upstream whether {ref.text} moved ({e}); keeping {recorded[:12]}")
        return True
    if now != recorded:
        where = f"now {now[:12]}" if now else "gone"
        log(f"tag {ref.text} moved upstream: was {recorded[:12]}, {where}; fetching and rebuilding")
        return False
    return True


def note_moved_tag(layout: Layout, ref: str, commit: str) -> None:
    """Say so when a fetch finds a tag on another commit than last time."""
    before = recorded_commit(layout, ref)
    if before is not None and before != commit and TAG.match(ref):
        log(f"warning: tag {ref} moved upstream from {before[:12]} to {commit[:12]}: rebuilding from the new commit")


# --- %changelog -----------------------------------------------------------------


def packaged_versions(cfg: Config, entries: Sequence, ledger_versions: Iterable[str]) -> set[str]:
    """The versions a %changelog may list besides the one packaged now:
    every final release from the first row of upstream.programs on (the
    poll builds each release; this holds on a CI runner whose build
    directory, and so its ledger, starts empty), and any other version
    (a release candidate) only where this flavour's release ledger shows it
    was packaged.  Releases older than the first row were never packaged."""
    versions = set(ledger_versions)
    for entry in entries:
        m = TAG.match(entry.tag or "")
        if not m or m.group("rc"):
            continue
        try:
            cfg.upstream.program(m.group("base"))
        except UserError:
            continue
        versions.add(entry.rpm_version)
    return versions


def changelog_order(entries: Sequence, packaged: Iterable[str]) -> list:
    """The %changelog entries: entries[0] (the version being packaged) first,
    then only the versions in `packaged` (packaged_versions), highest
    version first.  Dates never rise going down (rpm
    refuses that): an older version tagged later shows the date of the entry
    above it."""
    if not entries:
        return []
    packaged = set(packaged)
    head, rest = entries[0], entries[1:]
    seen = {head.rpm_version}
    kept = []
    for entry in rest:
        if entry.rpm_version in packaged and entry.rpm_version not in seen:
            kept.append(entry)
            seen.add(entry.rpm_version)
    kept.sort(key=lambda e: RpmVersion(e.rpm_version), reverse=True)
    kept = [e for e in kept if rpmvercmp(e.rpm_version, head.rpm_version) < 0]
    ordered = [head]
    for entry in kept:
        if entry.day > ordered[-1].day:
            entry = dataclasses.replace(entry, day=ordered[-1].day)
        ordered.append(entry)
    return ordered


# --- provenance of an artifact ------------------------------------------------


def check_build_provenance(cfg: Config, layout: Layout, record: dict) -> None:
    """The artifact's record must say that cargo's run for this version made
    it: cargo's package id names the configured package, and the commit is
    the one fetched now."""
    from .cargo_messages import package_name_version
    from .verify import VerifyError

    name = layout.build_record(record.get("flavour", "?")).name
    package_id = record.get("package_id")
    if not isinstance(package_id, str) or not record.get("cargo_executable"):
        raise VerifyError(f"{name}: no cargo package id or executable recorded; rebuild the flavour")
    program = cfg.upstream.program(record["version"])
    try:
        package, version = package_name_version(package_id)
    except UserError as e:
        raise VerifyError(f"{name}: {e}") from None
    if package != program.package or record.get("package") != program.package:
        raise VerifyError(f"{name}: built from package {package}, but version {record['version']} is built from "
                          f"{program.package} (upstream.programs)")
    if version != record.get("cargo_version"):
        raise VerifyError(f"{name}: package id {package_id!r} disagrees with cargo_version {record.get('cargo_version')!r}")
    if layout.source_record.exists():
        from .upstream import Source

        source = Source.load(layout.source_record)
        if (source.ref, source.commit) != (record.get("ref"), record.get("commit")):
            raise VerifyError(f"{name}: built from {record.get('ref')} ({str(record.get('commit'))[:12]}), but the "
                              f"fetched source is {source.ref} ({source.commit[:12]}): build the flavour again")


# --- the cache ------------------------------------------------------------------


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_units(layout: Layout, flavour: str, source, cargo_run, executable: Path) -> None:
    """Remember which compiled units (cargo's metadata hashes) the build of
    this commit used, for clean-cache."""
    from .cargo_messages import unit_hashes

    path = layout.units_manifest(flavour)
    manifest = _read_manifest(path)
    manifest[source.commit] = {"rpm_version": source.rpm_version, "ref": source.ref,
                               "hashes": sorted(unit_hashes(cargo_run, executable))}
    atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _remove(path: Path) -> int:
    size = _size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


UNIT_NAME = re.compile(r"-([0-9a-f]{16})(?=$|[./])")


def clean_cache(cfg: Config, layout: Layout, keep: int = 2) -> dict:
    """Keep the source trees and compiled units of the newest `keep`
    versions built per flavour (and of the source fetched now); remove the
    rest.  Returns {what: bytes freed} and prints it."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise UserError(f"keep = {keep!r}: expected a whole number of 1 or more")
    freed: dict[str, int] = {}
    keep_commits: set[str] = set()
    current = None
    if layout.source_record.exists():
        try:
            current = json.loads(layout.source_record.read_text()).get("commit")
        except ValueError:
            current = None
    if isinstance(current, str) and COMMIT.match(current):
        keep_commits.add(current)
    flavour_names = {f.name for f in cfg.flavours}
    target_root = layout.cache / "target"
    for target in sorted(target_root.iterdir()) if target_root.is_dir() else []:
        manifest = _read_manifest(target / "mrpm-units.json") if target.name in flavour_names else {}
        builds = sorted(((c, m) for c, m in manifest.items() if COMMIT.match(c) and isinstance(m, dict)),
                        key=lambda cm: RpmVersion(str(cm[1].get("rpm_version", "0"))), reverse=True)
        kept = builds[:keep]
        hashes = {h for _, m in kept for h in m.get("hashes", [])}
        keep_commits.update(c for c, _ in kept)
        if target.name not in flavour_names or not manifest:
            # A flavour no longer configured, or one never built since units
            # were recorded: nothing in it can be told apart, so keep it.
            continue
        count = 0
        for profile in (target / "release", target / "debug"):
            for sub in ("deps", "build", ".fingerprint", "incremental"):
                directory = profile / sub
                if not directory.is_dir():
                    continue
                for entry in directory.iterdir():
                    found = UNIT_NAME.findall(entry.name)
                    if found and not hashes.intersection(found):
                        count += _remove(entry)
        freed[f"units of {target.name}"] = count
        if len(builds) > keep:
            atomic_write(target / "mrpm-units.json", json.dumps(dict(kept), indent=1, sort_keys=True) + "\n")
    src = layout.cache / "src"
    count = 0
    for tree in sorted(src.iterdir()) if src.is_dir() else []:
        if COMMIT.match(tree.name) and tree.name not in keep_commits:
            count += _remove(tree)
    if count and (layout.mirror / "HEAD").exists():
        run([GIT, f"--git-dir={layout.mirror}", "worktree", "prune"], quiet=True)
    freed["source trees"] = count
    total = sum(freed.values())
    for what, size in freed.items():
        log(f"clean-cache: {what}: {size / 2**20:.1f} MiB freed")
    log(f"==> clean-cache: kept the newest {keep} version(s) per flavour; {total / 2**20:.1f} MiB freed in all")
    return {"freed": freed}
