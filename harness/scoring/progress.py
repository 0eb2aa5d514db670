"""Progress on stderr: live bars on a terminal; anywhere else (a log, a pipe) at most one plain line per phase.

A bar's rate and ETA count only what it counts: a run's step bar starts at its first step, so the setup before
it (copying the folder, spawning the worker, imports, prepare) shows as its own phase with its own clock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

TICK_S = 0.5


def on_terminal() -> bool:
    """Whether stderr is a terminal that a bar may redraw in place."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def say(text: str) -> None:
    """One plain line on stderr."""
    print(text, file=sys.stderr, flush=True)


class _Quiet:
    """A bar that draws nothing: progress is off, or it was said in one line instead."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int | None, desc: str, unit: str, enabled: bool, outer: bool = False) -> Any:
    """A tqdm bar on a terminal (an outer one stays when done). Anywhere else an outer bar is one line naming what
    it counts, and an inner one is nothing: the line of the run or the phase that holds it says enough."""
    if not enabled:
        return _Quiet()
    if not on_terminal():
        if outer:
            say(f"{desc}: {total} {unit}{'s' if total != 1 else ''}" if total is not None else desc)
        return _Quiet()
    return tqdm(total=total, desc=desc, unit=unit, leave=outer, file=sys.stderr, dynamic_ncols=True)


@contextmanager
def phase(text: str, enabled: bool) -> Iterator[None]:
    """A phase with no count (a measurement, a setup): its name and a ticking clock on a terminal, else one line."""
    if not enabled:
        yield
        return
    if not on_terminal():
        say(text)
        yield
        return
    ticker = _Ticker(text)
    try:
        yield
    finally:
        ticker.finish()


class _Ticker(threading.Thread):
    """`text` and the time since it began, a bar of no count redrawn in place on the terminal until finished."""

    def __init__(self, text: str):
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.line = tqdm(total=None, desc=text, bar_format="{desc} {elapsed}", leave=False, file=sys.stderr)
        self.start()

    def run(self) -> None:
        while not self.done.wait(TICK_S):
            self.line.refresh()

    def finish(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.join()
            self.line.close()


class RunProgress:
    """One run: its setup as a ticking phase, then a bar over its steps that starts with the first step."""

    def __init__(self, label: str, steps: int, enabled: bool):
        self.label, self.steps, self.enabled = label, steps, enabled
        self.steps_bar: Any = None
        self.ticker: _Ticker | None = None
        if enabled and on_terminal():
            self.ticker = _Ticker(f"{label}: setup (copy, spawn, imports, prepare)")
        elif enabled:
            say(f"{label}: setup, {steps} steps, audit")

    def step(self, s: int) -> None:
        if self.steps_bar is None:
            if self.ticker is not None:
                self.ticker.finish()
            self.steps_bar = bar(self.steps, f"{self.label}: train", "step", self.enabled)
        self.steps_bar.update(1)

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.finish()
        if self.steps_bar is not None:
            self.steps_bar.close()
