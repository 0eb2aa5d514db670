"""The one exception a user can cause; the CLI turns it into one line and exit code 2."""


class LoopbenchError(Exception):
    """Bad input from the user (a file, a flag, a submission folder): one clear line, exit 2."""
