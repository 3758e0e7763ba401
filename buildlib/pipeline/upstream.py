"""The bare mirror of upstream and a clean source tree for one ref."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config
from ..layout import Layout
from ..refs import COMMIT, RPM_VERSION, TAG, Ref, RefError, rpm_version_of_tag, snapshot_version, tag_version
from ..run import Stopwatch, UserError, atomic_write, output, run
from .history import check_on_branch, network, note_moved_tag, release_tags

GIT = "git"
CHANGELOG_ENTRIES = 10


@dataclass(frozen=True)
class Source:
    """What the fetch stage recorded: the ref, its commit, its versions."""

    ref: str
    commit: str
    version: str
    """Upstream's version: 0.9.2, 0.9.2-rc1; for a commit, its last tag's."""
    rpm_version: str
    is_snapshot: bool
    commit_date: str
    changelog: tuple[dict, ...]
    tree: str

    @classmethod
    def load(cls, path: Path) -> "Source":
        try:
            data = json.loads(path.read_text())
            data["changelog"] = tuple(data["changelog"])
            source = cls(**data)
            source.check()
            return source
        except FileNotFoundError:
            raise UserError(f"{path} is missing: run `doit fetch` first") from None
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise UserError(f"{path} is not a source record ({e}); delete it and run `doit fetch`") from None

    def check(self) -> None:
        """ValueError unless every field that reaches git, a path, cargo or
        a spec has the form fetch writes: the commit names the source tree's
        directory (cache/src/<commit>, which ensure_tree may delete), the
        versions go into cargo's -p choice and the RPM's Version."""
        if not (isinstance(self.commit, str) and COMMIT.match(self.commit)):
            raise ValueError(f"commit {str(self.commit)[:60]!r} is not a 40-hex commit id")
        if not isinstance(self.ref, str) or not (TAG.match(self.ref) or COMMIT.match(self.ref)):
            raise ValueError(f"ref {str(self.ref)[:60]!r} is not a release tag or a commit id")
        if not isinstance(self.version, str) or not TAG.match(f"v{self.version}"):
            raise ValueError(f"version {str(self.version)[:60]!r} is not X.Y.Z or X.Y.Z-rcN")
        if not isinstance(self.rpm_version, str) or not RPM_VERSION.match(self.rpm_version):
            raise ValueError(f"rpm_version {str(self.rpm_version)[:60]!r} is not an RPM version")
        if not isinstance(self.is_snapshot, bool) or self.is_snapshot != (self.ref == self.commit):
            raise ValueError("is_snapshot does not agree with ref and commit")
        if not self.is_snapshot and (self.version, self.rpm_version) != (tag_version(self.ref), rpm_version_of_tag(self.ref)):
            raise ValueError(f"version {self.version!r} / rpm_version {self.rpm_version!r} are not tag {self.ref}'s")


def _git(layout: Layout, *args: str, **kwargs) -> str:
    return output([GIT, f"--git-dir={layout.mirror}", *args], **kwargs)


def _check_url(url: str) -> str:
    if url.startswith("-") or any(c in url for c in "\n\r\0"):
        raise UserError(f"upstream.url = {url!r}: expected a git URL or a local path")
    return url


def update_mirror(cfg: Config, layout: Layout) -> None:
    """Create the bare mirror once; afterwards only `git fetch` it."""
    url = _check_url(cfg.upstream.url)
    if not (layout.mirror / "HEAD").exists():
        tmp = layout.mirror.with_name(layout.mirror.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        run([GIT, "clone", "--mirror", "--", url, tmp], **network(cfg))
        tmp.rename(layout.mirror)
        return
    current = _git(layout, "config", "--get", "remote.origin.url", check=False)
    if current != url:
        run([GIT, f"--git-dir={layout.mirror}", "remote", "set-url", "origin", "--", url])
    # --force: a tag moved upstream replaces the mirror's (history.tag_unchanged noticed it)
    run([GIT, f"--git-dir={layout.mirror}", "fetch", "--prune", "--tags", "--force", "origin"], **network(cfg))


def resolve_commit(layout: Layout, ref: Ref) -> str | None:
    spec = f"refs/tags/{ref.text}^{{commit}}" if ref.is_tag else f"{ref.text}^{{commit}}"
    result = run([GIT, f"--git-dir={layout.mirror}", "rev-parse", "--verify", "--quiet", spec],
                 capture=True, check=False, quiet=True)
    commit = result.stdout.decode().strip()
    return commit if result.returncode == 0 and COMMIT.match(commit) else None


def _release_tags(layout: Layout, commit: str) -> list[tuple[str, str, str]]:
    """(tag, commit, date) of the release tags in commit's history, highest
    version first (history.release_tags)."""
    return [(t.tag, t.commit, t.date) for t in release_tags(layout.mirror, commit)]


def describe(cfg: Config, layout: Layout, ref: Ref, commit: str) -> Source:
    tags = _release_tags(layout, commit)
    date_iso = _git(layout, "show", "-s", "--format=%cI", commit, quiet=True)
    commit_day = datetime.fromisoformat(date_iso).astimezone(timezone.utc)
    changelog = tuple(
        {"tag": t, "commit": c, "date": d, "rpm_version": rpm_version_of_tag(t)} for t, c, d in tags[:CHANGELOG_ENTRIES]
    )
    if ref.is_tag:
        version, rpm_version, snapshot = tag_version(ref.text), rpm_version_of_tag(ref.text), False
    else:
        if not tags:
            raise UserError(f"commit {commit[:12]} has no release tag before it: cannot number a snapshot")
        last_tag, last_commit, _ = tags[0]
        count = int(_git(layout, "rev-list", "--count", f"{last_commit}..{commit}", quiet=True))
        version = tag_version(last_tag)
        rpm_version = snapshot_version(last_tag, commit_day.date(), count, commit)
        snapshot = True
        changelog = ({"tag": None, "commit": commit, "date": f"{commit_day:%Y-%m-%d}", "rpm_version": rpm_version},) + changelog
    return Source(ref=ref.text, commit=commit, version=version, rpm_version=rpm_version, is_snapshot=snapshot,
                  commit_date=date_iso, changelog=changelog, tree=str(layout.source_tree(commit)))


def ensure_tree(layout: Layout, commit: str) -> Path:
    """A clean checkout of commit, shared by every flavour's build."""
    tree = layout.source_tree(commit)
    if (tree / ".git").exists():
        status = output([GIT, "-C", tree, "status", "--porcelain", "--ignored"], quiet=True)
        if not status:
            return tree
        shutil.rmtree(tree)
    run([GIT, f"--git-dir={layout.mirror}", "worktree", "prune"], quiet=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    run([GIT, f"--git-dir={layout.mirror}", "worktree", "add", "--force", "--detach", tree, commit])
    return tree


def fetch(cfg: Config, layout: Layout) -> Source:
    """Update the mirror, resolve the configured ref, prepare its tree, record it."""
    watch = Stopwatch("fetch")
    ref = cfg.upstream.ref
    commit = resolve_commit(layout, ref) if (layout.mirror / "HEAD").exists() else None
    if commit is None or ref.is_tag:
        # Tags can move upstream; always ask.  A known commit id cannot.
        update_mirror(cfg, layout)
        commit = resolve_commit(layout, ref)
    if commit is None:
        kind = "tag" if ref.is_tag else "commit"
        raise RefError(f"{kind} {ref.text} does not exist in {cfg.upstream.url}")
    if ref.is_commit:
        check_on_branch(cfg, layout.mirror, commit)
    note_moved_tag(layout, ref, commit)
    source = describe(cfg, layout, ref, commit)
    cfg.upstream.program(source.version)  # a version no row covers is refused before any build
    ensure_tree(layout, commit)
    atomic_write(layout.source_record, json.dumps(asdict(source), indent=2) + "\n")
    watch.done(f"{ref.text} is {commit[:12]}, version {source.rpm_version}")
    return source
