"""mistralrs-rpm: build, package and publish mistral.rs as Fedora RPMs."""
