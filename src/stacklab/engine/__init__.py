"""Apply scheduler, state file and lock, event stream."""
