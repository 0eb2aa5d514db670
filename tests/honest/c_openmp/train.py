"""An honest port with native code: torch float32 autograd for the model, the AdamW update in C with OpenMP.

prepare(task) compiles adamw.c with the system C compiler into build/ of this folder, by a relative path,
with -fopenmp; the kernel's threads share the process's OpenMP runtime with torch, on the budget's cores.
"""

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
    command = [os.environ.get("CC", "cc"), "-O2", "-fopenmp", "-fPIC", "-shared", "adamw.c", "-o", "build/adamw.so", "-lm"]
    subprocess.run(command, check=True, capture_output=True)
    LIB = ctypes.CDLL(os.path.abspath("build/adamw.so"))
    LIB.adamw.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] + [ctypes.c_float] * 8
    threads = LIB.threads_seen()
    if threads != int(os.environ.get("OMP_NUM_THREADS", "1")):
        raise RuntimeError(f"the OpenMP runtime gave {threads} threads, not the budget's")


def forward(p, x, task):
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
    return F.layer_norm(h, (C,), p["lnf.g"], p["lnf.b"], 1e-5) @ p["wte"].T


def learning_rate(task, t):
    if t <= task.warmup_steps:
        return task.lr * t / task.warmup_steps
    progress = (t - task.warmup_steps) / (task.steps - task.warmup_steps)
    return task.lr_min + (task.lr - task.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def train(task, params, batches, log):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params.items()}
    m = {k: torch.zeros_like(t) for k, t in p.items()}
    v = {k: torch.zeros_like(t) for k, t in p.items()}
    data = torch.from_numpy(batches.copy())
    for s in range(task.steps):
        x, y = data[s, :, :-1], data[s, :, 1:]
        logits = forward(p, x, task)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        for t_ in p.values():
            t_.grad = None
        loss.backward()
        t = s + 1
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.grad) for q in p.values()]))
            scale = min(1.0, task.grad_clip / (float(norm) + 1e-6))
            c1, c2, lr = 1 - task.beta1**t, 1 - task.beta2**t, learning_rate(task, t)
            for k, q in p.items():
                decay = task.weight_decay if q.ndim == 2 else 0.0
                LIB.adamw(q.data_ptr(), q.grad.data_ptr(), m[k].data_ptr(), v[k].data_ptr(), q.numel(), scale, lr,
                          task.beta1, task.beta2, c1, c2, task.eps, decay)
        log.step(s, loss.item())
        if (s + 1) % task.audit_every == 0 or s == task.steps - 1:
            log.checkpoint(s, {k: t_.detach() for k, t_ in p.items()}, m, v)
