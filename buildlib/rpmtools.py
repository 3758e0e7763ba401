"""The one way this project runs rpmbuild: in a top directory of its own,
for the flavour packages (:mod:`buildlib.pipeline.rpmbuild`), the
``mistralrs-release`` package (:mod:`buildlib.host.release_package`) and the
demo's stand-in repository (:mod:`buildlib.demo.localrepo`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .run import UserError, require_tool, run


def rpmbuild(spec: Path, topdir: Path, *, defines: Mapping[str, str] | None = None, options: Sequence[str] = (),
             own_db: bool = True, env: Mapping[str, str] | None = None, capture: bool = True,
             expect: int | None = None) -> list[Path]:
    """``rpmbuild -bb`` of spec with _topdir (and, with own_db, the package
    database) inside topdir; returns the RPMs it left in topdir/RPMS, or
    fails in one line when ``expect`` is given and that many were not built."""
    argv = [require_tool("rpmbuild", "install rpm (rpmbuild)"), "-bb", "--quiet", "--define", f"_topdir {topdir}"]
    if own_db:
        argv += ["--define", f"_dbpath {topdir / 'rpmdb'}"]
    for name, value in (defines or {}).items():
        argv += ["--define", f"{name} {value}"]
    run([*argv, *options, str(spec)], env=dict(env) if env is not None else None, capture=capture)
    built = sorted((topdir / "RPMS").glob("*/*.rpm"))
    if expect is not None and len(built) != expect:
        raise UserError(f"rpmbuild left {len(built)} packages in {topdir / 'RPMS'}, expected {expect}")
    return built
