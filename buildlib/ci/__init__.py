"""CI's side: :mod:`.poll` (what upstream has that the repository lacks, and
the decision), :mod:`.github` (GitHub's answers, validated and bounded in
depth), :mod:`.http` (GET with a deadline per attempt, size limits, retries,
rate limits and ETags) and :mod:`.matrix` (the flavours a build fans out
over)."""
