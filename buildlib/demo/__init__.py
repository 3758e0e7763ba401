"""The demo (``scripts/demo``): :mod:`.driver` runs the pipeline end to end
against :mod:`.upstream` (a small local stand-in for mistral.rs), and
:mod:`.localrepo` (a local Fedora repository and dnf root)."""
