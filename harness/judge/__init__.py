"""The judge: the trusted float64 oracle, the audit of every segment, its tolerances and the hints of a rejection."""
