"""The HTML kit of every page (inline CSS and SVG, no script, no network) and the labels pages share."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.contract.spec import Budget, Workload
from harness.records.schema import Machine, RunRecord
from harness.report import plots
from harness.text import one_line, visible

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
    """Untrusted text as HTML: every character that could start markup escaped, every control character visible."""
    return html.escape(visible(value), quote=True)


_MD_MARKUP = re.compile(r"[\\`*\[\]<&!|~$@#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|:(?=//)|(?<=[wW]{3})\.")
"""What could make Markdown (GitHub's included) of plain text: HTML, links, images, emphasis, code, math, tables'
cell ends, mentions and automatic links (a backslash before `://`, or the dot of `www.`, stops them)."""


def md(value: object) -> str:
    """Untrusted text as one line of Markdown that renders as exactly that text: no HTML, link, image or emphasis;
    every control character visible."""
    return _MD_MARKUP.sub(lambda m: "\\" + m.group(0), one_line(value))


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
        return (
            f'<table id="{esc(self.id)}"><caption>{esc(self.title)}</caption>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
        )

    def markdown(self) -> str:
        """The table in Markdown, every cell escaped; an empty table is its title and one line saying so."""
        lines = [f"**{md(self.title)}**", ""]
        if not self.rows:
            return "\n".join([*lines, f"{md(self.empty[:1].upper() + self.empty[1:])}."]) + "\n"
        lines += [
            "| " + " | ".join(md(c) for c in self.columns) + " |",
            "| " + " | ".join("---:" if j in self.numeric else "---" for j in range(len(self.columns))) + " |",
        ]
        lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def figure(svg: str, id: str, caption: str) -> str:
    return f'<figure id="{esc(id)}" class="chart">\n{svg}<figcaption>{esc(caption)}</figcaption>\n</figure>\n'


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}"
        f'<p class="note">{esc(plots.DRAWN_WITH)}</p>\n</body>\n</html>\n'
    )


# ---------------------------------------------------------------- formatting shared by the pages


def num(value: float | None, fmt: str = ".3g", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def speedup_text(speedup: float | None, interval: Sequence[float] | None, trials: int) -> str:
    """The speedup and its interval; one trial has none (records of older versions gave it a point interval)."""
    if speedup is None:
        return "–"
    if trials < 2:
        return f"{speedup:.2f}x (1 trial: no interval)"
    if not interval:
        return f"{speedup:.2f}x"
    return f"{speedup:.2f}x ({interval[0]:.2f}–{interval[1]:.2f})"


def peak_memory(record: RunRecord) -> float | None:
    peaks = [t.submission.peak_memory_mib for t in record.trials if t.submission.peak_memory_mib is not None]
    return max(peaks) if peaks else None


def loss_differences(record: RunRecord) -> list[list[float]]:
    """Per trial, the submission's loss minus its baseline's at each step both logged (the same seed and data)."""
    out = []
    for t in record.trials:
        if t.baseline is not None and t.baseline.losses and t.submission.losses:
            out.append([s - b for s, b in zip(t.submission.losses, t.baseline.losses, strict=False)])
    return out


def vector_isa(flags: list[str]) -> str:
    """The widest float vector instructions among a CPU's flags, for telling apart machines that share a model
    name (an AMD EPYC with AVX2 and one with AVX-512 both call themselves "AMD EPYC"); empty if none is known."""
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""


def machine_label(machine: Machine) -> str:
    """The machine a record's times belong to: CPU model, vector width (where the record has the flags; older
    records do not, and stay in a group of their own) and host."""
    isa = vector_isa(machine.cpu_flags)
    cpu = f"{machine.cpu_model or 'unknown CPU'}{f' ({isa})' if isa else ''}"
    return f"{cpu} on {machine.hostname or 'unknown host'}"


def workload_label(workload: Workload) -> str:
    m, t = workload.model, workload.train
    sizes = f"T {m.ctx_len}, C {m.d_model}, L {m.n_layer}, H {m.n_head}, B {t.batch_size}, {t.steps} steps"
    return f"{workload.name} ({sizes})"


def budget_label(budget: Budget) -> str:
    return f"{budget.cores} cores, {budget.memory_mib} MiB, {budget.timeout_s:g} s limit"
