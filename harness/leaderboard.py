"""The leaderboard: LEADERBOARD.md and leaderboard.html derived from the records alone, byte for byte reproducible."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from harness import plots
from harness.errors import LoopbenchError
from harness.pages import (Table, budget_label, esc, figure, machine_label, num, page, peak_memory, speedup_text,
                           workload_label)
from harness.records import RunRecord, load_records
from harness.stats import HUMAN_REFERENCE

MARKDOWN_NAME = "LEADERBOARD.md"
HTML_NAME = "leaderboard.html"
PUBLISHED = (
    plots.ContextLine(3.0, "about 3x (May 2025)"),
    plots.ContextLine(16.5, "16.5x (November 2025)"),
    plots.ContextLine(34.0, "34x (February 2026)"),
    plots.ContextLine(52.0, "about 52x (April 2026)"),
)
"""Published frontier figures on a comparable private task (SPEC §1): context only, from a different harness."""
CONTEXT_NOTE = ("For context only (published, different harness): frontier systems on a comparable private task reached "
                + "; ".join(line.label for line in PUBLISHED) + f". The human reference is {HUMAN_REFERENCE:g}x.")
RULES = ("Each workload and budget on each machine is its own group, since times from different machines or budgets "
         "do not compare. Accepted results show the latest accepted record of each submission; † marks a submission "
         "whose latest attempt was rejected. A system's score is the mean speedup over all its attempts, a rejected "
         "attempt counting as 1.0x (runs of the baseline itself are left out). x human = speedup / "
         f"{HUMAN_REFERENCE:g}. Fraction of ceiling: the run's FLOP rate over the machine's measured float32 GEMM rate.")

Found = tuple[Path, RunRecord]


def load(results_dir: str | Path) -> tuple[list[Found], list[str]]:
    """The valid records of results_dir/runs, and one message per file skipped as corrupt or foreign."""
    root = Path(results_dir)
    if not root.is_dir():
        raise LoopbenchError(f"results folder not found: {root}")
    if not (root / "runs").is_dir():
        raise LoopbenchError(f"{root} has no runs/ folder of records (loopbench score writes them there)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = load_records(root)
    return found, [str(w.message) for w in caught]


def _order(item: Found) -> tuple[str, str]:
    return item[1].created, item[0].name


def _date(record: RunRecord) -> str:
    return record.created[:10]


def _canonical(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Section:
    """One machine, workload, budget and corpus: the records whose times compare with each other."""

    id: str
    machine: str
    workload: str
    budget: str
    corpus: str
    found: list[Found] = field(default_factory=list)
    """Oldest first."""

    @property
    def title(self) -> str:
        return f"{self.workload}; budget {self.budget}; corpus {self.corpus}"

    def latest_accepted(self) -> list[Found]:
        """The latest accepted record of each submission, best speedup first."""
        latest: dict[str, Found] = {}
        for path, rec in self.found:
            if rec.verdict == "accepted":
                latest[rec.submission.name] = (path, rec)
        return sorted(latest.values(), key=lambda f: (-(f[1].speedup or 0.0), f[1].submission.name, f[0].name))

    def rejected(self) -> list[Found]:
        return [f for f in self.found if f[1].verdict == "rejected"]

    def later_rejected(self, item: Found) -> bool:
        return any(rec.submission.name == item[1].submission.name and _order((p, rec)) > _order(item)
                   for p, rec in self.rejected())

    def systems(self) -> list[dict]:
        """SPEC §8: the mean speedup over a system's attempts, a rejected one counting as 1.0x, with the pass rate."""
        attempts: dict[str, list[RunRecord]] = {}
        for _, rec in self.found:
            if rec.submission.kind != "baseline":
                attempts.setdefault(rec.submission.system, []).append(rec)
        rows = []
        for system, recs in attempts.items():
            speedups = [rec.speedup if rec.verdict == "accepted" and rec.speedup else 1.0 for rec in recs]
            passed = sum(rec.verdict == "accepted" for rec in recs)
            rows.append({"system": system, "mean_speedup": sum(speedups) / len(speedups), "passed": passed,
                         "attempts": len(recs), "pass_rate": passed / len(recs)})
        return sorted(rows, key=lambda r: (-r["mean_speedup"], r["system"]))

    # ------------------------------------------------------------ the tables, as data and as text

    def accepted_rows(self) -> list[dict]:
        return [{"rank": rank, "submission": rec.submission.name, "kind": rec.submission.kind,
                 "system": rec.submission.system, "speedup": rec.speedup, "speedup_ci": rec.speedup_ci,
                 "x_human": rec.x_human, "ceiling_fraction": rec.ceiling_fraction, "peak_memory_mib": peak_memory(rec),
                 "date": _date(rec), "record": f"runs/{path.name}", "latest_attempt_rejected": self.later_rejected((path, rec))}
                for rank, (path, rec) in enumerate(self.latest_accepted(), start=1)]

    def rejected_rows(self) -> list[dict]:
        rows = []
        for path, rec in self.rejected():
            failed = next((t.submission for t in rec.trials if not t.submission.accepted), None)
            rows.append({"date": _date(rec), "submission": rec.submission.name, "kind": rec.submission.kind,
                         "system": rec.submission.system, "check": failed.check if failed else None,
                         "reason": rec.reason, "hint": failed.hint if failed else None, "record": f"runs/{path.name}"})
        return rows

    def tables(self) -> list[Table]:
        accepted = Table(f"{self.id}-accepted", "Accepted results (latest per submission)",
                         ["rank", "submission", "kind", "system", "speedup (95% CI)", "x human", "fraction of ceiling",
                          "peak memory", "date"], numeric=frozenset({0, 4, 5, 6, 7}), empty="no accepted result yet")
        for r in self.accepted_rows():
            accepted.rows.append([
                str(r["rank"]), r["submission"] + (" †" if r["latest_attempt_rejected"] else ""), r["kind"], r["system"],
                speedup_text(r["speedup"], r["speedup_ci"]), num(r["x_human"], ".2f", "x"),
                num(r["ceiling_fraction"] and 100 * r["ceiling_fraction"], ".2f", "%"),
                num(r["peak_memory_mib"], ".0f", " MiB"), r["date"]])
        systems = Table(f"{self.id}-systems", "Systems (mean over attempts, a rejected attempt counting as 1.0x)",
                        ["system", "mean speedup", "pass rate", "attempts"], numeric=frozenset({1, 2, 3}),
                        empty="no attempt")
        for r in self.systems():
            systems.rows.append([r["system"], f"{r['mean_speedup']:.2f}x",
                                 f"{r['passed']}/{r['attempts']} ({100 * r['pass_rate']:.0f}%)", str(r["attempts"])])
        rejected = Table(f"{self.id}-rejected", "Rejected attempts", ["date", "submission", "kind", "system", "check", "reason"],
                         empty="none")
        for r in self.rejected_rows():
            reason = r["reason"] + (f" (hint: {r['hint']})" if r["hint"] else "")
            rejected.rows.append([r["date"], r["submission"], r["kind"], r["system"], r["check"] or "–", reason])
        rejected.failed = frozenset(range(len(rejected.rows)))
        return [accepted, systems, rejected]

    def as_json(self) -> dict:
        return {"id": self.id, "machine": self.machine, "workload": self.workload, "budget": self.budget,
                "corpus": self.corpus, "records": len(self.found), "accepted": self.accepted_rows(),
                "systems": self.systems(), "rejected": self.rejected_rows()}

    # ------------------------------------------------------------ the charts

    def speedup_svg(self) -> str:
        points = []
        for _, rec in self.latest_accepted():
            if not rec.speedup or rec.speedup <= 0:
                continue  # no position on a log axis; the table still shows the row
            low, high = rec.speedup_ci or (rec.speedup, rec.speedup)
            points.append(plots.SpeedupPoint(rec.submission.name, rec.speedup, low, high, rec.submission.kind))
        return plots.speedup_chart(points, HUMAN_REFERENCE, PUBLISHED, f"{self.id}-speedups-chart")

    def loss_svg(self) -> str:
        """The first trial of each accepted result, over the baseline runs of those trials (one per seed)."""
        curves, seeds = [], set()
        for _, rec in self.latest_accepted():
            if not rec.trials:
                continue
            trial = rec.trials[0]
            if trial.baseline is not None and trial.baseline.losses and trial.seed not in seeds:
                label = "baseline (naive reference)" if not seeds else "_baseline on another seed"
                curves.append(plots.Curve(label, trial.baseline.losses, baseline=True))
                seeds.add(trial.seed)
            if trial.submission.losses:
                curves.append(plots.Curve(rec.submission.name, trial.submission.losses))
        return plots.loss_chart(curves, f"{self.id}-losses-chart")


@dataclass
class Machine:
    label: str
    sections: list[Section]
    gemm: list[float]

    @property
    def title(self) -> str:
        if not self.gemm:
            return self.label
        low, high = min(self.gemm), max(self.gemm)
        rate = f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"
        return f"{self.label} (measured float32 GEMM rate {rate} GFLOP/s)"


def group(found: list[Found]) -> list[Machine]:
    """Records by machine, then by workload, budget and corpus; every order fixed by the records' contents."""
    by_key: dict[tuple, list[Found]] = {}
    for item in sorted(found, key=_order):
        rec = item[1]
        key = (machine_label(rec.machine), workload_label(rec.workload), _canonical(rec.workload), _canonical(rec.budget),
               rec.corpus.get("sha256", ""))
        by_key.setdefault(key, []).append(item)
    machines: dict[str, Machine] = {}
    for n, key in enumerate(sorted(by_key), start=1):
        items = by_key[key]
        first = items[0][1]
        section = Section(f"s{n}", key[0], key[1], budget_label(first.budget), first.corpus.get("name", "unnamed corpus"), items)
        machine = machines.setdefault(key[0], Machine(key[0], [], []))
        machine.sections.append(section)
        machine.gemm += [rec.machine["gemm_gflops"] for _, rec in items if isinstance(rec.machine.get("gemm_gflops"), (int, float))]
    return [machines[label] for label in sorted(machines)]


def _intro(count: int) -> str:
    return (f"Generated by `loopbench leaderboard` from the {count} record{'s' if count != 1 else ''} in `runs/`; "
            "run it again to regenerate this file and `leaderboard.html` byte for byte.")


def markdown(machines: list[Machine], count: int) -> str:
    lines = ["# loopbench leaderboard", "", _intro(count), "", RULES, "", CONTEXT_NOTE, "",
             "Charts (speedups on a log axis, loss curves) are in `leaderboard.html`.", ""]
    if not machines:
        lines += ["No records yet: `loopbench score` writes them.", ""]
    for machine in machines:
        lines += [f"## Machine: {machine.title}", ""]
        for section in machine.sections:
            lines += [f"### {section.title}", ""]
            for table in section.tables():
                lines += [table.markdown()]
            if any(r["latest_attempt_rejected"] for r in section.accepted_rows()):
                lines += ["† the latest attempt of this submission was rejected (see Rejected attempts).", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _inline(text: str) -> str:
    """Markdown's `code` spans as HTML, everything else escaped."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(text))


def html(machines: list[Machine], count: int) -> str:
    body = ["<h1>loopbench leaderboard</h1>\n", f'<p class="meta">{_inline(_intro(count))}</p>\n',
            f'<p class="note">{_inline(RULES)}</p>\n', f'<p class="note">{_inline(CONTEXT_NOTE)}</p>\n']
    if not machines:
        body.append("<p>No records yet: <code>loopbench score</code> writes them.</p>\n")
    else:
        body.append("<ul>\n" + "".join(f'<li><a href="#{s.id}">{esc(m.label)}: {esc(s.title)}</a></li>\n'
                                       for m in machines for s in m.sections) + "</ul>\n")
    for machine in machines:
        body.append(f"<h2>Machine: {esc(machine.title)}</h2>\n")
        for section in machine.sections:
            accepted, systems, rejected = section.tables()
            body += [f'<h3 id="{section.id}">{esc(section.title)}</h3>\n', accepted.html()]
            if any(r["latest_attempt_rejected"] for r in section.accepted_rows()):
                body.append('<p class="note">† the latest attempt of this submission was rejected (see Rejected attempts).</p>\n')
            body += [figure(section.speedup_svg(), f"{section.id}-speedups",
                            "Speedup of each accepted result with its 95% interval (log scale). Solid line: the human "
                            "reference. Dashed lines: published figures on a comparable private task, from a different harness."),
                     systems.html(),
                     figure(section.loss_svg(), f"{section.id}-losses",
                            "Training loss per step: the first trial of each accepted result over the baseline run on the same data (grey)."),
                     rejected.html()]
    return page("loopbench leaderboard", "".join(body))


def write_leaderboard(results_dir: str | Path) -> dict:
    """Write LEADERBOARD.md and leaderboard.html into results_dir from results_dir/runs; what `--json` prints."""
    root = Path(results_dir)
    found, skipped = load(root)
    machines = group(found)
    md_path, html_path = root / MARKDOWN_NAME, root / HTML_NAME
    md_path.write_bytes(markdown(machines, len(found)).encode("utf-8"))
    html_path.write_bytes(html(machines, len(found)).encode("utf-8"))
    return {"records": len(found), "skipped": skipped, "markdown": str(md_path), "html": str(html_path),
            "sections": [s.as_json() for m in machines for s in m.sections]}
