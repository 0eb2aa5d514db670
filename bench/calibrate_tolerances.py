"""Calibrate the audit's tolerances: honest variants against dishonest ones, on several seeds and every workload.

Each variant is a training run computed here (in torch, like a submission would), then audited exactly as
the harness audits a trial. For every variant the table shows the largest group distance, the largest
single-tensor distance and the largest loss deviation over all segments, so that the margins of the
tolerances (harness.judge.tolerances) can be read off on both sides.

    python bench/calibrate_tolerances.py                     # every workload, 3 seeds
    python bench/calibrate_tolerances.py --workloads tiny --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from harness.contract.log import MemoryLog
from harness.contract.spec import Task, load_workload, workload_names
from harness.judge import audit
from harness.judge.tolerances import DISTANCE_TOL, LOSS_TOL, TENSOR_TOL
from harness.scoring import data

HONEST = ("reference", "float32", "float32-permuted", "float64-permuted")
DISHONEST = ("lr+2%", "no-weight-decay", "skip-one-step", "half-batch", "stale-v", "fabricated-losses", "bf16-matmul")


def train_variant(task: Task, params: dict, batches: np.ndarray, variant: str, log: MemoryLog) -> None:
    """A plain torch training loop of SPEC §2-3, with one honest or dishonest change named by `variant`."""
    dtype = torch.float64 if variant in ("float64-permuted",) else torch.float32
    p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    wd = 0.0 if variant == "no-weight-decay" else task.weight_decay
    lr_scale = 1.02 if variant == "lr+2%" else 1.0
    C, H = task.d_model, task.n_head
    rng = np.random.default_rng(1)
    fabricated_start = None
    for s in range(task.steps):
        tokens = torch.from_numpy(np.array(batches[s]))
        if variant.endswith("permuted"):
            tokens = tokens[torch.from_numpy(rng.permutation(len(tokens)))]
        if variant == "half-batch":
            tokens = tokens[: len(tokens) // 2]
        x, y = tokens[:, :-1], tokens[:, 1:]
        B, T = x.shape
        mm = (
            (lambda a, b: (a.bfloat16() @ b.bfloat16()).to(dtype)) if variant == "bf16-matmul" else (lambda a, b: a @ b)
        )
        h = p["wte"][x] + p["wpe"][:T]
        for i in range(task.n_layer):
            a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
            q, k_, v_ = (mm(a, p[f"h{i}.attn.w"]) + p[f"h{i}.attn.b"]).split(C, -1)
            q, k_, v_ = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k_, v_))
            o = F.scaled_dot_product_attention(q, k_, v_, is_causal=True).transpose(1, 2).reshape(B, T, C)
            h = h + mm(o, p[f"h{i}.proj.w"]) + p[f"h{i}.proj.b"]
            u = F.gelu(
                mm(F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5), p[f"h{i}.fc.w"]) + p[f"h{i}.fc.b"],
                approximate="tanh",
            )
            h = h + mm(u, p[f"h{i}.fcproj.w"]) + p[f"h{i}.fcproj.b"]
        logits = mm(F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5), p["wte"].T)
        loss = F.cross_entropy(logits.reshape(B * T, -1), y.reshape(-1))
        for t_ in p.values():
            t_.grad = None
        loss.backward()
        skip = variant == "skip-one-step" and s % task.audit_every == task.audit_every // 2
        if not skip:
            t = s + 1
            W, S = task.warmup_steps, task.steps
            lr = (
                task.lr * t / W
                if t <= W
                else task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * (t - W) / (S - W)))
            )
            lr *= lr_scale
            with torch.no_grad():
                norm = math.sqrt(sum(float((q_.grad.double() ** 2).sum()) for q_ in p.values()))
                clip = min(1.0, task.grad_clip / (norm + 1e-6))
                c1, c2 = 1 - task.beta1**t, 1 - task.beta2**t
                for k in p:
                    g = p[k].grad * clip
                    m[k].mul_(task.beta1).add_(g, alpha=1 - task.beta1)
                    if variant != "stale-v" or s % 2 == 0:
                        v[k].mul_(task.beta2).addcmul_(g, g, value=1 - task.beta2)
                    decay = wd if p[k].ndim == 2 else 0.0
                    p[k].sub_(lr * ((m[k] / c1) / ((v[k] / c2).sqrt() + task.eps) + decay * p[k]))
        logged = loss.item()
        if variant == "fabricated-losses":
            fabricated_start = fabricated_start or logged
            logged = fabricated_start * (1 - 0.2 * s / task.steps)  # a smooth, believable curve
        log.step(s, logged)
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t_.detach() for k, t_ in p.items()}, m, v)


def measure(workload: str, seed: int, variant: str) -> dict:
    task = load_workload(workload).task()
    corpus = data.load_corpus()
    params, batches = data.init_params(task, seed), data.make_batches(corpus, task, seed)
    log = MemoryLog()
    if variant == "reference":
        from reference_loop.train import train

        train(task, params, batches, log)
    else:
        train_variant(task, params, batches, variant, log)
    verdict = audit.audit_run(task, params, batches, log.losses, log.checkpoints)
    segs = verdict.segments
    return {
        "workload": workload,
        "seed": seed,
        "variant": variant,
        "honest": variant in HONEST,
        "distance": max(s.distance for s in segs),
        "tensor_distance": max(s.tensor_distance for s in segs),
        "loss_deviation": max(s.loss_deviation for s in segs),
        "accepted": verdict.accepted,
        "reason": verdict.reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=workload_names())
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=[*HONEST, *DISHONEST])
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--markdown", help="also write the summary table (worst value over seeds) to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    print(
        f"{'workload':<9} {'seed':>4} {'variant':<18} {'group dist':>10} {'tensor dist':>11} {'loss dev':>9}  verdict"
    )
    for wl in args.workloads:
        for seed in args.seeds:
            for variant in args.variants:
                if variant == "reference" and wl != "tiny" and seed != args.seeds[0]:
                    continue  # the reference is slow on the big workloads; one seed shows its float64 agreement
                start = time.perf_counter()
                row = measure(wl, seed, variant)
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
                print(
                    f"{wl:<9} {seed:>4} {variant:<18} {row['distance']:>10.2e} {row['tensor_distance']:>11.2e} "
                    f"{row['loss_deviation']:>9.2e}  "
                    f"{'accepted' if row['accepted'] else 'rejected: ' + row['reason'][:60]}",
                    flush=True,
                )
    print()
    print("summary (worst honest, least dishonest) per workload, relative to the tolerances")
    tol = {"distance": DISTANCE_TOL, "tensor_distance": TENSOR_TOL, "loss_deviation": LOSS_TOL}
    for wl in args.workloads:
        honest = [r for r in rows if r["workload"] == wl and r["honest"]]
        worst = {key: max(r[key] / t for r in honest) for key, t in tol.items()}
        print(
            f"  {wl}: honest runs reach at most " + ", ".join(f"{k} {v:.2g} of its tolerance" for k, v in worst.items())
        )
        for variant in DISHONEST:
            mine = [r for r in rows if r["workload"] == wl and r["variant"] == variant]
            if mine:
                least = min(max(r[key] / t for key, t in tol.items()) for r in mine)
                print(f"    {variant:<18} exceeds a tolerance by at least {least:.3g}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, args.workloads, tol))


def markdown(rows: list[dict], workloads: list[str], tol: dict) -> str:
    """Per workload and variant: the worst value over seeds of each measure, and the margin to its tolerance."""
    out = [
        "| workload | variant | seeds | group distance | tensor distance | loss deviation | margin |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for wl in workloads:
        for variant in [*HONEST, *DISHONEST]:
            mine = [r for r in rows if r["workload"] == wl and r["variant"] == variant]
            if not mine:
                continue
            honest = variant in HONEST
            pick = max if honest else min
            worst = {key: pick(r[key] for r in mine) for key in tol}
            if honest:  # how far under every tolerance the worst honest run stays
                margin = min(t / max(worst[key], 1e-300) for key, t in tol.items())
                label = f"{margin:,.0f}x under" if margin < 1e6 else "> 1e6x under"
            else:  # how far over some tolerance the least detectable dishonest run goes
                margin = min(max(r[key] / t for key, t in tol.items()) for r in mine)
                label = f"{margin:,.1f}x over"
            out.append(
                f"| {wl} | {variant}{'' if honest else ' (dishonest)'} | {len(mine)} | {worst['distance']:.2e} | "
                f"{worst['tensor_distance']:.2e} | {worst['loss_deviation']:.2e} | {label} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
