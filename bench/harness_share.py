"""The harness's share of the clock: a submission timed in this process and through `loopbench check`, side by side.

    python bench/harness_share.py submissions/champion --workload standard --runs 5
    python bench/harness_share.py submissions/champion --loopbench OTHER/.venv/bin/loopbench   # another harness

Four medians of the same submission on the same data (seed 1), each over --runs runs:

- in process, nothing logged: `train` under the budget's CPUs and threads with a log that checks and keeps
  nothing: the submission's own work;
- in process, the worker's log: the same with the worker's own `log` (steps and checkpoints copied into a log
  area of shared memory, headers written to /dev/null): what logging costs the submission's process;
- in a fresh process, its first run: prepare(task), then one train() with the worker's log, in a new
  interpreter, as the harness runs it (without the sandbox and the parent's clock): the submission's own
  cold start (threads that slept since prepare, caches) is its own, and a submission can warm up in prepare;
- through the harness: `loopbench check --json` (a fresh isolated worker, the parent's clock), its `seconds`.

The harness's share is the last over the first; over the second, it is what the parent adds beyond the copies
the log contract asks for; over the third, what the harness adds to a first run. Run it on an idle machine:
the runs alternate between the four so that drift
favours none.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.contract.areas import LogArea, LogLayout, memfd
from harness.contract.cores import budget_cpus, thread_env
from harness.contract.log import Log, discarding_log
from harness.contract.spec import load_workload
from harness.contract.submission import load_submission
from harness.sandbox.channel import Channel
from harness.sandbox.loader import import_entry
from harness.scoring import data


def worker_log(task) -> Log:
    """The worker's own log: its channel over a fresh log area, its headers going nowhere."""
    layout = LogLayout.of(task)
    fd = memfd("bench-log", layout.size)
    os.posix_fallocate(fd, 0, layout.size)
    area = LogArea.map(fd, layout)
    os.close(fd)
    return Log(Channel(os.open(os.devnull, os.O_WRONLY), area))


def in_process(train, task, params, batches, log) -> float:
    fresh = {k: a.copy() for k, a in params.items()}
    start = time.perf_counter()
    train(task, fresh, batches, log)
    return time.perf_counter() - start


def through_harness(loopbench: str, folder: Path, workload: str, seed: int) -> float:
    command = [loopbench, "check", str(folder), "--workload", workload, "--seed", str(seed), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    out = json.loads(done.stdout)
    run = out["trials"][0]
    seconds = run["submission"]["seconds"] if "submission" in run else run["submission_seconds"]  # older harnesses
    if out["verdict"] != "accepted":
        raise SystemExit(f"{folder} is rejected: {out['reason']}")
    return float(seconds)


def fresh_first_run(folder: Path, workload: str, seed: int) -> float:
    """The time of the first train() in a new interpreter after prepare (this script's --first-run mode)."""
    command = [sys.executable, __file__, str(folder), "--workload", workload, "--seed", str(seed), "--first-run"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", type=Path)
    parser.add_argument("--workload", default="standard")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loopbench", default="loopbench", help="the loopbench command to time through")
    parser.add_argument("--json", help="also write the times to this file")
    parser.add_argument("--first-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    wl = load_workload(args.workload)
    os.environ.update(thread_env(wl.budget.cores))
    os.sched_setaffinity(0, budget_cpus(wl.budget.cores))
    import torch

    torch.set_num_threads(wl.budget.cores)
    task = wl.task()
    corpus = data.load_corpus()
    params, batches = data.init_params(task, args.seed), data.make_batches(corpus, task, args.seed)
    sub = load_submission(args.submission)
    module = import_entry(sub.path, sub.entry_file)
    train = getattr(module, sub.entry_function)
    if callable(getattr(module, "prepare", None)):
        module.prepare(task)
    if args.first_run:
        print(in_process(train, task, params, batches, worker_log(task)))
        return
    in_process(train, task, params, batches, discarding_log())  # warm: first-call costs stay out of the figures
    times: dict[str, list[float]] = {
        "in process, nothing logged": [],
        "in process, the worker's log": [],
        "fresh process, first run": [],
        "through the harness": [],
    }
    for k in range(args.runs):
        torch.set_num_threads(wl.budget.cores)
        times["in process, nothing logged"].append(in_process(train, task, params, batches, discarding_log()))
        torch.set_num_threads(wl.budget.cores)
        times["in process, the worker's log"].append(in_process(train, task, params, batches, worker_log(task)))
        times["fresh process, first run"].append(fresh_first_run(sub.path, args.workload, args.seed))
        times["through the harness"].append(through_harness(args.loopbench, sub.path, args.workload, args.seed))
        print(f"run {k + 1}/{args.runs}: " + ", ".join(f"{v[-1]:.4f} s" for v in times.values()), flush=True)
    medians = {name: statistics.median(v) for name, v in times.items()}
    own = medians["in process, nothing logged"]
    print(f"\n{sub.name} on {wl.name}, {args.runs} runs each (medians):")
    for name, value in medians.items():
        print(f"  {name:<30} {value:.4f} s   {value / own:.3f}x the submission's own work")
    logged = medians["in process, the worker's log"]
    harness = medians["through the harness"]
    print(f"  through the harness over the worker's log: {harness / logged:.3f}x")
    first = medians["fresh process, first run"]
    print(f"  through the harness over a fresh process's first run: {harness / first:.3f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"submission": sub.name, "workload": wl.name, "times": times, "medians": medians}, indent=1)
        )


if __name__ == "__main__":
    main()
