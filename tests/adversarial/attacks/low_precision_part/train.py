"""Attack family: 16-bit arithmetic in one part of the step, float32 everywhere else, and float32 checkpoints.

variant.toml picks the 16-bit type, the part (the attention products, the MLP's GEMMs, the head, every
backward GEMM, the weight-gradient GEMMs only, or every product) and a checkpoint trick that tries to make
the replay move so far that the gap looks small: huge values in the key third of attn.b (which the audit
does not compare), v set to zero under a nonzero m, or m pushed to the bound AdamW's moments allow.
"""

import math
import pathlib
import tomllib

import torch
import torch.nn.functional as F

CONFIG = {"dtype": "bfloat16", "part": "backward", "trick": "none", "start": 0}
CONFIG |= tomllib.loads(pathlib.Path(__file__).with_name("variant.toml").read_text())
LOW = {"bfloat16": torch.bfloat16, "float16": torch.float16}
F32 = torch.float32


def low(a, on):
    return a.to(LOW[CONFIG["dtype"]]).to(F32) if on else a


class Product(torch.autograd.Function):
    """a (.., K) @ w (K, N) with the forward, input-gradient and weight-gradient GEMMs each in 16 bits or not."""

    @staticmethod
    def forward(ctx, a, w, fwd, dgrad, wgrad):
        ctx.save_for_backward(a, w)
        ctx.dgrad, ctx.wgrad = dgrad, wgrad
        return low(a, fwd) @ low(w, fwd)  # ATTACK: 16-bit operands where fwd (float32 accumulation)

    @staticmethod
    def backward(ctx, g):
        a, w = ctx.saved_tensors
        da = low(g, ctx.dgrad) @ low(w, ctx.dgrad).T  # ATTACK: 16-bit operands where dgrad
        a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
        dw = low(a2, ctx.wgrad).T @ low(g2, ctx.wgrad)  # ATTACK: 16-bit operands where wgrad
        return da, dw, None, None, None


def product(a, w, where, on):
    part = CONFIG["part"] if on else "none"
    fwd = part == "all" or part == where
    dgrad = fwd or part == "backward"
    wgrad = dgrad or part == "weight_grad"
    return Product.apply(a, w, fwd, dgrad, wgrad)


def forward_loss(p, x, y, task, on):
    C, H = task.d_model, task.n_head
    B, T = x.shape
    D = C // H
    att_low = on and CONFIG["part"] in ("attention", "all")
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        q, k, v = (product(a, p[f"h{i}.attn.w"], "attn", on) + p[f"h{i}.attn.b"]).split(C, -1)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        scores = (low(q, att_low) @ low(k, att_low).transpose(-2, -1)) / math.sqrt(D)
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        o = (low(att, att_low) @ low(v, att_low)).transpose(1, 2).reshape(B, T, C)
        h = h + product(o, p[f"h{i}.proj.w"], "attn", on) + p[f"h{i}.proj.b"]
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5)
        u = F.gelu(product(a, p[f"h{i}.fc.w"], "mlp", on) + p[f"h{i}.fc.b"], approximate="tanh")
        h = h + product(u, p[f"h{i}.fcproj.w"], "mlp", on) + p[f"h{i}.fcproj.b"]
    a = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5)
    logits = product(a, p["wte"].T, "head", on)
    return F.cross_entropy(logits.reshape(B * T, -1), y.reshape(-1))


def lr_at(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    frac = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def adamw(p, m, v, t, task):
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p[k].grad) for k in p])))
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr, c1, c2 = lr_at(task, t), 1 - task.beta1**t, 1 - task.beta2**t
    for k in p:
        g = p[k].grad * clip
        m[k].mul_(task.beta1).add_(g, alpha=1 - task.beta1)
        v[k].mul_(task.beta2).addcmul_(g, g, value=1 - task.beta2)
        decay = task.weight_decay if p[k].ndim == 2 else 0.0
        p[k].sub_(lr * ((m[k] / c1) / ((v[k] / c2).sqrt() + task.eps) + decay * p[k]))


@torch.no_grad()
def tricked(p, m, v, t, task):
    """What the checkpoint says: the state, with the trick applied (to the run's own state too where the trick
    is in compared elements, so that the run continues from what it reported)."""
    p = {k: a.detach().clone() for k, a in p.items()}
    m = {k: a.clone() for k, a in m.items()}
    v = {k: a.clone() for k, a in v.items()}
    C = task.d_model
    if CONFIG["trick"] == "key_bias":  # ATTACK: huge values where the audit does not compare
        for k in p:
            if k.endswith("attn.b"):
                p[k][C : 2 * C], m[k][C : 2 * C], v[k][C : 2 * C] = 1e3, 1e2, 1e-6
    return p, m, v


@torch.no_grad()
def trick_own_state(m, v, t, task):
    if CONFIG["trick"] == "tiny_v":  # ATTACK: no v under the smallest moments: the replay divides by eps
        for k in m:
            idx = v[k].reshape(-1).argsort()[:4]
            v[k].view(-1)[idx] = 0.0
    elif CONFIG["trick"] == "m_bound":  # ATTACK: m as large as its v allows, in the biggest tensor
        r = task.beta1**2 / task.beta2
        bound = (1 - task.beta1) / math.sqrt(1 - task.beta2) * math.sqrt((1 - r**t) / (1 - r))
        m["wte"].copy_(torch.sign(m["wte"]) * bound * v["wte"].sqrt() * 0.999)


def train(task, params, batches, log):
    torch.set_num_threads(1)  # tensors this small: one thread is fastest, and steady on a busy machine
    p = {k: torch.tensor(a, dtype=F32, requires_grad=True) for k, a in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        loss = forward_loss(p, x, y, task, on=s >= CONFIG["start"])
        for t in p.values():
            t.grad = None
        loss.backward()
        adamw(p, m, v, s + 1, task)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            trick_own_state(m, v, s + 1, task)
            log.checkpoint(s, *tricked(p, m, v, s + 1, task))
