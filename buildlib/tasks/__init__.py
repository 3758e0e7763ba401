"""doit task creators, one module per stage; thin wrappers over buildlib."""
