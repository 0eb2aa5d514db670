"""The trusted parent of one run: its session (setup, the timed phase, after the clock), its watch, its outcome."""
