"""Where trials run: this machine, one after another, or a Ray cluster (harness.scoring.cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from harness.contract.submission import Submission
from harness.errors import LoopbenchError
from harness.scoring.progress import bar
from harness.scoring.setting import Setting
from harness.scoring.trials import TrialRuns, timed_trial, verify


class Executor(Protocol):
    def timed_trials(
        self, subs: list[Submission], baseline: Submission, setting: Setting, seeds: list[int], progress: bool
    ) -> list[TrialRuns]: ...

    def verify(self, sub: Submission, setting: Setting, seed: int, progress: bool) -> TrialRuns: ...


class LocalExecutor:
    """Every trial on this machine, one after another."""

    def timed_trials(
        self, subs: list[Submission], baseline: Submission, setting: Setting, seeds: list[int], progress: bool
    ) -> list[TrialRuns]:
        outer = bar(len(seeds) * (len(subs) + 1), f"score on {setting.workload.name}", "run", progress, outer=True)
        try:
            return [
                timed_trial(subs, baseline, setting, k, len(seeds), seed, progress, on_run=lambda: outer.update(1))
                for k, seed in enumerate(seeds)
            ]
        finally:
            outer.close()

    def verify(self, sub: Submission, setting: Setting, seed: int, progress: bool) -> TrialRuns:
        return verify(sub, setting, seed, progress)


@contextmanager
def open_executor(name: str = "local", address: str | None = None) -> Iterator[Executor]:
    """The executor a command asked for; Ray is imported only when it is the one asked for."""
    if name == "local":
        if address is not None:
            raise LoopbenchError("--address names a Ray cluster: it needs --executor ray")
        yield LocalExecutor()
    elif name == "ray":
        from harness.scoring.cluster import ray_executor

        with ray_executor(address) as executor:
            yield executor
    else:
        raise LoopbenchError(f"unknown executor {name!r}: local or ray")
