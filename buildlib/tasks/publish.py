"""Task creator for the publish stage: thin; the work is publisher.publish_dist."""

from __future__ import annotations

from .context import action, current


def _publish_dist(cfg, layout, channel, release_package=False):
    # imported on first use so a no-op doit starts fast
    from ..pipeline.rebuild import check_current_rebuilt
    from ..publish import publisher

    # build.rebuild_check = "releases": no release package goes out that a second build did not reproduce
    check_current_rebuilt(cfg, layout)
    return publisher.publish_dist(cfg, layout, channel, release_package, staging=True)


def task_publish():
    """Sign dist/*.rpm and publish them to their channel's staging area (snapshots: unstable; releases: stable; mistralrs-release: straight into both), then the index page."""
    cfg, layout = current()

    def publish(channel, release_package):
        return action(_publish_dist, cfg, layout, channel or None, release_package)[0]()

    # No file_dep and no task_dep on the build: publishing is an act on what
    # dist/ holds now (CI hands the packages over into an empty doit state),
    # so it always runs and never triggers a build.
    return {
        "actions": [publish],
        "params": [{"name": "channel", "long": "channel", "type": str, "default": "",
                    "help": "publish only this channel's packages (stable or unstable)"},
                   {"name": "release_package", "long": "release-package", "type": bool, "default": False,
                    "help": "build each channel's mistralrs-release from the repository's key where it lacks a"
                            " current one (CI); dist/'s is left aside"}],
        "uptodate": [False],
        "verbosity": 2,
    }
