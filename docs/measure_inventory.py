"""Measure what each deliberate inefficiency of the naive reference costs (docs/reference.md).

For every item, this writes a copy of reference_loop/train.py with only that item fixed, checks that the
copy still computes the same training (the first steps' losses agree with the reference's), then times
whole runs of a few steps on the `standard` workload, interleaving reference and variant runs in pairs.
It prints, per item, the median of the per-pair ratios (reference seconds / variant seconds).

    python docs/measure_inventory.py                 # every item, 5 pairs each
    python docs/measure_inventory.py --pairs 7 --items attention layernorm

The edited copies are written to --scratch (default /tmp/loopbench_inventory) so they can be read and
diffed against the reference. The reference itself is never modified.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference_loop" / "train.py"


# ================================================================ the fixed versions of whole functions
# Each is spliced into a copy of the reference in place of the function of the same name. They keep the
# dtype of their inputs, so the same code serves the float64 single-item variants and the float32 whole.
# (np, math, LN_EPS and GELU_C are the copy's own globals.)


def attention_forward(qkv, n_head):  # item "attention"
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    scale = 1.0 / math.sqrt(D)
    heads = qkv.reshape(B, T, 3, n_head, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
    q, k, v = heads[0], heads[1], heads[2]
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, H, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))
    scores = np.where(causal, scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))  # exactly 0 above the diagonal
    att = scores / scores.sum(axis=-1, keepdims=True)
    out = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return out, att


def attention_backward(dout, qkv, att, n_head):  # item "attention"
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    scale = 1.0 / math.sqrt(D)
    heads = qkv.reshape(B, T, 3, n_head, D).transpose(2, 0, 3, 1, 4)
    q, k, v = heads[0], heads[1], heads[2]
    dout = dout.reshape(B, T, n_head, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    dheads = np.empty((3, B, n_head, T, D), dtype=qkv.dtype)
    dheads[2] = att.transpose(0, 1, 3, 2) @ dout  # dv
    dprobs = dout @ v.transpose(0, 1, 3, 2)  # (B, H, T, T)
    dscores = att * (dprobs - (att * dprobs).sum(axis=-1, keepdims=True)) * scale
    dheads[0] = dscores @ k  # dq
    dheads[1] = dscores.transpose(0, 1, 3, 2) @ q  # dk
    return dheads.transpose(1, 3, 0, 2, 4).reshape(B, T, C3)


def layernorm_forward(x, g, b):  # item "layernorm"
    C = x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True) / C
    centred = x - mean
    var = (centred * centred).sum(axis=-1) / C  # biased variance
    rstd = 1.0 / np.sqrt(var + LN_EPS)  # (B, T)
    xhat = centred * rstd[..., None]
    return xhat * g + b, (xhat, rstd)


def layernorm_backward(dout, cache, g):  # item "layernorm"
    xhat, rstd = cache
    C = dout.shape[-1]
    dg = (dout * xhat).sum(axis=(0, 1))
    db = dout.sum(axis=(0, 1))
    dxhat = dout * g
    dx = rstd[..., None] * (
        dxhat - dxhat.sum(axis=-1, keepdims=True) / C - xhat * (dxhat * xhat).sum(axis=-1, keepdims=True) / C
    )
    return dx, dg, db


def cross_entropy_forward(logits, targets):  # item "cross_entropy"
    B, T, _ = logits.shape
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    picked = probs[np.arange(B)[:, None], np.arange(T)[None, :], targets]  # (B, T)
    return float(-np.log(picked).sum()) / (B * T), probs


def cross_entropy_backward(probs, targets):  # item "cross_entropy"
    B, T, _ = probs.shape
    dlogits = probs.copy()
    dlogits[np.arange(B)[:, None], np.arange(T)[None, :], targets] -= 1.0
    dlogits *= 1.0 / (B * T)
    return dlogits


def gelu_forward(x):  # item "gelu": x*x*x instead of x**3 (the general power), keep tanh for backward
    th = np.tanh(GELU_C * (x + 0.044715 * (x * x * x)))
    return 0.5 * x * (1.0 + th), th


def gelu_backward(dout, x, th):  # item "gelu"
    dinner = GELU_C * (1.0 + 3 * 0.044715 * (x * x))
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dinner)


def adamw_update(params, grads, m, v, t, task):  # item "small": in place, no per-parameter temporaries
    total = 0.0
    for name in grads:
        flat = grads[name].ravel()
        total += float(flat @ flat)
    norm = math.sqrt(total)
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr = learning_rate(task, t)
    c1 = 1.0 / (1 - task.beta1**t)
    c2 = 1.0 / (1 - task.beta2**t)
    for name in params:
        g, mn, vn, p = grads[name], m[name], v[name], params[name]
        g *= clip
        mn *= task.beta1
        mn += (1 - task.beta1) * g
        vn *= task.beta2
        g *= g
        g *= 1 - task.beta2
        vn += g
        denom = np.multiply(vn, c2, out=g)  # g is no longer needed: reuse it
        np.sqrt(denom, out=denom)
        denom += task.eps
        step = np.multiply(mn, c1)
        step /= denom
        if p.ndim == 2:  # weight decay on matrices only
            step += task.weight_decay * p
        step *= lr
        p -= step


# ================================================================ the items: text edits and functions

ITEMS: dict[str, dict] = {
    "float32": dict(
        title="float64 everywhere",
        subs=[
            ("np.array(value, dtype=np.float64)", "np.array(value, dtype=np.float32)"),
            ("out = np.zeros((B, T, C))\n", "out = np.zeros((B, T, C), dtype=qkv.dtype)\n"),
            ("att = np.zeros((B, n_head, T, T))", "att = np.zeros((B, n_head, T, T), dtype=qkv.dtype)"),
            ("rstd = np.zeros((B, T))", "rstd = np.zeros((B, T), dtype=x.dtype)"),
        ],
        funcs=[],
        tol=1e-4,
    ),
    "attention": dict(
        title="attention as loops over batch, head and query",
        subs=[],
        funcs=[attention_forward, attention_backward],
    ),
    "layernorm": dict(
        title="LayerNorm as loops over positions",
        subs=[],
        funcs=[layernorm_forward, layernorm_backward],
    ),
    "cross_entropy": dict(
        title="cross-entropy as loops over positions",
        subs=[],
        funcs=[cross_entropy_forward, cross_entropy_backward],
    ),
    "embedding": dict(
        title="embedding gradient as a loop over positions",
        subs=[
            (
                "    for bi in range(B):\n"
                "        for t in range(T):\n"
                '            grads["wte"][x[bi, t]] += dh[bi, t]\n'
                '            grads["wpe"][t] += dh[bi, t]\n',
                '    np.add.at(grads["wte"], x, dh)\n    grads["wpe"][:T] += dh.sum(axis=0)\n',
            ),
        ],
        funcs=[],
    ),
    "einsum": dict(
        title="weight gradients by np.einsum",
        subs=[
            (
                'dw = np.einsum("bti,btj->ij", x, dout)',
                "dw = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])",
            ),
            (
                'grads["wte"] += np.einsum("btv,btc->vc", dlogits, lnf)',
                'grads["wte"] += dlogits.reshape(B * T, -1).T @ lnf.reshape(B * T, -1)',
            ),
        ],
        funcs=[],
    ),
    "one_forward": dict(
        title="a second forward pass for the logged loss",
        subs=[
            (
                "        loss = compute_loss(params, x, y, task)  # the loss of this step, for the log\n"
                "        grads = compute_gradients(params, x, y, task)\n",
                "        loss, cache = forward(params, x, y, task)\n        grads = backward(params, cache, task)\n",
            ),
        ],
        funcs=[],
    ),
    "gelu": dict(
        title="GELU: x**3 by the general power, tanh recomputed in backward",
        subs=[
            ("u = gelu_forward(fc)", "u, th = gelu_forward(fc)"),
            (
                "caches.append((ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u))",
                "caches.append((ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u, th))",
            ),
            (
                "ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u = caches[i]",
                "ln1, ln1_cache, qkv, att_out, att, ln2, ln2_cache, fc, u, th = caches[i]",
            ),
            ("dfc = gelu_backward(du, fc)", "dfc = gelu_backward(du, fc, th)"),
        ],
        funcs=[gelu_forward, gelu_backward],
    ),
    "small": dict(
        title="3-D matmuls, AdamW temporaries (group)",
        subs=[
            (
                "    return x @ w + b\n",
                "    return (x.reshape(-1, x.shape[-1]) @ w + b).reshape(x.shape[:-1] + (w.shape[1],))\n",
            ),
            (
                "    dx = dout @ w.T\n",
                "    dx = (dout.reshape(-1, dout.shape[-1]) @ w.T).reshape(dout.shape[:-1] + (w.shape[0],))\n",
            ),
            ('logits = lnf @ params["wte"].T', 'logits = (lnf.reshape(B * T, -1) @ params["wte"].T).reshape(B, T, -1)'),
            ('dlnf = dlogits @ params["wte"]', 'dlnf = (dlogits.reshape(B * T, -1) @ params["wte"]).reshape(B, T, -1)'),
        ],
        funcs=[adamw_update],
    ),
}
ALL = "all_float32"  # every item at once: the whole vectorised float32 NumPy loop


def _replace_function(source: str, fn) -> str:
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn.__name__), None)
    if node is None:
        raise SystemExit(f"no function {fn.__name__} in the reference")
    lines = source.splitlines(keepends=True)
    new = inspect.getsource(fn)
    return "".join(lines[: node.lineno - 1]) + new + "".join(lines[node.end_lineno :])


def variant_source(keys: list[str]) -> str:
    source = REFERENCE.read_text()
    for key in keys:  # text edits first (they may touch loop bodies that a whole function then replaces)
        for old, new in ITEMS[key]["subs"]:
            if source.count(old) != 1:
                raise SystemExit(f"item {key}: the text to edit occurs {source.count(old)} times: {old!r}")
            source = source.replace(old, new)
    for key in keys:
        for fn in ITEMS[key]["funcs"]:
            source = _replace_function(source, fn)
    header = f"# A copy of reference_loop/train.py with these items fixed: {', '.join(keys)}\n"
    return header + source


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ================================================================ running and timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=5, help="interleaved (reference, variant) pairs per item")
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed run")
    ap.add_argument("--check-steps", type=int, default=3, help="steps whose losses must agree")
    ap.add_argument("--threads", type=int, default=2, help="OMP/OpenBLAS/MKL thread count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", default="standard")
    ap.add_argument("--items", nargs="*", default=[*ITEMS, ALL], help=f"subset of: {' '.join([*ITEMS, ALL])}")
    ap.add_argument("--scratch", default="/tmp/loopbench_inventory", help="where the edited copies go")
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy is imported, so BLAS sees it

    sys.path.insert(0, str(ROOT))
    import numpy as np

    from harness.contract.log import MemoryLog, discarding_log
    from harness.contract.spec import load_workload
    from harness.scoring import data

    task = load_workload(args.workload).task()
    corpus = data.load_corpus()
    batches = data.make_batches(corpus, task, args.seed)
    params = data.init_params(task, args.seed)

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    reference = load_module("loopbench_reference", REFERENCE)
    variants = {}
    for key in args.items:
        keys = list(ITEMS) if key == ALL else [key]
        path = scratch / f"variant_{key}.py"
        path.write_text(variant_source(keys))
        variants[key] = load_module(f"loopbench_variant_{key}", path)

    def run(module, steps, log):
        """Wall-clock and CPU seconds (all threads of this process) of one run of `steps` steps."""
        w0, c0 = time.perf_counter(), time.process_time()
        module.train(task.model_copy(update=dict(steps=steps)), params, batches, log)
        return time.perf_counter() - w0, time.process_time() - c0

    # ---- equivalence: the first steps' losses agree with the reference's
    ref_log = MemoryLog()
    run(reference, args.check_steps, ref_log)
    print(f"reference losses, first {args.check_steps} steps: {[loss for _, loss in ref_log.losses]}")
    for key, module in variants.items():
        log = MemoryLog()
        run(module, args.check_steps, log)
        tol = 1e-4 if key == ALL else ITEMS[key].get("tol", 1e-9)
        worst = max(abs(a - b) for (_, a), (_, b) in zip(log.losses, ref_log.losses, strict=False))
        ok = len(log.losses) == len(ref_log.losses) and worst <= tol
        print(f"  {key:14s} max |loss - reference| = {worst:.2e} (tolerance {tol:g}) {'ok' if ok else 'FAILED'}")
        if not ok:
            raise SystemExit(f"variant {key} does not compute the same training")

    # ---- timing: rounds over the items; within a round, each item gets one adjacent pair,
    # the order inside the pair alternating between rounds. Both clocks are kept: wall-clock time is what
    # the harness measures; CPU time is robust when other processes share the cores (with --threads 1
    # it equals wall-clock time on an idle machine).
    if args.pairs < 1:
        return
    wall = {key: [] for key in variants}
    cpu = {key: [] for key in variants}
    per_step = {key: [] for key in variants}
    ref_per_step = []
    print(f"\ntiming: {args.pairs} pairs per item, {args.steps} steps per run, {args.threads} threads")
    for r in range(args.pairs):
        for key, module in variants.items():
            if r % 2 == 0:
                ref = run(reference, args.steps, discarding_log())
                var = run(module, args.steps, discarding_log())
            else:
                var = run(module, args.steps, discarding_log())
                ref = run(reference, args.steps, discarding_log())
            wall[key].append(ref[0] / var[0])
            cpu[key].append(ref[1] / var[1])
            per_step[key].append(var[1] / args.steps)
            ref_per_step.append(ref[1] / args.steps)
            print(
                f"  round {r + 1} {key:14s} reference {ref[0]:7.3f}s wall {ref[1]:7.3f}s cpu   "
                f"variant {var[0]:7.3f}s wall {var[1]:7.3f}s cpu   ratio {ref[0] / var[0]:6.2f} wall "
                f"{ref[1] / var[1]:6.2f} cpu",
                flush=True,
            )

    med = statistics.median
    print(
        f"\n{args.workload}: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} BLAS threads, "
        f"NumPy {np.__version__}, {args.pairs} interleaved pairs of {args.steps}-step runs per item"
    )
    print(f"reference: median {med(ref_per_step):.3f} CPU s/step over {len(ref_per_step)} runs")
    print(f"\n{'item':14s} {'what':62s} {'cpu ratio (min-max)':>21s} {'wall ratio (min-max)':>22s} {'cpu s/step':>10s}")
    for key in variants:
        title = "every item fixed, float32 throughout" if key == ALL else ITEMS[key]["title"]
        c, w = cpu[key], wall[key]
        print(
            f"{key:14s} {title:62s} {med(c):6.2f}x ({min(c):5.2f}-{max(c):5.2f}) "
            f"{med(w):7.2f}x ({min(w):5.2f}-{max(w):5.2f}) {med(per_step[key]):10.3f}"
        )
    over = [k for k in variants if k != ALL and max(med(cpu[k]), med(wall[k])) > 3.0]
    print("\nitems above 3x on their own:", ", ".join(over) if over else "none")


if __name__ == "__main__":
    main()
