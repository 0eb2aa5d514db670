"""One run's page, from its record alone: facts, trials, the audit of every segment, loss, memory and CPU."""

from __future__ import annotations

from pathlib import Path

from harness.contract.spec import group_measure
from harness.errors import LoopbenchError
from harness.records.schema import RunRecord, RunSummary, SegmentRecord, TrialRecord
from harness.records.store import read_record, write_page
from harness.report import plots
from harness.report.html import (
    Table,
    budget_label,
    esc,
    figure,
    loss_differences,
    machine_label,
    num,
    page,
    speedup_text,
    workload_label,
)


def default_report_path(record_path: Path) -> Path:
    """results/runs/X.json -> results/reports/X.html (runs/ holds records only); elsewhere, beside the record."""
    if record_path.parent.name == "runs":
        return record_path.parent.parent / "reports" / f"{record_path.stem}.html"
    return record_path.with_suffix(".html")


def _run_verdict(run: RunSummary | None) -> str:
    if run is None:
        return "–"
    return "accepted" if run.accepted else f"rejected ({run.check or 'unknown check'})"


def _cores_busy(run: RunSummary | None) -> float | None:
    if run is None or not run.seconds or run.cpu_seconds is None:
        return None
    return run.cpu_seconds / run.seconds


def _timed_on(trial: TrialRecord) -> str:
    """The node of a trial, and the attempts of it that were lost with their node."""
    node = trial.node or "–"
    if trial.retries:
        lost = f"{len(trial.retries)} lost attempt{'s' if len(trial.retries) > 1 else ''}"
        node += f" (after {lost}: {'; '.join(trial.retries)})"
    return node


def machine_table(record: RunRecord) -> Table:
    """What each run lost to the rest of the machine while its clock ran, and the trial's GEMM probes."""
    table = Table(
        "machine",
        "The machine during the runs: what other processes and the hypervisor took from the budget's cores",
        [
            "trial",
            "run",
            "others' CPU-s",
            "steal s",
            "runqueue wait s",
            "granted",
            "attempts",
            "GEMM probes",
            "no measurement",
        ],
        numeric=frozenset({0, 2, 3, 4, 5, 6}),
        empty="no figures (a record older than them)",
    )
    failed = set()
    for t in record.trials:
        probes = ", ".join(f"{p:.0f}" for p in t.probes) + (" GFLOP/s" if t.probes else "–")
        for who, run in (("baseline", t.baseline), (record.submission.name, t.submission)):
            d = run.disturbance if run else None
            if d is None:
                continue
            if d.disturbed:
                failed.add(len(table.rows))
            table.rows.append(
                [
                    str(t.index + 1),
                    who,
                    f"{d.others_cpu_seconds:.2f}",
                    f"{d.steal_seconds:.2f}",
                    f"{d.wait_seconds:.2f}",
                    f"{d.granted:.2f}",
                    str(d.attempts),
                    probes,
                    d.why if d.disturbed and d.why else "–",
                ]
            )
    table.failed = frozenset(failed)
    return table


def trials_table(record: RunRecord) -> Table:
    table = Table(
        "trials",
        "Trials: baseline and submission on one seed each",
        numeric=frozenset(range(1, 10)),
        columns=[
            "trial",
            "seed",
            "baseline s",
            "submission s",
            "setup s",
            "CPU-s",
            "cores busy",
            "peak MiB",
            "held-out loss (baseline)",
            "held-out loss",
            "verdict",
            "reason",
            "timed on",
        ],
    )
    failed = set()
    for i, t in enumerate(record.trials):
        s, b = t.submission, t.baseline
        if not s.accepted:
            failed.add(i)
        table.rows.append(
            [
                str(t.index + 1),
                str(t.seed),
                num(b.seconds if b else None, ".4f"),
                num(s.seconds, ".4f"),
                num(s.setup_seconds, ".2f"),
                num(s.cpu_seconds, ".2f"),
                num(_cores_busy(s), ".2f"),
                num(s.peak_memory_mib, ".0f"),
                num(b.eval_loss if b else None, ".4f"),
                num(s.eval_loss, ".4f"),
                _run_verdict(s),
                s.reason,
                _timed_on(t),
            ]
        )
    table.failed = frozenset(failed)
    return table


def tolerances(record: RunRecord) -> dict[str, float]:
    """The tolerances the record was audited with, keyed as the segment measures are."""
    return record.tolerances.model_dump()


MEASURES = (
    ("group distance", "distance", "distance"),
    ("moment direction", "moment_distance", "moments"),
    ("tensor distance", "tensor_distance", "tensor_distance"),
    ("decay share", "decay_share", "decay_share"),
    ("loss deviation", "loss_deviation", "loss"),
)
"""Each per-segment measure: its label, the segment record's field, the tolerance's key (None in records from
before the measure, whose columns are then left out)."""


def _measures(tol: dict[str, float]) -> list[tuple[str, str, str]]:
    return [m for m in MEASURES if tol.get(m[2]) is not None]


def _group_within(seg: SegmentRecord, tol: dict[str, float]) -> bool:
    groups = seg.group_distances or {seg.worst_group: seg.distance}
    return all(d <= tol[group_measure(g, tol.get("moment_group"))] for g, d in groups.items())


def segment_within(seg: SegmentRecord, tol: dict[str, float]) -> bool:
    """Whether a segment is within every tolerance it was audited with (the groups each under theirs): the
    record's, or the limits the audit's second opinion set for it."""
    tol = {**tol, **seg.limits}
    others = [m for m in _measures(tol) if m[1] != "distance"]
    return _group_within(seg, tol) and all(getattr(seg, attr) <= tol[key] for _, attr, key in others)


def audit_table(record: RunRecord, trial: int, tol: dict[str, float]) -> Table:
    run = record.trials[trial].submission
    shown = _measures(tol)
    columns = ["segment", "steps"]
    for label, attr, key in shown:
        columns.append(f"{label} (tol {tol[key]:g})")
        columns += {
            "distance": ["worst group"],
            "tensor_distance": ["worst tensor"],
            "loss_deviation": ["at step"],
        }.get(attr, [])
    columns.append("within")
    numeric = frozenset(i for i, c in enumerate(columns) if c == "segment" or "(tol" in c or c == "at step")
    table = Table(
        f"audit-trial-{trial + 1}",
        f"Audit of trial {trial + 1}: each segment against the float64 replay",
        columns=columns,
        numeric=numeric,
        empty="no segment audited (the run ended before the audit)",
    )
    failed = set()
    for i, seg in enumerate(run.segments):
        ok = segment_within(seg, tol)
        if not ok:
            failed.add(i)
        row = [str(seg.index), f"{seg.first_step}–{seg.last_step}"]
        for _, attr, _ in shown:
            row.append(f"{getattr(seg, attr):.3g}")
            row += {
                "distance": [seg.worst_group],
                "tensor_distance": [seg.worst_tensor],
                "loss_deviation": [str(seg.worst_step)],
            }.get(attr, [])
        row.append("yes" if ok else "NO")
        table.rows.append(row)
    table.failed = frozenset(failed)
    return table


def _audit_svg(record: RunRecord, tol: dict[str, float]) -> str:
    """The worst over trials of each measure, per segment."""
    width = max((len(t.submission.segments) for t in record.trials), default=0)
    series = []
    for label, attr, key in _measures(tol):
        worst = []
        for k in range(width):
            values = [getattr(t.submission.segments[k], attr) for t in record.trials if len(t.submission.segments) > k]
            worst.append(max(values) / tol[key])
        series.append(plots.AuditSeries(label, worst))
    return plots.audit_chart(series, "audit-chart")


def _loss_svg(record: RunRecord) -> str:
    """The first trial's two curves, and each trial's loss minus its baseline's (the seed cancels in the pair)."""
    first = []
    if record.trials:
        t = record.trials[0]
        if t.baseline is not None and t.baseline.losses:
            first.append(plots.Curve("baseline (naive reference)", t.baseline.losses, baseline=True))
        if t.submission.losses:
            first.append(plots.Curve(record.submission.name, t.submission.losses))
    paired = [t for t in record.trials if t.baseline is not None and t.baseline.losses and t.submission.losses]
    per_trial = [
        plots.Difference(f"trial {t.index + 1}", [diff])
        for t, diff in zip(paired, loss_differences(record), strict=True)
    ]
    return plots.trials_loss_chart(first, per_trial, "loss-chart")


def _usage_svg(record: RunRecord) -> str:
    memory, cpu = [], []
    for t in record.trials:
        label = f"trial {t.index + 1}"
        base = t.baseline.peak_memory_mib if t.baseline else None
        memory.append(plots.UsageBar(label, base, t.submission.peak_memory_mib))
        cpu.append(plots.UsageBar(label, _cores_busy(t.baseline), _cores_busy(t.submission)))
    return plots.usage_chart(memory, record.budget.memory_mib, cpu, record.budget.cores, "usage-chart")


def _facts(record: RunRecord) -> Table:
    sub, v = record.submission, record.versions.model_dump()
    commit = v.get("git_commit")
    authors = ", ".join(sub.authors) if isinstance(sub.authors, list) else sub.authors
    rows = [
        ["submission", f"{sub.name} ({sub.kind}, by {sub.system}; {authors}; dated {sub.date})"],
        ["description", sub.description],
        ["workload", workload_label(record.workload)],
        ["budget", budget_label(record.budget)],
        [
            "machine",
            f"{machine_label(record.machine)}, measured GEMM rate {num(record.machine.gemm_gflops, '.1f')} GFLOP/s"
            f", FMA peak {num(record.machine.fma_peak_gflops, '.1f')} GFLOP/s",
        ],
        *(
            [
                [
                    "nodes",
                    "; ".join(
                        f"{name}: {machine_label(m)}, {num(m.gemm_gflops, '.1f')} GFLOP/s"
                        for name, m in sorted(record.nodes.items())
                    )
                    + " (each trial paired within its node)",
                ]
            ]
            if record.nodes
            else []
        ),
        ["corpus", f"{record.corpus.name} (sha256 {record.corpus.sha256[:16]}…)"],
        ["speedup (95% interval)", speedup_text(record.speedup, record.speedup_ci, len(record.trials))],
        ["x human", num(record.x_human, ".2f", "x")],
        [
            "median seconds",
            f"baseline {num(record.baseline_median_seconds, '.4f')}, "
            f"submission {num(record.submission_median_seconds, '.4f')}",
        ],
        ["work", f"{record.flops / 1e9:.3f} GFLOP per run, physical floor {record.floor_seconds:.4f} s"],
        ["fraction of the GEMM ceiling", num(record.ceiling_fraction and 100 * record.ceiling_fraction, ".2f", "%")],
        [
            "versions",
            ", ".join(f"{k} {v[k]}" for k in sorted(v) if k not in ("git_commit", "git_dirty") and v[k] is not None),
        ],
        ["git commit", f"{commit}{' (dirty)' if v.get('git_dirty') else ''}" if commit else "–"],
        ["files", ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(sub.file_hashes.items()))],
        ["recorded", record.created],
    ]
    return Table("facts", "The record", ["what", "value"], rows)


def run_page(record: RunRecord, source: str) -> str:
    """One run's page: its facts, trials, audit table and chart, loss curves, memory and CPU use."""
    tol = tolerances(record)
    verdict = record.verdict.upper()
    body = [
        f"<h1>{esc(record.submission.name)} on {esc(record.workload.name)}: {esc(verdict)}</h1>\n",
        f'<p class="meta">{esc(record.reason)}</p>\n',
        f'<p class="note">From the record <code>{esc(source)}</code>, by <code>loopbench report</code>.</p>\n',
        _facts(record).html(),
        "<h2>Trials</h2>\n",
        trials_table(record).html(),
        machine_table(record).html(),
        "<h2>Audit</h2>\n",
        '<p class="note">Every segment between checkpoints is replayed in float64 '
        "from the submission's own checkpoint. "
        "Distances are relative to how far the replay moved the state during the segment.</p>\n",
        figure(
            _audit_svg(record, tol),
            "audit",
            "Worst over trials of each measure per segment, as a fraction of its "
            "tolerance (log scale): under the red line passes.",
        ),
    ]
    for i in range(len(record.trials)):
        body.append(
            f"<details{' open' if i == 0 else ''}><summary>Segments of trial {i + 1}</summary>\n"
            f"{audit_table(record, i, tol).html()}</details>\n"
        )
    body += [
        "<h2>Loss</h2>\n",
        figure(
            _loss_svg(record),
            "loss",
            "Left: training loss per step in the first trial, the baseline (grey) and the submission on the same "
            "data. Right: in every trial, the submission's loss minus its baseline's at each step (each trial's "
            "seed cancels in its own pair); the grey line at zero is the baseline.",
        ),
        "<h2>Memory and CPU</h2>\n",
        figure(
            _usage_svg(record),
            "usage",
            "Peak resident memory of the whole process tree, and CPU time over wall time "
            "while the clock ran, per trial; red: the budget.",
        ),
    ]
    return page(f"loopbench: {record.submission.name} on {record.workload.name}", "".join(body))


def write_run_page(record_path: str | Path, out: str | Path | None = None) -> Path:
    record_path = Path(record_path)
    record = read_record(record_path)
    target = Path(out) if out is not None else default_report_path(record_path)
    if target.is_dir():
        raise LoopbenchError(f"--out {target} is a folder; name a file")
    write_page(target, run_page(record, record_path.name).encode("utf-8"))
    return target
