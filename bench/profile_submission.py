"""Profile one submission's whole run in this process: where does its time go?

    python bench/profile_submission.py submissions/torch-eager --workload standard [--profiler torch] [--top 12]

Runs `prepare(task)` if the submission has one, then `train` once on the seed-1 data under the budget's
cores and thread variables, with cProfile (Python functions, by own time) or torch.profiler (torch kernels,
by self CPU time of the calling thread). With --warm, one untimed run comes first, so one-off costs
(lazy imports, first-call initialisation) leave the profile; without it they show, as they do in a trial.
This is the tool behind the profile lines quoted in each submission's README. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.contract.cores import budget_cpus, thread_env
from harness.contract.log import discarding_log
from harness.contract.spec import load_workload
from harness.contract.submission import load_submission
from harness.sandbox.loader import import_entry
from harness.scoring import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", type=Path)
    parser.add_argument("--workload", default="standard")
    parser.add_argument("--profiler", choices=("cprofile", "torch"), default="cprofile")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument(
        "--sort",
        choices=("tottime", "cumtime"),
        default="tottime",
        help="cProfile's order: own time, or time including callees.",
    )
    parser.add_argument("--warm", action="store_true", help="Run once untimed first.")
    args = parser.parse_args()

    wl = load_workload(args.workload)
    os.environ.update(thread_env(wl.budget.cores))
    os.sched_setaffinity(0, budget_cpus(wl.budget.cores))
    import numpy  # noqa: F401 - the worker's pre-imports
    import torch

    torch.set_num_threads(wl.budget.cores)
    task = wl.task()
    corpus = data.load_corpus(None)
    batches, params = data.make_batches(corpus, task, 1), data.init_params(task, 1)
    sub = load_submission(args.submission)
    module = import_entry(sub.path, sub.entry_file)
    train = getattr(module, sub.entry_function)
    if callable(getattr(module, "prepare", None)):
        module.prepare(task)
    if args.warm:
        train(task, params, batches, discarding_log())

    start = time.perf_counter()
    if args.profiler == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        train(task, params, batches, discarding_log())
        prof.disable()
        seconds = time.perf_counter() - start
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
        table = out.getvalue()
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(task, params, batches, discarding_log())
        seconds = time.perf_counter() - start
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    print(f"{sub.name} on {wl.name}: one run in {seconds:.3f} s under {args.profiler} ({wl.budget.cores} cores)")
    print(table)


if __name__ == "__main__":
    main()
