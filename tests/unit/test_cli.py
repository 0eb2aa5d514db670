"""The CLI's signal handling: SIGTERM and SIGHUP end a command as Ctrl-C does, unless ignored on entry."""

from __future__ import annotations

import signal

import pytest

from harness import cli


@pytest.fixture
def saved_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sigterm_and_sighup_end_a_command_as_ctrl_c_does(saved_handlers):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    cli.install_signal_handlers()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(sig)
        assert callable(handler)
        with pytest.raises(KeyboardInterrupt):
            handler(sig, None)


def test_a_signal_ignored_on_entry_stays_ignored_so_nohup_keeps_working(saved_handlers):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before it starts the command
    cli.install_signal_handlers()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
