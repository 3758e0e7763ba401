"""Upstream's history as the pipeline reads it: which release tags a commit
contains and in what order, whether a snapshot is on the configured branch,
whether a tag moved upstream, and which versions a %changelog lists.

Order is always version order as rpm compares versions (rpm.labelCompare,
through :func:`buildlib.refs.compare_evr`, the project's one
comparison), never tag dates: release scripts make several tags in one
second and tags are pushed late.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..refs import COMMIT, TAG, Ref, compare_evr, rpm_version_of_tag
from ..run import UserError, log, output, run

GIT = "git"

GIT_TOTAL_TIMEOUT = 4 * 3600
"""A clone or fetch that still makes progress is stopped only after this."""


def network(cfg: Config, total: float = GIT_TOTAL_TIMEOUT) -> dict:
    """run()'s settings for every git command that talks to upstream: a
    stalled http(s) transfer or ssh connection ends after upstream.timeout
    seconds, the whole command after `total`, and git never waits for a
    password."""
    stall = max(1, int(cfg.upstream.timeout))
    ssh = f"ssh -o BatchMode=yes -o ConnectTimeout={stall} -o ServerAliveInterval={max(1, stall // 3)} -o ServerAliveCountMax=3"
    return {"timeout": total, "env": {"GIT_TERMINAL_PROMPT": "0", "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
                                      "GIT_HTTP_LOW_SPEED_TIME": str(stall),
                                      "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND") or ssh}}


def _quick(cfg: Config) -> dict:
    """network() for a command that moves only a few refs (ls-remote, one
    branch): bounded by a few stall periods, not by GIT_TOTAL_TIMEOUT."""
    return network(cfg, total=max(60.0, 4 * cfg.upstream.timeout))


# --- rpm's version order ------------------------------------------------------


def compare_versions(a: str, b: str) -> int:
    """rpm's order of two RPM versions (X.Y.Z, X.Y.Z~rcN, X.Y.Z^...): <0, 0 or >0."""
    return compare_evr(f"0:{a}-0", f"0:{b}-0")


version_key = functools.cmp_to_key(compare_versions)
"""Sort key of an RPM version in rpm's order."""


def tag_key(tag: str):
    """Sort key of a release tag in rpm's order: v0.9.2-rc1 < v0.9.2 < v0.9.10."""
    return version_key(rpm_version_of_tag(tag))


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
                  capture=True, check=False, **network(cfg))
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


def remote_tag_commit(cfg: Config, ref: Ref) -> str | None:
    """The commit the release tag ref names on upstream.url now (peeled), None
    if it has no such tag.  A UserError when the remote cannot be asked
    (also when it does not answer within the network settings' bounds)."""
    url = cfg.upstream.url
    if not ref.is_tag:
        raise UserError(f"{ref.text} is not a release tag")
    tag = ref.text
    if url.startswith("-"):
        raise UserError(f"upstream.url = {url!r}: expected a git URL or a local path")
    result = run([GIT, "ls-remote", "--tags", "--", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
                 capture=True, check=False, quiet=True, **_quick(cfg))
    if result.returncode != 0:
        raise UserError(f"git ls-remote {url} failed: {result.stderr.decode(errors='replace').strip()[-200:]}")
    found: dict[str, str] = {}
    for line in result.stdout.decode().splitlines():
        sha, _, name = line.partition("\t")
        if COMMIT.match(sha):
            found[name] = sha
    return found.get(f"refs/tags/{tag}^{{}}") or found.get(f"refs/tags/{tag}")


def note_moved_tag(before: str | None, ref: Ref, commit: str) -> None:
    """Say so when a fetch finds a tag on another commit (``commit``) than
    the one the last fetch recorded (``before``)."""
    if before is not None and before != commit and ref.is_tag:
        log(f"warning: tag {ref.text} moved upstream from {before[:12]} to {commit[:12]}: rebuilding from the new commit")


# --- %changelog -----------------------------------------------------------------


def changelog_versions(cfg: Config, entries: Sequence) -> set[str]:
    """The versions a %changelog may list besides the one packaged now:
    every final release from the first row of upstream.programs on (the
    poll builds each release).  Nothing local and nothing from the channel
    decides it (buildlib/pipeline/spec.py says why release candidates are
    left out); releases older than the first row were never packaged."""
    versions = set()
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
    then only the versions in `packaged` (changelog_versions), highest
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
    kept.sort(key=lambda e: version_key(e.rpm_version), reverse=True)
    kept = [e for e in kept if compare_versions(e.rpm_version, head.rpm_version) < 0]
    ordered = [head]
    for entry in kept:
        if entry.day > ordered[-1].day:
            entry = dataclasses.replace(entry, day=ordered[-1].day)
        ordered.append(entry)
    return ordered
