"""The build pipeline's stages, in order: :mod:`.doctor` (preflight),
:mod:`.upstream` (fetch), :mod:`.cargo` (build), :mod:`.verify`,
:mod:`.spec` and :mod:`.rpmbuild` (package)."""
