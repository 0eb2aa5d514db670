"""Rung 4: torch tuned by profile.

Against rung 3 (submissions/torch-eager):
- one-off costs leave the clock: the first AdamW construction imports torch._dynamo (about 2 s, rung 3's
  largest profile line), and the first call of every kernel allocates and initialises; prepare(task) does
  both on dummy data of the run's shapes, before the clock starts (SPEC §7 counts it as setup);
- GELU is one hand-written autograd Function in the exact identity 0.5 x (1 + tanh z) = x sigmoid(2 z):
  torch's sigmoid is vectorised and about three times cheaper than its tanh here, and the backward reuses the
  saved sigmoid instead of recomputing tanh;
- the embeddings go through F.embedding, whose backward is a dense scatter instead of index_put;
- torch.compile was measured and left out: the inductor graphs were no faster per step than these kernels
  on this CPU (see README.md).
"""

import math

import torch
import torch.nn.functional as F

GELU_A = 2.0 * math.sqrt(2.0 / math.pi)
GELU_B = GELU_A * 0.044715


class SigmoidGelu(torch.autograd.Function):
    """tanh-approximated GELU: x * sigmoid(x * (A + B x^2)) with A = 2 sqrt(2/pi), B = 0.044715 A."""

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(torch.addcmul(torch.full((), GELU_A), x, x, value=GELU_B).mul_(x))
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        dz = torch.addcmul(torch.full((), GELU_A), x, x, value=3.0 * GELU_B).mul_(x)
        return (s * (1.0 - s)).mul_(dz).add_(s).mul_(grad)


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_fn(p, x, y, task):
    B, T = x.shape
    C, H = task.d_model, task.n_head
    h = F.embedding(x, p["wte"]) + p["wpe"][:T]
    for i in range(task.n_layer):
        a = F.layer_norm(h, (C,), p[f"h{i}.ln1.g"], p[f"h{i}.ln1.b"], 1e-5)
        qkv = torch.addmm(p[f"h{i}.attn.b"], a.view(B * T, C), p[f"h{i}.attn.w"])
        q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B * T, C)
        h = h + torch.addmm(p[f"h{i}.proj.b"], o, p[f"h{i}.proj.w"]).view(B, T, C)
        a = F.layer_norm(h, (C,), p[f"h{i}.ln2.g"], p[f"h{i}.ln2.b"], 1e-5).view(B * T, C)
        u = SigmoidGelu.apply(torch.addmm(p[f"h{i}.fc.b"], a, p[f"h{i}.fc.w"]))
        h = h + torch.addmm(p[f"h{i}.fcproj.b"], u, p[f"h{i}.fcproj.w"]).view(B, T, C)
    logits = F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5).view(B * T, C) @ p["wte"].T
    return F.cross_entropy(logits, y.reshape(-1))


def make_optimizer(task, p):
    groups = [
        {"params": [t for t in p.values() if t.ndim == 2], "weight_decay": task.weight_decay},
        {"params": [t for t in p.values() if t.ndim != 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=task.lr, betas=(task.beta1, task.beta2), eps=task.eps, fused=True)


def run(task, p, data, log):
    opt = make_optimizer(task, p)
    for s in range(data.shape[0]):
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
            m = {name: opt.state[t]["exp_avg"] for name, t in p.items()}
            v = {name: opt.state[t]["exp_avg_sq"] for name, t in p.items()}
            log.checkpoint(s, {k: t.detach() for k, t in p.items()}, m, v)


class _NoLog:
    def step(self, s, loss):
        pass

    def checkpoint(self, s, params, m, v):
        pass


def dummy_params(task):
    """Parameters of the run's shapes (SPEC §2), for the warm-up only."""
    V, T, C = task.vocab_size, task.ctx_len, task.d_model
    shapes = {"wte": (V, C), "wpe": (T, C)}
    for i in range(task.n_layer):
        shapes |= {
            f"h{i}.ln1.g": (C,), f"h{i}.ln1.b": (C,), f"h{i}.attn.w": (C, 3 * C), f"h{i}.attn.b": (3 * C,),
            f"h{i}.proj.w": (C, C), f"h{i}.proj.b": (C,), f"h{i}.ln2.g": (C,), f"h{i}.ln2.b": (C,),
            f"h{i}.fc.w": (C, 4 * C), f"h{i}.fc.b": (4 * C,), f"h{i}.fcproj.w": (4 * C, C), f"h{i}.fcproj.b": (C,),
        }
    shapes |= {"lnf.g": (C,), "lnf.b": (C,)}
    gen = torch.Generator().manual_seed(0)
    return {k: (0.02 * torch.randn(s, generator=gen)).requires_grad_(True) for k, s in shapes.items()}


def prepare(task):
    """Warm up on dummy parameters and data of the run's shapes: imports, kernel initialisation, allocator."""
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, task.vocab_size, (3, task.batch_size, task.ctx_len + 1), generator=gen)
    run(task, dummy_params(task), data, _NoLog())


def train(task, params, batches, log):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params.items()}
    data = torch.from_numpy(batches.copy()).long()
    run(task, p, data, log)
