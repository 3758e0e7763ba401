"""Task creators for the first stages: preflight, fetch, build, verify."""

from __future__ import annotations

import os

from doit.tools import config_changed

from ..pipeline.cargo import adopt_prebuilt, build_flavour, build_inputs
from . import context
from .context import action, lazy


_tag_unchanged = lazy("buildlib.pipeline.upstream:tag_unchanged")

PREBUILT_ENV = "MRPM_PREBUILT_VERSION"

doctor = lazy("buildlib.pipeline.doctor:doctor")
fetch = lazy("buildlib.pipeline.upstream:fetch")
verify_artifact = lazy("buildlib.pipeline.verify:verify_artifact")


def task_doctor():
    """Preflight: tools, versions, feature libraries, memory, host compiler, CUTLASS, disk space."""
    cfg, layout = context.current()
    return {"actions": [action(doctor, cfg, layout)], "uptodate": [False], "verbosity": 2}


def task_fetch():
    """Update the upstream mirror and check out the configured ref."""
    cfg, layout = context.current()
    if os.environ.get(PREBUILT_ENV):
        return {"actions": None, "doc": "(skipped: prebuilt binaries are packaged)", "uptodate": [True]}
    return {
        "actions": [action(fetch, cfg, layout)],
        "targets": [layout.source_record],
        # Also asks the remote, every run, whether a tag moved since.
        "uptodate": [config_changed({"url": cfg.upstream.url, "ref": cfg.upstream.ref.text,
                                     "branch": cfg.upstream.branch}),
                     lambda: _tag_unchanged(cfg, layout)],
        "verbosity": 2,
    }


def task_build():
    """cargo build one flavour into artifacts/mistralrs-<flavour>."""
    cfg, layout = context.current()
    prebuilt = os.environ.get(PREBUILT_ENV)
    for flavour in cfg.flavours:
        if prebuilt:
            yield {
                "name": flavour.name,
                "doc": f"adopt the prebuilt artifacts/mistralrs-{flavour.name} as version {prebuilt}",
                "actions": [action(adopt_prebuilt, cfg, layout, flavour, prebuilt)],
                "file_dep": [layout.artifact(flavour.name)],
                "targets": [layout.build_record(flavour.name)],
                "uptodate": [config_changed({"prebuilt": prebuilt})],
                "verbosity": 2,
            }
            continue
        yield {
            "name": flavour.name,
            "doc": f"cargo build for {flavour.name} (sm_{flavour.compute_cap})",
            "actions": [action(build_flavour, cfg, layout, flavour)],
            # The small source record, never the big binary: a no-op run must
            # not hash artifacts.  A missing artifact is a missing target.
            "file_dep": [layout.source_record],
            "targets": [layout.artifact(flavour.name), layout.build_record(flavour.name)],
            "uptodate": [config_changed(build_inputs(cfg, flavour))],
            "verbosity": 2,
        }


def task_verify():
    """Check an artifact is an x86-64 ELF with CUDA code for its flavour only."""
    cfg, layout = context.current()
    for flavour in cfg.flavours:
        yield {
            "name": flavour.name,
            "doc": f"check artifacts/mistralrs-{flavour.name} holds sm_{flavour.compute_cap} code only",
            "actions": [action(verify_artifact, cfg, layout, flavour)],
            "file_dep": [layout.build_record(flavour.name)],
            "targets": [layout.verify_record(flavour.name)],
            "uptodate": [config_changed({"compute_cap": flavour.compute_cap,
                                         "programs": str(cfg.upstream.programs)})],
            "verbosity": 2,
        }
