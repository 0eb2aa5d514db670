"""Honest with native code: the torch float32 port, the forward product of every linear layer in a C kernel
(float32, fused multiply-adds: compiled in prepare with -ffp-contract=fast for this machine); backward in torch."""

import ctypes
import math
import os
import subprocess

import torch
import torch.nn.functional as F

LIB = None


def prepare(task):
    global LIB
    os.makedirs("build", exist_ok=True)
    flags = ["-O2", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared"]
    subprocess.run([os.environ.get("CC", "cc"), *flags, "gemm.c", "-o", "build/gemm.so"], check=True, capture_output=True)
    LIB = ctypes.CDLL(os.path.abspath("build/gemm.so"))
    LIB.gemm.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3


class Linear(torch.autograd.Function):
    """a @ w + b with the product in C; the backward in torch."""

    @staticmethod
    def forward(ctx, a, w, b):
        ctx.save_for_backward(a, w)
        a2, w2 = a.reshape(-1, a.shape[-1]).contiguous(), w.contiguous()
        out = torch.empty(a2.shape[0], w2.shape[1])
        LIB.gemm(a2.data_ptr(), w2.data_ptr(), out.data_ptr(), a2.shape[0], a2.shape[1], w2.shape[1])
        return out.view(*a.shape[:-1], w.shape[1]) + b

    @staticmethod
    def backward(ctx, g):
        a, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        return g @ w.T, a.reshape(-1, a.shape[-1]).T @ g2, g2.sum(0)


def linear(a, w, b):
    return Linear.apply(a, w, b)


def forward_loss(p, x, y, task):
    C, H = task.d_model, task.n_head
    B, T = x.shape
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        q, k, v = linear(a, p[f"h{i}.attn.w"], p[f"h{i}.attn.b"]).split(C, -1)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        h = h + linear(o, p[f"h{i}.proj.w"], p[f"h{i}.proj.b"])
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5)
        u = F.gelu(linear(a, p[f"h{i}.fc.w"], p[f"h{i}.fc.b"]), approximate="tanh")
        h = h + linear(u, p[f"h{i}.fcproj.w"], p[f"h{i}.fcproj.b"])
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5) @ p["wte"].T
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
