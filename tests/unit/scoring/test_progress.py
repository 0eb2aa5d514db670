"""Progress: on a terminal a run's setup ticks as its own phase and the step bar (its rate, its ETA) starts with the
first step; anywhere else one plain line a run, no carriage return."""

from __future__ import annotations

import io
import time

from harness.scoring import progress


def test_the_step_bar_starts_with_the_first_step_not_with_the_setup(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress.sys, "stderr", screen)
    run = progress.RunProgress("trial 1/1 demo", steps=4, enabled=True)
    time.sleep(2 * progress.TICK_S)  # the setup: imports and prepare
    first_step = time.time()
    run.step(0)
    assert run.steps_bar.start_t >= first_step  # so the rate and the ETA count steps only
    for s in range(1, 4):
        run.step(s)
    run.close()
    drawn = screen.getvalue()
    assert "demo: setup (copy, spawn, imports, prepare)" in drawn and "demo: train:" in drawn and "/4 " in drawn


def test_off_a_terminal_a_run_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    run = progress.RunProgress("trial 1/1 demo", steps=4, enabled=True)
    for s in range(4):
        run.step(s)
    run.close()
    inner = progress.bar(3, "trial 1/1 demo: audit", "segment", enabled=True)
    inner.update(3)
    inner.close()
    with progress.phase("measuring", enabled=True):
        pass
    err = capsys.readouterr().err
    assert err.splitlines() == ["trial 1/1 demo: setup, 4 steps, audit", "measuring"]
    assert "\r" not in err


def test_nothing_at_all_when_progress_is_off(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    run = progress.RunProgress("quiet", steps=2, enabled=False)
    run.step(0)
    run.close()
    assert capsys.readouterr().err == ""
