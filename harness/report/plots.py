"""Charts as inline SVG text: the same data always gives the same bytes (fixed font, salt and metadata, no date)."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.text import visible

STYLE = {
    "svg.hashsalt": "loopbench",
    "svg.fonttype": "none",  # text stays text: no glyph outlines, so no font file's version gets into the bytes
    "font.family": "DejaVu Sans",  # matplotlib ships it, so the layout measures the same everywhere
    "font.size": 9,
    "text.parse_math": False,  # names come from submissions: a '$' is a dollar sign, never a formula
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "path.simplify": False,
}
DRAWN_WITH = f"Charts drawn with matplotlib {matplotlib.__version__}."
"""On every page: another matplotlib version may draw the same data with other bytes, and this says which drew these."""
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
KIND_COLOURS = {"baseline": "#7f7f7f", "human": "#d95f02", "agent": "#1b9e77"}
PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b2182b", "#4d4d4d"]
BASELINE_COLOUR = "#9a9a9a"
DIFFERENCE_LINEAR = 1e-3
"""Loss differences under this are drawn on a linear scale, larger ones on a logarithmic one."""


WIDTH = 10.5
"""Inches: at matplotlib's 72 points per inch the chart fills the pages' 1150-pixel column."""


def _plain_log_labels(axis: Any, suffix: str = "") -> None:
    """1, 10, 100 rather than matplotlib's 10^n, which needs the mathtext that STYLE turns off."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    axis.set_minor_formatter(ticker.NullFormatter())


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's own defaults, whatever a matplotlibrc on this machine says, then ours."""
    with matplotlib.style.context("default"), matplotlib.rc_context(cast(Any, STYLE)):
        yield


def _svg(fig: Figure, prefix: str) -> str:
    """The figure as an <svg> element for inlining, every id prefixed so that several charts share one page."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=NO_METADATA)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = text.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    return text.strip() + "\n"


@dataclass(frozen=True)
class SpeedupPoint:
    label: str
    speedup: float
    low: float
    high: float
    kind: str


@dataclass(frozen=True)
class ContextLine:
    value: float
    label: str


def _reference_axis(ax: Any, human: float, context: Sequence[ContextLine]) -> None:
    """The human reference and the published figures as vertical lines, named on an axis of their own above the
    chart, where no name can fall on a point, a bar or another line's name."""
    ax.axvline(human, color=KIND_COLOURS["human"], linewidth=1.2, zorder=1)
    for line in context:
        ax.axvline(line.value, color="#888888", linestyle=(0, (4, 3)), linewidth=0.9, zorder=1)
    top = ax.secondary_xaxis("top")
    top.set_xticks([human, *(c.value for c in context)], [f"human reference {human:g}x", *(c.label for c in context)])
    top.xaxis.set_minor_locator(ticker.NullLocator())
    top.tick_params(axis="x", labelsize=7, labelrotation=90, length=3, colors="#555555")
    top.get_xticklabels()[0].set_color(KIND_COLOURS["human"])


def _speedup_key(fig: Figure, kinds: Sequence[str]) -> None:
    """The colour key, under the chart: what each colour of a point means, and what the two kinds of line are."""
    handles = [
        Line2D(
            [],
            [],
            color=KIND_COLOURS.get(k, PALETTE[2]),
            marker="o",
            linewidth=2.2,
            label=f"{visible(k)}: 95% interval",
        )
        for k in sorted(set(kinds))
    ]
    handles += [
        Line2D([], [], color=KIND_COLOURS["human"], linewidth=1.2, label="human reference"),
        Line2D([], [], color="#888888", linestyle=(0, (4, 3)), linewidth=0.9, label="published, different harness"),
    ]
    fig.legend(handles=handles, fontsize=7.5, loc="outside lower center", ncol=len(handles))


def speedup_figure(points: Sequence[SpeedupPoint], human: float, context: Sequence[ContextLine]) -> Figure:
    """Speedups with their intervals on a log axis, best on top; the human reference and published figures as lines
    named above the chart; a colour key below it. Made inside `_style()`, as speedup_chart does."""
    fig = Figure(figsize=(WIDTH, 3.4 + 0.32 * max(len(points), 1)), layout="constrained")
    ax = fig.add_subplot()
    values = [v for p in points for v in (p.low, p.high, p.speedup)] + [human] + [c.value for c in context]
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, min(values) / 1.5), max(values) * 1.6)
    ys = list(range(len(points)))[::-1]
    for y, p in zip(ys, points, strict=True):
        colour = KIND_COLOURS.get(p.kind, PALETTE[2])
        ax.plot([p.low, p.high], [y, y], color=colour, linewidth=2.2, solid_capstyle="butt", zorder=3)
        ax.plot([p.speedup], [y], "o", color=colour, markersize=6, zorder=3)
        ax.annotate(
            f"{p.speedup:.2f}x",
            (p.high, y),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            zorder=4,
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"},  # over the lines
        )
    ax.set_yticks(ys, [visible(p.label) for p in points])
    ax.set_ylim(-0.8, max(len(points), 1) - 0.2)
    if not points:
        ax.text(0.5, 0.45, "no accepted result", transform=ax.transAxes, ha="center", color="#777777")
    _reference_axis(ax, human, context)
    _speedup_key(fig, [p.kind for p in points])
    _plain_log_labels(ax.xaxis, "x")
    ax.set_xlabel("speedup over the naive baseline (log scale)")
    ax.grid(axis="y", visible=False)
    return fig


def speedup_chart(points: Sequence[SpeedupPoint], human: float, context: Sequence[ContextLine], prefix: str) -> str:
    with _style():
        return _svg(speedup_figure(points, human, context), prefix)


@dataclass(frozen=True)
class Curve:
    label: str
    losses: Sequence[float]
    baseline: bool = False


def loss_chart(curves: Sequence[Curve], prefix: str, title: str = "") -> str:
    """Training loss per step: baselines thick and grey underneath, the others in colour on top."""
    with _style():
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        _loss_panel(fig.add_subplot(), curves, title)
        return _svg(fig, prefix)


def _loss_panel(ax: Any, curves: Sequence[Curve], title: str) -> None:
    colours = iter(PALETTE * (1 + len(curves) // len(PALETTE)))
    for c in sorted(curves, key=lambda c: not c.baseline):
        steps = range(len(c.losses))
        if c.baseline:
            ax.plot(steps, c.losses, color=BASELINE_COLOUR, linewidth=3.2, alpha=0.7, label=visible(c.label))
        else:
            ax.plot(steps, c.losses, color=next(colours), linewidth=1.1, label=visible(c.label))
    if not curves:
        ax.text(0.5, 0.5, "no loss curve", transform=ax.transAxes, ha="center", color="#777777")
    else:
        ax.legend(fontsize=7.5, loc="upper right", ncol=1 + len(curves) // 8)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel("training loss")
    if title:
        ax.set_title(title, fontsize=9, loc="left")


@dataclass(frozen=True)
class Difference:
    """A submission's loss minus its paired baseline's (same seed, same data), per step, in each of its trials."""

    label: str
    trials: Sequence[Sequence[float]]


def _difference_panel(ax: Any, series: Sequence[Difference], band: bool) -> None:
    """Each series' difference per step: with `band`, the median over trials and the band from the least to the
    largest; else one line per trial."""
    ax.axhline(0.0, color=BASELINE_COLOUR, linewidth=3.2, alpha=0.7, label="the baseline on the same data")
    for i, s in enumerate(series):
        colour, trials = PALETTE[i % len(PALETTE)], [t for t in s.trials if len(t)]
        if not trials:
            continue
        if band and len(trials) > 1:
            width = min(len(t) for t in trials)
            cut = np.array([t[:width] for t in trials], dtype=float)
            steps = range(width)
            ax.fill_between(steps, cut.min(axis=0), cut.max(axis=0), color=colour, alpha=0.18, linewidth=0)
            ax.plot(steps, np.median(cut, axis=0), color=colour, linewidth=1.3, label=visible(s.label))
        else:
            for k, t in enumerate(trials):
                ax.plot(range(len(t)), t, color=colour, linewidth=1.1, label=visible(s.label) if k == 0 else None)
    if not series:
        ax.text(0.5, 0.5, "no paired loss curve", transform=ax.transAxes, ha="center", color="#777777")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside, not over
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    # linear within a thousandth of zero (rounding), logarithmic beyond: a spike where an honest float32 run
    # drifted on a hard batch shows without flattening every other step to the zero line
    ax.set_yscale("symlog", linthresh=DIFFERENCE_LINEAR, linscale=0.5)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel("loss minus the baseline's (symlog)")


def difference_chart(series: Sequence[Difference], prefix: str) -> str:
    """Per submission, its loss minus its paired baseline's per step: the median over its trials and their range.
    Each trial's seed cancels in its own pair, so what remains is the submission's own difference."""
    with _style():
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        _difference_panel(fig.add_subplot(), series, band=True)
        return _svg(fig, prefix)


def trials_loss_chart(first: Sequence[Curve], per_trial: Sequence[Difference], prefix: str) -> str:
    """One run's losses: the first trial's curves (the baseline and the submission on the same data), and every
    trial's difference from its baseline, one line per trial."""
    with _style():
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        left, right = fig.subplots(1, 2)
        _loss_panel(left, first, "trial 1: loss per step")
        _difference_panel(right, per_trial, band=False)
        right.set_title("every trial: the submission's loss minus its baseline's", fontsize=9, loc="left")
        return _svg(fig, prefix)


@dataclass(frozen=True)
class AuditSeries:
    label: str
    ratios: Sequence[float]
    """Each segment's measure divided by its tolerance: under 1 passes."""


def audit_chart(series: Sequence[AuditSeries], prefix: str) -> str:
    """Each audited measure per segment as a fraction of its tolerance, on a log axis with the line at 1."""
    floor = 1e-6
    with _style():
        fig = Figure(figsize=(WIDTH, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.set_yscale("log")
        markers = ["o", "s", "^", "D"]
        for i, s in enumerate(series):
            ys = [max(r, floor) if math.isfinite(r) else 1e3 for r in s.ratios]
            ax.plot(
                range(len(ys)),
                ys,
                marker=markers[i % len(markers)],
                markersize=4,
                linewidth=1.0,
                color=PALETTE[i % len(PALETTE)],
                label=s.label,
            )
        ax.axhline(1.0, color="#b2182b", linewidth=1.2, label="tolerance")
        _plain_log_labels(ax.yaxis)
        ax.set_xlabel("segment")
        ax.set_ylabel("measure / tolerance (log)")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=7.5, loc="best", ncol=2)
        return _svg(fig, prefix)


@dataclass(frozen=True)
class UsageBar:
    label: str
    baseline: float | None
    submission: float | None


def usage_chart(
    memory: Sequence[UsageBar],
    memory_budget: float | None,
    cpu: Sequence[UsageBar],
    cpu_budget: float | None,
    prefix: str,
) -> str:
    """Per trial: peak memory and average cores busy, baseline beside submission, each against its budget."""
    with _style():
        fig = Figure(figsize=(WIDTH, 2.9), layout="constrained")
        panels = fig.subplots(1, 2)
        for ax, bars, budget, unit in (
            (panels[0], memory, memory_budget, "peak memory (MiB)"),
            (panels[1], cpu, cpu_budget, "cores busy (CPU-s / s)"),
        ):
            xs = range(len(bars))
            ax.bar(
                [x - 0.2 for x in xs],
                [b.baseline or 0.0 for b in bars],
                width=0.38,
                color=BASELINE_COLOUR,
                label="baseline",
            )
            ax.bar(
                [x + 0.2 for x in xs],
                [b.submission or 0.0 for b in bars],
                width=0.38,
                color=PALETTE[0],
                label="submission",
            )
            if budget:
                ax.axhline(budget, color="#b2182b", linewidth=1.2, label="budget")
                ax.set_ylim(0, 1.3 * max([budget] + [v or 0.0 for b in bars for v in (b.baseline, b.submission)]))
            ax.set_xticks(list(xs), [b.label for b in bars])
            ax.set_ylabel(unit)
            ax.grid(axis="x", visible=False)
            ax.legend(fontsize=7.5, loc="upper right", ncol=3)
        return _svg(fig, prefix)


@dataclass(frozen=True)
class TimelinePoint:
    minutes: float
    """Time since the attempt's start."""
    score: float | None
    """The state's score; None when it was rejected."""
    label: str


def _best_so_far(ax: Any, accepted: Sequence[TimelinePoint], end: float) -> None:
    best, xs, ys = 0.0, [], []
    for p in accepted:
        best = max(best, p.score or 0.0)
        xs.append(p.minutes)
        ys.append(best)
    ax.step([*xs, end], [*ys, ys[-1]], where="post", color=PALETTE[0], linewidth=2.0, label="best so far")
    ax.plot(xs, [p.score or 1.0 for p in accepted], "o", color=PALETTE[0], markersize=5, label="accepted state")


def _levels(ax: Any, levels: Sequence[tuple[float, str, str, Any]], end: float) -> None:
    """Horizontal reference lines, each labelled above it at the right (value, label, colour, line style)."""
    for value, label, colour, style in levels:
        ax.axhline(value, color=colour, linestyle=style, linewidth=1.0)
        ax.text(end, value, f"{label} ", ha="right", va="bottom", fontsize=7, color=colour)


def timeline_chart(
    points: Sequence[TimelinePoint], rungs: Sequence[ContextLine], human: float, human_label: str, prefix: str
) -> str:
    """Best accepted score against time as a step line, each state a point, rejected ones crossed at the foot."""
    accepted = [p for p in points if p.score]
    with _style():
        fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_yscale("log")
        values = [p.score or 1.0 for p in accepted] + [human, 1.0] + [r.value for r in rungs]
        low, high = min(values) / 1.6, max(values) * 1.7
        end = max([p.minutes for p in points] + [1.0]) * 1.06
        ax.set_xlim(0, end)
        ax.set_ylim(low, high)
        if accepted:
            _best_so_far(ax, accepted, end)
        foot = low * 1.12
        rejected = [p.minutes for p in points if not p.score]
        if rejected:
            ax.plot(rejected, [foot] * len(rejected), "x", color="#b2182b", markersize=7, markeredgewidth=1.8,
                    label="rejected state (reasons in the table)")  # fmt: skip
        for p in points:
            ax.annotate(p.label, (p.minutes, p.score or foot), xytext=(0, 6), textcoords="offset points", ha="center",
                        fontsize=7)  # fmt: skip
        dashed = (0, (4, 3))
        _levels(ax, [(human, human_label, KIND_COLOURS["human"], "solid")], end)
        _levels(ax, [(r.value, r.label, "#666666", dashed) for r in rungs], end)
        if not points:
            ax.text(0.5, 0.5, "no graded state", transform=ax.transAxes, ha="center", color="#777777")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        _plain_log_labels(ax.yaxis, "x")
        ax.set_xlabel("time since the export (minutes)")
        ax.set_ylabel("score (log scale)")
        ax.legend(fontsize=7.5, loc="upper left")
        return _svg(fig, prefix)
