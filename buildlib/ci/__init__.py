"""CI's side: :mod:`.poll` (what upstream has that the repository lacks) and
the flavour matrix."""
