"""The margins tables of a calibration (bench/calibrate_tolerances.py): rows in, markdown out.

Per workload and measure: the tolerance, the worst honest figure over every honest variant and seed and how far
under the tolerance it stays, and the least detectable dishonest run among those this measure catches (its
worst seed's figure, and how far over the tolerance it goes). Then per workload and variant, the worst seed of
every measure, so that each line can be checked.
"""

from __future__ import annotations

import math
from collections import defaultdict

MEASURES = (
    "distance_params",
    "moment_group",
    "moment_distance",
    "tensor_distance",
    "decay_share",
    "loss_deviation",
    "loss_bias",
)
"""The figures compared with a tolerance; TOL_KEY names the Tolerances field of each."""
TOL_KEY = {"distance_params": "distance", "moment_group": "moment_group", "moment_distance": "moments"}
TOL_KEY |= {"tensor_distance": "tensor_distance", "decay_share": "decay_share"}
TOL_KEY |= {"loss_deviation": "loss", "loss_bias": "loss_bias"}
LABEL = {
    "distance_params": "params distance",
    "moment_group": "m, v distance",
    "moment_distance": "moment direction",
    "tensor_distance": "tensor distance",
    "decay_share": "decay share",
    "loss_deviation": "loss deviation",
    "loss_bias": "loss bias (run)",
}


def _tolerances(workload: str) -> dict[str, float]:
    from harness.contract.spec import load_workload
    from harness.judge.tolerances import for_workload

    tol = for_workload(load_workload(workload)).model_dump()
    return {m: tol[TOL_KEY[m]] for m in MEASURES}


def _ratio(row: dict, measure: str, tol: dict[str, float]) -> float:
    value = row[measure]
    return value / tol[measure] if math.isfinite(value) else math.inf


def _detection(row: dict, tol: dict[str, float]) -> tuple[float, str]:
    """How far over its tolerance the measure that catches this run goes, and which measure; a protocol
    rejection (a state AdamW cannot reach, a replay that overflows) counts as caught outright."""
    if row["check"] == "protocol":
        return math.inf, "protocol"
    return max((_ratio(row, m, tol), m) for m in MEASURES)


def _x(value: float) -> str:
    if value == math.inf:
        return "rejected outright"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.1f}x"


def summary(rows: list[dict], workload: str) -> list[str]:
    tol = _tolerances(workload)
    mine = [r for r in rows if r["workload"] == workload]
    honest = [r for r in mine if r["honest"]]
    caught: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for r in mine:
        if not r["honest"]:
            by_variant[r["variant"]].append(r)
    for variant, runs in by_variant.items():
        margin, measure, seed = min((*_detection(r, tol), r["seed"]) for r in runs)
        caught[measure].append((margin, variant, seed))
    out = []
    for m in MEASURES:
        worst = max(honest, key=lambda r: r[m], default=None)
        if worst is None:
            honest_text = "not measured"
        else:
            seeds = len({r["seed"] for r in honest if r["variant"] == worst["variant"]})
            honest_text = (
                f"{worst[m]:.2e} ({worst['variant']}, {seeds} seeds): {_x(tol[m] / max(worst[m], 1e-300))} under"
            )
        least = min(caught.get(m, []), default=None)
        if least is None:
            dishonest_text = "(no dishonest run is caught first by this measure)"
        else:
            margin, variant, seed = least
            dishonest_text = f"{variant} (seed {seed}): {_x(margin)} over"
        out.append(f"| {workload} | {LABEL[m]} | {tol[m]:g} | {honest_text} | {dishonest_text} |")
    protocol = sorted(v for margin, v, _ in caught.get("protocol", []))
    if protocol:
        out.append(f"| {workload} | state check | - | - | rejected outright: {', '.join(protocol)} |")
    return out


def detail(rows: list[dict], workload: str) -> list[str]:
    """Each variant's worst seed of every measure (max for honest, the least detectable seed for dishonest)."""
    tol = _tolerances(workload)
    out = []
    variants = dict.fromkeys(r["variant"] for r in rows if r["workload"] == workload)
    for variant in variants:
        runs = [r for r in rows if r["workload"] == workload and r["variant"] == variant]
        honest = runs[0]["honest"]
        if honest:
            figures = {m: max(r[m] for r in runs) for m in MEASURES}
            margin = min(tol[m] / max(figures[m], 1e-300) for m in MEASURES)
            verdict = f"{sum(r['accepted'] for r in runs)}/{len(runs)} accepted; {_x(margin)} under"
        else:
            pick = min(runs, key=lambda r: _detection(r, tol)[0])
            figures = {m: pick[m] for m in MEASURES}
            margin, measure = _detection(pick, tol)
            verdict = f"{sum(not r['accepted'] for r in runs)}/{len(runs)} rejected; {_x(margin)} over ({measure})"
        cells = " | ".join(f"{figures[m]:.2e}" for m in MEASURES)
        out.append(f"| {workload} | {variant}{'' if honest else ' (dishonest)'} | {len(runs)} | {cells} | {verdict} |")
    return out


def tables(rows: list[dict]) -> str:
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    lines = [
        "| workload | measure | tolerance | worst honest (margin under) | least detectable dishonest (margin over) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for wl in workloads:
        lines += summary(rows, wl)
    lines += [
        "",
        "| workload | variant | seeds | " + " | ".join(LABEL[m] for m in MEASURES) + " | verdict |",
        "| --- | --- | --- | " + " | ".join("---" for _ in MEASURES) + " | --- |",
    ]
    for wl in workloads:
        lines += detail(rows, wl)
    return "\n".join(lines) + "\n"
