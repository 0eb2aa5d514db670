"""Scoring: a trial's data, one run and its verdict, trials, executors (local, Ray), statistics, FLOPs, the machine."""
