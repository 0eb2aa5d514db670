"""The exceptions a user can cause; the CLI turns each into one line on stderr and its exit code."""


class LoopbenchError(Exception):
    """Bad input from the user (a file, a flag, a submission folder): one clear line, exit 2."""

    exit_code = 2


class MachineBusy(LoopbenchError):
    """The machine took CPU from the runs again and again: no score can be had now. Exit code 3."""

    exit_code = 3
