"""Rung 3: torch float32 in eager mode.

Against rung 2 (submissions/numpy-float32):
- torch's CPU kernels (oneDNN/MKL GEMMs, vectorised LayerNorm, GELU and softmax) and autograd instead of
  a hand-written backward pass; attention through the fused scaled_dot_product_attention kernel;
- torch's fused CPU AdamW kernel (one pass over each parameter for m, v and the update) and
  clip_grad_norm_ with the foreach implementation; same formula as SPEC §3 (torch's AdamW decays the
  parameter by lr*wd before the Adam step, which is the same expression);
- the intra-op thread pool set to the budget's cores (torch.get_num_threads() follows the harness's
  OMP_NUM_THREADS), the batches converted to a tensor once.
"""

import math

import torch
import torch.nn.functional as F


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_fn(p, x, y, task):
    B, T = x.shape
    C, H = task.d_model, task.n_head
    h = p["wte"][x] + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        qkv = torch.addmm(p[f"h{i}.attn.b"], a.view(B * T, C), p[f"h{i}.attn.w"])
        q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B * T, C)
        h = h + torch.addmm(p[f"h{i}.proj.b"], o, p[f"h{i}.proj.w"]).view(B, T, C)
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5).view(B * T, C)
        u = F.gelu(torch.addmm(p[f"h{i}.fc.b"], a, p[f"h{i}.fc.w"]), approximate="tanh")
        h = h + torch.addmm(p[f"h{i}.fcproj.b"], u, p[f"h{i}.fcproj.w"]).view(B, T, C)
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5).view(B * T, C) @ p["wte"].T
    return F.cross_entropy(logits, y.reshape(-1))


def make_optimizer(task, p):
    groups = [
        {"params": [t for t in p.values() if t.ndim == 2], "weight_decay": task.weight_decay},
        {"params": [t for t in p.values() if t.ndim != 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=task.lr, betas=(task.beta1, task.beta2), eps=task.eps, fused=True)


def snapshot(opt, p, key):
    return {name: opt.state[t][key] for name, t in p.items()}


def train(task, params, batches, log):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(task, p)
    data = torch.from_numpy(batches.copy()).long()
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        loss = loss_fn(p, x, y, task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(p.values(), task.grad_clip, foreach=True)
        for group in opt.param_groups:
            group["lr"] = learning_rate(task, s + 1)
        opt.step()
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t.detach() for k, t in p.items()}, snapshot(opt, p, "exp_avg"), snapshot(opt, p, "exp_avg_sq"))
