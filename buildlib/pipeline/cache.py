"""The cache's upkeep: which compiled units each version's build used
(recorded after every build), and `doit clean-cache`, which keeps the
source trees and units of the newest versions per flavour and removes the
rest."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..config import Config
from ..layout import Layout
from ..refs import COMMIT, RPM_VERSION
from ..run import UserError, atomic_write, log, run
from .cargo_messages import UNIT_HASH, CargoRun, unit_hashes
from .history import version_key
from .upstream import Source

GIT = "git"


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_units(layout: Layout, flavour: str, source: Source, cargo_run: CargoRun, executable: Path) -> None:
    """Remember which compiled units (cargo's metadata hashes) the build of
    this commit used, for clean-cache."""
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


def _rpm_version_key(build: tuple[str, dict]):
    version = build[1].get("rpm_version")
    # a manifest is a file anyone can edit: an entry without a usable
    # version sorts as the oldest
    return version_key(version if isinstance(version, str) and RPM_VERSION.match(version) else "0")


def clean_cache(cfg: Config, layout: Layout, keep: int = 2) -> dict:
    """Keep the source trees and compiled units of the newest `keep`
    versions built per flavour (and of the source fetched now); remove the
    rest.  Returns {what: bytes freed} and prints it."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise UserError(f"keep = {keep!r}: expected a whole number of 1 or more")
    freed: dict[str, int] = {}
    keep_commits: set[str] = set()
    current = _read_manifest(layout.source_record).get("commit")
    if isinstance(current, str) and COMMIT.match(current):
        keep_commits.add(current)
    flavour_names = {f.name for f in cfg.flavours}
    for target in sorted(layout.target_dirs.iterdir()) if layout.target_dirs.is_dir() else []:
        manifest = _read_manifest(layout.units_manifest(target.name)) if target.name in flavour_names else {}
        builds = sorted(((c, m) for c, m in manifest.items() if COMMIT.match(c) and isinstance(m, dict)),
                        key=_rpm_version_key, reverse=True)
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
                    found = UNIT_HASH.findall(entry.name)
                    if found and not hashes.intersection(found):
                        count += _remove(entry)
        freed[f"units of {target.name}"] = count
        if len(builds) > keep:
            atomic_write(layout.units_manifest(target.name), json.dumps(dict(kept), indent=1, sort_keys=True) + "\n")
    count = 0
    for tree in sorted(layout.source_trees.iterdir()) if layout.source_trees.is_dir() else []:
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
