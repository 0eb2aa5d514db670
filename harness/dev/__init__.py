"""In-process tools for developers: the naive reference run in this process, and scaffolding a new submission."""
