"""What `check --json` and `score --json` print: pydantic models that share their parts, so the two agree."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.contract.checks import Check
from harness.records.schema import Disturbance, Isolation, RunRecord, RunSummary, TrialRecord
from harness.text import one_line


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RunView(_Model):
    """One run of one loop, as both commands print it."""

    verdict: Literal["accepted", "rejected"]
    reason: str
    check: Check | None = None
    hint: str | None = None
    seconds: float | None = None
    """The timed phase: from handing over the data to the final checkpoint."""
    setup_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_mib: float | None = None
    eval_loss: float | None = None
    disturbance: Disturbance | None = None
    """What the run lost to the rest of the machine while its clock ran."""

    @classmethod
    def of(cls, run: RunSummary) -> RunView:
        return cls(
            disturbance=run.disturbance,
            verdict="accepted" if run.accepted else "rejected",
            reason=run.reason,
            check=run.check,
            hint=run.hint,
            seconds=run.seconds,
            setup_seconds=run.setup_seconds,
            cpu_seconds=run.cpu_seconds,
            peak_memory_mib=run.peak_memory_mib,
            eval_loss=run.eval_loss,
        )


class TrialView(_Model):
    """One trial: the baseline's run (none in `check`) and the submission's, on one seed, on one node."""

    index: int
    seed: int
    node: str | None = None
    retries: list[str] = Field(default_factory=list)
    baseline: RunView | None = None
    submission: RunView

    @classmethod
    def of(cls, trial: TrialRecord) -> TrialView:
        return cls(
            index=trial.index,
            seed=trial.seed,
            node=trial.node,
            retries=trial.retries,
            baseline=RunView.of(trial.baseline) if trial.baseline else None,
            submission=RunView.of(trial.submission),
        )


class _Result(_Model):
    submission: str
    workload: str
    verdict: Literal["accepted", "rejected"]
    reason: str
    check: Check | None = None
    """The check the first rejected run failed."""
    hint: str | None = None
    ceiling_fraction: float | None = None
    """FLOP rate of the (median) run over the machine's measured GEMM rate."""
    trials: list[TrialView]


class CheckOutput(_Result):
    """`loopbench check --json`: one audited run, no baseline, no speedup."""

    command: Literal["check"] = "check"
    isolation: Isolation

    def text(self) -> str:
        """What `loopbench check` prints: the verdict and its reason, the hint, the run's time and resources."""
        run = self.trials[0].submission
        lines = [f"{one_line(self.submission)} on {self.workload}: {self.verdict.upper()}: {one_line(self.reason)}"]
        if self.hint:
            lines.append(f"  hint: {one_line(self.hint)}")
        if run.disturbance is not None and run.disturbance.disturbed:
            lines.append(
                f"  note: the machine was busy during the run ({run.disturbance.why}): its time is no measurement"
            )
        if run.seconds:
            lines.append(
                f"  {run.seconds:.2f} s (setup {run.setup_seconds or 0:.1f} s), {run.cpu_seconds or 0:.1f} CPU-s, "
                f"peak {run.peak_memory_mib or 0:.0f} MiB"
            )
        return "\n".join(lines)


class ScoreOutput(_Result):
    """`loopbench score --json`: one element per submission."""

    command: Literal["score"] = "score"
    speedup: float | None = None
    speedup_ci: list[float] | None = None
    x_human: float | None = None
    baseline_median_seconds: float | None = None
    submission_median_seconds: float | None = None
    record: str | None = None
    """The record file written, if any."""

    def text(self) -> str:
        """What `loopbench score` prints for one submission: its speedup or why it was rejected, and its record."""
        head = f"{one_line(self.submission)} on {self.workload}"
        record = f"; record {self.record}" if self.record else ""
        if self.verdict != "accepted" or self.speedup is None:
            hint = f"\n  hint: {one_line(self.hint)}" if self.hint else ""
            return f"{head}: REJECTED: {one_line(self.reason)}{record}{hint}"
        if self.speedup_ci:
            spread = f"95% CI {self.speedup_ci[0]:.2f}-{self.speedup_ci[1]:.2f}"
        else:
            spread = f"{len(self.trials)} trial: no interval (--trials 2 or more gives one)"
        share = f"{100 * self.ceiling_fraction:.1f}%" if self.ceiling_fraction is not None else "–"
        human = f"{self.x_human:.2f}x human" if self.x_human is not None else "– x human"
        return f"{head}: {self.speedup:.2f}x ({spread}), {human}, {share} of the GEMM ceiling{record}"

    @classmethod
    def of(cls, record: RunRecord, path: str | None) -> ScoreOutput:
        failed = next((t.submission for t in record.trials if not t.submission.accepted), None)
        return cls(
            submission=record.submission.name,
            workload=record.workload.name,
            verdict=record.verdict,
            reason=record.reason,
            check=failed.check if failed else None,
            hint=failed.hint if failed else None,
            ceiling_fraction=record.ceiling_fraction,
            trials=[TrialView.of(t) for t in record.trials],
            speedup=record.speedup,
            speedup_ci=record.speedup_ci,
            x_human=record.x_human,
            baseline_median_seconds=record.baseline_median_seconds,
            submission_median_seconds=record.submission_median_seconds,
            record=path,
        )


def schemas() -> dict[str, object]:
    """The JSON Schemas `loopbench schema` prints: the record, and the outputs of check and score."""
    return {
        "record": RunRecord.model_json_schema(),
        "check": CheckOutput.model_json_schema(),
        "score": ScoreOutput.model_json_schema(),
    }
