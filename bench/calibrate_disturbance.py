"""Calibrate the thresholds of a disturbed run: what idle runs lose to the machine, and what runs beside busy ones do.

    python bench/calibrate_disturbance.py --idle 50 --busy 10                       # champion and reference, standard
    python bench/calibrate_disturbance.py --submissions submissions/champion --workload standard --competitors 1 2

Each run is one `check` (a fresh isolated worker, the parent's clock), with its figures: others' CPU time on the
budget's cores, steal, runqueue wait, granted, and the GEMM probe before and after. Idle runs come first (run
it with nothing else on the machine); then, for each number of competitors, that many processes spinning on
the budget's CPUs run beside each check. The table shows, per condition, the largest (idle) or smallest (busy)
share of the budget's core-seconds that others took, and whether the thresholds of harness.scoring.disturbance
separate them: no idle run may trip them, every busy one must.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.contract.cores import budget_cpus
from harness.contract.spec import load_workload
from harness.contract.submission import load_submission
from harness.scoring import data, disturbance
from harness.scoring.machine import probe_gflops
from harness.scoring.runs import run_once
from harness.scoring.setting import make_setting

SPIN = "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')})\nwhile True: pass"


def one(sub, setting, seed: int) -> dict:
    params, batches = data.init_params(setting.task, seed), data.make_batches(setting.corpus, setting.task, seed)
    before = probe_gflops(setting.budget.cores)
    run = run_once(sub, setting, params, batches, progress=False, label=sub.name)
    after = probe_gflops(setting.budget.cores)
    d = run.disturbance
    assert d is not None
    capacity = setting.budget.cores * (run.seconds or 0.0)
    return {
        "submission": sub.name,
        "seconds": run.seconds,
        "accepted": run.accepted,
        "others": d.others_cpu_seconds,
        "others_share": d.others_cpu_seconds / capacity if capacity else None,
        "steal": d.steal_seconds,
        "wait": d.wait_seconds,
        "granted": d.granted,
        "disturbed": d.disturbed,
        "probe_ratio": min(before, after) / setting.gemm_gflops,
        "probe_busy": disturbance.probes_busy([before, after], setting.gemm_gflops) is not None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--submissions", nargs="+", type=Path, default=[ROOT / "submissions" / "champion", ROOT / "reference_loop"]
    )
    parser.add_argument("--workload", default="standard")
    parser.add_argument("--idle", type=int, default=50, help="idle runs of each submission")
    parser.add_argument("--busy", type=int, default=10, help="runs of each submission per number of competitors")
    parser.add_argument("--competitors", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--json", help="write every run's figures to this file")
    args = parser.parse_args()
    wl = load_workload(args.workload)
    setting = make_setting(wl, wl.budget, data.load_corpus(), busy="record")
    print(f"ceiling {setting.gemm_gflops:.0f} GFLOP/s, repeats {setting.machine['gemm_repeats']}", flush=True)
    cpus = ",".join(map(str, budget_cpus(wl.budget.cores)))
    rows = []
    for sub in map(load_submission, args.submissions):
        for condition, count, n in [("idle", 0, args.idle)] + [(f"{c} busy", c, args.busy) for c in args.competitors]:
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN, cpus]) for _ in range(count)]
            try:
                for k in range(n):
                    row = one(sub, setting, seed=1000 + k) | {"condition": condition}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
    print(
        "\n| submission | condition | runs | seconds (median) | others' share (max idle / min busy) | tripped "
        "| probe ratio (min) | probe tripped |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in dict.fromkeys(r["submission"] for r in rows):
        for condition in dict.fromkeys(r["condition"] for r in rows):
            mine = [r for r in rows if r["submission"] == name and r["condition"] == condition]
            if not mine:
                continue
            shares = [r["others_share"] or 0.0 for r in mine]
            share = max(shares) if condition == "idle" else min(shares)
            secs = sorted(r["seconds"] or 0.0 for r in mine)[len(mine) // 2]
            print(
                f"| {name} | {condition} | {len(mine)} | {secs:.3f} | {share:.3f} "
                f"| {sum(r['disturbed'] for r in mine)}/{len(mine)} "
                f"| {min(r['probe_ratio'] for r in mine):.2f} | {sum(r['probe_busy'] for r in mine)}/{len(mine)} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


if __name__ == "__main__":
    main()
