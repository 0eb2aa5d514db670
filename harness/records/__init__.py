"""Records: the typed, versioned schema of a run record, its store, and the CLI's JSON outputs. No torch here."""
