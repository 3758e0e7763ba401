"""Task creator for the licenses stage: what each flavour's binary bundles."""

from __future__ import annotations

from doit.tools import config_changed

from ..pipeline.licenses import bundle_inputs, collect_licenses
from . import context
from .context import action


def task_licenses():
    """Read each flavour's linked crates, their licenses and the declared bundled code."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"licenses, bundled provides and license files of mistralrs-{flavour.name}",
            "actions": [action(collect_licenses, cfg, layout, flavour)],
            # The build record names the commit and features built.
            "file_dep": [layout.build_record(flavour.name)],
            "targets": [layout.bundle_record(flavour.name), layout.license_archive(flavour.name)],
            "uptodate": [config_changed(bundle_inputs(cfg, flavour))],
            "verbosity": 2,
        }
