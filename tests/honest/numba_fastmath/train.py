"""Honest: the torch float32 port, its gradient norm and AdamW update in numba kernels with fastmath (sums
reassociated and vectorised, multiply-adds contracted, approximate division and square roots allowed)."""

import math

import numba
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


@numba.njit(fastmath=True)
def sum_of_squares(g):
    total = 0.0
    for i in range(g.size):
        total += float(g[i]) * float(g[i])
    return total


@numba.njit(fastmath=True)
def adamw_kernel(p, g, m, v, clip, lr, b1, b2, c1, c2, eps, decay):
    for i in range(p.size):
        gi = g[i] * clip
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        p[i] -= lr * ((m[i] / c1) / (np.sqrt(v[i] / c2) + eps) + decay * p[i])


def prepare(task):
    one = np.ones(4, np.float32)
    sum_of_squares(one)  # compiled here, before the clock
    adamw_kernel(one, one, one.copy(), one.copy(), *(np.float32(0.5),) * 8)


@torch.no_grad()
def adamw(p, m, v, t, task):
    flat = {k: p[k].grad.reshape(-1).numpy() for k in p}
    norm = np.sqrt(sum(sum_of_squares(g) for g in flat.values()))
    clip = min(1.0, task.grad_clip / (norm + 1e-6))
    lr, c1, c2 = lr_at(task, t), 1 - task.beta1**t, 1 - task.beta2**t
    for k in p:
        decay = task.weight_decay if p[k].ndim == 2 else 0.0
        args = (clip, lr, task.beta1, task.beta2, c1, c2, task.eps, decay)
        adamw_kernel(p[k].detach().view(-1).numpy(), flat[k], m[k].view(-1).numpy(), v[k].view(-1).numpy(),
                     *(np.float32(a) for a in args))


def train(task, params, batches, log):
    torch.set_num_threads(1)  # tensors this small: one thread is fastest, and steady on a busy machine
    p = {k: torch.tensor(a, dtype=torch.float32, requires_grad=True) for k, a in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        loss = forward_loss(p, x, y, task)
        for t in p.values():
            t.grad = None
        loss.backward()
        adamw(p, m, v, s + 1, task)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t.detach() for k, t in p.items()}, m, v)
