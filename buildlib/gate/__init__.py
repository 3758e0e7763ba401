"""The release gate: a flavour's staged package installed with dnf on a GPU
of its generation and run there (:mod:`.runner`), its result a gate record
(:mod:`.record`) beside the staged package, which `doit promote`
(:mod:`buildlib.publish.promote`) holds the package to."""
