"""Task creators for packaging: render each flavour's spec, build its RPM."""

from __future__ import annotations

import json

from doit.tools import config_changed

from .. import layout as paths
from ..config import Config, Flavour
from ..layout import Layout
from ..rpmbuild import build_rpm
from ..spec import render_spec, spec_sources
from . import context
from .context import action


def spec_settings(cfg: Config, flavour: Flavour) -> dict:
    """Every setting of config.toml that reaches a flavour's spec."""
    pkg = cfg.package
    return {
        "payload": pkg.payload,
        "license": pkg.license,
        "url": pkg.url,
        "summary": pkg.summary,
        "packager": pkg.packager,
        "requires": list(pkg.requires),
        "feature_requires": {feature: list(deps) for feature, deps in pkg.feature_requires},
        "flavours": [f.name for f in cfg.flavours],
        "gpus": list(flavour.gpus),
        "compute_cap": flavour.compute_cap,
        "programs": [[".".join(map(str, p.first)), p.package, p.binary] for p in cfg.upstream.programs],
    }


def task_spec():
    """Render rpm/mistralrs.spec.j2 for each flavour's verified artifact."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"render mistralrs-{flavour.name}.spec (Release raised when the spec changed)",
            "actions": [action(render_spec, cfg, layout, flavour.name)],
            # The spec names the digest of every file it packages.  The binary
            # itself is covered by the small build record, never hashed here.
            "file_dep": [layout.build_record(flavour.name), layout.verify_record(flavour.name),
                         paths.SPEC_TEMPLATE, *spec_sources(layout, flavour.name)[1:]],
            "targets": [layout.spec(flavour.name)],
            "uptodate": [config_changed(spec_settings(cfg, flavour))],
            "verbosity": 2,
        }


def task_rpm():
    """rpmbuild each flavour's spec into dist/."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"rpmbuild mistralrs-{flavour.name} into {layout.dist.name}/",
            "actions": [action(build_rpm, cfg, layout, flavour.name)],
            "file_dep": [layout.build_record(flavour.name), layout.verify_record(flavour.name),
                         layout.spec(flavour.name), *spec_sources(layout, flavour.name)[1:],
                         paths.COMPAT_MACROS],
            "targets": [layout.rpm_record(flavour.name)],
            "uptodate": [config_changed({"dist": cfg.package.dist, "payload": cfg.package.payload}),
                         _rpm_in_place(layout, flavour.name)],
            "verbosity": 2,
        }


def _rpm_in_place(layout: Layout, flavour: str):
    """Up to date only while the RPM its record names is still in dist/."""

    def check(task, values) -> bool:
        try:
            name = json.loads(layout.rpm_record(flavour).read_text())["file"]
            return "/" not in name and (layout.dist / name).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            return False

    return check
