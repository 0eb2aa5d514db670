"""What both sides of a trial agree on: workloads and the task, the submission folder, the log, the wire, the checks.

Nothing here runs a submission or imports torch; the sandbox imports this package and nothing else of the harness.
"""
