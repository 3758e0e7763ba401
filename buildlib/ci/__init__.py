"""CI's side: :mod:`.poll` (what upstream has that the repository lacks, and
the decision), :mod:`.github` (GitHub's answers, validated), :mod:`.http`
(GET with retries, rate limits and ETags) and :mod:`.matrix` (the flavours a
build fans out over)."""
