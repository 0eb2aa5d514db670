"""An honest plain port: the same training in torch float32 eager mode, autograd, fused attention."""

import math

import torch
import torch.nn.functional as F


def train(task, params, batches, log):
    torch.manual_seed(0)
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    decay = {k: (task.weight_decay if t.ndim == 2 else 0.0) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    C, H = task.d_model, task.n_head
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        B, T = x.shape
        h = p["wte"][x] + p["wpe"][:T]
        for i in range(task.n_layer):
            a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
            q, k_, v_ = F.linear(a, p[f"h{i}.attn.w"].T, p[f"h{i}.attn.b"]).split(C, -1)
            q, k_, v_ = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k_, v_))
            o = F.scaled_dot_product_attention(q, k_, v_, is_causal=True).transpose(1, 2).reshape(B, T, C)
            h = h + F.linear(o, p[f"h{i}.proj.w"].T, p[f"h{i}.proj.b"])
            u = F.gelu(F.linear(F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5), p[f"h{i}.fc.w"].T, p[f"h{i}.fc.b"]), approximate="tanh")
            h = h + F.linear(u, p[f"h{i}.fcproj.w"].T, p[f"h{i}.fcproj.b"])
        logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5) @ p["wte"].T
        loss = F.cross_entropy(logits.view(B * T, -1), y.reshape(-1))
        for t_ in p.values():
            t_.grad = None
        loss.backward()
        t = s + 1
        if t <= task.warmup_steps:
            lr = task.lr * t / task.warmup_steps
        else:
            lr = task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * (t - task.warmup_steps) / (task.steps - task.warmup_steps)))
        with torch.no_grad():
            grads = [p[k].grad for k in p]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            clip = min(1.0, task.grad_clip / (float(norm) + 1e-6))
            c1, c2 = 1 - task.beta1**t, 1 - task.beta2**t
            for k in p:
                g = p[k].grad * clip
                m[k].mul_(task.beta1).add_(g, alpha=1 - task.beta1)
                v[k].mul_(task.beta2).addcmul_(g, g, value=1 - task.beta2)
                upd = (m[k] / c1) / ((v[k] / c2).sqrt() + task.eps) + decay[k] * p[k]
                p[k].sub_(lr * upd)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t_.detach() for k, t_ in p.items()}, m, v)
