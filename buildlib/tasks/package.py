"""Task creators for packaging: render each flavour's spec, build its RPM."""

from __future__ import annotations

from doit.tools import config_changed

from .. import layout as paths
from ..config import Flavour
from ..layout import Layout, sbom_beside
from ..pipeline.spec import render_spec, spec_inputs, spec_settings, spec_sources
from ..run import UserError
from . import context
from .context import action, lazy


rebuild_check = lazy("buildlib.pipeline.rebuild:check")


def build_rpm(cfg, layout, flavour):
    # imported on first use so a no-op doit starts fast
    from ..pipeline import rebuild
    from ..pipeline.records import BuildRecord
    from ..pipeline.rpmbuild import build_rpm

    path = build_rpm(cfg, layout, flavour)
    # build.rebuild_check = "releases": a release's package is built a second
    # time, independently, here, so that CI's build job (which hands dist/ to
    # the publish job without records) fails before it hands anything over
    if cfg.build.rebuild_releases and rebuild.required(cfg, BuildRecord.load(layout, flavour)):
        rebuild.check(cfg, layout, flavour)
    return path


def task_spec():
    """Render rpm/mistralrs.spec.j2 for each flavour's verified artifact."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"render mistralrs-{flavour.name}.spec (Release from what its channel holds)",
            "actions": [action(render_spec, cfg, layout, flavour)],
            # The spec names the digest of every file it packages.  The binary
            # itself is covered by the small build record, never hashed here.
            "file_dep": [layout.build_record(flavour.name), layout.verify_record(flavour.name),
                         layout.bundle_record(flavour.name), paths.SPEC_TEMPLATE, *spec_inputs(layout, flavour)],
            "targets": [layout.spec(flavour.name), layout.sbom(flavour.name)],
            "uptodate": [config_changed(spec_settings(cfg, flavour))],
            "verbosity": 2,
        }


def task_rpm():
    """rpmbuild each flavour's spec into dist/ (and, with build.rebuild_check = "releases", check a release's by a second build)."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"rpmbuild mistralrs-{flavour.name} into {layout.dist.name}/",
            "actions": [action(build_rpm, cfg, layout, flavour)],
            "file_dep": [layout.build_record(flavour.name), layout.verify_record(flavour.name),
                         layout.spec(flavour.name), *spec_sources(layout, flavour)[1:],
                         paths.COMPAT_MACROS],
            "targets": [layout.rpm_record(flavour.name)],
            "uptodate": [config_changed(_rpm_settings(cfg)), _rpm_in_place(layout, flavour)],
            "verbosity": 2,
        }


def task_rebuild_check():
    """Build a flavour again elsewhere and compare binary and unsigned RPM bit for bit."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "basename": "rebuild-check",
            "name": flavour.name,
            "doc": f"rebuild mistralrs-{flavour.name} in a scratch location (another cache, build directory"
                   " and CARGO_HOME) and compare, naming the first difference",
            "actions": [action(rebuild_check, cfg, layout, flavour)],
            # an act on the current build and package, asked for by name
            "uptodate": [False],
            "verbosity": 2,
        }


def _rpm_settings(cfg) -> dict:
    settings = {"dist": cfg.package.dist, "payload": cfg.package.payload}
    # named only when on, so that the default leaves every rpm task's saved state as it was
    if cfg.build.rebuild_releases:
        settings["rebuild_check"] = cfg.build.rebuild_check
    return settings


def _rpm_in_place(layout: Layout, flavour: Flavour):
    """Up to date only while the RPM its record names, and its SBOM, are still in dist/."""

    def check(task, values) -> bool:
        from ..pipeline.records import RpmRecord

        try:
            file = RpmRecord.load(layout, flavour).file
            return (layout.dist / file).is_file() and (layout.dist / sbom_beside(file)).is_file()
        except UserError:
            return False

    return check
