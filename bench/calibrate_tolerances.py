"""Calibrate the audit's tolerances over submission folders: honest variants against dishonest ones, on several
seeds and every workload (SPEC §6: every tolerance 10x above the worst honest figure and 10x below the least
detectable dishonest one, per measure and per workload).

Every variant is a submission folder (tests/honest/, tests/adversarial/attacks/, the reference, a ladder
submission), some of them a family whose member a variant.toml picks. Each run copies the folder to a
scratch directory (with its variant.toml), loads its entry point in a fresh process as the worker would,
runs prepare(task) and train() in-process with a MemoryLog, and audits the run exactly as the harness audits
a trial, with the workload's tolerances. Rows are appended to a JSON-lines file as they finish, so an
interrupted calibration keeps what it measured; --table reads such files and writes the margins table.

    python bench/calibrate_tolerances.py --workloads tiny --seeds 0 1 2 3 4 --out cal.jsonl
    python bench/calibrate_tolerances.py --workloads standard --variants dot-norm bf16-backward --out cal.jsonl
    python bench/calibrate_tolerances.py --table cal.jsonl --markdown table.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import numpy as np

ATTACKS = "tests/adversarial/attacks/"
LOW = ATTACKS + "low_precision_part"
ONE = ATTACKS + "single_tensor"
PARTS = ("attention", "mlp", "head", "backward", "weight_grad")

HONEST: dict[str, tuple[str, dict | None]] = {
    "reference": ("reference_loop", None),
    "float32-autograd": ("tests/honest/torch_float32", None),
    "float32-hand-backward": ("submissions/numpy-float32", None),
    "dot-norm": ("tests/honest/dot_norm", None),
    "reordered-sums": ("tests/honest/reordered_sums", None),
    "numba-fastmath": ("tests/honest/numba_fastmath", None),
    "c-fma": ("tests/honest/c_fma", None),
    "junk-in-key-bias": (LOW, {"part": "none", "trick": "key_bias", "start": 0}),
    "torch-tuned": ("submissions/torch-tuned", None),
    "champion": ("submissions/champion", None),
}
"""Honest: what a careful or careless but legal float32 submission does. The last trains honestly and writes
huge values into the part of attn.b the audit does not compare: it must score exactly as the honest port. The
two ladder rungs are honest by construction (torch float32 with MKL's GEMMs; C with its own kernels)."""

DISHONEST: dict[str, tuple[str, dict | None]] = {
    "lr+2%": (ATTACKS + "lr_change", None),
    "no-weight-decay": (ATTACKS + "no_weight_decay", None),
    "skip-one-step": (ATTACKS + "skipped_steps", None),
    "half-batch": (ATTACKS + "half_batches", None),
    "stale-v": (ATTACKS + "stale_optimiser_state", None),
    "fabricated-losses": (ATTACKS + "fabricated_losses", None),
    "bf16-autocast": (ATTACKS + "bf16_compute", None),
    "loss-bias-1e-4": (ATTACKS + "loss_bias", None),
    "sigmoid-gelu": (ATTACKS + "sigmoid_gelu", None),
    **{
        f"no-decay:{t}": (ONE, {"change": "no_decay", "tensor": t})
        for t in ("h1.proj.w", "wpe", "h0.attn.w", "h1.fcproj.w")
    },
    **{f"partial-batch:{t}": (ONE, {"change": "partial_batch", "tensor": t}) for t in ("h1.proj.w", "lnf.g")},
    **{
        f"{short}-{part}": (LOW, {"dtype": dtype, "part": part, "trick": "none", "start": 0})
        for dtype, short in (("bfloat16", "bf16"), ("float16", "fp16"))
        for part in PARTS
    },
    **{
        f"{short}-{part}+key-bias": (LOW, {"dtype": dtype, "part": part, "trick": "key_bias", "start": "segment 1"})
        for dtype, short in (("bfloat16", "bf16"), ("float16", "fp16"))
        for part in PARTS
    },
    "bf16-backward+tiny-v": (LOW, {"dtype": "bfloat16", "part": "backward", "trick": "tiny_v", "start": "segment 1"}),
    "bf16-backward+m-bound": (LOW, {"dtype": "bfloat16", "part": "backward", "trick": "m_bound", "start": "segment 1"}),
}
"""Dishonest: the attack catalogue's training changes, 16-bit arithmetic in each single part (with and without
the key-bias trick of buying the normalisation; other trick shapes on one part), a loss bias, one tensor's
weight decay or batch, a cheaper GELU."""

from bench.calibration_table import MEASURES, tables


def _toml(config: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())


def _run_folder(folder: str, config: dict | None, task, params, batches, log) -> None:
    """prepare and train of the folder's entry point, in a scratch copy (with its variant.toml) as cwd."""
    from harness.contract.submission import load_submission
    from harness.sandbox.loader import import_entry

    scratch = Path(tempfile.mkdtemp(prefix="loopbench-calibrate-"))
    try:
        copy = scratch / "submission"
        shutil.copytree(PROJECT / folder, copy, ignore=shutil.ignore_patterns("__pycache__", "build"))
        if config is not None:
            (copy / "variant.toml").write_text(_toml(config))
        sub = load_submission(copy)
        os.chdir(copy)
        module = import_entry(copy, sub.entry_file)
        if hasattr(module, "prepare"):
            module.prepare(task)
        getattr(module, sub.entry_function)(task, params, batches, log)
    finally:
        os.chdir(PROJECT)
        shutil.rmtree(scratch, ignore_errors=True)


def measure(workload: str, seed: int, variant: str) -> dict:
    """One run of `variant` on (workload, seed), audited: its worst figure of every measure and the verdict."""
    import torch

    from harness.contract.log import MemoryLog
    from harness.contract.spec import load_workload
    from harness.judge import audit
    from harness.judge.tolerances import for_workload
    from harness.scoring import data

    torch.set_num_threads(1)
    wl = load_workload(workload)
    task = wl.task()
    folder, config = {**HONEST, **DISHONEST}[variant]
    if config is not None and config.get("start") == "segment 1":
        config = {**config, "start": task.audit_every}
    corpus = data.load_corpus()
    params, batches = data.init_params(task, seed), data.make_batches(corpus, task, seed)
    log = MemoryLog()
    start = time.perf_counter()
    _run_folder(folder, config, task, params, batches, log)
    trained = time.perf_counter() - start
    verdict = audit.audit_run(task, params, batches, log.losses, log.checkpoints, for_workload(wl))
    segs = verdict.segments
    groups = {g: max((s.group_distances.get(g, 0.0) for s in segs), default=0.0) for g in ("params", "m", "v")}
    return {
        "workload": workload,
        "seed": seed,
        "variant": variant,
        "honest": variant in HONEST,
        "distance": max((s.distance for s in segs), default=float("nan")),
        **{f"distance_{g}": d for g, d in groups.items()},
        "moment_group": max(groups["m"], groups["v"]),
        "moment_distance": max((s.moment_distance for s in segs), default=float("nan")),
        "tensor_distance": max((s.tensor_distance for s in segs), default=float("nan")),
        "decay_share": max((s.decay_share for s in segs), default=float("nan")),
        "loss_deviation": max((s.loss_deviation for s in segs), default=float("nan")),
        "loss_bias": abs(audit.run_loss_bias(segs)),
        "segments": len(segs),
        "accepted": verdict.accepted,
        "check": verdict.failure.check.value if verdict.failure else None,
        "reason": verdict.reason,
        "train_seconds": trained,
        "audit_seconds": time.perf_counter() - start - trained,
    }


def _line(row: dict) -> str:
    verdict = "accepted" if row["accepted"] else f"rejected ({row['check']}): {row['reason'][:70]}"
    figures = " ".join(f"{row[k]:>9.2e}" for k in MEASURES)
    return f"{row['workload']:<9} {row['seed']:>4} {row['variant']:<28} {figures}  {verdict}"


def run(args: argparse.Namespace) -> None:
    jobs = [
        (wl, seed, variant)
        for wl in args.workloads
        for seed in args.seeds
        for variant in args.variants
        if not (variant == "reference" and wl != "tiny" and seed not in args.seeds[: args.reference_seeds])
    ]
    print(f"{'workload':<9} {'seed':>4} {'variant':<28} " + " ".join(f"{k[:9]:>9}" for k in MEASURES) + "  verdict")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing of this process in them
    with (
        concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool,
        open(args.out, "a") as out,
    ):
        futures = {pool.submit(measure, *job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # noqa: BLE001 - a variant that cannot run is a line, not the end of the calibration
                wl, seed, variant = futures[future]
                print(f"{wl:<9} {seed:>4} {variant:<28} failed to run: {err!r}", flush=True)
                continue
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(_line(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["tiny", "standard", "large"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=[*HONEST, *DISHONEST])
    parser.add_argument("--reference-seeds", type=int, default=1, help="seeds of the slow reference off tiny")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each on one thread)")
    parser.add_argument("--out", default="calibration.jsonl", help="JSON lines, appended to")
    parser.add_argument("--table", nargs="+", help="write the margins table from these JSON-lines files instead")
    parser.add_argument("--markdown", help="with --table: also write the tables to this file")
    args = parser.parse_args()
    if args.table:
        lines = [line for f in args.table for line in Path(f).read_text().splitlines() if line.strip()]
        text = tables([json.loads(line) for line in lines])
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text)
        return
    unknown = [v for v in args.variants if v not in HONEST and v not in DISHONEST]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {[*HONEST, *DISHONEST]}")
    run(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
