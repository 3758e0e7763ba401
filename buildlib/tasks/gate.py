"""Task creators for the release gate: thin; the work is
buildlib.gate.runner.gate_flavour and buildlib.publish.promote.promote."""

from __future__ import annotations

from .context import action, current, lazy


_gate = lazy("buildlib.gate.runner:gate_flavour")
_promote = lazy("buildlib.publish.promote:promote")


def task_gate():
    """On a runner with the flavour's GPU: install its staged package with dnf and run the smoke; the gate record goes beside it."""
    cfg, layout = current()
    for f in cfg.flavours:
        def gate(channel, reposdir, _f=f.name):
            return action(_gate, cfg, layout, _f, channel, reposdir)[0]()

        yield {
            "name": f.name,
            "doc": f"prove mistralrs-{f.name} on a GPU of compute capability {f.compute_cap} (runner label gpu-sm{f.compute_cap})",
            "actions": [gate],
            "params": [{"name": "channel", "long": "channel", "type": str, "default": "stable",
                        "help": "whose staging area to install from (stable or unstable)"},
                       {"name": "reposdir", "long": "reposdir", "type": str, "default": "/etc/yum.repos.d",
                        "help": "where dnf finds the other dependencies' repositories (Fedora's, NVIDIA's CUDA)"}],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_promote():
    """Add to a channel, from its staging area, exactly the packages that passed their gate (or whose flavour has gate = "off")."""
    cfg, layout = current()

    def promote(channel):
        return action(_promote, cfg, layout, channel)[0]()

    return {
        "actions": [promote],
        "params": [{"name": "channel", "long": "channel", "type": str, "default": "stable",
                    "help": "the channel to promote into (stable or unstable)"}],
        "uptodate": [False],
        "verbosity": 2,
    }
