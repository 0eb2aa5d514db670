"""Self-contained HTML pages (inline CSS and SVG, no script, no network), and one run's page from its record."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness import audit, plots
from harness.errors import LoopbenchError
from harness.records import RunRecord, RunSummary, TrialRecord

CSS = """
body { font-family: 'DejaVu Sans', Verdana, sans-serif; font-size: 14px; color: #222; background: #fff;
       max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; line-height: 1.4; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 6px; padding-top: 8px; border-top: 2px solid #333; }
h3 { font-size: 16px; margin: 22px 0 6px; }
p.note, p.meta { color: #555; margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; min-width: 40%; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td { background: #fdecea; }
td.reason { max-width: 560px; }
figure { margin: 8px 0 18px; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 12.5px; }
details summary { cursor: pointer; margin: 6px 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass
class Table:
    """A table as plain strings, so that the markdown and the HTML of one table always agree."""

    id: str
    title: str
    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: frozenset[int] = frozenset()
    """Indices of right-aligned columns."""
    failed: frozenset[int] = frozenset()
    """Indices of rows to mark as failing."""
    empty: str = "none"

    def _cell_class(self, column: int) -> str:
        if column in self.numeric:
            return "num"
        return "reason" if self.columns[column] == "reason" else "text"

    def html(self) -> str:
        head = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        body = []
        for i, row in enumerate(self.rows):
            cells = "".join(f'<td class="{self._cell_class(j)}">{esc(v)}</td>' for j, v in enumerate(row))
            mark = ' class="fail"' if i in self.failed else ""
            body.append(f"<tr{mark}>{cells}</tr>")
        if not self.rows:
            body.append(f'<tr><td colspan="{len(self.columns)}">{esc(self.empty)}</td></tr>')
        return (f'<table id="{esc(self.id)}"><caption>{esc(self.title)}</caption>\n<thead><tr>{head}</tr></thead>\n'
                f'<tbody>\n' + "\n".join(body) + "\n</tbody></table>\n")

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return " ".join(str(text).split()).replace("|", "\\|")

        lines = [f"**{cell(self.title)}**", "", "| " + " | ".join(cell(c) for c in self.columns) + " |",
                 "| " + " | ".join("---:" if j in self.numeric else "---" for j in range(len(self.columns))) + " |"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if not self.rows:
            lines.append("| " + " | ".join([cell(self.empty)] + [""] * (len(self.columns) - 1)) + " |")
        return "\n".join(lines) + "\n"


def figure(svg: str, id: str, caption: str) -> str:
    return f'<figure id="{esc(id)}" class="chart">\n{svg}<figcaption>{esc(caption)}</figcaption>\n</figure>\n'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}"
            f'<p class="note">{esc(plots.DRAWN_WITH)}</p>\n</body>\n</html>\n')


# ---------------------------------------------------------------- formatting shared by the pages


def num(value: float | None, fmt: str = ".3g", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def speedup_text(speedup: float | None, interval: Sequence[float] | None) -> str:
    if speedup is None:
        return "–"
    if not interval:
        return f"{speedup:.2f}x"
    return f"{speedup:.2f}x ({interval[0]:.2f}–{interval[1]:.2f})"


def peak_memory(record: RunRecord) -> float | None:
    peaks = [t.submission.peak_memory_mib for t in record.trials if t.submission.peak_memory_mib is not None]
    return max(peaks) if peaks else None


def machine_label(machine: dict) -> str:
    cpu = machine.get("cpu_model") or "unknown CPU"
    host = machine.get("hostname") or "unknown host"
    return f"{cpu} on {host}"


def workload_label(workload: dict) -> str:
    model, train = workload.get("model") or {}, workload.get("train") or {}
    sizes = ", ".join(f"{k} {model[key]}" for k, key in (("T", "ctx_len"), ("C", "d_model"), ("L", "n_layer"), ("H", "n_head"))
                      if key in model)
    if "batch_size" in train:
        sizes += f", B {train['batch_size']}, {train.get('steps', '?')} steps"
    name = workload.get("name", "unnamed")
    return f"{name} ({sizes})" if sizes else name


def budget_label(budget: dict) -> str:
    parts = []
    if "cores" in budget:
        parts.append(f"{budget['cores']} cores")
    if "memory_mib" in budget:
        parts.append(f"{budget['memory_mib']} MiB")
    if "timeout_s" in budget:
        parts.append(f"{budget['timeout_s']:g} s limit")
    return ", ".join(parts) or "unrecorded budget"


# ---------------------------------------------------------------- one run's page


def read_record(path: str | Path) -> RunRecord:
    """One record file, or a one-line error saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise LoopbenchError(f"record file not found: {path}")
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, OSError) as err:
        raise LoopbenchError(f"{path} is not a loopbench record ({str(err).splitlines()[0][:160]})") from None


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
        node += f" (after {len(trial.retries)} lost attempt{'s' if len(trial.retries) > 1 else ''}: {'; '.join(trial.retries)})"
    return node


def trials_table(record: RunRecord) -> Table:
    table = Table("trials", "Trials: baseline and submission on one seed each", numeric=frozenset(range(1, 10)),
                  columns=["trial", "seed", "baseline s", "submission s", "setup s", "CPU-s", "cores busy",
                           "peak MiB", "held-out loss (baseline)", "held-out loss", "verdict", "reason", "timed on"])
    failed = set()
    for i, t in enumerate(record.trials):
        s, b = t.submission, t.baseline
        if not s.accepted:
            failed.add(i)
        table.rows.append([
            str(t.index + 1), str(t.seed), num(b and b.seconds, ".4f"), num(s.seconds, ".4f"), num(s.setup_seconds, ".2f"),
            num(s.cpu_seconds, ".2f"), num(_cores_busy(s), ".2f"), num(s.peak_memory_mib, ".0f"),
            num(b and b.eval_loss, ".4f"), num(s.eval_loss, ".4f"), _run_verdict(s), s.reason, _timed_on(t),
        ])
    table.failed = frozenset(failed)
    return table


def tolerances(record: RunRecord) -> dict[str, float]:
    """The tolerances the record was audited with; the current ones where an old record does not say."""
    current = {"distance": audit.DISTANCE_TOL, "tensor_distance": audit.TENSOR_TOL, "loss": audit.LOSS_TOL}
    return {k: float(record.tolerances.get(k, v)) for k, v in current.items()}


def audit_table(record: RunRecord, trial: int, tol: dict[str, float]) -> Table:
    run = record.trials[trial].submission
    table = Table(f"audit-trial-{trial + 1}", f"Audit of trial {trial + 1}: each segment against the float64 replay",
                  columns=["segment", "steps", f"group distance (tol {tol['distance']:g})", "worst group",
                           f"tensor distance (tol {tol['tensor_distance']:g})", "worst tensor",
                           f"loss deviation (tol {tol['loss']:g})", "at step", "within"],
                  numeric=frozenset({0, 2, 4, 6, 7}), empty="no segment audited (the run ended before the audit)")
    failed = set()
    for i, seg in enumerate(run.segments):
        ok = seg.distance <= tol["distance"] and seg.tensor_distance <= tol["tensor_distance"] and seg.loss_deviation <= tol["loss"]
        if not ok:
            failed.add(i)
        table.rows.append([str(seg.index), f"{seg.first_step}–{seg.last_step}", f"{seg.distance:.3g}", seg.worst_group,
                           f"{seg.tensor_distance:.3g}", seg.worst_tensor, f"{seg.loss_deviation:.3g}", str(seg.worst_step),
                           "yes" if ok else "NO"])
    table.failed = frozenset(failed)
    return table


def _audit_svg(record: RunRecord, tol: dict[str, float]) -> str:
    """The worst over trials of each measure, per segment."""
    width = max((len(t.submission.segments) for t in record.trials), default=0)
    measures = (("group distance", "distance", "distance"), ("tensor distance", "tensor_distance", "tensor_distance"),
                ("loss deviation", "loss_deviation", "loss"))
    series = []
    for label, attr, key in measures:
        worst = []
        for k in range(width):
            values = [getattr(t.submission.segments[k], attr) for t in record.trials if len(t.submission.segments) > k]
            worst.append(max(values) / tol[key])
        series.append(plots.AuditSeries(label, worst))
    return plots.audit_chart(series, "audit-chart")


def _loss_svg(record: RunRecord) -> str:
    curves = []
    for t in record.trials:
        if t.baseline is not None and t.baseline.losses:
            curves.append(plots.Curve(f"baseline, trial {t.index + 1}", t.baseline.losses, baseline=True))
        if t.submission.losses:
            curves.append(plots.Curve(f"{record.submission.name}, trial {t.index + 1}", t.submission.losses))
    return plots.loss_chart(curves, "loss-chart")


def _usage_svg(record: RunRecord) -> str:
    memory, cpu = [], []
    for t in record.trials:
        label = f"trial {t.index + 1}"
        memory.append(plots.UsageBar(label, t.baseline and t.baseline.peak_memory_mib, t.submission.peak_memory_mib))
        cpu.append(plots.UsageBar(label, _cores_busy(t.baseline), _cores_busy(t.submission)))
    return plots.usage_chart(memory, record.budget.get("memory_mib"), cpu, record.budget.get("cores"), "usage-chart")


def _facts(record: RunRecord) -> Table:
    sub, v = record.submission, record.versions
    commit = v.get("git_commit")
    rows = [
        ["submission", f"{sub.name} ({sub.kind}, by {sub.system}; {', '.join(sub.authors) if isinstance(sub.authors, list) else sub.authors}; dated {sub.date})"],
        ["description", sub.description],
        ["workload", workload_label(record.workload)],
        ["budget", budget_label(record.budget)],
        ["machine", f"{machine_label(record.machine)}, measured GEMM rate {num(record.machine.get('gemm_gflops'), '.1f')} GFLOP/s"],
        *([["nodes", "; ".join(f"{name}: {machine_label(m)}, {num(m.get('gemm_gflops'), '.1f')} GFLOP/s"
                                 for name, m in sorted(record.nodes.items())) + " (each trial paired within its node)"]]
          if record.nodes else []),
        ["corpus", f"{record.corpus.get('name', '?')} (sha256 {str(record.corpus.get('sha256', '?'))[:16]}…)"],
        ["speedup (95% interval)", speedup_text(record.speedup, record.speedup_ci)],
        ["x human", num(record.x_human, ".2f", "x")],
        ["median seconds", f"baseline {num(record.baseline_median_seconds, '.4f')}, submission {num(record.submission_median_seconds, '.4f')}"],
        ["work", f"{record.flops / 1e9:.3f} GFLOP per run, physical floor {record.floor_seconds:.4f} s"],
        ["fraction of the GEMM ceiling", num(record.ceiling_fraction and 100 * record.ceiling_fraction, ".2f", "%")],
        ["versions", ", ".join(f"{k} {v[k]}" for k in sorted(v) if k not in ("git_commit", "git_dirty"))],
        ["git commit", f"{commit}{' (dirty)' if v.get('git_dirty') else ''}" if commit else "–"],
        ["files", ", ".join(f"{name} {digest[:12]}" for name, digest in sorted(sub.file_hashes.items()))],
        ["recorded", record.created],
    ]
    return Table("facts", "The record", ["what", "value"], rows)


def run_page(record: RunRecord, source: str) -> str:
    """One run's page: its facts, trials, audit table and chart, loss curves, memory and CPU use."""
    tol = tolerances(record)
    verdict = record.verdict.upper()
    body = [f"<h1>{esc(record.submission.name)} on {esc(record.workload.get('name', '?'))}: {esc(verdict)}</h1>\n",
            f'<p class="meta">{esc(record.reason)}</p>\n',
            f'<p class="note">From the record <code>{esc(source)}</code>, by <code>loopbench report</code>.</p>\n',
            _facts(record).html(),
            "<h2>Trials</h2>\n", trials_table(record).html(),
            "<h2>Audit</h2>\n",
            '<p class="note">Every segment between checkpoints is replayed in float64 from the submission\'s own checkpoint. '
            "Distances are relative to how far the replay moved the state during the segment.</p>\n",
            figure(_audit_svg(record, tol), "audit", "Worst over trials of each measure per segment, as a fraction of its "
                   "tolerance (log scale): under the red line passes."),
            ]
    for i in range(len(record.trials)):
        body.append(f"<details{' open' if i == 0 else ''}><summary>Segments of trial {i + 1}</summary>\n"
                    f"{audit_table(record, i, tol).html()}</details>\n")
    body += ["<h2>Loss</h2>\n",
             figure(_loss_svg(record), "loss", "Training loss per step of every trial: the baseline (grey) and the submission on the same data."),
             "<h2>Memory and CPU</h2>\n",
             figure(_usage_svg(record), "usage", "Peak resident memory of the whole process tree, and CPU time over wall time "
                    "while the clock ran, per trial; red: the budget.")]
    return page(f"loopbench: {record.submission.name} on {record.workload.get('name', '?')}", "".join(body))


def write_run_page(record_path: str | Path, out: str | Path | None = None) -> Path:
    record_path = Path(record_path)
    record = read_record(record_path)
    target = Path(out) if out is not None else default_report_path(record_path)
    if target.is_dir():
        raise LoopbenchError(f"--out {target} is a folder; name a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(run_page(record, record_path.name), encoding="utf-8")
    return target
