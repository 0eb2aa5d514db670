"""Honest: the torch float32 port with its sums reordered: each batch's windows in a permuted order (the
loss mean and every weight-gradient sum run over them in that order), the gradient norm summed backwards."""

import math

import numpy as np
import torch
import torch.nn.functional as F


def forward_loss(p, x, y, task):
    C, H = task.d_model, task.n_head
    B, T = x.shape
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        q, k, v = F.linear(a, p[f"h{i}.attn.w"].T, p[f"h{i}.attn.b"]).split(C, -1)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        h = h + F.linear(o, p[f"h{i}.proj.w"].T, p[f"h{i}.proj.b"])
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5)
        u = F.gelu(F.linear(a, p[f"h{i}.fc.w"].T, p[f"h{i}.fc.b"]), approximate="tanh")
        h = h + F.linear(u, p[f"h{i}.fcproj.w"].T, p[f"h{i}.fcproj.b"])
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5) @ p["wte"].T
    return F.cross_entropy(logits.reshape(B * T, -1), y.reshape(-1))


def lr_at(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    frac = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def adamw(p, m, v, t, task):
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p[k].grad) for k in reversed(list(p))])))
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr, c1, c2 = lr_at(task, t), 1 - task.beta1**t, 1 - task.beta2**t
    for k in p:
        g = p[k].grad * clip
        m[k].mul_(task.beta1).add_(g, alpha=1 - task.beta1)
        v[k].mul_(task.beta2).addcmul_(g, g, value=1 - task.beta2)
        decay = task.weight_decay if p[k].ndim == 2 else 0.0
        p[k].sub_(lr * ((m[k] / c1) / ((v[k] / c2).sqrt() + task.eps) + decay * p[k]))


def train(task, params, batches, log):
    torch.set_num_threads(1)  # tensors this small: one thread is fastest, and steady on a busy machine
    p = {k: torch.tensor(a, dtype=torch.float32, requires_grad=True) for k, a in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    order = np.random.default_rng(12345)
    for s in range(task.steps):
        rows = torch.from_numpy(order.permutation(data.shape[1]))  # a reordered batch: the same windows
        x, y = data[s][rows, :-1], data[s][rows, 1:]
        loss = forward_loss(p, x, y, task)
        for t in p.values():
            t.grad = None
        loss.backward()
        adamw(p, m, v, s + 1, task)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t.detach() for k, t in p.items()}, m, v)
