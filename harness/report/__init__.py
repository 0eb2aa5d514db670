"""Views derived from records alone: the HTML kit, the charts, the leaderboard, one run's page, the workloads table.

Nothing here imports the judge, the trial, the sandbox or torch (import-linter contracts in pyproject.toml).
"""
