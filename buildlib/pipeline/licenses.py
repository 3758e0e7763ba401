"""The licenses stage: what one flavour's binary bundles, computed from the
source tree it was built from (:mod:`.bundled`), kept as a
:class:`.records.BundleRecord` plus one tar file of the license files the
package ships as ``%license``.

It runs after the build: the crates are then in cargo's cache, and
``cargo metadata``/``cargo tree`` run ``--offline --locked`` with the
flavour's features.  A prebuilt binary has no build here; its licenses come
from the source of the same version (``MRPM_REF=vX.Y.Z doit fetch`` first).
"""

from __future__ import annotations

import io
import shutil
import tarfile
from datetime import datetime
from pathlib import Path

from ..config import Config, Flavour
from ..layout import Layout
from ..run import Stopwatch, UserError, atomic_write, sha256_of
from . import bundled
from .records import BuildRecord, BundleRecord
from .upstream import Source, ensure_tree


def bundle_inputs(cfg: Config, flavour: Flavour) -> dict:
    """The settings of config.toml that decide a flavour's bundle (besides
    the build, which the task depends on through its record)."""
    return {
        "programs": [[".".join(map(str, p.first)), p.package, p.binary] for p in cfg.upstream.programs],
        "features": list(flavour.features(cfg.build)),
        "bundled": [[c.name, c.version, c.license, c.url, c.commit, c.evidence.path if c.evidence else "",
                     c.evidence.contains if c.evidence else ""] for c in cfg.bundled.components],
        "crate_license": [[c.name, c.version, c.license] for c in cfg.bundled.crate_licenses],
    }


def collect_licenses(cfg: Config, layout: Layout, flavour: Flavour, home: Path | None = None) -> dict:
    """Compute the flavour's bundle, write its record and license archive.
    home: the cargo home the build used (default: as cargo finds it; the
    rebuild check's fresh one holds the crates its build fetched)."""
    watch = Stopwatch(f"licenses {flavour.name}")
    build = BuildRecord.load(layout, flavour)
    if build.source == "prebuilt" and not layout.source_record.exists():
        raise UserError(
            f"the licenses of the prebuilt {flavour.name} binary come from upstream's source of version {build.version}:"
            f" fetch it first (MRPM_REF={build.ref} doit fetch, without MRPM_PREBUILT_VERSION)"
        )
    source = Source.load(layout.source_record)
    same = source.commit == build.commit if build.commit else source.version == build.version
    if not same:
        wanted = build.commit[:12] if build.commit else f"v{build.version}"
        raise UserError(
            f"{layout.source_record} names {source.ref} ({source.commit[:12]}), but {flavour.name}'s binary was built"
            f" from {wanted}: fetch that ref (MRPM_REF={build.ref or wanted} doit fetch) so its licenses can be read"
        )
    tree = layout.source_tree(source.commit)
    if not (tree / "Cargo.toml").is_file():
        tree = ensure_tree(layout, source.commit)
    # the package the binary was built from (upstream.programs by version, in its record)
    bundle = bundled.collect(tree, build.package, build.features, cfg.bundled,
                             env={"CARGO_HOME": str(home)} if home else None)
    epoch = int(datetime.fromisoformat(source.commit_date).timestamp())
    write_bundle(layout, flavour.name, bundle, commit=source.commit, version=source.version,
                 source_date_epoch=epoch, features=tuple(build.features))
    watch.done(f"{len(bundle.vendored)} crates from outside the tree, {len(bundle.components)} declared components;"
               f" License: {bundle.license}")
    return {}


def write_bundle(layout: Layout, flavour: str, bundle: bundled.Bundle, *, commit: str, version: str,
                 source_date_epoch: int, features: tuple[str, ...]) -> BundleRecord:
    """The license archive, then the record that names its digest."""
    archive = layout.license_archive(flavour)
    files = layout.license_files(flavour)
    shutil.rmtree(files, ignore_errors=True)
    bundled.write_license_files(bundle, files)
    atomic_write(archive, tar_bytes(files, source_date_epoch))
    shutil.rmtree(files)
    record = BundleRecord(
        flavour=flavour, commit=commit, version=version, source_date_epoch=source_date_epoch,
        features=features, license_archive_sha256=sha256_of(archive), bundle=bundle,
    )
    record.write(layout)
    return record


def tar_bytes(directory: Path, mtime: int) -> bytes:
    """The files under directory as a tar file that depends on their names
    and contents only: sorted, owner root, modes 0644/0755, every time
    ``mtime``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix()):
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise UserError(f"{path}: only plain files and directories go into the license archive")
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "root", "root"
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
